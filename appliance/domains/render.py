"""A manifest written three ways: JSON (for programs), a BIND zone snippet (for a zone file, or a provider
that imports one), and a plain-text table (for a person filling in a DNS provider's form)."""

from __future__ import annotations

__all__ = ["FORMATS", "Format", "render", "to_bind", "to_json", "to_table", "txt_strings"]

from typing import Literal

import msgspec

from appliance.domains.manifest import DnsManifest, DnsRecord, relative_name

Format = Literal["json", "bind", "table"]
FORMATS: tuple[Format, ...] = ("json", "bind", "table")


def txt_strings(value: str) -> list[str]:
    """``value`` as the 255-byte character-strings one TXT record holds (RFC 1035 3.3.14); ASCII only here."""
    data = value.encode("ascii")
    return [data[i:i + 255].decode("ascii") for i in range(0, len(data), 255)] or [""]


def _rdata(record: DnsRecord) -> str:
    if record.type == "TXT":
        return " ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in txt_strings(record.value))
    if record.type == "MX":
        preference, _, host = record.value.partition(" ")
        return f"{preference} {host}."
    if record.type == "CNAME":
        return f"{record.value}."
    return record.value


def to_json(value: DnsManifest) -> bytes:
    """The manifest as JSON (camelCase keys)."""
    return msgspec.json.encode(value)


def to_bind(value: DnsManifest) -> str:
    """A zone snippet with ``$ORIGIN <domain>.``: every record of the domain's zone, relative names; records
    that belong to another zone (the MX host's address when it is elsewhere) and the PTR advice as comments."""
    lines = [f"; DNS records for {value.domain}", f"$ORIGIN {value.domain}.", ""]
    elsewhere = []
    for record in value.records:
        name = relative_name(record.name, value.domain)
        line = f"{record.type} {_rdata(record)}"
        if name is None:
            elsewhere.append(f"; {record.name}. {record.ttl} IN {line}")
        else:
            lines.append(f"{name} {record.ttl} IN {line}")
    if elsewhere:
        lines += ["", "; in another zone (the MX host's):", *elsewhere]
    if value.ptr:
        lines += ["", "; reverse DNS: set at your VPS provider, not in this zone"]
        lines += [f"; {ptr.name}. IN PTR {ptr.target}." for ptr in value.ptr]
    lines += [f"; note: {note}" for note in value.notes]
    return "\n".join(lines) + "\n"


def to_table(value: DnsManifest) -> str:
    """Aligned columns: type, name relative to the domain (as providers' forms ask), absolute name, value
    (unsplit: the form splits long TXT values itself), TTL, note; then the PTR advice."""
    header = ("TYPE", "NAME", "ABSOLUTE NAME", "VALUE", "TTL", "NOTE")
    rows: list[tuple[str, ...]] = [
        (r.type, relative_name(r.name, value.domain) or "(other zone)", r.name + ".", r.value, str(r.ttl), r.note)
        for r in value.records]
    rows += [("PTR", "(provider)", p.name + ".", p.target, "-", f"for {p.address}: {p.note}") for p in value.ptr]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()

    out = [f"DNS records for {value.domain}", "", line(header), *(line(row) for row in rows)]
    out += ["", *(f"note: {note}" for note in value.notes)] if value.notes else []
    return "\n".join(out) + "\n"


def render(value: DnsManifest, form: Format) -> str:
    """The manifest in ``form``."""
    if form == "json":
        return to_json(value).decode()
    return to_bind(value) if form == "bind" else to_table(value)
