"""Reading a policy document from a Python module, TOML, YAML or JSON.

Every format goes through the same validation (``msgspec.convert`` plus the
checks below), so a Python policy is held to the same rules as a TOML one.
Problems name the file, the field path and the reason.
"""

from __future__ import annotations

__all__ = ["load_policy", "parse_pattern", "policy_from_builtins", "policy_to_builtins"]

import importlib.util
import json
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import idna
import msgspec
import yaml

from appliance.errors import PolicyError, Problem
from appliance.policy.model import MailPolicy

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_SLASHED = re.compile(r"^/(?P<body>.*)/(?P<flags>[a-z]*)$", re.DOTALL)
_ASCII_LABEL = re.compile(r"[A-Za-z0-9_-]+")
_NOT_IN_LOCAL_PART = set('()<>[]:;\\,"')
"""RFC 5322 specials that cannot stand unquoted in a local part (quoted local parts are not supported)."""


def load_policy(path: str | Path) -> MailPolicy:
    """Load and validate the policy in ``path`` (.py, .toml, .yaml/.yml or .json)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise PolicyError([Problem(source=source, path="", reason=exc.strerror or str(exc))]) from exc
    suffix = path.suffix.lower()
    if suffix == ".py":
        return _from_module(path)
    try:
        if suffix == ".toml":
            data: object = tomllib.loads(text.decode("utf-8"))
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise PolicyError([Problem(source=source, path="", reason=(
                f"unknown policy format {suffix!r}; expected .py, .toml, .yaml, .yml or .json"))])
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError([Problem(source=source, path="", reason=f"not valid {suffix[1:]}: {exc}")]) from exc
    return policy_from_builtins(data, source=source)


def policy_from_builtins(data: object, *, source: str = "<policy>") -> MailPolicy:
    """Validate a document of plain values (camelCase keys) into a MailPolicy."""
    if not isinstance(data, dict):
        raise PolicyError([Problem(source=source, path="", reason=(
            f"expected a table/object at the top level, got {type(data).__name__}"))])
    try:
        policy = msgspec.convert(data, MailPolicy, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise PolicyError([Problem.from_validation(source, exc, MailPolicy)]) from exc
    problems = _semantic_problems(policy, source)
    if problems:
        raise PolicyError(problems)
    return policy


def _dec_hook(tp: Any, obj: Any) -> Any:
    if typing.get_origin(tp) is re.Pattern or tp is re.Pattern:
        return parse_pattern(obj)
    raise NotImplementedError(f"cannot decode {tp!r}")


def policy_to_builtins(policy: MailPolicy) -> dict[str, Any]:
    """The policy as plain values, camelCase keys, patterns as ``{pattern, flags}``."""

    def enc_hook(obj: Any) -> Any:
        if isinstance(obj, re.Pattern):
            return {"pattern": obj.pattern, "flags": _flag_letters(obj.flags)}
        raise NotImplementedError(f"cannot encode {type(obj).__name__}")

    out = msgspec.to_builtins(policy, enc_hook=enc_hook)
    assert isinstance(out, dict)
    return out


def parse_pattern(obj: object) -> re.Pattern[str]:
    """A content-guard pattern: ``"/body/flags"``, ``{pattern, flags}``, a plain string, or compiled."""
    if isinstance(obj, re.Pattern):
        if not isinstance(obj.pattern, str):
            raise ValueError("pattern must be a str pattern, not bytes")
        return obj
    if isinstance(obj, str):
        slashed = _SLASHED.match(obj)
        body, letters = (slashed["body"], slashed["flags"]) if slashed else (obj, "")
    elif isinstance(obj, dict) and isinstance(obj.get("pattern"), str):
        extra = set(obj) - {"pattern", "flags"}
        if extra:
            raise ValueError(f"unknown key(s) {sorted(extra)}; expected pattern and flags")
        body, letters = obj["pattern"], obj.get("flags", "")
        if not isinstance(letters, str):
            raise ValueError(f"flags must be a string of letters from 'imsx', got {letters!r}")
    else:
        raise ValueError(
            'expected a regex literal like "/ignore (previous|all) instructions/i" '
            'or a table {pattern = "...", flags = "i"}'
        )
    flags = 0
    for letter in letters:
        if letter not in _FLAGS:
            raise ValueError(f"unknown regex flag {letter!r}; expected letters from 'imsx'")
        flags |= _FLAGS[letter]
    try:
        return re.compile(body, flags)
    except re.error as exc:
        raise ValueError(f"invalid regex {body!r}: {exc.msg} at position {exc.pos}") from exc


def _flag_letters(flags: int) -> str:
    return "".join(letter for letter, bit in _FLAGS.items() if flags & bit)


def _semantic_problems(policy: MailPolicy, source: str) -> list[Problem]:
    problems: list[Problem] = []
    for i, rule in enumerate(policy.senders):
        where = f"senders[{i}].match"
        match = rule.match
        if (match.address is None) == (match.domain is None):
            problems.append(Problem(source=source, path=where, reason=(
                "expected exactly one of address or domain")))
        if match.address is not None:
            reason = _address_problem(match.address)
            if reason:
                problems.append(Problem(source=source, path=f"{where}.address", reason=reason))
        if match.domain is not None:
            reason = _domain_problem(match.domain)
            if reason:
                problems.append(Problem(source=source, path=f"{where}.domain", reason=reason))
        for j, cap in enumerate(rule.capabilities):
            if not cap or cap.strip() != cap:
                problems.append(Problem(source=source, path=f"senders[{i}].capabilities[{j}]",
                                        reason=f"expected a non-empty name, got {cap!r}"))
    guards = [("contentGuards", policy.content_guards), ("outbound.contentGuards", policy.outbound.content_guards)]
    for where, listed in guards:
        for i, guard in enumerate(listed):
            if not guard.reason:
                problems.append(Problem(source=source, path=f"{where}[{i}].reason",
                                        reason="expected a non-empty reason code"))
    for i, recipient in enumerate(policy.outbound.allow_recipients):
        reason = _address_problem(recipient) if "@" in recipient else _domain_problem(recipient)
        if reason:
            problems.append(Problem(source=source, path=f"outbound.allowRecipients[{i}]", reason=reason))
    return problems


def _domain_problem(domain: str) -> str | None:
    """Why ``domain`` is not a usable ``match.domain`` (``acme.com`` or ``*.acme.com``), or None.

    Refused: the empty string, spaces, an address (``@``), a leading dot
    (``.acme.com`` would match nothing), ``*`` anywhere but a leading ``*.``,
    empty labels (``acme..com``), a single label, characters a domain cannot
    hold and invalid internationalized names. One trailing dot is fine.
    """
    if not domain.strip():
        return f'expected a domain like "acme.com" or "*.acme.com", got {domain!r}'
    if any(c.isspace() for c in domain):
        return f"expected a domain without spaces, got {domain!r}"
    if "@" in domain:
        local, _, after = domain.rpartition("@")
        use_address = f'use address = "{domain}" for that one sender, or ' if local and "@" not in local else "use "
        return f'expected a domain, not an address, got {domain!r}: {use_address}domain = "{after}" for the domain'
    if domain.startswith(".") and domain.strip(".") and "*" not in domain:
        bare = domain.lstrip(".")
        return f'{domain!r} matches nothing: use "*.{bare}" for subdomains or "{bare}" for the domain itself'
    wildcard = domain.startswith("*.")
    bare = domain[2:] if wildcard else domain
    if wildcard and not bare.strip("."):
        return f'{domain!r} names no domain: use "*.acme.com" for the subdomains of acme.com'
    if "*" in bare:
        return f'only a leading "*." is a wildcard (as in "*.acme.com"), got {domain!r}'
    return _name_problem(domain, bare)


def _address_problem(address: str) -> str | None:
    """Why ``address`` is not a usable ``match.address`` (an addr-spec like ``boss@acme.com``), or None."""
    if "<" in address or ">" in address:
        inner = address[address.find("<") + 1:address.rfind(">")].strip() if "<" in address else ""
        fix = f': use "{inner}"' if inner.count("@") == 1 and "<" not in inner and ">" not in inner else ""
        return f"expected the bare address, without a display name or <>, got {address!r}{fix}"
    if any(c.isspace() for c in address):
        return f"expected an address without spaces, got {address!r}"
    if "@" not in address:
        return f"expected local@domain, got {address!r}"
    if address.count("@") > 1:
        return f"expected local@domain with exactly one @, got {address!r}"
    local, _, domain = address.partition("@")
    if not local:
        return f'expected local@domain, got {address!r}: use domain = "{domain}" for a whole domain'
    special = next((c for c in local if c in _NOT_IN_LOCAL_PART or not c.isprintable()), None)
    if special is not None:
        return f"expected local@domain, got {address!r}: the local part cannot hold {special!r}"
    if "*" in domain:
        return f'an address names one mailbox, got {address!r}: use domain = "{domain}" to match a domain'
    if not domain or domain.startswith("."):
        return f"expected local@domain with a domain like acme.com after the @, got {address!r}"
    reason = _name_problem(domain, domain, in_address=True)
    return f"in address {address!r}: {reason}" if reason else None


def _name_problem(written: str, name: str, *, in_address: bool = False) -> str | None:
    """Why the domain name ``name`` (``written`` without its ``*.``) is not one, or None.

    A rule's domain needs two labels at least (``*.com`` is refused); an
    address may name a single-label host (``root@localhost``).
    """
    labels = name.removesuffix(".").split(".")
    if not name.strip("."):
        return f'expected a domain like "acme.com", got {written!r}'
    if "" in labels:
        return f"{written!r} has an empty label (two dots in a row)"
    if name.isascii():
        bad = next((c for c in name.removesuffix(".").replace(".", "") if not _ASCII_LABEL.fullmatch(c)), None)
        if bad is not None:
            return f"{written!r} holds {bad!r}; a domain is letters, digits and hyphens between dots"
        ascii_labels = labels
    else:
        try:
            ascii_labels = idna.encode(name.removesuffix("."), uts46=True).decode("ascii").split(".")
        except UnicodeError as exc:  # idna.IDNAError included
            return f"{written!r} is not a valid internationalized domain name: {exc}"
    if len(labels) < 2 and not in_address:
        return f'expected a domain like "acme.com" or "*.acme.com", got {written!r} (a single label)'
    if any(len(label) > 63 for label in ascii_labels):
        return f"{written!r} has a label over 63 characters"
    if len(".".join(ascii_labels)) > 253:
        return f"{written!r} is over 253 characters"
    return None


def _from_module(path: Path) -> MailPolicy:
    source = str(path)
    spec = importlib.util.spec_from_file_location(f"_appliance_policy_{abs(hash(source))}", path)
    if spec is None or spec.loader is None:
        raise PolicyError([Problem(source=source, path="", reason="cannot import as a Python module")])
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's module can raise anything; report it as a policy problem
        raise PolicyError([Problem(source=source, path="", reason=(
            f"importing the module failed: {type(exc).__name__}: {exc}"))]) from exc
    policy = getattr(module, "policy", None)
    if not isinstance(policy, MailPolicy):
        raise PolicyError([Problem(source=source, path="policy", reason=(
            f"expected a module attribute `policy` of type MailPolicy, got {type(policy).__name__}"))])
    # Constructors do not validate; round-trip through the same checks as the other formats.
    try:
        data = policy_to_builtins(policy)
    except (NotImplementedError, TypeError) as exc:
        raise PolicyError([Problem(source=source, path="policy", reason=str(exc))]) from exc
    return policy_from_builtins(data, source=source)
