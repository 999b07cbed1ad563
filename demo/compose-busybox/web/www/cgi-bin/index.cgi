#!/bin/sh
# GET /: count the visit here, write a row in db, answer both as JSON.
visits=$(( $(cat /tmp/visits 2>/dev/null || echo 0) + 1 ))
echo "$visits" > /tmp/visits
if rows=$(wget -q -O - http://db:8080/cgi-bin/insert); then
    printf 'Content-Type: application/json\r\n\r\n'
    printf '{"visits": %s, "rows": %s, "served_by": "%s"}\n' "$visits" "$rows" "$(hostname)"
else
    printf 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n'
    printf '{"error": "db did not answer"}\n'
fi
