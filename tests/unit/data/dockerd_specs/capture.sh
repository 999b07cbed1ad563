#!/bin/bash
# capture.sh NAME docker-create-args... : create through the logging proxy, start, keep config.json and inspect
D=/tmp/kspecgen-ref; export DOCKER_HOST=unix://$D/proxy.sock
name=$1; shift
id=$(docker create --name "$name" --runtime capture "$@") || exit 1
docker start $id >/dev/null 2>$D/cap/$name.start-error || true
sleep 0.2
mv $D/cap/runtime-$id.json $D/cap/$name.config.json
docker inspect $id > $D/cap/$name.inspect.json
echo "$name $id"
