#!/bin/sh
# httpd as pid 1 would ignore SIGTERM: the shell stops at once when asked.
trap 'exit 0' TERM INT
echo "web: serving on :8080"
httpd -f -p 8080 -h /srv/www &
wait
