#!/bin/sh
# The "database": rows appended to /data/rows (the named volume), served over
# HTTP. The first start initialises the volume, as a database would.
trap 'exit 0' TERM INT
if [ ! -f /data/created ]; then
    echo "db: initialising /data"
    : > /data/rows
    date -u > /data/created
fi
echo "db: $(wc -l < /data/rows) rows, serving on :8080"
httpd -f -p 8080 -h /srv/www &
wait
