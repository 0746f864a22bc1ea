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

import msgspec
import yaml

from appliance.errors import PolicyError, Problem
from appliance.policy.model import MailPolicy

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_SLASHED = re.compile(r"^/(?P<body>.*)/(?P<flags>[a-z]*)$", re.DOTALL)


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
            local, at, domain = match.address.partition("@")
            if not (local and at and domain) or "@" in domain or " " in match.address:
                problems.append(Problem(source=source, path=f"{where}.address", reason=(
                    f"expected local@domain, got {match.address!r}")))
        if match.domain is not None:
            bare = match.domain.removeprefix("*.")
            if not bare or "@" in bare or "*" in bare or " " in bare or "." not in bare.strip("."):
                problems.append(Problem(source=source, path=f"{where}.domain", reason=(
                    f"expected a domain like acme.com or *.acme.com, got {match.domain!r}")))
        for j, cap in enumerate(rule.capabilities):
            if not cap or cap.strip() != cap:
                problems.append(Problem(source=source, path=f"senders[{i}].capabilities[{j}]",
                                        reason=f"expected a non-empty name, got {cap!r}"))
    for i, guard in enumerate(policy.content_guards):
        if not guard.reason:
            problems.append(Problem(source=source, path=f"contentGuards[{i}].reason",
                                    reason="expected a non-empty reason code"))
    return problems


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
