"""What the doctor found: one ``Finding`` per thing checked, and how a person reads them (pure)."""

from __future__ import annotations

__all__ = ["CHECKS", "Diagnosis", "Finding", "State", "render"]

from typing import Literal

import msgspec

State = Literal["ok", "warn", "fail"]

CHECKS = ("dns", "ports", "certificates", "message", "dmarc")
"""The checks, in the order they run and are shown (``--skip`` takes these names)."""


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the diagnosis."""

    check: str
    """Which check: one of ``CHECKS``."""
    subject: str
    """What was checked, e.g. ``MX example.test`` or ``127.0.0.1:25``."""
    state: State
    found: str
    expected: str = ""
    advice: str = ""
    """What to do about it ("" when ok)."""


class Diagnosis(msgspec.Struct, frozen=True, kw_only=True):
    """Every finding, in check order."""

    findings: tuple[Finding, ...]
    skipped: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        """All green: no failure and no warning (``appliance doctor`` exits 0 only then)."""
        return all(f.state == "ok" for f in self.findings)

    def count(self, state: State) -> int:
        return sum(1 for f in self.findings if f.state == state)


_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def render(diagnosis: Diagnosis) -> str:
    """The diagnosis as text: one line per finding; a line not ok says what was expected and what to do."""
    width = max((len(f.check) for f in diagnosis.findings), default=0)
    lines: list[str] = []
    for f in diagnosis.findings:
        line = f"{_MARK[f.state]}  {f.check:<{width}}  {f.subject}: {f.found}"
        if f.state != "ok" and f.expected:
            line += f" (expected {f.expected})"
        lines.append(line)
        if f.state != "ok" and f.advice:
            lines.append(f"{'':{width + 8}}what to do: {f.advice}")
    if diagnosis.skipped:
        lines.append(f"skipped: {', '.join(diagnosis.skipped)}")
    failing, warnings = diagnosis.count("fail"), diagnosis.count("warn")
    if diagnosis.healthy:
        lines.append(f"healthy: all {len(diagnosis.findings)} check(s) ok")
    else:
        lines.append(f"not healthy: {failing} failing, {warnings} warning(s), "
                     f"{diagnosis.count('ok')} ok")
    return "\n".join(lines)
