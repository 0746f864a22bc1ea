"""Reading one DMARC aggregate report out of the message that carries it (pure: bytes in, a report out).

RFC 7489 7.2.1.1: the report is an XML document (appendix C), sent gzip'd, zip'd or plain, as an
attachment or the body. It comes from anyone on the internet, so every step is bounded: the
decompressed size (a zip or gzip bomb stops at ``ReportLimits.max_xml_bytes``), the number of rows,
and the XML itself is read by ``defusedxml``, which refuses DTDs, entities and external references.
RFC 7489's schema has no namespace; the DMARCbis draft adds ``urn:ietf:params:xml:ns:dmarc-2.0``:
both are read, by local element names.
"""

from __future__ import annotations

__all__ = [
    "AggregateReport",
    "AuthDkim",
    "AuthSpf",
    "PolicyPublished",
    "ReportError",
    "ReportLimits",
    "ReportMetadata",
    "ReportRow",
    "parse_report_message",
    "parse_report_xml",
]

import email
import email.policy
import io
import ipaddress
import zipfile
import zlib
from datetime import UTC, datetime
from email.message import Message
from typing import Annotated, Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree
import msgspec


class ReportError(ValueError):
    """The message holds no readable aggregate report; the text says which element or part and what is wrong."""


class ReportLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What reading one report may cost."""

    max_xml_bytes: Annotated[int, msgspec.Meta(ge=1)] = 16 * 1024 * 1024
    """Largest XML document, after decompression: a bigger one (a zip or gzip bomb) is refused."""
    max_records: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    """Most ``record`` rows in one report."""


class ReportMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """``report_metadata``: who reported, and the period covered (UTC)."""

    org_name: str
    email: str
    report_id: str
    begin: datetime
    end: datetime


class PolicyPublished(msgspec.Struct, frozen=True, kw_only=True):
    """``policy_published``: our DMARC record as the reporter found it."""

    domain: str
    adkim: str | None
    aspf: str | None
    p: str
    sp: str | None
    pct: int | None


class AuthDkim(msgspec.Struct, frozen=True, kw_only=True):
    """One ``auth_results/dkim``: a signature the reporter checked."""

    domain: str
    result: str
    selector: str | None


class AuthSpf(msgspec.Struct, frozen=True, kw_only=True):
    """One ``auth_results/spf``."""

    domain: str
    result: str


class ReportRow(msgspec.Struct, frozen=True, kw_only=True):
    """One ``record``: ``count`` messages from ``source_ip`` with the same results."""

    source_ip: str
    count: int
    disposition: str
    dkim: str
    """``policy_evaluated/dkim``: whether an aligned DKIM signature passed."""
    spf: str
    """``policy_evaluated/spf``: whether an aligned SPF check passed."""
    header_from: str
    envelope_from: str | None
    dkim_results: tuple[AuthDkim, ...]
    spf_results: tuple[AuthSpf, ...]


class AggregateReport(msgspec.Struct, frozen=True, kw_only=True):
    """One aggregate report (RFC 7489 appendix C ``feedback``)."""

    metadata: ReportMetadata
    policy: PolicyPublished
    rows: tuple[ReportRow, ...]


_ZIP = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})
_GZIP = frozenset({"application/gzip", "application/x-gzip"})
_XML = frozenset({"text/xml", "application/xml"})
_BY_SUFFIX = ((".zip", "zip"), (".xml.gz", "gzip"), (".gz", "gzip"), (".xml", "xml"))
"""Some reporters send ``application/octet-stream``: the file name says what it is."""

_DISPOSITIONS = frozenset({"none", "quarantine", "reject"})
_ALIGNED = frozenset({"pass", "fail"})
_POLICIES = frozenset({"none", "quarantine", "reject"})
_ALIGNMENT = frozenset({"r", "s"})
_DKIM_RESULTS = frozenset({"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"})
_SPF_RESULTS = frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"})


def parse_report_message(raw: bytes, limits: ReportLimits | None = None) -> AggregateReport:
    """The aggregate report ``raw`` (a whole RFC 5322 message) carries; ``ReportError`` says why there is none."""
    limits = limits or ReportLimits()
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = _kind_of(part)
        if kind is None:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            raise ReportError(f"the {part.get_content_type()} part is empty")
        return parse_report_xml(_document(payload, kind, limits), limits)
    types = sorted({p.get_content_type() for p in message.walk() if not p.is_multipart()})
    raise ReportError("no report in the message: expected an application/zip, application/gzip or text/xml "
                      f"part, found {', '.join(types) or 'none'}")


def _kind_of(part: Message) -> str | None:
    content_type = part.get_content_type()
    if content_type in _ZIP:
        return "zip"
    if content_type in _GZIP:
        return "gzip"
    if content_type in _XML:
        return "xml"
    name = (part.get_filename() or "").lower()
    if content_type == "application/octet-stream" or part.get_content_disposition() == "attachment":
        return next((kind for suffix, kind in _BY_SUFFIX if name.endswith(suffix)), None)
    return None


def _document(payload: bytes, kind: str, limits: ReportLimits) -> bytes:
    if kind == "zip":
        return _unzip(payload, limits.max_xml_bytes)
    if kind == "gzip":
        return _gunzip(payload, limits.max_xml_bytes)
    if len(payload) > limits.max_xml_bytes:
        raise ReportError(f"the XML report is {len(payload)} bytes, over the limit of {limits.max_xml_bytes}")
    return payload


def _over(limit: int, what: str) -> ReportError:
    return ReportError(f"the {what} report decompresses to more than {limit} bytes (the limit): refused")


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate a gzip stream, stopping as soon as the output would pass ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=31)
    out = bytearray()
    pending = data
    try:
        while pending and not inflater.eof:
            # max_length bounds each step: a bomb never gets more than limit + 1 bytes of memory.
            out += inflater.decompress(pending, limit + 1 - len(out))
            if len(out) > limit:
                raise _over(limit, "gzip")
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise ReportError(f"the gzip attachment is not a valid gzip stream: {exc}") from None
    if not inflater.eof:
        raise ReportError("the gzip attachment is truncated (the stream does not end)")
    return bytes(out)


def _unzip(data: bytes, limit: int) -> bytes:
    """The one XML file of a zip archive, read in chunks up to ``limit`` (the sizes in its headers are not trusted)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise ReportError("the zip attachment holds no file")
        member = next((m for m in members if m.filename.lower().endswith(".xml")), members[0])
        out = bytearray()
        with archive.open(member) as stream:
            while chunk := stream.read(min(65536, limit + 1 - len(out))):
                out += chunk
                if len(out) > limit:
                    raise _over(limit, "zip")
        return bytes(out)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, zlib.error, EOFError) as exc:
        raise ReportError(f"the zip attachment cannot be read: {exc}") from None


def parse_report_xml(document: bytes, limits: ReportLimits | None = None) -> AggregateReport:
    """An aggregate report from its XML; ``ReportError`` names the element and value that are wrong."""
    limits = limits or ReportLimits()
    if len(document) > limits.max_xml_bytes:
        raise ReportError(f"the XML report is {len(document)} bytes, over the limit of {limits.max_xml_bytes}")
    try:
        root = defusedxml.ElementTree.fromstring(document, forbid_dtd=True, forbid_entities=True,
                                                 forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise ReportError(f"the XML report is refused: {type(exc).__name__} ({exc})") from None
    except ParseError as exc:
        raise ReportError(f"the report is not well-formed XML: {exc}") from None
    if _local(root.tag) != "feedback":
        raise ReportError(f"the XML root element is <{_local(root.tag)}>, expected <feedback>")
    metadata = _metadata(_child(root, "report_metadata", "feedback"))
    policy = _policy(_child(root, "policy_published", "feedback"))
    records = _children(root, "record")
    if len(records) > limits.max_records:
        raise ReportError(f"the report has {len(records)} records, over the limit of {limits.max_records}")
    rows = tuple(_row(record, i) for i, record in enumerate(records, 1))
    return AggregateReport(metadata=metadata, policy=policy, rows=rows)


def _local(tag: Any) -> str:
    """An element's name without its namespace (``{urn:...}record`` is ``record``)."""
    return str(tag).rpartition("}")[2]


def _children(element: Element, name: str) -> list[Element]:
    return [c for c in element if _local(c.tag) == name]


def _child(element: Element, name: str, where: str) -> Element:
    found = _children(element, name)
    if not found:
        raise ReportError(f"<{where}> has no <{name}>")
    return found[0]


def _text(element: Element, name: str, where: str) -> str:
    value = (_child(element, name, where).text or "").strip()
    if not value:
        raise ReportError(f"<{where}/{name}> is empty")
    return value


def _optional(element: Element, name: str) -> str | None:
    found = _children(element, name)
    value = (found[0].text or "").strip() if found else ""
    return value or None


def _choice(value: str, allowed: frozenset[str], where: str) -> str:
    word = value.lower()
    if word not in allowed:
        raise ReportError(f"<{where}> is {value!r}, expected one of {', '.join(sorted(allowed))}")
    return word


def _integer(value: str, where: str, *, low: int = 0, high: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ReportError(f"<{where}> is {value!r}, expected an integer") from None
    if number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ReportError(f"<{where}> is {value!r}, expected an integer {bounds}")
    return number


def _moment(value: str, where: str) -> datetime:
    seconds = _integer(value, where, high=2**40)  # RFC 7489 C: seconds since the epoch, UTC
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def _metadata(element: Element) -> ReportMetadata:
    where = "report_metadata"
    period = _child(element, "date_range", where)
    begin = _moment(_text(period, "begin", f"{where}/date_range"), f"{where}/date_range/begin")
    end = _moment(_text(period, "end", f"{where}/date_range"), f"{where}/date_range/end")
    if end < begin:
        raise ReportError(f"<{where}/date_range> ends ({end:%Y-%m-%d %H:%M:%S}) before it begins "
                          f"({begin:%Y-%m-%d %H:%M:%S})")
    return ReportMetadata(org_name=_text(element, "org_name", where), email=_optional(element, "email") or "",
                          report_id=_text(element, "report_id", where), begin=begin, end=end)


def _policy(element: Element) -> PolicyPublished:
    where = "policy_published"
    adkim, aspf, sp = (_optional(element, n) for n in ("adkim", "aspf", "sp"))
    pct = _optional(element, "pct")
    return PolicyPublished(
        domain=_text(element, "domain", where).lower().rstrip("."),
        adkim=_choice(adkim, _ALIGNMENT, f"{where}/adkim") if adkim else None,
        aspf=_choice(aspf, _ALIGNMENT, f"{where}/aspf") if aspf else None,
        p=_choice(_text(element, "p", where), _POLICIES, f"{where}/p"),
        sp=_choice(sp, _POLICIES, f"{where}/sp") if sp else None,
        pct=_integer(pct, f"{where}/pct", high=100) if pct else None,
    )


def _row(record: Element, n: int) -> ReportRow:
    where = f"record[{n}]"
    row = _child(record, "row", where)
    source = _text(row, "source_ip", f"{where}/row")
    try:
        source_ip = str(ipaddress.ip_address(source))
    except ValueError:
        raise ReportError(f"<{where}/row/source_ip> is {source!r}, expected an IPv4 or IPv6 address") from None
    evaluated = _child(row, "policy_evaluated", f"{where}/row")
    pe = f"{where}/row/policy_evaluated"
    identifiers = _child(record, "identifiers", where)
    auth = _children(record, "auth_results")
    dkim_results: list[AuthDkim] = []
    spf_results: list[AuthSpf] = []
    for result in (auth[0] if auth else []):
        name = _local(result.tag)
        at = f"{where}/auth_results/{name}"
        if name == "dkim":
            dkim_results.append(AuthDkim(domain=_text(result, "domain", at).lower(),
                                         result=_choice(_text(result, "result", at), _DKIM_RESULTS, f"{at}/result"),
                                         selector=_optional(result, "selector")))
        elif name == "spf":
            spf_results.append(AuthSpf(domain=_text(result, "domain", at).lower(),
                                       result=_choice(_text(result, "result", at), _SPF_RESULTS, f"{at}/result")))
    envelope_from = _optional(identifiers, "envelope_from")
    return ReportRow(
        source_ip=source_ip,
        count=_integer(_text(row, "count", f"{where}/row"), f"{where}/row/count"),
        disposition=_choice(_text(evaluated, "disposition", pe), _DISPOSITIONS, f"{pe}/disposition"),
        dkim=_choice(_text(evaluated, "dkim", pe), _ALIGNED, f"{pe}/dkim"),
        spf=_choice(_text(evaluated, "spf", pe), _ALIGNED, f"{pe}/spf"),
        header_from=_text(identifiers, "header_from", f"{where}/identifiers").lower().rstrip("."),
        envelope_from=envelope_from.lower() if envelope_from else None,
        dkim_results=tuple(dkim_results),
        spf_results=tuple(spf_results),
    )
