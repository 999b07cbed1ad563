"""The embedded DNS server without root: the codec, the answers dockerd 20.10 gives, and
forwarding to fake upstreams on 127.0.0.1 (the server itself on sockets bound there)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ketch.errors import Unavailable
from ketch.network import dns
from ketch.network.dns import (
    FLAG_AA,
    FLAG_QR,
    FLAG_RA,
    FLAG_RD,
    FLAG_TC,
    RCODE_FORMERR,
    RCODE_NOERROR,
    RCODE_NOTIMP,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_MX,
    TYPE_OPT,
    TYPE_PTR,
    DnsFormatError,
    Message,
    Question,
    Record,
)

IP = ipaddress.ip_address
HEADER = struct.Struct("!HHHHHH")


class FakeResolver:
    def __init__(self, names: dict[str, list[str]] | None = None,
                 ptrs: dict[str, str] | None = None,
                 upstreams: list[tuple[str, int]] | None = None) -> None:
        self.names = {k: [IP(a) for a in v] for k, v in (names or {}).items()}
        self.ptrs = {IP(k): v for k, v in (ptrs or {}).items()}
        self.ups = upstreams or []
        self.asked: list[tuple[str, str]] = []

    def lookup(self, key: str, name: str) -> list[dns.IPAddress] | None:
        self.asked.append((key, name))
        return self.names.get(name)

    def reverse(self, key: str, ip: dns.IPAddress) -> str | None:
        return self.ptrs.get(ip)

    def upstreams(self, key: str) -> list[tuple[str, int]]:
        return self.ups


def query(name: str, qtype: int = TYPE_A, qid: int = 0x1234, flags: int = FLAG_RD,
          qclass: int = 1, edns: int | None = None) -> bytes:
    msg = Message(qid, flags, [Question(name, qtype, qclass)])
    if edns is not None:
        msg.additional.append(Record("", TYPE_OPT, edns, 0, b""))
    return msg.encode()


def local(resolver: FakeResolver, data: bytes, tcp: bool = False) -> Message | None:
    reply = dns.answer_locally(resolver, "c1", dns.parse_query(data), tcp)
    return None if reply is None else dns.parse_message(reply)


# -- codec -------------------------------------------------------------------------------


def test_message_round_trip_uses_compression() -> None:
    msg = Message(7, FLAG_QR | FLAG_RD | FLAG_RA, [Question("Web.MyNet", TYPE_A)],
                  answers=[Record("web.mynet", TYPE_A, 1, 600, bytes([10, 0, 0, 2])),
                           Record("db.mynet", TYPE_A, 1, 600, bytes([10, 0, 0, 3]))])
    wire = msg.encode()
    assert dns.parse_message(wire) == Message(
        7, FLAG_QR | FLAG_RD | FLAG_RA, [Question("Web.MyNet", TYPE_A)],
        answers=[Record("Web.MyNet", TYPE_A, 1, 600, bytes([10, 0, 0, 2])),
                 Record("db.MyNet", TYPE_A, 1, 600, bytes([10, 0, 0, 3]))])
    plain = msg.encode(compress=False)
    assert dns.parse_message(plain) == msg
    # the first answer is a bare pointer to offset 12; "db" then points at "mynet"
    assert b"\xc0\x0c" in wire
    assert len(wire) < len(plain)


def test_decode_name_follows_pointers_and_reports_the_end() -> None:
    data = b"\x00" * 12 + b"\x03web\x05mynet\x00" + b"\x02db\xc0\x10" + b"\xc0\x0c"
    assert dns.decode_name(data, 12) == ((b"web", b"mynet"), 23)
    assert dns.decode_name(data, 23) == ((b"db", b"mynet"), 28)
    assert dns.decode_name(data, 28) == ((b"web", b"mynet"), 30)


def test_decode_name_takes_forward_pointers_as_miekg_does() -> None:
    data = b"\x00" * 12 + b"\xc0\x0e" + b"\x03web\x00"
    assert dns.decode_name(data, 12) == ((b"web",), 14)


@pytest.mark.parametrize("wire", [
    b"\xc0\x0c",  # points at itself
    b"\xc0\x0e\xc0\x0c",  # a loop of two
    b"\x03we",  # label past the end
    b"\x03web",  # no terminating zero
    b"\xc0",  # half a pointer
    b"\x40abc\x00",  # the obsolete extended label type
    b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x00",
])
def test_decode_name_rejects_malformed(wire: bytes) -> None:
    with pytest.raises(DnsFormatError):
        dns.decode_name(b"\x00" * 12 + wire, 12)


def test_split_name() -> None:
    assert dns.split_name("web.mynet.") == (b"web", b"mynet")
    assert dns.split_name(".") == ()
    assert dns.encode_name("") == b"\x00"
    for bad in ("a..b", "x" * 64, ".".join(["abcdefg"] * 40)):
        with pytest.raises(DnsFormatError):
            dns.split_name(bad)


def test_parse_message_is_strict_about_counts() -> None:
    wire = query("web")
    with pytest.raises(DnsFormatError):
        dns.parse_message(wire[:-2])
    with pytest.raises(DnsFormatError):
        dns.parse_message(HEADER.pack(1, 0, 0, 1, 0, 0))
    with pytest.raises(DnsFormatError):
        dns.parse_message(b"\x00" * 11)


# -- what the server makes of a query ----------------------------------------------------


def test_parse_query_reads_the_question_and_edns_size() -> None:
    q = dns.parse_query(query("Web.", edns=4096))
    assert (q.id, q.labels, q.qtype, q.qclass, q.udp_limit) == (0x1234, (b"Web",), TYPE_A, 1, 4096)
    assert q.question == b"\x03Web\x00\x00\x01\x00\x01"
    assert dns.parse_query(query("web", edns=100)).udp_limit == 512
    assert dns.parse_query(query("web")).udp_limit == 512


def rejected(data: bytes) -> Message:
    with pytest.raises(dns.RejectQuery) as info:
        dns.parse_query(data)
    return dns.parse_message(info.value.reply)


QN = b"\x03web\x00\x00\x01\x00\x01"


@pytest.mark.parametrize("data", [
    HEADER.pack(1, FLAG_RD, 0, 0, 0, 0),  # no question
    HEADER.pack(1, FLAG_RD, 2, 0, 0, 0) + QN + QN,  # two
    HEADER.pack(1, FLAG_RD, 1, 2, 0, 0) + QN,  # ANCOUNT 2
    HEADER.pack(1, FLAG_RD, 1, 0, 2, 0) + QN,  # NSCOUNT 2
    HEADER.pack(1, FLAG_RD, 1, 0, 0, 3) + QN,  # ARCOUNT 3
    HEADER.pack(1, FLAG_RD, 1, 0, 0, 0) + b"\x03we",  # truncated question
    HEADER.pack(1, FLAG_RD, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
    HEADER.pack(1, FLAG_RD, 1, 0, 0, 1) + QN + b"\x00\x00\x29\x10",  # half an OPT
])
def test_malformed_queries_get_a_header_only_formerr(data: bytes) -> None:
    reply = rejected(data)
    assert reply.id == 1
    assert reply.flags == FLAG_QR | FLAG_RD | RCODE_FORMERR  # as dockerd: no RA
    assert not (reply.questions or reply.answers)


def test_other_opcodes_get_notimp_with_the_opcode() -> None:
    reply = rejected(HEADER.pack(3, FLAG_RD | (2 << 11), 1, 0, 0, 0) + QN)
    assert reply.opcode == 2 and reply.rcode == RCODE_NOTIMP
    assert reply.flags & FLAG_QR and not reply.questions


@pytest.mark.parametrize("data", [b"", b"\x00\x05\x01", HEADER.pack(1, FLAG_QR, 1, 0, 0, 0) + QN])
def test_runts_and_responses_are_dropped(data: bytes) -> None:
    with pytest.raises(dns.DropQuery):
        dns.parse_query(data)


def test_counted_sections_may_stop_early() -> None:
    # miekg reads what is there: ANCOUNT 1 with nothing after the question is fine
    q = dns.parse_query(HEADER.pack(9, FLAG_RD, 1, 1, 0, 0) + QN)
    assert q.labels == (b"web",)


# -- local answers -----------------------------------------------------------------------

NAMES = {"web": ["172.18.0.2"], "svc": ["172.18.0.2", "172.18.0.3", "fd00::3", "172.18.0.3"],
         "web.n1": ["172.18.0.2"], "v6": ["fd00::9"], "empty": []}
PTRS = {"172.18.0.2": "web.n1", "fd00::9": "v6.n1"}


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver(NAMES, PTRS)


def test_a_answer_as_dockerd(resolver: FakeResolver) -> None:
    reply = local(resolver, query("web", flags=FLAG_RD))
    assert reply is not None
    assert reply.flags == FLAG_QR | FLAG_RD | FLAG_RA  # RD echoed, RA, never AA
    assert reply.questions == [Question("web", TYPE_A)]
    assert reply.answers == [Record("web", TYPE_A, 1, 600, bytes([172, 18, 0, 2]))]
    assert not reply.authority and not reply.additional
    no_rd = local(resolver, query("web", flags=0))
    assert no_rd is not None and no_rd.flags == FLAG_QR | FLAG_RA


def test_names_are_looked_up_lowercase_without_the_dot_and_echoed_as_asked(
        resolver: FakeResolver) -> None:
    reply = local(resolver, query("WEB.N1."))
    assert reply is not None
    assert resolver.asked[-1] == ("c1", "web.n1")
    assert reply.questions[0].name == "WEB.N1"
    assert [rr.name for rr in reply.answers] == ["WEB.N1"]


def test_aaaa_and_families(resolver: FakeResolver) -> None:
    v4only = local(resolver, query("web", TYPE_AAAA))
    assert v4only is not None and v4only.rcode == RCODE_NOERROR and v4only.answers == []
    both = local(resolver, query("svc", TYPE_AAAA))
    assert both is not None and [IP(rr.rdata) for rr in both.answers] == [IP("fd00::3")]
    a_of_v6 = local(resolver, query("v6", TYPE_A))
    assert a_of_v6 is not None and a_of_v6.answers == []
    empty = local(resolver, query("empty"))
    assert empty is not None and empty.rcode == RCODE_NOERROR and empty.answers == []


def test_every_address_shuffled(resolver: FakeResolver) -> None:
    orders = set()
    for _ in range(200):
        reply = local(resolver, query("svc"))
        assert reply is not None
        got = tuple(str(IP(rr.rdata)) for rr in reply.answers)
        assert sorted(got) == ["172.18.0.2", "172.18.0.3"]
        orders.add(got)
    assert len(orders) == 2


def test_unknown_names_and_other_types_are_forwarded(resolver: FakeResolver) -> None:
    assert local(resolver, query("nosuch")) is None
    assert local(resolver, query("web", TYPE_MX)) is None
    assert local(resolver, query("web", 255)) is None
    assert local(resolver, query("")) is None
    # a label with a dot in it cannot be a container name
    dotted = HEADER.pack(1, FLAG_RD, 1, 0, 0, 0) + b"\x06web.n1\x00\x00\x01\x00\x01"
    assert local(resolver, dotted) is None


class NdotsResolver(FakeResolver):
    def ndots_set(self, key: str) -> bool:
        return key == "ndots"


def test_ndots_set_keeps_single_labels_home() -> None:
    r = NdotsResolver(NAMES)
    for qtype in (TYPE_A, TYPE_AAAA):
        reply_wire = dns.answer_locally(r, "ndots", dns.parse_query(query("single", qtype)), False)
        assert reply_wire is not None
        reply = dns.parse_message(reply_wire)
        assert reply.rcode == RCODE_NOERROR and reply.answers == []
        assert reply.flags == FLAG_QR | FLAG_RD | FLAG_RA
    assert dns.answer_locally(r, "ndots", dns.parse_query(query("two.labels")), False) is None
    assert dns.answer_locally(r, "ndots", dns.parse_query(query("single", TYPE_MX)), False) is None
    assert dns.answer_locally(r, "other", dns.parse_query(query("single")), False) is None
    assert local(FakeResolver(NAMES), query("single")) is None  # no ndots_set: forwarded


def test_class_is_not_looked_at(resolver: FakeResolver) -> None:
    reply = local(resolver, query("web", qclass=3))
    assert reply is not None
    assert reply.questions == [Question("web", TYPE_A, 3)]
    assert reply.answers[0].rclass == 1


def test_ptr(resolver: FakeResolver) -> None:
    reply = local(resolver, query("2.0.18.172.in-addr.arpa", TYPE_PTR))
    assert reply is not None
    assert len(reply.answers) == 1 and reply.answers[0].ttl == 600
    assert dns.decode_name(reply.answers[0].rdata, 0)[0] == (b"web", b"n1")
    v6 = local(resolver, query(dns.ptr_name(IP("fd00::9")).upper(), TYPE_PTR))
    assert v6 is not None and dns.decode_name(v6.answers[0].rdata, 0)[0] == (b"v6", b"n1")
    assert local(resolver, query("9.0.18.172.in-addr.arpa", TYPE_PTR)) is None
    for odd in ("18.172.in-addr.arpa", "x.0.18.172.in-addr.arpa", "300.0.18.172.in-addr.arpa",
                "web", "1.2.3.4.5.in-addr.arpa"):
        assert local(resolver, query(odd, TYPE_PTR)) is None


def many() -> FakeResolver:
    return FakeResolver({"many": [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(40)]})


def test_udp_answers_are_truncated_to_512_with_tc() -> None:
    reply_wire = dns.answer_locally(many(), "c1", dns.parse_query(query("many")), False)
    assert reply_wire is not None and len(reply_wire) <= 512
    reply = dns.parse_message(reply_wire)
    assert reply.flags & FLAG_TC and len(reply.answers) == 30
    assert len({rr.rdata for rr in reply.answers}) == 30


def test_edns_and_tcp_answers_are_whole() -> None:
    for data, tcp in ((query("many", edns=1232), False), (query("many"), True)):
        reply = local(many(), data, tcp)
        assert reply is not None
        assert not reply.flags & FLAG_TC and len(reply.answers) == 40
        assert not reply.additional  # the OPT is not echoed (dockerd 20.10)


# -- forwarding --------------------------------------------------------------------------

Handler = Callable[[Message], bytes | None]


def reply_to(msg: Message, rcode: int = RCODE_NOERROR, answers: int = 1,
             flags: int = 0) -> bytes:
    out = Message(msg.id, FLAG_QR | FLAG_RD | FLAG_RA | flags | rcode, list(msg.questions))
    for i in range(answers):
        out.answers.append(Record(msg.questions[0].name, TYPE_A, 1, 30, bytes([192, 0, 2, i])))
    return out.encode()


class Upstream:
    """A fake resolver on 127.0.0.1: UDP and TCP on one port, answers from ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.closed = False
        # The kernel's free UDP port may be taken for TCP by someone else (the whole
        # suite runs many servers): try again with another port.
        for _ in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.tcp.close()
                self.udp.close()
        else:
            raise OSError("no port free for both UDP and TCP on 127.0.0.1")
        self.udp.settimeout(0.1)       # a closing socket does not wake recvfrom: poll
        self.tcp.listen(8)
        self.seen: list[tuple[str, Message]] = []
        self.threads = [threading.Thread(target=self._udp, daemon=True),
                        threading.Thread(target=self._tcp, daemon=True)]
        for t in self.threads:
            t.start()

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _udp(self) -> None:
        while not self.closed:
            try:
                data, peer = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            msg = dns.parse_message(data)
            self.seen.append(("udp", msg))
            out = self.handler(msg)
            if out is not None:
                self.udp.sendto(out, peer)

    def _tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                try:
                    (n,) = struct.unpack("!H", conn.recv(2))
                    data = b""
                    while len(data) < n:
                        data += conn.recv(n - len(data))
                except (OSError, struct.error):
                    continue
                msg = dns.parse_message(data)
                self.seen.append(("tcp", msg))
                out = self.handler(msg)
                if out is not None:
                    conn.sendall(struct.pack("!H", len(out)) + out)

    def close(self) -> None:
        """Stops both threads (no thread outlives the test: others fork)."""
        self.closed = True
        self.tcp.shutdown(socket.SHUT_RDWR)
        for t in self.threads:
            t.join(5)
        self.udp.close()
        self.tcp.close()


MakeUpstream = Callable[[Handler], Upstream]


@pytest.fixture
def upstreams() -> Iterator[MakeUpstream]:
    made: list[Upstream] = []

    def make(handler: Handler) -> Upstream:
        made.append(Upstream(handler))
        return made[-1]

    yield make
    for u in made:
        u.close()


def closed_port() -> tuple[str, int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return ("127.0.0.1", port)


def forward(ups: list[tuple[str, int]], data: bytes, tcp: bool = False,
            timeout: float = 2.0) -> Message:
    q = dns.parse_query(data)
    return dns.parse_message(asyncio.run(dns.forward(ups, q, data, tcp, timeout)))


def test_forward_passes_nxdomain_through_with_the_clients_id(
        upstreams: MakeUpstream) -> None:
    up = upstreams(lambda m: reply_to(m, RCODE_NXDOMAIN, answers=0))
    reply = forward([up.addr], query("example.org", qid=4242))
    assert reply.id == 4242 and reply.rcode == RCODE_NXDOMAIN
    assert up.seen[0][0] == "udp" and up.seen[0][1].questions == [Question("example.org", TYPE_A)]


def test_forward_tries_the_next_on_servfail_refused_and_silence(
        upstreams: MakeUpstream) -> None:
    failing = upstreams(lambda m: reply_to(m, RCODE_SERVFAIL, answers=0))
    refusing = upstreams(lambda m: reply_to(m, RCODE_REFUSED, answers=0))
    good = upstreams(lambda m: reply_to(m, answers=2))
    reply = forward([failing.addr, refusing.addr, good.addr], query("example.org"))
    assert reply.rcode == RCODE_NOERROR and len(reply.answers) == 2
    assert [len(u.seen) for u in (failing, refusing, good)] == [1, 1, 1]
    silent = upstreams(lambda m: None)
    reply = forward([closed_port(), silent.addr, good.addr], query("example.org"), timeout=0.3)
    assert reply.rcode == RCODE_NOERROR and len(good.seen) == 2
    deadline = time.monotonic() + 5  # the silent one's thread may not have run yet
    while not silent.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(silent.seen) == 1


def test_forward_gives_servfail_when_nobody_answers(
        upstreams: MakeUpstream) -> None:
    silent = upstreams(lambda m: None)
    reply = forward([silent.addr], query("example.org", qid=77), timeout=0.2)
    assert reply.id == 77 and reply.rcode == RCODE_SERVFAIL
    assert reply.questions == [Question("example.org", TYPE_A)]
    assert forward([], query("example.org")).rcode == RCODE_SERVFAIL


def test_forward_ignores_replies_with_another_id(
        upstreams: MakeUpstream) -> None:
    def spoof(m: Message) -> bytes:
        wrong = Message(m.id ^ 1, m.flags, m.questions)
        return reply_to(wrong)
    up = upstreams(spoof)
    assert forward([up.addr], query("example.org"), timeout=0.3).rcode == RCODE_SERVFAIL


def test_forward_passes_tc_through_and_tcp_goes_over_tcp(
        upstreams: MakeUpstream) -> None:
    up = upstreams(lambda m: reply_to(m, answers=0, flags=FLAG_TC | FLAG_AA))
    reply = forward([up.addr], query("big.example"))
    assert reply.flags & FLAG_TC and reply.flags & FLAG_AA
    reply = forward([up.addr], query("big.example"), tcp=True)
    assert up.seen[-1][0] == "tcp" and reply.id == 0x1234


def test_forward_truncates_what_the_client_cannot_take(
        upstreams: MakeUpstream) -> None:
    up = upstreams(lambda m: reply_to(m, answers=60))  # ignores the 512-byte limit
    reply = forward([up.addr], query("big.example"))
    assert reply.flags & FLAG_TC and not reply.answers
    assert reply.questions == [Question("big.example", TYPE_A)]


# -- the whole server on 127.0.0.1 -------------------------------------------------------


def bound() -> tuple[socket.socket, socket.socket, tuple[str, int]]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(16)
    return udp, tcp, ("127.0.0.1", port)


def ask_udp(addr: tuple[str, int], data: bytes, timeout: float = 5.0) -> Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(timeout)
        c.sendto(data, addr)
        return dns.parse_message(c.recv(65535))


def ask_tcp(addr: tuple[str, int], *queries: bytes) -> list[Message]:
    out = []
    with socket.create_connection(addr, timeout=5) as c:
        for data in queries:
            c.sendall(struct.pack("!H", len(data)) + data)
            f = c.makefile("rb")
            (n,) = struct.unpack("!H", f.read(2))
            out.append(dns.parse_message(f.read(n)))
    return out


@pytest.fixture
def server() -> Iterator[dns.DnsServer]:
    s = dns.DnsServer(FakeResolver(NAMES, PTRS))
    s.start()
    yield s
    s.close()


def test_server_answers_udp_and_tcp_and_forwards(
        server: dns.DnsServer, upstreams: MakeUpstream) -> None:
    up = upstreams(lambda m: reply_to(m, RCODE_NXDOMAIN, answers=0))
    assert isinstance(server.resolver, FakeResolver)
    server.resolver.ups = [up.addr]
    udp, tcp, addr = bound()
    server.serve_sockets("c1", udp, tcp, "test")
    assert server.served() == {"c1": "test"}
    assert ask_udp(addr, query("web")).answers[0].rdata == bytes([172, 18, 0, 2])
    assert ask_udp(addr, query("elsewhere.example")).rcode == RCODE_NXDOMAIN
    first, second = ask_tcp(addr, query("svc", TYPE_AAAA), query("nosuch.example", qid=9))
    assert [IP(rr.rdata) for rr in first.answers] == [IP("fd00::3")]
    assert second.id == 9 and second.rcode == RCODE_NXDOMAIN and up.seen[-1][0] == "tcp"
    # malformed: FORMERR over both transports, a response is ignored
    assert ask_udp(addr, HEADER.pack(5, FLAG_RD, 0, 0, 0, 0)).rcode == RCODE_FORMERR
    assert ask_tcp(addr, HEADER.pack(5, FLAG_RD, 2, 0, 0, 0))[0].rcode == RCODE_FORMERR
    with pytest.raises(TimeoutError):
        ask_udp(addr, HEADER.pack(6, FLAG_QR, 1, 0, 0, 0) + QN, timeout=0.3)


def test_server_keeps_answering_while_a_forward_hangs(
        server: dns.DnsServer, upstreams: MakeUpstream) -> None:
    gate = threading.Event()

    def slow(m: Message) -> bytes:
        gate.wait(5)
        return reply_to(m)

    up = upstreams(slow)
    assert isinstance(server.resolver, FakeResolver)
    server.resolver.ups = [up.addr]
    udp, tcp, addr = bound()
    server.serve_sockets("c1", udp, tcp, "test")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        c.sendto(query("slow.example", qid=1), addr)
        assert ask_udp(addr, query("web", qid=2)).id == 2  # not behind the slow one
        gate.set()
        assert dns.parse_message(c.recv(65535)).id == 1


def test_stop_closes_the_sockets(server: dns.DnsServer) -> None:
    udp, tcp, addr = bound()
    server.serve_sockets("c1", udp, tcp, "test")
    server.stop("c1")
    server.stop("c1")
    server.stop("never-served")
    assert server.served() == {}
    assert udp.fileno() == -1 and tcp.fileno() == -1
    again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    again.bind(addr)  # the port is free again
    again.close()


def test_serve_needs_start_and_close_is_final() -> None:
    s = dns.DnsServer(FakeResolver())
    udp, tcp, _ = bound()
    try:
        with pytest.raises(Unavailable):
            s.serve_sockets("c1", udp, tcp, "test")
    finally:
        udp.close()
        tcp.close()
    s.start()
    s.start()
    s.close()
    s.close()
    with pytest.raises(Unavailable):
        s.serve("c1", "/proc/self/ns/net")


class BrokenResolver(FakeResolver):
    def lookup(self, key: str, name: str) -> list[dns.IPAddress] | None:
        raise RuntimeError("engine bug")

    def upstreams(self, key: str) -> list[tuple[str, int]]:
        raise RuntimeError("engine bug")


def test_a_failing_resolver_means_servfail_not_silence() -> None:
    s = dns.DnsServer(BrokenResolver())
    s.start()
    try:
        udp, tcp, addr = bound()
        s.serve_sockets("c1", udp, tcp, "test")
        assert ask_udp(addr, query("web", qid=3)).rcode == RCODE_SERVFAIL
        assert ask_udp(addr, query("web", TYPE_MX, qid=4)).rcode == RCODE_SERVFAIL
        assert ask_tcp(addr, query("web", qid=5))[0].rcode == RCODE_SERVFAIL
    finally:
        s.close()
