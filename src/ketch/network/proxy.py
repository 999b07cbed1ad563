"""The userland proxy, only where NAT cannot serve: a port published on the
host's IPv6 addresses (``[::]:8080`` next to ``0.0.0.0:8080``, as dockerd lists
both) for a container reached over IPv4. The IPv4 side is nftables DNAT
(``nat.py``); an IPv6 client cannot be DNATed to an IPv4 address, so its
connections are accepted here and relayed, as docker-proxy does.

TCP and UDP: the listening socket is the one the port allocator already holds
to reserve the port, so nothing else can take it while the container has it.
UDP keeps one socket towards the container per client address, dropped after
``UDP_IDLE`` seconds without traffic (docker-proxy's conntrack-like table).
One thread of its own runs an event loop for every relayed flow; a
container's ports going away closes their listeners and the flows through
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

_CHUNK = 256 * 1024
UDP_IDLE = 90.0


class UserlandProxy:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: dict[object, asyncio.base_events.Server | _UdpFront] = {}
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
        """Relay what comes to ``listener`` (bound; TCP not listening yet) to
        ``target``; the listener stays its owner's to close after ``remove``."""
        loop = self._running()
        listener.setblocking(False)
        start = self._start if listener.type == socket.SOCK_STREAM else self._start_udp
        asyncio.run_coroutine_threadsafe(start(key, listener, target), loop).result()

    async def _start_udp(self, key: object, listener: socket.socket,
                         target: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        front = _UdpFront(loop, target)
        await loop.create_datagram_endpoint(lambda: front, sock=listener.dup())
        self._servers[key] = front
        self._conns[key] = set()

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
        if isinstance(server, _UdpFront):
            server.close()
            return
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


class _UdpBack(asyncio.DatagramProtocol):
    """One client's flow towards the container: replies go back to that client."""

    def __init__(self, front: _UdpFront, client: tuple[str, int]) -> None:
        self.front, self.client = front, client
        self.transport: asyncio.DatagramTransport | None = None
        self.used = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.used = self.front.loop.time()
        if self.front.transport is not None:
            self.front.transport.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        pass                # the container's port is closed: like a lost datagram


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, target: tuple[str, int]) -> None:
        self.loop, self.target = loop, target
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple[str, int], _UdpBack] = {}
        self.pending: dict[tuple[str, int], list[bytes]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._sweeper = self.loop.call_later(UDP_IDLE, self._sweep)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        client = (addr[0], addr[1])
        flow = self.flows.get(client)
        if flow is not None and flow.transport is not None:
            flow.used = self.loop.time()
            flow.transport.sendto(data)
            return
        if client in self.pending:           # its socket is being opened
            self.pending[client].append(data)
            return
        self.pending[client] = [data]
        self.loop.create_task(self._open(client))

    async def _open(self, client: tuple[str, int]) -> None:
        try:
            _t, flow = await self.loop.create_datagram_endpoint(
                lambda: _UdpBack(self, client), remote_addr=self.target)
        except OSError:
            self.pending.pop(client, None)
            return
        flow.used = self.loop.time()
        self.flows[client] = flow
        for data in self.pending.pop(client, []):
            if flow.transport is not None:
                flow.transport.sendto(data)

    def _sweep(self) -> None:
        now = self.loop.time()
        for client, flow in list(self.flows.items()):
            if now - flow.used > UDP_IDLE and flow.transport is not None:
                flow.transport.close()
                del self.flows[client]
        self._sweeper = self.loop.call_later(UDP_IDLE, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for flow in self.flows.values():
            if flow.transport is not None:
                flow.transport.close()
        self.flows.clear()
        if self.transport is not None:
            self.transport.close()


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
