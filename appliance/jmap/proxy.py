"""Stalwart mode's JMAP: the appliance's JMAP endpoints forward to Stalwart's JMAP (RFC 8620).

Clients see one API in both modes: the same paths, our account ids (``local.account_id`` of
the agent, the rule the local Session uses), our URLs, the vendor capability
``urn:appliance:jmap``. What the proxy does on the way:

- the Session: fetched from ``{jmap_url}/.well-known/jmap`` with the caller's upstream
  credential (redirects followed), cached per credential for ``SESSION_TTL`` seconds; upstream
  account ids mapped to ours (an upstream account is an agent's when its ``name`` is the agent's
  address, or, for an agent's own credential, when it is the primary mail account); every URL
  rebased onto ours, and the upstream's own URLs rebased onto ``jmap_url`` for our calls (Stalwart
  names its public hostname in them, the container may be reached on a private address);
- every method call's ``accountId`` and ``fromAccountId`` is checked against the caller's
  accounts before anything leaves (``JmapService.agent_for``: the same rule and the same audit
  row as the local server); a call naming an account the key may not see is answered here with
  ``accountNotFound`` and never forwarded. A ``#accountId`` result reference is only forwarded
  when it points at ``/accountId`` of an earlier, already checked call of the same request (it
  is then replaced by that call's account): anything else could make the upstream resolve an
  unchecked id;
- ``Email/get`` asked for ``urn:appliance:jmap:gate`` gets the gate's view from our audit,
  found by the ``X-Appliance-Decision`` header the MTA hook added to the stored message (only
  the appliance writes it: the hook deletes forged copies);
- uploads, downloads and the EventSource stream through (StateChange account ids mapped);
- the upstream unreachable is a 503 ``application/problem+json`` naming its URL; its own 4xx and
  5xx are passed on in RFC 8620 3.6.1 form.

Upstream credentials (``Credential.header``): a secret starting ``API_`` (a Stalwart API key) is
sent as ``Bearer``, as is one written ``Bearer <token>`` (an OAuth token, or another
appliance's key); any other secret is a password, sent as HTTP Basic with the agent's address
(the admin: ``stalwart.admin_login``) as login.
"""

from __future__ import annotations

__all__ = ["SESSION_TTL", "Credential", "JmapProxy", "ProxyCaller", "SessionCache", "Streamed", "Upstream",
           "UpstreamError", "upstream_from_config"]

import base64
import hashlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import msgspec

from appliance.config import ApplianceConfig
from appliance.jmap.email import gate_view
from appliance.jmap.proto import GATE_PROPERTY, MAIL, TOKEN_PROPERTY, VENDOR, MethodError, RequestError
from appliance.jmap.service import Caller, JmapService
from appliance.jmap.session import session as local_session
from appliance.mail.trace import DECISION_HEADER, decision_id_of
from appliance.store.audit import DecisionView, decision_views

SESSION_TTL = 30.0
"""Seconds an upstream Session is reused for the same credential."""

_DECISION_PROPERTY = f"header:{DECISION_HEADER}:asText"
_URL_KEYS = ("apiUrl", "downloadUrl", "uploadUrl", "eventSourceUrl")
_ACCOUNT_KEYS = ("accountId", "fromAccountId", "toAccountId")
_CHECKED_KEYS = ("accountId", "fromAccountId")
_KEPT_DOWNLOAD_HEADERS = ("content-type", "content-disposition", "content-length", "cache-control")
_ENCODER = msgspec.json.Encoder()
_WEBSOCKET = "urn:ietf:params:jmap:websocket"


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    """What the proxy presents upstream for one caller."""

    env: str
    """The environment variable it came from (named in errors)."""
    header: str
    """The ``Authorization`` value, or "" when the variable is unset."""


class Upstream(msgspec.Struct, frozen=True, kw_only=True):
    """Stalwart's JMAP and the credentials our callers map to."""

    jmap_url: str
    admin: Credential
    agents: dict[str, Credential]
    """Agent address (lowercase) -> its credential."""
    timeout: float = 30.0


class ProxyCaller(msgspec.Struct, frozen=True, kw_only=True):
    """A caller as the proxy sees it: who (for the account rule) and what it presents upstream."""

    caller: Caller
    credential: Credential


class Streamed(msgspec.Struct, frozen=True, kw_only=True):
    """An upstream answer whose body streams through (download, EventSource)."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


class UpstreamError(Exception):
    """A request-level error to answer as ``application/problem+json`` (RFC 8620 3.6.1, RFC 7807)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail", "")))
        self.status = status
        self.problem = problem

    @classmethod
    def of(cls, error: RequestError) -> UpstreamError:
        """Our own request-level error in the same form."""
        return cls(error.status, error.body())


def _authorization(secret: str, login: str) -> str:
    secret = secret.strip()
    if not secret:
        return ""
    if secret.startswith("API_"):
        return f"Bearer {secret}"
    scheme, _, token = secret.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return f"Bearer {token.strip()}"
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode("ascii")


def upstream_from_config(config: ApplianceConfig, environ: Mapping[str, str] | None = None,
                         provisioned: Mapping[str, str] | None = None) -> Upstream:
    """The upstream of ``config`` (its ``[stalwart]`` section), the secrets read from ``environ``.

    ``provisioned``: agent -> the API key the appliance made for it at Stalwart, used for an agent
    whose ``stalwart_secret_env`` is unset or empty.
    """
    env = os.environ if environ is None else environ
    section = config.stalwart
    if not section.jmap_url:
        raise ValueError("stalwart.jmap_url: expected Stalwart's JMAP base URL, got nothing")
    admin = Credential(env=section.admin_secret_env,
                       header=_authorization(env.get(section.admin_secret_env, ""), section.admin_login))
    agents = {}
    for agent in config.agents:
        name = agent.stalwart_secret_env or ""
        address = agent.address.lower()
        secret = env.get(name, "") if name else ""
        if not secret.strip() and provisioned and address in provisioned:
            secret = provisioned[address]
        agents[address] = Credential(env=name, header=_authorization(secret, address))
    return Upstream(jmap_url=section.jmap_url.rstrip("/"), admin=admin, agents=agents, timeout=section.timeout)


class _Mapped(msgspec.Struct, frozen=True, kw_only=True):
    """An upstream Session with its account ids mapped: what the proxy needs of it."""

    raw: dict[str, Any]
    ours_to_theirs: dict[str, str]
    theirs_to_ours: dict[str, str]
    agents: dict[str, str]
    """Our account id -> agent."""


class SessionCache:
    """Upstream Sessions by credential, each kept ``SESSION_TTL`` seconds."""

    def __init__(self, ttl: float = SESSION_TTL) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}

    @staticmethod
    def _key(header: str) -> str:
        return hashlib.sha256(header.encode()).hexdigest()  # the secret itself is not kept as a key

    def get(self, header: str) -> dict[str, Any] | None:
        """The cached Session for ``header``, or None when there is none or it expired."""
        found = self._entries.get(self._key(header))
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, header: str, value: dict[str, Any]) -> None:
        """Keep ``value`` for ``ttl`` seconds."""
        if len(self._entries) > 1_000:  # one per credential: a handful; never grows without bound
            self._entries.clear()
        self._entries[self._key(header)] = (time.monotonic() + self.ttl, value)


class _Gate(msgspec.Struct, frozen=True, kw_only=True):
    """An Email/get asking for the gate's view: which agent, and whether the decision header was added by us."""

    agent: str
    added_header: bool


class JmapProxy:
    """Our JMAP in front of Stalwart's: one per request (cheap); the client and the cache outlive it."""

    def __init__(self, client: httpx.AsyncClient, upstream: Upstream, service: JmapService,
                 cache: SessionCache) -> None:
        self.client = client
        self.upstream = upstream
        self.service = service
        self.cache = cache

    # -- who calls -------------------------------------------------------------------------------

    def caller(self, agent: str | None) -> ProxyCaller:
        """The caller of a request: ``agent`` (its key), None for the admin token."""
        who = self.service.caller(agent)
        if who.admin:
            return ProxyCaller(caller=who, credential=self.upstream.admin)
        credential = self.upstream.agents.get(who.name, Credential(env="", header=""))
        return ProxyCaller(caller=who, credential=credential)

    def _authorization(self, who: ProxyCaller) -> str:
        if not who.credential.header:
            what = (f"stalwart.admin_secret_env (${who.credential.env})" if who.caller.admin
                    else f"agents[{who.caller.name}].stalwart_secret_env"
                         + (f" (${who.credential.env})" if who.credential.env else ""))
            raise UpstreamError(503, {"type": "about:blank", "status": 503,
                                      "detail": f"no Stalwart credential for {who.caller.name}: {what} is not set"})
        return who.credential.header

    # -- talking upstream --------------------------------------------------------------------------

    def _rebase_upstream(self, url: str) -> str:
        """An upstream Session URL on ``jmap_url``: its host may be Stalwart's public name, not where we reach it."""
        parts = urlsplit(url)
        if not parts.scheme:  # a relative URL: relative to the upstream itself
            return self.upstream.jmap_url + "/" + url.lstrip("/")
        rest = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.upstream.jmap_url + rest

    def _unreachable(self, url: str, exc: Exception) -> UpstreamError:
        return UpstreamError(503, {"type": "urn:ietf:params:jmap:error:serverUnavailable", "status": 503,
                                   "detail": f"Stalwart's JMAP at {url} is unreachable: "
                                             f"{type(exc).__name__}: {str(exc)[:200]}"})

    @staticmethod
    def _passed_on(response: httpx.Response, body: bytes) -> UpstreamError:
        """An upstream 4xx/5xx as RFC 8620 3.6.1 problem details (its own when it sent some)."""
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media in ("application/problem+json", "application/json"):
            try:
                problem = msgspec.json.decode(body)
            except msgspec.DecodeError:
                problem = None
            if isinstance(problem, dict) and "type" in problem:
                problem.setdefault("status", response.status_code)
                return UpstreamError(response.status_code, problem)
        text = body[:200].decode("utf-8", "replace")
        return UpstreamError(response.status_code, {
            "type": "about:blank", "status": response.status_code,
            "detail": f"Stalwart answered {response.status_code} {response.reason_phrase}: {text}"})

    async def _send(self, method: str, url: str, who: ProxyCaller, *, content: bytes | AsyncIterator[bytes] | None
                    = None, headers: dict[str, str] | None = None) -> bytes:
        sent = {"authorization": self._authorization(who), **(headers or {})}
        try:
            response = await self.client.request(method, url, content=content, headers=sent, follow_redirects=True,
                                                 timeout=self.upstream.timeout)
        except httpx.TransportError as exc:  # refused, reset, timed out: the upstream is not there
            raise self._unreachable(url, exc) from None
        if response.status_code >= 400:
            raise self._passed_on(response, response.content)
        return response.content

    async def _json(self, method: str, url: str, who: ProxyCaller, **kwargs: Any) -> dict[str, Any]:
        body = await self._send(method, url, who, **kwargs)
        try:
            found = msgspec.json.decode(body)
        except msgspec.DecodeError:
            found = None
        if not isinstance(found, dict):
            raise UpstreamError(502, {"type": "about:blank", "status": 502,
                                      "detail": f"Stalwart's JMAP at {url} answered something not a JSON object"})
        return found

    async def _stream(self, url: str, who: ProxyCaller, *, headers: dict[str, str] | None = None,
                      endless: bool = False) -> httpx.Response:
        """A GET whose body the caller streams; ``endless`` (the EventSource) has no read timeout."""
        limit = httpx.Timeout(self.upstream.timeout, read=None) if endless else httpx.Timeout(self.upstream.timeout)
        request = self.client.build_request("GET", url, timeout=limit,
                                            headers={"authorization": self._authorization(who), **(headers or {})})
        try:
            response = await self.client.send(request, stream=True, follow_redirects=True)
        except httpx.TransportError as exc:
            raise self._unreachable(url, exc) from None
        if response.status_code >= 400:
            body = await response.aread()
            await response.aclose()
            raise self._passed_on(response, body)
        return response

    # -- the Session --------------------------------------------------------------------------------

    async def _upstream_session(self, who: ProxyCaller) -> _Mapped:
        header = self._authorization(who)
        raw = self.cache.get(header)
        if raw is None:
            raw = await self._json("GET", self.upstream.jmap_url + "/.well-known/jmap", who)
            self.cache.put(header, raw)
        visible = set(who.caller.agents)
        accounts = raw.get("accounts")
        primary = raw.get("primaryAccounts")
        own_primary = primary.get(MAIL) if isinstance(primary, dict) and not who.caller.admin else None
        ours: dict[str, str] = {}
        theirs: dict[str, str] = {}
        agents: dict[str, str] = {}
        for upstream_id, account in (accounts.items() if isinstance(accounts, dict) else ()):
            name = str(account.get("name", "")).strip().lower() if isinstance(account, dict) else ""
            agent = name if name in visible else (who.caller.name if upstream_id == own_primary else None)
            if agent is None or agent not in visible:
                continue  # an account of nobody the caller may see: not shown
            mine = next(k for k, v in self.service.accounts(who.caller).items() if v == agent)
            ours[mine], theirs[upstream_id], agents[mine] = upstream_id, mine, agent
        return _Mapped(raw=raw, ours_to_theirs=ours, theirs_to_ours=theirs, agents=agents)

    async def session(self, who: ProxyCaller, base_url: str) -> dict[str, Any]:
        """The Session for ``who``: the upstream's, its accounts ours, its URLs on ``base_url``."""
        mapped = await self._upstream_session(who)
        raw = mapped.raw
        capabilities = dict(raw.get("capabilities") or {})
        capabilities.pop(_WEBSOCKET, None)  # its URL is Stalwart's, and we do not proxy WebSocket (RFC 8887)
        local = local_session(self.service, who.caller, base_url)  # our URLs and our vendor capability
        capabilities[VENDOR] = local["capabilities"][VENDOR]
        upstream_accounts = raw.get("accounts") or {}
        accounts = {}
        for mine, theirs in mapped.ours_to_theirs.items():
            account = dict(upstream_accounts[theirs])
            account["accountCapabilities"] = {**(account.get("accountCapabilities") or {}), VENDOR: {}}
            accounts[mine] = account
        primary = {capability: mapped.theirs_to_ours[value]
                   for capability, value in (raw.get("primaryAccounts") or {}).items()
                   if value in mapped.theirs_to_ours}
        if primary:
            primary[VENDOR] = primary.get(MAIL, next(iter(primary.values())))
        return {**raw, "capabilities": capabilities, "accounts": accounts, "primaryAccounts": primary,
                "username": who.caller.name, **{key: local[key] for key in _URL_KEYS}}

    async def _account(self, who: ProxyCaller, mapped: _Mapped, account_id: object) -> str:
        """The upstream id of our ``account_id``; ``accountNotFound`` (audited when not the caller's) otherwise."""
        await self.service.agent_for(who.caller, account_id)  # raises (and audits) for an account not its own
        assert isinstance(account_id, str)
        found = mapped.ours_to_theirs.get(account_id)
        if found is None:  # the caller's, but Stalwart's session does not list it
            raise MethodError("accountNotFound")
        return found

    # -- API requests ---------------------------------------------------------------------------------

    async def api(self, who: ProxyCaller, body: bytes) -> dict[str, Any]:
        """One JMAP request: calls checked and mapped, the allowed ones forwarded together, answers in order."""
        try:
            request = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise UpstreamError.of(RequestError("notJSON", "the request body is not JSON")) from None
        calls = request.get("methodCalls") if isinstance(request, dict) else None
        using = request.get("using") if isinstance(request, dict) else None
        if not isinstance(calls, list) or not isinstance(using, list) or not all(
                isinstance(c, list) and len(c) == 3 and isinstance(c[0], str) and isinstance(c[1], dict)
                and isinstance(c[2], str) for c in calls):
            raise UpstreamError.of(RequestError("notRequest", "expected {using: [...], methodCalls: "
                                                              "[[name, arguments, callId], ...]}"))
        mapped = await self._upstream_session(who)
        vendor = VENDOR in using
        answers: list[list[Any] | None] = []
        forwarded: list[list[Any]] = []
        checked: dict[str, str] = {}  # call id -> the upstream account it was checked against
        gates: dict[str, _Gate] = {}
        for name, arguments, call_id in calls:
            try:
                args = await self._checked(who, mapped, arguments, checked)
            except MethodError as error:
                answers.append(["error", error.arguments(), call_id])
                continue
            if "accountId" in args:
                checked[call_id] = args["accountId"]
            if name == "Email/get" and vendor and isinstance(args.get("properties"), list) \
                    and GATE_PROPERTY in args["properties"] and args.get("accountId") in mapped.theirs_to_ours:
                wanted = [p for p in args["properties"] if p not in (GATE_PROPERTY, TOKEN_PROPERTY)]
                added = _DECISION_PROPERTY not in wanted
                args["properties"] = [*wanted, _DECISION_PROPERTY] if added else wanted
                agent = mapped.agents[mapped.theirs_to_ours[args["accountId"]]]
                gates[call_id] = _Gate(agent=agent, added_header=added)
            answers.append(None)
            forwarded.append([name, args, call_id])
        upstream: dict[str, Any] = {}
        if forwarded:  # nothing leaves for a request whose every call was refused here
            out = {**request, "using": [u for u in using if u != VENDOR], "methodCalls": forwarded}
            api_url = self._rebase_upstream(str(mapped.raw.get("apiUrl", "/jmap/")))
            upstream = await self._json("POST", api_url, who, content=_ENCODER.encode(out),
                                        headers={"content-type": "application/json"})
        raw_responses = upstream.get("methodResponses")
        groups = iter(_split_by_call(raw_responses if isinstance(raw_responses, list) else [], forwarded))
        merged: list[list[Any]] = []
        for answer in answers:
            if answer is not None:
                merged.append(answer)
                continue
            merged.extend(self._back(mapped, r) for r in next(groups))
        await self._add_gate_views(merged, gates)
        result = {key: value for key, value in upstream.items() if key != "methodResponses"}
        result.setdefault("sessionState", str(mapped.raw.get("state", "")))
        return {"methodResponses": merged, **result}

    async def _checked(self, who: ProxyCaller, mapped: _Mapped, arguments: dict[str, Any],
                       checked: dict[str, str]) -> dict[str, Any]:
        args = dict(arguments)
        for key in _CHECKED_KEYS:
            if "#" + key in args:
                ref = args.pop("#" + key)
                earlier = ref.get("resultOf") if isinstance(ref, dict) else None
                if not (isinstance(ref, dict) and ref.get("path") == "/accountId" and earlier in checked):
                    await self.service.agent_for(who.caller, f"#{key} {str(ref)[:60]}")  # audited, refused
                args[key] = checked[str(earlier)]
            elif key in args:
                args[key] = await self._account(who, mapped, args[key])
        return args

    @staticmethod
    def _back(mapped: _Mapped, response: Any) -> list[Any]:
        if not (isinstance(response, list) and len(response) == 3 and isinstance(response[1], dict)):
            return ["error", {"type": "serverFail", "description": "Stalwart answered a malformed response"}, ""]
        name, args, call_id = response
        args = dict(args)
        for key in _ACCOUNT_KEYS:
            if isinstance(args.get(key), str):
                args[key] = mapped.theirs_to_ours.get(args[key], args[key])
        return [name, args, call_id]

    async def _add_gate_views(self, responses: list[list[Any]], gates: dict[str, _Gate]) -> None:
        wanted = [(r, gates[r[2]]) for r in responses if r[0] == "Email/get" and r[2] in gates]
        if not wanted:
            return
        ids: dict[str, set[str]] = {}
        for response, gate in wanted:
            for email in response[1].get("list") or []:
                found = decision_id_of(email.get(_DECISION_PROPERTY)) if isinstance(email, dict) else None
                if found:
                    ids.setdefault(gate.agent, set()).add(found)
        views: dict[tuple[str, str], DecisionView] = {}
        if ids:
            def read(con: Any) -> list[tuple[str, DecisionView]]:
                return [(agent, d) for agent, wanted_ids in ids.items()
                        for d in decision_views(con, agent, sorted(wanted_ids))]

            views = {(agent, str(d.decision_id)): d for agent, d in await self.service.db.read(read)}
        tokens = self.service.tokens()
        for response, gate in wanted:
            for email in response[1].get("list") or []:
                if not isinstance(email, dict):
                    continue
                decision = decision_id_of(email.pop(_DECISION_PROPERTY, None) if gate.added_header
                                        else email.get(_DECISION_PROPERTY))
                d = views.get((gate.agent, decision or ""))
                token = None
                if d is not None and tokens is not None and d.action == "accept" and d.intake != "outbound":
                    token = tokens.issue(agent=gate.agent, thread_id=str(d.thread_id or email.get("threadId") or ""),
                                         decision_id=str(d.decision_id), capabilities=list(d.capabilities or []),
                                         email_id=email.get("id"))
                email[GATE_PROPERTY] = gate_view(d, token) if d is not None else None

    # -- blobs and push ---------------------------------------------------------------------------------

    async def upload(self, who: ProxyCaller, account_id: str, content_type: str | None,
                     body: AsyncIterator[bytes]) -> dict[str, Any]:
        """Upload a blob into our ``account_id``: the body streams to Stalwart's upload URL."""
        mapped = await self._upstream_session(who)
        try:
            theirs = await self._account(who, mapped, account_id)
        except MethodError:
            raise UpstreamError(404, {"type": "about:blank", "status": 404, "detail": "no such account"}) from None
        template = str(mapped.raw.get("uploadUrl", "/jmap/upload/{accountId}/"))
        url = self._rebase_upstream(template.replace("{accountId}", quote(theirs, safe="")))
        headers = {"content-type": content_type or "application/octet-stream"}
        answer = await self._json("POST", url, who, content=body, headers=headers)
        if isinstance(answer.get("accountId"), str):
            answer["accountId"] = mapped.theirs_to_ours.get(answer["accountId"], account_id)
        return answer

    async def download(self, who: ProxyCaller, account_id: str, blob_id: str, name: str,
                       accept: str | None) -> Streamed:
        """Download a blob of our ``account_id``: Stalwart's bytes stream through, type and disposition kept."""
        mapped = await self._upstream_session(who)
        try:
            theirs = await self._account(who, mapped, account_id)
        except MethodError:
            raise UpstreamError(404, {"type": "about:blank", "status": 404, "detail": "no such blob"}) from None
        template = str(mapped.raw.get("downloadUrl", "/jmap/download/{accountId}/{blobId}/{name}?accept={type}"))
        url = (template.replace("{accountId}", quote(theirs, safe="")).replace("{blobId}", quote(blob_id, safe=""))
               .replace("{name}", quote(name, safe="")).replace("{type}", quote(accept or "", safe="")))
        response = await self._stream(self._rebase_upstream(url), who)
        headers = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_DOWNLOAD_HEADERS}
        return Streamed(status=response.status_code, headers=headers, body=_body_of(response))

    async def eventsource(self, who: ProxyCaller, types: str, closeafter: str, ping: str,
                          last_event_id: str | None) -> Streamed:
        """Push (RFC 8620 7.3): Stalwart's event stream, StateChange account ids mapped to ours."""
        mapped = await self._upstream_session(who)
        template = str(mapped.raw.get("eventSourceUrl",
                                      "/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}"))
        url = (template.replace("{types}", quote(types, safe=",*")).replace("{closeafter}", quote(closeafter, safe=""))
               .replace("{ping}", quote(ping, safe="")))
        headers = {"accept": "text/event-stream", **({"last-event-id": last_event_id} if last_event_id else {})}
        response = await self._stream(self._rebase_upstream(url), who, headers=headers, endless=True)
        return Streamed(status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"},
                        body=_events_of(response, mapped))


def _split_by_call(responses: list[Any], forwarded: list[list[Any]]) -> list[list[Any]]:
    """The upstream's responses grouped per forwarded call, in order.

    One call may answer with several responses sharing its call id (RFC 8620 5.4's implicit
    ``Email/set`` after ``EmailSubmission/set``): each call takes the next response and those after
    it with the same id, unless that id is the next call's too.
    """
    groups: list[list[Any]] = []
    i = 0
    for n, (_, _, call_id) in enumerate(forwarded):
        if i >= len(responses):
            groups.append([["error", {"type": "serverFail", "description": "Stalwart did not answer this call"},
                            call_id]])
            continue
        group = [responses[i]]
        i += 1
        following = forwarded[n + 1][2] if n + 1 < len(forwarded) else None
        while i < len(responses) and following != call_id and _call_id(responses[i]) == call_id:
            group.append(responses[i])
            i += 1
        groups.append(group)
    return groups


def _call_id(response: Any) -> Any:
    return response[2] if isinstance(response, list) and len(response) == 3 else None


async def _body_of(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    finally:
        await response.aclose()


def _mapped_event(data: str, mapped: _Mapped) -> str | None:
    """A StateChange's ``changed`` keyed by our account ids (accounts we do not map dropped), or None to drop it."""
    try:
        event = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return data
    if not isinstance(event, dict) or not isinstance(event.get("changed"), dict):
        return data
    changed = {mapped.theirs_to_ours[k]: v for k, v in event["changed"].items() if k in mapped.theirs_to_ours}
    if not changed:
        return None
    return _ENCODER.encode({**event, "changed": changed}).decode()


async def _events_of(response: httpx.Response, mapped: _Mapped) -> AsyncIterator[bytes]:
    """The upstream's events, one by one, their ``data`` mapped (comments and pings as they came)."""
    try:
        lines: list[str] = []
        async for line in response.aiter_lines():
            if line:
                lines.append(line)
                continue
            data = "\n".join(x[5:].lstrip(" ") for x in lines if x.startswith("data:"))
            rest = [x for x in lines if not x.startswith("data:")]
            lines = []
            if data:
                mapped_data = _mapped_event(data, mapped)
                if mapped_data is None:
                    continue
                rest.append(f"data: {mapped_data}")
            yield ("\n".join(rest) + "\n\n").encode()
    finally:
        await response.aclose()
