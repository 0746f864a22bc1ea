"""When to restart Stalwart: the supervisor's restart policy, a pure decision over health probes.

Each probe the supervisor makes is one ``Probe``; ``judge`` says what it means
(``Keep`` with the status to show, or ``Restart`` after a delay) and returns the
``Health`` to remember until the next one. ``restarted`` is called once a
restart was carried out. No clock, no I/O: ``now`` is passed in (monotonic
seconds), so the tests drive every path directly.

Backoff: the first restart waits ``backoff``; each restart whose Stalwart did
not stay up doubles the wait, up to ``backoff_max``. Ready without a break
for ``stable_after`` seconds counts as staying up, and the next wait is
``backoff`` again.
"""

from __future__ import annotations

__all__ = ["Health", "Keep", "Probe", "Restart", "RestartPolicy", "Verdict", "judge", "restart_delay", "restarted"]

from typing import Annotated, Literal

import msgspec

Probe = Literal["ready", "live", "failing", "unanswered", "exited"]
"""What one probe saw: ``ready`` (``/healthz/ready`` 200), ``live`` (ready 503 but ``/healthz/live`` 200:
up, not ready), ``failing`` (an answer, but an error status), ``unanswered`` (no answer within the probe
timeout, or the connection refused), ``exited`` (the container or process is gone)."""


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers the decision uses (from ``[stalwart]``)."""

    health_failures: Annotated[int, msgspec.Meta(ge=1)]
    """Consecutive failed probes before a restart."""
    ready_timeout: Annotated[float, msgspec.Meta(gt=0)]
    """Seconds after a (re)start during which "up but not ready" is still starting, not a failure."""
    backoff: Annotated[float, msgspec.Meta(gt=0)]
    """Seconds before the first restart."""
    backoff_max: Annotated[float, msgspec.Meta(gt=0)]
    """The longest wait before a restart."""
    stable_after: Annotated[float, msgspec.Meta(ge=0)]
    """Seconds ready without a break after which Stalwart counts as having stayed up (backoff resets)."""


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """What the supervisor remembers between probes."""

    started_at: float
    """Monotonic time of the last (re)start."""
    failures: int = 0
    """Consecutive failed probes."""
    ready_since: float | None = None
    """Monotonic time since which every probe found it ready; None when the last one did not."""
    ever_ready: bool = False
    """Ready at least once since the last (re)start."""
    unstable_restarts: int = 0
    """Restarts in a row whose Stalwart did not stay up: the backoff's exponent."""


class Keep(msgspec.Struct, frozen=True, kw_only=True, tag="keep"):
    """Leave it running; show ``status``."""

    status: Literal["starting", "ready", "unhealthy"]
    health: Health
    problem: str | None = None
    """What the probe found wrong (a failure not yet worth a restart)."""


class Restart(msgspec.Struct, frozen=True, kw_only=True, tag="restart"):
    """Restart it after ``delay`` seconds, because of ``reason``."""

    delay: float
    reason: str
    health: Health


Verdict = Keep | Restart

_WHY: dict[Probe, str] = {
    "live": "up but not ready",
    "failing": "health check answered with an error",
    "unanswered": "no answer to the health check",
    "exited": "exited",
}


def restart_delay(policy: RestartPolicy, unstable_restarts: int) -> float:
    """The wait before the next restart after ``unstable_restarts`` restarts that did not stay up."""
    # capped before exponentiation too: 2.0 ** 2000 overflows a float
    return min(policy.backoff * 2.0 ** min(unstable_restarts, 64), policy.backoff_max)


def judge(policy: RestartPolicy, health: Health, probe: Probe, now: float, detail: str = "") -> Verdict:
    """What ``probe`` (seen at ``now``) means for a Stalwart last known as ``health``.

    ``detail`` (e.g. ``"503"``, ``"exit code 137"``) goes into the reason or problem text.
    """
    if probe == "ready":
        since = health.ready_since if health.ready_since is not None else now
        unstable = 0 if now - since >= policy.stable_after else health.unstable_restarts
        return Keep(status="ready", health=msgspec.structs.replace(
            health, failures=0, ready_since=since, ever_ready=True, unstable_restarts=unstable))
    starting = not health.ever_ready and now - health.started_at <= policy.ready_timeout
    if probe == "live" and starting:
        return Keep(status="starting", health=msgspec.structs.replace(health, failures=0, ready_since=None))
    what = _WHY[probe] + (f" ({detail})" if detail else "")
    if probe == "live" and not health.ever_ready:
        what = f"not ready {policy.ready_timeout:g} s after the start" + (f" ({detail})" if detail else "")
    failures = health.failures + 1
    failed = msgspec.structs.replace(health, failures=failures, ready_since=None)
    if probe == "exited" or failures >= policy.health_failures:
        if probe != "exited":
            what = f"{what}, {failures} probe(s) in a row"
        return Restart(delay=restart_delay(policy, health.unstable_restarts), reason=what, health=failed)
    return Keep(status="unhealthy", health=failed, problem=what)


def restarted(health: Health, now: float, *, requested: bool = False) -> Health:
    """The health to start from after a restart carried out at ``now``.

    A restart ``judge`` asked for counts as one that did not stay up (a Stalwart ready for ``stable_after``
    already had its count reset by ``judge``); a ``requested`` one (provisioning's, after a configuration
    change) says nothing about Stalwart's health and leaves the count as it was.
    """
    return Health(started_at=now, unstable_restarts=health.unstable_restarts + (0 if requested else 1))
