"""The userland proxy relays an IPv6 listener's connections to an IPv4 target,
half-closes as its clients do, and lets go of everything on remove."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from ketch.network.proxy import UserlandProxy, host_has_ipv6

pytestmark = pytest.mark.skipif(not host_has_ipv6(), reason="no IPv6 on this host")


@pytest.fixture
def upper_server() -> Iterator[int]:
    """An IPv4 server answering each connection's whole input upper-cased, after EOF."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.1)          # so that the thread sees ``stop``
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                conn.sendall(data.upper())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()
    t.join(5)


def test_relay_half_close_and_remove(upper_server: int) -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    listener.bind(("::1", 0))
    port = listener.getsockname()[1]
    proxy = UserlandProxy()
    try:
        proxy.add("k", listener, ("127.0.0.1", upper_server))
        payload = b"hello through the proxy " * 20000       # several chunks
        with socket.create_connection(("::1", port), timeout=5) as c:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)       # the server answers after our EOF
            got = b""
            while chunk := c.recv(65536):
                got += chunk
        assert got == payload.upper()
        assert proxy.keys() == ["k"]
        proxy.remove("k")
        assert proxy.keys() == []
    finally:
        proxy.close()
        listener.close()
    with pytest.raises(OSError):
        socket.create_connection(("::1", port), timeout=2).close()


def test_udp_flows_per_client() -> None:
    """Each client's datagrams reach the target from a socket of its own, and the
    target's replies go back to that client."""
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    target.settimeout(5)
    listener = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    listener.bind(("::1", 0))
    proxy = UserlandProxy()
    clients = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        proxy.add("u", listener, target.getsockname())
        seen = set()
        for i, c in enumerate(clients):
            c.settimeout(5)
            c.sendto(f"ping {i}".encode(), listener.getsockname()[:2])
            data, src = target.recvfrom(100)
            assert data == f"ping {i}".encode()
            seen.add(src)
            target.sendto(b"pong " + data, src)
            assert c.recvfrom(100)[0] == f"pong ping {i}".encode()
        assert len(seen) == 2            # one flow per client
        proxy.remove("u")
    finally:
        proxy.close()
        for sock in (target, listener, *clients):
            sock.close()
