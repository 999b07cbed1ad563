"""The embedded DNS server of user-defined networks (Docker's 127.0.0.11).

Every container on a user-defined network gets ``nameserver 127.0.0.11`` and
``options ndots:0`` in its resolv.conf. One :class:`DnsServer` per daemon owns a
daemon thread with its own asyncio loop (DNS load never waits for the API's loop,
and the other way round); for each container it binds UDP and TCP
127.0.0.11:53 inside the container's netns and answers from the engine's
:class:`Resolver`: container names, network aliases and compose service names
(aliases) as A/AAAA, container addresses as PTR. Everything else is forwarded to
the container's upstream resolvers, from the daemon's own netns (so loopback
upstreams such as systemd-resolved's 127.0.0.53 work), without ever blocking
other queries.

As dockerd 20.10 answers (observed with its resolver, miekg/dns underneath):

- local answers: flags QR|RA, RD echoed, never AA; TTL 600; no authority or
  additional records; an EDNS OPT in the query is accepted but not echoed;
  the question and the answers' owner name keep the client's spelling
  (``WEB.`` is answered as ``WEB.``: names match case-insensitively);
- every address of a name, shuffled per query (round robin for clients that
  take the first); a name that is local but has no address of the asked family
  (AAAA of an IPv4-only container) is NOERROR with no answer, not forwarded;
- PTR of a container address is ``<container>.<network>.``; PTR of any other
  address, other query types (MX, TXT, ANY...) even for a local name, and
  unknown names are forwarded. The class of the question is not looked at
  (a CHAOS A query of a container name gets the IN answer);
- UDP answers larger than max(512, EDNS size) drop answers from the end until
  they fit and set TC; TCP answers are not truncated (up to 64 KiB);
- a header with QR set, or shorter than 12 bytes: dropped. An opcode other
  than QUERY: NOTIMP (header only, opcode echoed). QDCOUNT != 1, ANCOUNT > 1,
  NSCOUNT > 1, ARCOUNT > 2 or a question that does not parse (truncated,
  compression loop): FORMERR, header only (RD echoed, no RA, QDCOUNT 0);
- with ndots > 0 in the container's own --dns-option, a single-label A/AAAA
  name that is not local gets NOERROR with no answer instead of being forwarded
  (ketch asks the resolver's optional ``ndots_set``, see NdotsResolver);
- forwarding goes over the query's own transport; an upstream's answer is
  passed through as it is (NXDOMAIN, TC...), SERVFAIL and REFUSED go on to the
  next upstream (at most three; 20.10 waits 4 s for each, ketch 2 s). dockerd
  keeps the client's query id upstream; ketch sends a random one and puts the
  client's back. With no upstream answering, dockerd 20.10 sends nothing at all
  (the client waits for its own timeout); Docker 23 and later answer SERVFAIL,
  which ketch does, so clients fail fast. An upstream UDP answer bigger than the
  client can take becomes the header with TC and the question (20.10 sends an
  empty NOERROR without TC there, a bug: the client never retries over TCP).

The resolv.conf dockerd 20.10 writes for such a container (the engine's part):
``search`` (--dns-search, else the host's), ``nameserver 127.0.0.11``, then the
IPv6 external nameservers (it forwards to IPv4 ones only), and ``options``:
the user's (--dns-option, else the host's) plus ``ndots:0`` unless they set
ndots > 0 themselves.

Differences that do not show to clients: answers' owner names are compressed
(pointers to the question), so up to 30 A records fit a plain 512-byte UDP
answer where dockerd fits 24.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import random
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

from ketch.errors import Conflict, NotFound, System, Unavailable
from ketch.linux.netns import run_in_netns

log = logging.getLogger("ketch.network.dns")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DNS_ADDRESS = "127.0.0.11"
DNS_PORT = 53
TTL = 600
UDP_LIMIT = 512  # RFC 1035 without EDNS
TCP_LIMIT = 65535
MAX_UPSTREAMS = 3  # dockerd's maxExtDNS
FORWARD_TIMEOUT = 2.0  # per upstream
MAX_FORWARDS = 100  # concurrent forwarded queries per container (dockerd's maxConcurrent)
MAX_TCP_CLIENTS = 64  # per container: a misbehaving one cannot eat the daemon's fds
TCP_IDLE_TIMEOUT = 10.0

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_PTR = 12
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1

OPCODE_QUERY = 0

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_CD = 0x0010

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_QUESTION_FIXED = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_MAX_NAME = 255
_MAX_POINTERS = 128  # a 255-byte name has at most 127 labels, each may be a pointer away


class DnsFormatError(ValueError):
    """A DNS message that does not parse."""


# -- names -------------------------------------------------------------------------------


def decode_name(data: bytes, offset: int) -> tuple[tuple[bytes, ...], int]:
    """The labels of the name at ``offset`` and the offset after it (pointers followed).

    Pointers may point anywhere in the message (miekg/dns, under dockerd, takes
    forward ones too); a bounded number of hops ends loops.
    """
    labels: list[bytes] = []
    end = -1  # where the name ends in the message, once a pointer was followed
    length = 1
    hops = 0
    pos = offset
    limit = len(data)
    while True:
        if pos >= limit:
            raise DnsFormatError("name runs past the end of the message")
        n = data[pos]
        if n == 0:
            pos += 1
            break
        kind = n & 0xC0
        if kind == 0xC0:
            if pos + 1 >= limit:
                raise DnsFormatError("truncated compression pointer")
            hops += 1
            if hops > _MAX_POINTERS:
                raise DnsFormatError("compression pointer loop")
            target = ((n & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            pos = target
            continue
        if kind:
            raise DnsFormatError(f"unknown label type {n:#x}")
        if pos + 1 + n > limit:
            raise DnsFormatError("label runs past the end of the message")
        length += n + 1
        if length > _MAX_NAME:
            raise DnsFormatError("name longer than 255 bytes")
        labels.append(data[pos + 1:pos + 1 + n])
        pos += 1 + n
    return tuple(labels), (end if end >= 0 else pos)


def split_name(name: str) -> tuple[bytes, ...]:
    """The labels of a dotted name ("web.mynet." or "web.mynet"; "." and "" are the root)."""
    text = name[:-1] if name.endswith(".") else name
    if not text:
        return ()
    labels = tuple(part.encode("ascii") for part in text.split("."))
    for label in labels:
        if not label or len(label) > 63:
            raise DnsFormatError(f"invalid name {name!r}")
    if sum(len(label) + 1 for label in labels) + 1 > _MAX_NAME:
        raise DnsFormatError(f"name longer than 255 bytes: {name!r}")
    return labels


def encode_labels(labels: tuple[bytes, ...]) -> bytes:
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\0"


def encode_name(name: str) -> bytes:
    """``name`` in wire form, uncompressed."""
    return encode_labels(split_name(name))


def name_text(labels: tuple[bytes, ...]) -> str:
    """Dotted text of labels, without the trailing dot (latin-1: any byte survives)."""
    return ".".join(label.decode("latin-1") for label in labels)


# -- messages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    name: str
    qtype: int
    qclass: int = CLASS_IN


@dataclass(frozen=True)
class Record:
    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes


@dataclass
class Message:
    """A whole DNS message; the server's hot path does not build these, tests and tools do."""

    id: int
    flags: int
    questions: list[Question] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    def encode(self, compress: bool = True) -> bytes:
        out = bytearray(_HEADER.pack(self.id, self.flags, len(self.questions), len(self.answers),
                                     len(self.authority), len(self.additional)))
        seen: dict[tuple[bytes, ...], int] = {}

        def put_name(name: str) -> None:
            labels = split_name(name)
            key = tuple(label.lower() for label in labels)
            for i in range(len(labels)):
                if compress and key[i:] in seen:
                    out.extend(_U16.pack(0xC000 | seen[key[i:]]))
                    return
                if compress and len(out) < 0x3FFF:
                    seen[key[i:]] = len(out)
                out.append(len(labels[i]))
                out.extend(labels[i])
            out.append(0)

        for q in self.questions:
            put_name(q.name)
            out.extend(_QUESTION_FIXED.pack(q.qtype, q.qclass))
        for rr in (*self.answers, *self.authority, *self.additional):
            put_name(rr.name)
            out.extend(_RR_FIXED.pack(rr.rtype, rr.rclass, rr.ttl, len(rr.rdata)))
            out.extend(rr.rdata)
        return bytes(out)


def _parse_record(data: bytes, pos: int) -> tuple[Record, int]:
    labels, pos = decode_name(data, pos)
    if pos + _RR_FIXED.size > len(data):
        raise DnsFormatError("record header runs past the end of the message")
    rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
    pos += _RR_FIXED.size
    if pos + rdlen > len(data):
        raise DnsFormatError("record data runs past the end of the message")
    return Record(name_text(labels), rtype, rclass, ttl, data[pos:pos + rdlen]), pos + rdlen


def parse_message(data: bytes) -> Message:
    """A whole message, strictly: every counted record must be there."""
    if len(data) < _HEADER.size:
        raise DnsFormatError("message shorter than its header")
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    msg = Message(qid, flags)
    pos = _HEADER.size
    for _ in range(qd):
        labels, pos = decode_name(data, pos)
        if pos + _QUESTION_FIXED.size > len(data):
            raise DnsFormatError("question runs past the end of the message")
        qtype, qclass = _QUESTION_FIXED.unpack_from(data, pos)
        pos += _QUESTION_FIXED.size
        msg.questions.append(Question(name_text(labels), qtype, qclass))
    for count, section in ((an, msg.answers), (ns, msg.authority), (ar, msg.additional)):
        for _ in range(count):
            rr, pos = _parse_record(data, pos)
            section.append(rr)
    return msg


def ptr_name(ip: IPAddress) -> str:
    """The in-addr.arpa / ip6.arpa name of an address (``ipaddress`` spells it so)."""
    return ip.reverse_pointer


# -- the server's view of a query -------------------------------------------------------


class DropQuery(Exception):
    """Not worth an answer (a response, a runt): dropped as dockerd does."""


class RejectQuery(Exception):
    """Answered with a header only (FORMERR, NOTIMP): ``reply`` is that answer."""

    def __init__(self, reply: bytes) -> None:
        super().__init__("rejected")
        self.reply = reply


@dataclass(slots=True)
class Query:
    """What the server needs of a query: its id, flags, the single question, the UDP limit."""

    id: int
    flags: int
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int
    question: bytes  # re-encoded uncompressed, so 0xC00C points at its name in replies
    udp_limit: int


def _header_only(qid: int, flags: int, rcode: int) -> bytes:
    reply_flags = FLAG_QR | (flags & (0x7800 | FLAG_RD | FLAG_CD)) | rcode
    return _HEADER.pack(qid, reply_flags, 0, 0, 0, 0)


def parse_query(data: bytes) -> Query:
    """The query in ``data``; raises DropQuery or RejectQuery (with the reply) as dockerd's server."""
    if len(data) < _HEADER.size:
        raise DropQuery()
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    if flags & FLAG_QR:
        raise DropQuery()
    if (flags >> 11) & 0xF != OPCODE_QUERY:
        raise RejectQuery(_header_only(qid, flags, RCODE_NOTIMP))
    if qd != 1 or an > 1 or ns > 1 or ar > 2:
        raise RejectQuery(_header_only(qid, flags, RCODE_FORMERR))
    try:
        labels, pos = decode_name(data, _HEADER.size)
        if pos + 4 > len(data):
            raise DnsFormatError("question runs past the end of the message")
        qtype, qclass = _QUESTION_FIXED.unpack_from(data, pos)
        pos += 4
        udp_limit = UDP_LIMIT
        # The other sections may stop early (miekg reads what is there); a record
        # that is there must parse. Only an OPT matters: its class is the UDP size.
        for index in range(an + ns + ar):
            if pos >= len(data):
                break
            rr, pos = _parse_record(data, pos)
            if rr.rtype == TYPE_OPT and index >= an + ns:
                udp_limit = max(UDP_LIMIT, rr.rclass)
    except DnsFormatError as exc:
        raise RejectQuery(_header_only(qid, flags, RCODE_FORMERR)) from exc
    question = encode_labels(labels) + _QUESTION_FIXED.pack(qtype, qclass)
    return Query(qid, flags, labels, qtype, qclass, question, udp_limit)


def _local_name(labels: tuple[bytes, ...]) -> str | None:
    """The name to look up: lower-case, no trailing dot; None when no container can have it."""
    if not labels:
        return None
    for label in labels:
        if b"." in label:
            return None
    try:
        return b".".join(labels).decode("ascii").lower()
    except UnicodeDecodeError:
        return None


def _reverse_address(labels: tuple[bytes, ...]) -> IPAddress | None:
    """The address a PTR name stands for, or None if it is not a plain reverse name."""
    low = [label.lower() for label in labels]
    try:
        if len(low) == 6 and low[4:] == [b"in-addr", b"arpa"]:
            if not all(label.isdigit() for label in low[:4]):
                return None
            return ipaddress.IPv4Address(".".join(label.decode() for label in reversed(low[:4])))
        if len(low) == 34 and low[32:] == [b"ip6", b"arpa"]:
            nibbles = low[:32]
            if not all(len(n) == 1 and n in b"0123456789abcdef" for n in nibbles):
                return None
            return ipaddress.IPv6Address(int(b"".join(reversed(nibbles)), 16))
    except ValueError:
        return None
    return None


def _reply(query: Query, rtype: int, rdatas: list[bytes], limit: int, truncate_flag: bool) -> bytes:
    """A local answer: every rdata under the question's name, trimmed from the end to fit."""
    flags = FLAG_QR | FLAG_RA | (query.flags & (FLAG_RD | FLAG_CD))
    base = _HEADER.size + len(query.question)
    records: list[bytes] = []
    size = base
    for rdata in rdatas:
        rr = b"\xc0\x0c" + _RR_FIXED.pack(rtype, CLASS_IN, TTL, len(rdata)) + rdata
        if size + len(rr) > limit:
            if truncate_flag:
                flags |= FLAG_TC
            break
        records.append(rr)
        size += len(rr)
    return b"".join((_HEADER.pack(query.id, flags, 1, len(records), 0, 0), query.question,
                     *records))


def servfail(query: Query) -> bytes:
    """SERVFAIL with the question, as moby's resolver sends when no upstream answered."""
    flags = FLAG_QR | (query.flags & (FLAG_RD | FLAG_CD)) | RCODE_SERVFAIL
    return _HEADER.pack(query.id, flags, 1, 0, 0, 0) + query.question


def _truncated(query: Query, reply: bytes) -> bytes:
    """An upstream's UDP reply too big for the client: its header with TC and the question."""
    flags = _U16.unpack_from(reply, 2)[0] | FLAG_TC
    return _HEADER.pack(query.id, flags, 1, 0, 0, 0) + query.question


# -- the engine's side -------------------------------------------------------------------


class Resolver(Protocol):
    """Implemented by the engine. Called on the DNS thread: must be thread-safe and quick
    (in-memory lookups, no I/O), it answers every query of every container."""

    def lookup(self, key: str, name: str) -> list[IPAddress] | None:
        """Addresses of a container name/alias as seen from container `key`; None = not a
        local name (forward it). ``name`` is lower-case, without the trailing dot."""
        ...

    def reverse(self, key: str, ip: IPAddress) -> str | None:
        """PTR name for a container address seen from `key` (e.g. 'web.mynet'), None = forward."""
        ...

    def upstreams(self, key: str) -> list[tuple[str, int]]:
        """External resolvers (ip, port) for `key`'s queries."""
        ...


class NdotsResolver(Resolver, Protocol):
    """A Resolver that also knows the containers' resolv.conf options (optional)."""

    def ndots_set(self, key: str) -> bool:
        """Whether `key`'s resolv.conf options were given ndots > 0 by the user
        (--dns-option ndots:N); the engine's default for user networks is ndots:0."""
        ...


def _ndots_set(resolver: Resolver, key: str) -> bool:
    method = getattr(resolver, "ndots_set", None)
    return bool(method(key)) if method is not None else False


def answer_locally(resolver: Resolver, key: str, query: Query, tcp: bool) -> bytes | None:
    """The reply to ``query`` from local names, or None when it is to be forwarded."""
    qtype = query.qtype
    if qtype in (TYPE_A, TYPE_AAAA):
        name = _local_name(query.labels)
        if name is None:
            return None
        found = resolver.lookup(key, name)
        if found is None:
            # As dockerd: when the container's own options set ndots > 0, a
            # single-label name that is not local is not sent out; the empty
            # answer sends the client on to its search domains.
            if len(query.labels) == 1 and _ndots_set(resolver, key):
                return _reply(query, qtype, [], UDP_LIMIT, False)
            return None
        version = 4 if qtype == TYPE_A else 6
        rdatas = [ip.packed for ip in found if ip.version == version]
        if len(rdatas) > 1:
            # an address twice (two names of one endpoint) is answered once, as moby
            rdatas = list(dict.fromkeys(rdatas))
            random.shuffle(rdatas)
        return _reply(query, qtype, rdatas, TCP_LIMIT if tcp else query.udp_limit, not tcp)
    if qtype == TYPE_PTR:
        ip = _reverse_address(query.labels)
        if ip is None:
            return None
        target = resolver.reverse(key, ip)
        if target is None:
            return None
        return _reply(query, TYPE_PTR, [encode_name(target)],
                      TCP_LIMIT if tcp else query.udp_limit, not tcp)
    return None


# -- forwarding --------------------------------------------------------------------------


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


async def _ask_udp(loop: asyncio.AbstractEventLoop, upstream: tuple[str, int],
                   data: bytes) -> bytes:
    sock = socket.socket(_family(upstream[0]), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        # Connected: only the upstream's datagrams arrive, and an ICMP "port
        # unreachable" fails the recv at once instead of waiting for the timeout.
        sock.connect(upstream)
        sock.send(data)
        while True:
            reply = await loop.sock_recv(sock, 65535)
            if len(reply) >= _HEADER.size and reply[:2] == data[:2] and reply[2] & 0x80:
                return reply
    finally:
        sock.close()


async def _ask_tcp(upstream: tuple[str, int], data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(upstream[0], upstream[1])
    try:
        writer.write(_U16.pack(len(data)) + data)
        await writer.drain()
        while True:
            (length,) = _U16.unpack(await reader.readexactly(2))
            reply = await reader.readexactly(length)
            if len(reply) >= _HEADER.size and reply[:2] == data[:2] and reply[2] & 0x80:
                return reply
    finally:
        writer.close()


async def forward(upstreams: list[tuple[str, int]], query: Query, data: bytes, tcp: bool,
                  timeout: float = FORWARD_TIMEOUT) -> bytes:
    """The first usable upstream answer to ``data`` with the client's id, else SERVFAIL.

    Each upstream gets ``timeout`` seconds; SERVFAIL and REFUSED try the next one,
    every other answer (NXDOMAIN, a TC one) is the client's.
    """
    loop = asyncio.get_running_loop()
    for upstream in upstreams[:MAX_UPSTREAMS]:
        # A fresh id per upstream query, so a reply cannot be guessed from the
        # client's id; the client's is put back on the way out.
        wire = os.urandom(2) + data[2:]
        try:
            if tcp:
                reply = await asyncio.wait_for(_ask_tcp(upstream, wire), timeout)
            else:
                reply = await asyncio.wait_for(_ask_udp(loop, upstream, wire), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("dns: upstream %s:%d failed: %s", upstream[0], upstream[1], exc)
            continue
        if reply[3] & 0xF in (RCODE_SERVFAIL, RCODE_REFUSED):
            continue
        reply = _U16.pack(query.id) + reply[2:]
        if not tcp and len(reply) > query.udp_limit:
            return _truncated(query, reply)
        return reply
    return servfail(query)


# -- the server --------------------------------------------------------------------------


@dataclass(eq=False)
class _Listener:
    key: str
    netns_path: str
    udp: asyncio.DatagramTransport | None = None
    udp_closed: asyncio.Future[None] | None = None
    tcp: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    tcp_clients: int = 0
    forwards: int = 0


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, listener: _Listener,
                 closed: asyncio.Future[None]) -> None:
        self.server = server
        self.listener = listener
        self.closed = closed
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for a reply to a client that went away: nothing to do.
        log.debug("dns: %s: udp error: %s", self.listener.key, exc)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        transport = self.transport
        assert transport is not None
        try:
            query = parse_query(data)
        except DropQuery:
            return
        except RejectQuery as rejected:
            transport.sendto(rejected.reply, addr)
            return
        listener = self.listener
        try:
            reply = answer_locally(self.server.resolver, listener.key, query, tcp=False)
        except Exception:
            log.exception("dns: %s: resolver failed", listener.key)
            reply = servfail(query)
        if reply is not None:
            transport.sendto(reply, addr)
            return
        if listener.forwards >= MAX_FORWARDS:
            transport.sendto(servfail(query), addr)
            return
        listener.forwards += 1
        task = asyncio.get_running_loop().create_task(
            self._forward(transport, query, data, addr))
        listener.tasks.add(task)
        task.add_done_callback(self._forward_done)

    def _forward_done(self, task: asyncio.Task[None]) -> None:
        self.listener.forwards -= 1
        self.listener.tasks.discard(task)

    async def _forward(self, transport: asyncio.DatagramTransport, query: Query, data: bytes,
                       addr: tuple[str, int]) -> None:
        try:
            reply = await self.server.forward_for(self.listener.key, query, data, tcp=False)
        except Exception:
            log.exception("dns: %s: forwarding failed", self.listener.key)
            reply = servfail(query)
        if not transport.is_closing():
            transport.sendto(reply, addr)


T = TypeVar("T")


class DnsServer:
    """127.0.0.11:53 in every served container's netns, answered on one thread of its own."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._lock = threading.Lock()  # serialises serve/stop/close
        self._served: dict[str, str] = {}  # key -> netns path, under _lock
        self._idents: dict[str, tuple[int, int]] = {}  # key -> the netns's (dev, ino)
        self._listeners: dict[str, _Listener] = {}  # touched on the loop's thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle (any thread) --------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise Unavailable("the embedded DNS server is closed")
            if self._thread is not None:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._loop = loop
            self._thread = threading.Thread(target=run, name="ketch-dns", daemon=True)
            self._thread.start()
            ready.wait()

    def serve(self, key: str, netns_path: str) -> None:
        """Answer on UDP and TCP 127.0.0.11:53 inside ``netns_path`` for ``key``.

        Idempotent; serving a key again with another netns (a restarted
        container) moves it there. The netns's lo must be up.
        """
        with self._lock:
            self._running()
            # The namespace itself, not its path, decides: /proc/<pid>/ns/net of a
            # reused pid is another netns.
            ident = _netns_identity(netns_path)
            if key in self._served and self._idents.get(key) == ident:
                return
            if key in self._served:
                self._call(self._detach(key))
                del self._served[key]
                self._idents.pop(key, None)
            udp, tcp = _bind_in_netns(netns_path)
            self._attach_locked(key, netns_path, udp, tcp)
            self._idents[key] = ident

    def serve_sockets(self, key: str, udp: socket.socket, tcp: socket.socket,
                      where: str) -> None:
        """Serve ``key`` on sockets the caller bound (a UDP one, a listening TCP one).

        What :meth:`serve` does after binding in the netns; for tests (no root
        needed) and for callers that bind elsewhere. The server owns the sockets
        from here on; ``where`` names them for :meth:`served`.
        """
        with self._lock:
            self._running()
            if key in self._served:
                self._call(self._detach(key))
                del self._served[key]
                self._idents.pop(key, None)
            udp.setblocking(False)
            tcp.setblocking(False)
            self._attach_locked(key, where, udp, tcp)

    def _attach_locked(self, key: str, where: str, udp: socket.socket,
                       tcp: socket.socket) -> None:
        try:
            self._call(self._attach(key, where, udp, tcp))
        except BaseException:
            udp.close()
            tcp.close()
            raise
        self._served[key] = where

    def stop(self, key: str) -> None:
        """Close ``key``'s sockets (the port is free when this returns); unknown keys are fine."""
        with self._lock:
            if key not in self._served or self._loop is None or self._closed:
                return
            self._call(self._detach(key))
            del self._served[key]
            self._idents.pop(key, None)

    def close(self) -> None:
        """Stop serving everything and end the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            for key in list(self._served):
                self._call(self._detach(key))
            self._served.clear()
            self._idents.clear()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def served(self) -> dict[str, str]:
        """key -> netns path of what is being served (a copy)."""
        with self._lock:
            return dict(self._served)

    def _running(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise Unavailable("the embedded DNS server is closed")
        if self._loop is None or self._thread is None:
            raise Unavailable("the embedded DNS server is not started")
        if threading.current_thread() is self._thread:
            raise System("DnsServer.serve/stop called on the DNS thread itself")
        return self._loop

    def _call(self, coro: Coroutine[object, object, T]) -> T:
        """Run ``coro`` on the loop and wait for it (callers hold _lock)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # -- on the loop's thread ----------------------------------------------------------

    async def _attach(self, key: str, netns_path: str, udp: socket.socket,
                      tcp: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        listener = _Listener(key, netns_path)
        closed: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self, listener, closed), sock=udp)
        listener.udp = transport
        listener.udp_closed = closed
        try:
            listener.tcp = await asyncio.start_server(
                lambda r, w: self._tcp_client(listener, r, w), sock=tcp)
        except BaseException:
            transport.close()
            raise
        self._listeners[key] = listener

    async def _detach(self, key: str) -> None:
        listener = self._listeners.pop(key, None)
        if listener is None:
            return
        if listener.tcp is not None:
            listener.tcp.close()  # closes the listening socket at once
        if listener.udp is not None:
            listener.udp.close()
        tasks = list(listener.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if listener.udp_closed is not None:
            await listener.udp_closed  # the socket is closed once connection_lost ran

    async def forward_for(self, key: str, query: Query, data: bytes, tcp: bool) -> bytes:
        try:
            upstreams = self.resolver.upstreams(key)
        except Exception:
            log.exception("dns: %s: resolver failed to name upstreams", key)
            return servfail(query)
        return await forward(upstreams, query, data, tcp)

    async def _tcp_client(self, listener: _Listener, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if listener.tcp_clients >= MAX_TCP_CLIENTS or task is None:
            writer.close()
            return
        listener.tcp_clients += 1
        listener.tasks.add(task)
        try:
            while True:
                (length,) = _U16.unpack(
                    await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT))
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT)
                reply = await self._answer_tcp(listener.key, data)
                if reply is not None:
                    writer.write(_U16.pack(len(reply)) + reply)
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("dns: %s: tcp client failed", listener.key)
        finally:
            listener.tcp_clients -= 1
            listener.tasks.discard(task)
            writer.close()

    async def _answer_tcp(self, key: str, data: bytes) -> bytes | None:
        try:
            query = parse_query(data)
        except DropQuery:
            return None
        except RejectQuery as rejected:
            return rejected.reply
        try:
            reply = answer_locally(self.resolver, key, query, tcp=True)
        except Exception:
            log.exception("dns: %s: resolver failed", key)
            return servfail(query)
        if reply is not None:
            return reply
        return await self.forward_for(key, query, data, tcp=True)


_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH14x")


def _interface_flags(sock: socket.socket, name: str) -> int:
    """The IFF_* flags of interface ``name`` in the netns of ``sock``."""
    import fcntl

    out = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, _IFREQ.pack(name.encode(), 0))
    return int(_IFREQ.unpack(out)[1])


def _netns_identity(netns_path: str) -> tuple[int, int]:
    try:
        st = os.stat(netns_path)
    except FileNotFoundError as exc:
        raise NotFound(f"network namespace {netns_path} not found") from exc
    except OSError as exc:
        raise System(f"network namespace {netns_path}: {exc.strerror}") from exc
    return st.st_dev, st.st_ino


def _bind_in_netns(netns_path: str) -> tuple[socket.socket, socket.socket]:
    """UDP and listening TCP sockets on 127.0.0.11:53 inside ``netns_path``."""

    def make() -> tuple[socket.socket, socket.socket]:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # The kernel lets 127.0.0.11 be bound while lo is down, but nothing
            # sent there would arrive: refuse, as the caller has a step missing.
            flags = _interface_flags(udp, "lo")
            if not flags & _IFF_UP:
                raise OSError(errno.ENETDOWN, "lo is down")
            # TCP: connections of a stopped server may linger in TIME_WAIT, and a
            # restarted container's server must still bind. UDP: a DNS server in the
            # container that binds 0.0.0.0:53 with SO_REUSEADDR (dnsmasq, unbound...)
            # can share the port; 127.0.0.11 still reaches us, the exact address
            # winning over the wildcard. (dockerd avoids the clash altogether by
            # listening on random ports behind an iptables DNAT in the container.)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((DNS_ADDRESS, DNS_PORT))
            tcp.bind((DNS_ADDRESS, DNS_PORT))
            tcp.listen(128)
            udp.setblocking(False)
            tcp.setblocking(False)
        except BaseException:
            udp.close()
            tcp.close()
            raise
        return udp, tcp

    try:
        return run_in_netns(netns_path, make)
    except OSError as exc:
        where = f"{DNS_ADDRESS}:{DNS_PORT} in network namespace {netns_path}"
        if exc.errno in (errno.EADDRNOTAVAIL, errno.ENETDOWN, errno.ENODEV):
            raise Unavailable(f"embedded DNS: cannot bind {where}: "
                              "the loopback interface is down there") from exc
        if exc.errno == errno.EADDRINUSE:
            raise Conflict(f"embedded DNS: {where} is already in use") from exc
        raise System(f"embedded DNS: cannot bind {where}: {exc.strerror}") from exc

