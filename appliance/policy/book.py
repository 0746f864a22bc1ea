"""The policies in force, one per agent, reloaded when their files change.

A changed file that fails validation is refused: the agent keeps its last
good policy, and the failure is reported to ``on_change`` (logged and audited
by the caller).
"""

from __future__ import annotations

__all__ = ["PolicyBook", "PolicyChange"]

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from appliance.errors import PolicyError
from appliance.policy.load import load_policy
from appliance.policy.model import MailPolicy

log = logging.getLogger("appliance.policy")


class PolicyChange(msgspec.Struct, frozen=True, kw_only=True):
    """A reload attempt: which agent, which file, and whether it took effect."""

    agent: str
    path: str
    ok: bool
    detail: str


class PolicyBook:
    """Agent address -> its policy in force."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        """Load every file; raise PolicyError when any is bad (a start-up must not run half-configured)."""
        self._files = {agent.lower(): path for agent, path in files.items()}
        self._policies: dict[str, MailPolicy] = {}
        self._stamps: dict[str, tuple[int, int]] = {}
        problems = []
        for agent, path in self._files.items():
            try:
                self._policies[agent] = load_policy(path)
                self._stamps[agent] = _stamp(path)
            except PolicyError as exc:
                problems.extend(exc.problems)
        if problems:
            raise PolicyError(problems)

    def get(self, agent: str) -> MailPolicy | None:
        return self._policies.get(agent.lower())

    @property
    def agents(self) -> list[str]:
        return list(self._policies)

    def reload_changed(self, on_change: Callable[[PolicyChange], None] | None = None) -> list[PolicyChange]:
        """Reload the files whose size or mtime changed; keep the last good policy on failure."""
        changes = []
        for agent, path in self._files.items():
            try:
                stamp = _stamp(path)
            except OSError as exc:
                stamp = (-1, -1)
                if self._stamps.get(agent) == stamp:
                    continue
                self._stamps[agent] = stamp
                changes.append(PolicyChange(agent=agent, path=str(path), ok=False,
                                            detail=f"{path}: {exc.strerror}; keeping the last good policy"))
                continue
            if stamp == self._stamps.get(agent):
                continue
            self._stamps[agent] = stamp
            try:
                self._policies[agent] = load_policy(path)
            except PolicyError as exc:
                changes.append(PolicyChange(agent=agent, path=str(path), ok=False,
                                            detail=f"{exc}; keeping the last good policy"))
                continue
            changes.append(PolicyChange(agent=agent, path=str(path), ok=True, detail=f"{path}: reloaded"))
        for change in changes:
            (log.info if change.ok else log.error)("policy %s: %s", change.agent, change.detail)
            if on_change is not None:
                on_change(change)
        return changes


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size
