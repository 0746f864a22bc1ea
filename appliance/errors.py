"""The appliance's exceptions, in one tree.

    ApplianceError
    ├── InputError                 bad input a person must fix (exit 2 on the CLI)
    │   ├── PolicyError            a policy document that does not validate
    │   └── ConfigError            an appliance configuration that does not validate
    ├── MalformedMessage           a message the gate refuses to interpret (step 1)
    ├── MessageTooLarge            a message (or its header block) over a configured size
    ├── MessageTooComplex          a message whose structure would cost more work than allowed
    └── DnsTemporaryError          DNS trouble: never a pass, always a tempfail
"""

from __future__ import annotations

__all__ = [
    "ApplianceError",
    "ConfigError",
    "DnsTemporaryError",
    "InputError",
    "MalformedMessage",
    "MessageTooComplex",
    "MessageTooLarge",
    "PolicyError",
    "Problem",
]

import re

import msgspec

_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_INVALID_ENUM = re.compile(r"Invalid enum value (?P<value>.+)$")
_PATH_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _choices_at(root: type, path: str) -> list[object]:
    """The Literal values allowed at ``path`` inside ``root``, or [] when not a choice."""
    import msgspec.inspect as mi

    info: mi.Type = mi.type_info(root)
    for name, _index in _PATH_TOKEN.findall(path):
        while isinstance(info, mi.UnionType):
            info = next((t for t in info.types if not isinstance(t, mi.NoneType)), info.types[0])
        if name and isinstance(info, mi.StructType):
            found = next((f for f in info.fields if f.encode_name == name), None)
            if found is None:
                return []
            info = found.type
        elif not name and isinstance(info, mi.ListType):
            info = info.item_type
        else:
            return []
    while isinstance(info, mi.UnionType):
        info = next((t for t in info.types if not isinstance(t, mi.NoneType)), info.types[0])
    return list(info.values) if isinstance(info, mi.LiteralType) else []


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing wrong with an input document: where, and why."""

    source: str
    """The file (or other origin) the document came from."""
    path: str
    """The field path inside it, e.g. ``senders[1].rateLimit.perHour``; empty for the whole file."""
    reason: str
    """What was wrong and what was expected."""

    @classmethod
    def from_validation(cls, source: str, exc: msgspec.ValidationError, root: type | None = None) -> Problem:
        """Recast msgspec's "Expected `int`, got `str` - at `$.a[1].b`" as path and reason.

        With ``root`` (the decoded type), an invalid choice also lists the valid ones.
        """
        message = str(exc)
        found = _AT_PATH.search(message)
        path = found["path"].lstrip(".") if found else ""
        reason = message[: found.start()] if found else message
        unknown = _UNKNOWN.match(reason)
        if unknown:
            field = unknown["field"]
            return cls(source=source, path=f"{path}.{field}" if path else field,
                       reason="unknown field (check its spelling)")
        reason = reason.replace("`", "").replace(" | null", "")  # optional fields: say the real type
        bad_choice = _INVALID_ENUM.match(reason)
        if bad_choice and root is not None:
            choices = _choices_at(root, path)
            if choices:
                reason = f"expected one of {', '.join(map(repr, choices))}, got {bad_choice['value']}"
        return cls(source=source, path=path, reason=reason[:1].lower() + reason[1:])

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.reason}"


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class InputError(ApplianceError):
    """An input document failed validation; carries one Problem per fault found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PolicyError(InputError):
    """A policy document failed validation."""


class ConfigError(InputError):
    """An appliance configuration failed validation."""


class MalformedMessage(ApplianceError):
    """The message cannot be interpreted safely (e.g. not exactly one From mailbox)."""


class MessageTooLarge(ApplianceError):
    """The message, or a part of it with its own limit (the header block), is over its size limit."""


class MessageTooComplex(ApplianceError):
    """Reading the message would cost more than its limits allow (fields, parts, nesting, time)."""


class DnsTemporaryError(ApplianceError):
    """A DNS lookup timed out or failed with SERVFAIL: the answer is unknown, not empty."""
