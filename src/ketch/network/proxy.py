"""The userland proxy, only where NAT cannot serve: a port published on the
host's IPv6 addresses (``[::]:8080`` next to ``0.0.0.0:8080``, as dockerd lists
both) for a container reached over IPv4. The IPv4 side is nftables DNAT
(``nat.py``); an IPv6 client cannot be DNATed to an IPv4 address, so its
connections are accepted here and relayed, as docker-proxy does.

TCP only: the listening socket is the one the port allocator already holds to
reserve the port, so nothing else can take it while the container has it. One
thread of its own runs an event loop for every relayed connection; a
container's ports going away closes their listeners and the connections
through them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

_CHUNK = 256 * 1024


class UserlandProxy:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: dict[object, asyncio.base_events.Server] = {}
        self._conns: dict[object, set[asyncio.StreamWriter]] = {}

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="ketch-userland-proxy",
                                                daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def add(self, key: object, listener: socket.socket, target: tuple[str, int]) -> None:
        """Relay connections accepted on ``listener`` (bound, not listening) to
        ``target``; the listener stays its owner's to close after ``remove``."""
        loop = self._running()
        listener.setblocking(False)
        asyncio.run_coroutine_threadsafe(self._start(key, listener, target), loop).result()

    async def _start(self, key: object, listener: socket.socket,
                     target: tuple[str, int]) -> None:
        conns: set[asyncio.StreamWriter] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.add(writer)
            try:
                try:
                    up_r, up_w = await asyncio.wait_for(
                        asyncio.open_connection(target[0], target[1]), 10)
                except (OSError, TimeoutError):
                    return
                conns.add(up_w)
                try:
                    await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
                finally:
                    conns.discard(up_w)
                    up_w.close()
            finally:
                conns.discard(writer)
                writer.close()

        # a dup: closing the server must not close the allocator's reservation
        server = await asyncio.start_server(handle, sock=listener.dup(), backlog=128)
        self._servers[key] = server
        self._conns[key] = conns

    def remove(self, key: object) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._stop(key), loop).result(timeout=10)

    async def _stop(self, key: object) -> None:
        server = self._servers.pop(key, None)
        conns = self._conns.pop(key, set())
        if server is not None:
            server.close()
        for w in list(conns):
            w.close()
        if server is not None:
            await server.wait_closed()

    def keys(self) -> list[object]:
        return list(self._servers)

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is None:
            return

        async def stop_all() -> None:
            for key in list(self._servers):
                await self._stop(key)

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(stop_all(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other way (as docker-proxy does)."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError):
        writer.close()


def host_has_ipv6() -> bool:
    """Whether the host can listen on IPv6 at all (``ipv6.disable=1`` has no
    /proc/net/if_inet6)."""
    import os

    return socket.has_ipv6 and os.path.exists("/proc/net/if_inet6")
