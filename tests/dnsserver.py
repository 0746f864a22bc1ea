"""A real DNS server on the loopback interface, serving a test zone (UDP and TCP).

    with serve_zone([("example.com", "TXT", "v=spf1 -all")]) as server:
        resolver = DnsResolver([server.address])
        ...
        server.fail("slow.example.com", how="timeout")
        assert server.count("example.com", "TXT") == 1

Names not in the zone are NXDOMAIN; names that exist without the asked type are
NODATA; both carry an SOA in the authority section whose TTL and MINIMUM are
``negative_ttl`` (None leaves the SOA out). Chosen names can be made to time
out (no reply at all), answer SERVFAIL or REFUSED, or be NXDOMAIN regardless.
UDP answers over ``udp_limit`` bytes are truncated, so clients retry over TCP.
A chosen name can also be truncated on both transports: over UDP all three
truncating failures answer TC=1 with no records; over TCP ``"truncated"``
answers TC=1 again with an empty answer section (its rcode kept: NXDOMAIN for
a missing name), ``"truncated_partial"`` TC=1 with only the first record, and
``"truncated_close"`` closes the connection without a reply.
"""

from __future__ import annotations

__all__ = ["DnsTestServer", "Failure", "Record", "reverse_name", "serve_zone"]

import contextlib
import ipaddress
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSRecord
from dnslib.server import DNSHandler, DNSServer

Failure = Literal["timeout", "servfail", "refused", "nxdomain", "truncated", "truncated_partial",
                  "truncated_close"]


@dataclass(frozen=True)
class Record:
    """One resource record. TXT ``value`` is one string (split into 255-byte
    character-strings when longer) or a tuple of character-strings."""

    name: str
    type: str
    value: str | tuple[str, ...]
    ttl: int = 300

    @classmethod
    def of(cls, spec: Record | tuple[Any, ...]) -> Record:
        if isinstance(spec, Record):
            return spec
        return cls(*spec)


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _txt_strings(value: str | tuple[str, ...]) -> list[bytes]:
    if isinstance(value, tuple):
        return [s.encode() for s in value]
    data = value.encode()
    return [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]


def _rdata(record: Record) -> Any:
    kind = record.type.upper()
    value = record.value
    if kind == "TXT":
        return TXT(_txt_strings(value))
    assert isinstance(value, str), f"{kind} value must be a string"
    if kind == "A":
        return A(value)
    if kind == "AAAA":
        return AAAA(value)
    if kind == "MX":
        preference, host = value.split(None, 1)
        return MX(host, int(preference))
    if kind == "CNAME":
        return CNAME(value)
    if kind == "PTR":
        return PTR(value)
    if kind == "NS":
        return NS(value)
    raise ValueError(f"record type {kind} is not supported by the test server")


def reverse_name(address: str) -> str:
    """The in-addr.arpa / ip6.arpa name of an IP address."""
    return ipaddress.ip_address(address).reverse_pointer


class _Quiet:
    """dnslib's logger, silenced: tests read the query log instead."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class DnsTestServer:
    """The zone, the failure table, the query log, and the UDP and TCP listeners."""

    def __init__(self, records: Iterable[Record | tuple[Any, ...]] = (), *,
                 negative_ttl: int | None = 300, udp_limit: int = 512,
                 host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._failures: dict[tuple[str, str], Failure] = {}
        self.negative_ttl = negative_ttl
        self.udp_limit = udp_limit
        self.host = host
        self.queries: list[tuple[str, str, str]] = []
        """(name, type, "udp" or "tcp") of every query received, in order."""
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []
        self.port = 0
        for record in records:
            self.add(record)

    # -- the zone ---------------------------------------------------------------------------

    def add(self, *records: Record | tuple[Any, ...]) -> None:
        with self._lock:
            self._records.extend(Record.of(r) for r in records)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        with self._lock:
            self._records = [r for r in self._records if not (
                _norm(r.name) == _norm(name)
                and (rdtype is None or r.type.upper() == rdtype.upper()))]

    def fail(self, name: str, rdtype: str = "*", how: Failure = "timeout") -> None:
        """Make queries for ``name`` (of ``rdtype``, or every type) fail as ``how``."""
        with self._lock:
            self._failures[(_norm(name), rdtype.upper())] = how

    def heal(self, name: str | None = None) -> None:
        """Forget the failures for ``name`` (all failures when None)."""
        with self._lock:
            self._failures = {} if name is None else {
                k: v for k, v in self._failures.items() if k[0] != _norm(name)}

    def count(self, name: str, rdtype: str | None = None) -> int:
        """How many queries for ``name`` (of ``rdtype``) arrived, over UDP and TCP."""
        with self._lock:
            return sum(1 for n, t, _ in self.queries
                       if n == _norm(name) and (rdtype is None or t == rdtype.upper()))

    @property
    def address(self) -> str:
        """``host:port`` as DnsResolver takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # -- answering --------------------------------------------------------------------------

    def resolve(self, request: Any, handler: Any) -> Any:
        # From the raw labels: str() of a dnslib name escapes unusual bytes (" " as \\032).
        qname = _norm(".".join(label.decode("utf-8", "replace") for label in request.q.qname.label))
        qtype = QTYPE.get(request.q.qtype)
        with self._lock:
            self.queries.append((qname, str(qtype), handler.protocol))
            failure = self._failures.get((qname, str(qtype))) or self._failures.get((qname, "*"))
            records = list(self._records)
        if failure == "timeout":
            raise DNSError("dropped on purpose")  # the handler sends nothing back
        if failure in ("truncated", "truncated_partial", "truncated_close"):
            if handler.protocol == "udp":
                short = request.reply()
                short.header.tc = 1
                return short
            if failure == "truncated_close":
                raise DNSError("closed on purpose")  # the TCP connection ends with no reply
        reply = request.reply()
        if failure == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if failure == "refused":
            reply.header.rcode = RCODE.REFUSED
            return reply
        if failure == "nxdomain":
            records = []  # as if the zone held nothing at all
        name, found = qname, False
        exists = self._exists(name, records)
        for _ in range(8):  # follow CNAMEs inside the zone
            at_name = [r for r in records if _norm(r.name) == name]
            matching = [r for r in at_name if r.type.upper() == qtype]
            for r in matching:
                rtype = getattr(QTYPE, r.type.upper())
                reply.add_answer(RR(r.name, rtype, rdata=_rdata(r), ttl=r.ttl))
            if matching:
                found = True
                break
            cnames = [r for r in at_name if r.type.upper() == "CNAME"]
            if not cnames or qtype == "CNAME":
                exists = exists and (name == qname or self._exists(name, records))
                break
            r = cnames[0]
            reply.add_answer(RR(r.name, QTYPE.CNAME, rdata=_rdata(r), ttl=r.ttl))
            name = _norm(str(r.value))
        if failure in ("truncated", "truncated_partial"):  # over TCP, TC=1 again
            reply.rr = reply.rr[:1] if failure == "truncated_partial" else []
            reply.header.tc = 1
        if not found:
            if not exists:
                reply.header.rcode = RCODE.NXDOMAIN
            if self.negative_ttl is not None:
                apex = ".".join(name.split(".")[-2:])
                reply.add_auth(RR(apex, QTYPE.SOA, ttl=self.negative_ttl, rdata=SOA(
                    "ns.test.", "hostmaster.test.", (1, 3600, 600, 86400, self.negative_ttl))))
        return reply

    @staticmethod
    def _exists(name: str, records: list[Record]) -> bool:
        """A name exists if it owns records or is an empty non-terminal above some."""
        return any(_norm(r.name) == name or _norm(r.name).endswith("." + name) for r in records)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> DnsTestServer:
        udp_limit = self.udp_limit

        class Handler(DNSHandler):  # type: ignore[misc]
            def get_reply(self, data: bytes) -> bytes:
                request = DNSRecord.parse(data)
                reply = self.server.resolver.resolve(request, self)
                packed: bytes = reply.pack()
                if self.protocol == "udp" and len(packed) > udp_limit:
                    # Header and question only, TC set: the client retries over TCP
                    # (dnslib's own truncate() drops the question, which clients reject).
                    short = request.reply()
                    short.header.tc = 1
                    packed = short.pack()
                return packed

        for _ in range(50):
            udp = DNSServer(self, address=self.host, port=0, logger=_Quiet(), handler=Handler)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(self, address=self.host, port=port, tcp=True, logger=_Quiet(),
                                handler=Handler)
            except OSError:  # that port is taken for TCP: try another
                udp.server.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            break
        else:
            raise RuntimeError("no free port for the test DNS server")
        self._threads = [
            threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.02},
                             name=f"test-dns-{self.port}", daemon=True)
            for server in self._servers
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> DnsTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_zone(records: Iterable[Record | tuple[Any, ...]] = (),
               **options: Any) -> Iterator[DnsTestServer]:
    """Run a DnsTestServer for the duration of a ``with`` block."""
    server = DnsTestServer(records, **options)
    with server:
        yield server
