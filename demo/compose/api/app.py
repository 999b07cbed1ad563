"""The demo API: counts visits in Redis and writes a row to PostgreSQL per request.

GET /        {"visits": <INCR in redis>, "rows": <rows in the visits table>, "served_by": <hostname>}
GET /health  {"status": "ok"} when both the database and the cache answer, else 503
"""

import json
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import redis

DATABASE_URL = os.environ["DATABASE_URL"]
CACHE = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5)
HOSTNAME = socket.gethostname()


def database():
    return psycopg2.connect(DATABASE_URL, connect_timeout=5)


def setup():
    # The database may still be restarting along with this container: retry a while.
    for _ in range(30):
        try:
            conn = database()
            break
        except psycopg2.OperationalError as exc:
            print(f"api: waiting for the database ({exc})".strip(), flush=True)
            time.sleep(1)
    else:
        sys.exit("api: no database")
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS visits ("
                    " id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(),"
                    " client text NOT NULL)")
    conn.close()


def visit(client):
    visits = CACHE.incr("visits")
    conn = database()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO visits (client) VALUES (%s)", (client,))
            cur.execute("SELECT count(*) FROM visits")
            rows = cur.fetchone()[0]
    finally:
        conn.close()
    return {"visits": visits, "rows": rows, "served_by": HOSTNAME}


def health():
    CACHE.ping()
    conn = database()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()
    return {"status": "ok"}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            if self.path == "/":
                self.reply(200, visit(self.client_address[0]))
            elif self.path == "/health":
                self.reply(200, health())
            else:
                self.reply(404, {"error": "not found"})
        except (psycopg2.Error, redis.RedisError) as exc:
            self.reply(503, {"error": f"{type(exc).__name__}: {exc}".strip()})

    def reply(self, status, body):
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        print(f"api: {self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    # pid 1 has no default action for SIGTERM: stop at once when asked.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    setup()
    server = ThreadingHTTPServer(("0.0.0.0", 3000), Handler)
    print(f"api: listening on :3000 as {HOSTNAME}", flush=True)
    server.serve_forever()
