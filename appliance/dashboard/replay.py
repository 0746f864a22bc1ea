"""The Replay page: an agent's recorded history judged again under another policy, before it goes live.

The form takes the agent, the policy (pasted or uploaded as TOML, YAML or JSON, or the path of a
file in the appliance's configuration directory) and how far back to go; the replay is
``appliance.audit.replay``'s, the same ``appliance policy replay`` runs, with the appliance's own
reading limits. Nothing is changed: the replay reads the history and reports what would have been
decided. A Python policy is code, and is not run from a web form: the dashboard takes the data
formats only.
"""

from __future__ import annotations

__all__ = ["load_candidate", "replay_form", "replay_run"]

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.response import Template

from appliance.audit.replay import replay_history
from appliance.cli.policy import parse_since
from appliance.config import ApplianceConfig
from appliance.dashboard.pages import page
from appliance.errors import InputError, PolicyError
from appliance.gate.replay import ReplayReport
from appliance.inbound.readers import ReaderPool
from appliance.policy import MailPolicy, load_policy
from appliance.store.database import Database

FORMATS = ("toml", "yaml", "json")
"""The policy formats the form takes (a ``.py`` policy is code: not from a web form)."""
MAX_POLICY_BYTES = 1_000_000


class CandidateError(ValueError):
    """The policy given cannot be used: the message says which field or file and why."""


def load_candidate(text: str, fmt: str) -> MailPolicy:
    """A policy from its text in ``fmt`` (toml, yaml or json), validated as any policy file is."""
    if fmt not in FORMATS:
        raise CandidateError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise CandidateError(f"policy: more than {MAX_POLICY_BYTES} bytes")
    with tempfile.TemporaryDirectory(prefix="appliance-replay-") as scratch:
        path = Path(scratch) / f"policy.{fmt}"
        path.write_text(text, encoding="utf-8")
        try:
            return load_policy(path)  # the one loader: the same validation as the agent's own file
        except PolicyError as exc:
            raise CandidateError("; ".join(f"{p.path or 'policy'}: {p.reason}" for p in exc.problems)) from None


def _load_path(value: str, config: ApplianceConfig) -> MailPolicy:
    """The policy file at ``value`` (relative to the configuration's directory), which must lie inside it.

    A web form must not make the appliance read whatever file it can (its secrets, /etc): a load
    error names fields of the file it read, so any file elsewhere (or in the data directory, which
    holds keys) is refused before it is opened.
    """
    suffix = Path(value).suffix.lower().lstrip(".")
    if suffix not in (*FORMATS, "yml"):
        raise CandidateError(f"{value}: expected a .toml, .yaml, .yml or .json file (a Python policy is code: "
                             "replay it with `appliance policy replay`)")
    base = config.path(".").resolve()
    path = (base / value).resolve()  # resolve: neither ../ nor a symlink leads out
    if not path.is_relative_to(base) or path.is_relative_to(config.data_path.resolve()):
        raise CandidateError(f"policy_path: {value!r} is outside the configuration directory {base} "
                             "(or inside its data directory): put the candidate policy there, or paste or upload it")
    try:
        return load_policy(path)
    except PolicyError as exc:
        raise CandidateError(str(exc)) from None


async def _candidate(form: Any, config: ApplianceConfig) -> tuple[MailPolicy, str]:
    """The policy the form gives and how to name it: the uploaded file, else the pasted text, else the path."""
    fmt = str(form.get("format") or "toml")
    upload = form.get("policy_file")
    if isinstance(upload, UploadFile) and upload.filename:
        suffix = Path(upload.filename).suffix.lower().lstrip(".")
        data = await upload.read(MAX_POLICY_BYTES + 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CandidateError(f"{upload.filename}: not UTF-8 text") from None
        return load_candidate(text, "yaml" if suffix == "yml" else suffix or fmt), upload.filename
    text = str(form.get("policy_text") or "")
    if text.strip():
        return load_candidate(text, fmt), f"the pasted {fmt.upper()} policy"
    path = str(form.get("policy_path") or "").strip()
    if path:
        return _load_path(path, config), path
    raise CandidateError("policy: paste one, upload a file or give the path of one")


class _Fields(msgspec.Struct, frozen=True, kw_only=True):
    """What the form held, written back into it."""

    agent: str = ""
    since: str = "30d"
    fmt: str = "toml"
    policy_text: str = ""
    policy_path: str = ""


def _form_page(config: ApplianceConfig, fields: _Fields, *, error: str = "", report: ReplayReport | None = None,
               policy_name: str = "", status_code: int = 200) -> Template:
    return page("replay.html", current="replay", title="Replay", agents=[a.address.lower() for a in config.agents],
                agent=fields.agent, since=fields.since, fmt=fields.fmt, formats=FORMATS,
                policy_text=fields.policy_text, policy_path=fields.policy_path, error=error, report=report,
                policy_name=policy_name, status_code=status_code)


@get("/replay", name="ui_replay")
async def replay_form(config: NamedDependency[ApplianceConfig]) -> Template:
    """The form: agent, policy, since."""
    return _form_page(config, _Fields())


@post("/replay", status_code=200)
async def replay_run(request: Request[Any, Any, Any], db: NamedDependency[Database],
                     config: NamedDependency[ApplianceConfig], reader: NamedDependency[ReaderPool]) -> Template:
    """Replay the agent's history since the time given under the policy given; the report under the form."""
    form = await request.form()
    agent = str(form.get("agent") or "").strip().lower()
    since_text = str(form.get("since") or "30d")
    fields = _Fields(agent=agent, since=since_text, fmt=str(form.get("format") or "toml"),
                     policy_text=str(form.get("policy_text") or ""), policy_path=str(form.get("policy_path") or ""))
    try:
        if config.agent(agent) is None:
            known = ", ".join(a.address for a in config.agents) or "none"
            raise CandidateError(f"agent: {agent or '(none)'} is not an agent of this appliance (its agents: {known})")
        try:
            since = parse_since(since_text, datetime.now(UTC).replace(tzinfo=None))
        except InputError as exc:
            raise CandidateError("since: " + "; ".join(p.reason for p in exc.problems)) from None
        policy, name = await _candidate(form, config)
    except CandidateError as exc:
        return _form_page(config, fields, error=str(exc), status_code=400)
    report = await replay_history(db, agent, policy, since, reading=reader.limits)
    return _form_page(config, fields, report=report, policy_name=name)
