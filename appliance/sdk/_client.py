"""The agent API over HTTP: ``Client`` (blocking) and ``AsyncClient`` (asyncio), with the same methods.

    client = Client("http://127.0.0.1:8025", os.environ["AGENT_API_KEY"])
    slots = client.call_tool("calendar_availability", {"day": "2026-11-26"},
                             capability_token=message.capability_token)
    client.reply(message, "Thursday 10:00 works for me. Shall I book it?")

Every answer is a typed Struct; every refusal an ``ApiError`` subclass carrying the appliance's
``reason`` code and HTTP ``status``. httpx is imported when a client is made, not with the package:
an agent that only verifies webhooks needs msgspec alone.

Retries, bounded (``retries``, exponential backoff with jitter): a connection that could not be
made is retried for any request (nothing was sent); other transport failures and 502/503/504 only
for requests that are safe to repeat (GETs, and sends, which always carry an ``Idempotency-Key``);
a send whose key is still being committed (409 ``idempotency_conflict``) is asked again. Tool calls
and usage reports are never repeated once sent. 429 is never retried: ``RateLimited.retry_after``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TIMEOUT", "AsyncClient", "Client"]

import asyncio
import email.message
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, get_args, overload

import msgspec

from appliance.sdk._errors import (
    ApiError,
    CapabilityMissing,
    IdempotencyConflict,
    NotFound,
    PolicyRefused,
    RateLimited,
    TokenInvalid,
    TransportError,
)
from appliance.sdk._models import (
    AttachmentContent,
    Blob,
    MessageBody,
    MessageSummary,
    SendResult,
    SentMessage,
    StreamEvent,
    TokenInfo,
    ToolInfo,
    UsageResult,
)
from appliance.sdk._payload import Event, MessageData, parse_event

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
"""Seconds a request may take (connect, and each read), unless the client is told otherwise."""
STREAM_READ_TIMEOUT = 60.0
"""Seconds the event stream may stay silent before the connection is taken for dead (the appliance
sends a keepalive comment every 15 quiet seconds)."""
HEALTHY_AFTER = 20.0
"""Seconds an event-stream connection must live (longer than a keepalive) to reset the retry count."""
_USER_AGENT = "appliance-sdk/0.1"
_RETRY_STATUSES = frozenset({502, 503, 504})
_KNOWN_EVENTS = frozenset(cls.__struct_config__.tag for cls in get_args(Event))


# -- the wire: request bodies ----------------------------------------------------------------

class _Body(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """Request bodies: camelCase, and only the fields given (the appliance refuses unknown ones)."""


class _BlobRef(_Body, frozen=True):
    blob_id: str
    filename: str | None = None


class _SendBody(_Body, frozen=True):
    text: str
    html: str | None = None
    to: list[str] = msgspec.field(default_factory=list)
    cc: list[str] = msgspec.field(default_factory=list)
    subject: str | None = None
    attachments: list[_BlobRef] = msgspec.field(default_factory=list)


class _UsageBody(_Body, frozen=True):
    thread_id: str
    tokens: int


class _TokenBody(_Body, frozen=True):
    token: str


# -- one request, and what to make of its answer ---------------------------------------------

@dataclass(frozen=True)
class _Call(Generic[T]):
    """A request to make and how to read its answer; both clients run the same ``_Call``s."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    repeatable: bool = False
    """Safe to send again when the first attempt may have reached the appliance."""


def _problem(response: httpx.Response) -> tuple[str, str]:
    """(reason, detail) of an error answer: ``{"error", "detail"}``, or Litestar's ``{"status_code", "detail"}``."""
    reason, detail = "", ""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict):
        reason = str(body.get("error") or body.get("reason") or "")
        detail = str(body.get("detail") or "")
    elif response.content:
        detail = response.text[:500]
    return reason or _DEFAULT_REASONS.get(response.status_code, f"http_{response.status_code}"), detail


_DEFAULT_REASONS = {400: "invalid_request", 401: "token_invalid", 403: "forbidden", 404: "not_found",
                    409: "conflict", 413: "too_large", 422: "invalid_request", 429: "rate_limited",
                    502: "bad_gateway", 503: "unavailable", 504: "timeout"}
_BY_REASON: dict[str, type[ApiError]] = {"token_invalid": TokenInvalid, "capability_missing": CapabilityMissing,
                                         "not_found": NotFound, "idempotency_conflict": IdempotencyConflict}
_BY_STATUS: dict[int, type[ApiError]] = {401: TokenInvalid, 403: PolicyRefused, 404: NotFound, 429: RateLimited}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare from the appliance, and not worth guessing at


def _api_error(response: httpx.Response) -> ApiError:
    """The typed exception for an error answer."""
    reason, detail = _problem(response)
    cls = _BY_REASON.get(reason) or _BY_STATUS.get(response.status_code, ApiError)
    return cls(response.status_code, reason, detail, retry_after=_retry_after(response))


def _json(kind: type[T]) -> Callable[[httpx.Response], T]:
    decoder = msgspec.json.Decoder(kind)

    def parse(response: httpx.Response) -> T:
        if not response.is_success:
            raise _api_error(response)
        try:
            value: T = decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise ApiError(response.status_code, "unexpected_answer",
                           f"the appliance's answer is not a {getattr(kind, '__name__', kind)}: {exc}") from exc
        return value

    return parse


def _bytes(response: httpx.Response) -> bytes:
    if not response.is_success:
        raise _api_error(response)
    return response.content


def _attachment(response: httpx.Response) -> AttachmentContent:
    content = _bytes(response)
    disposition = email.message.Message()
    disposition["content-disposition"] = response.headers.get("content-disposition", "attachment")
    return AttachmentContent(content=content, content_type=response.headers.get("content-type", ""),
                             filename=disposition.get_filename())


def _quoted(value: str) -> str:
    """A path segment: ids are opaque, so nothing in them may change the path."""
    from urllib.parse import quote

    return quote(value, safe="")


def _send_headers(capability_token: str, idempotency_key: str | None) -> dict[str, str]:
    return {"content-type": "application/json", "x-capability-token": capability_token,
            "idempotency-key": idempotency_key or uuid.uuid4().hex}


def _refs(attachments: Sequence[Blob | str]) -> list[_BlobRef]:
    return [_BlobRef(blob_id=a if isinstance(a, str) else a.blob_id) for a in attachments]


class _Calls:
    """The agent API, one ``_Call`` per method (the clients add only the sending)."""

    @staticmethod
    def message(email_id: str) -> _Call[MessageSummary]:
        return _Call("GET", f"/api/v1/messages/{_quoted(email_id)}", _json(MessageSummary), repeatable=True)

    @staticmethod
    def body(email_id: str) -> _Call[MessageBody]:
        return _Call("GET", f"/api/v1/messages/{_quoted(email_id)}/body", _json(MessageBody), repeatable=True)

    @staticmethod
    def raw(email_id: str) -> _Call[bytes]:
        return _Call("GET", f"/api/v1/messages/{_quoted(email_id)}/raw", _bytes, repeatable=True)

    @staticmethod
    def attachment(email_id: str, index: int) -> _Call[AttachmentContent]:
        return _Call("GET", f"/api/v1/messages/{_quoted(email_id)}/attachments/{int(index)}", _attachment,
                     repeatable=True)

    @staticmethod
    def upload_blob(data: bytes, content_type: str, filename: str | None) -> _Call[Blob]:
        return _Call("POST", "/api/v1/blobs", _json(Blob), headers={"content-type": content_type},
                     params={"filename": filename} if filename else {}, content=bytes(data))

    @staticmethod
    def reply(message: str | MessageData, text: str, *, capability_token: str | None, html: str | None,
              cc: Sequence[str], subject: str | None, attachments: Sequence[Blob | str],
              idempotency_key: str | None) -> _Call[SendResult]:
        email_id = message if isinstance(message, str) else message.email_id
        token = capability_token or ("" if isinstance(message, str) else message.capability_token)
        if not token:
            raise ValueError("reply needs the message's capability token (pass the MessageData, or capability_token)")
        body = _SendBody(text=text, html=html, cc=list(cc), subject=subject, attachments=_refs(attachments))
        return _Call("POST", f"/api/v1/messages/{_quoted(email_id)}/reply", _json(SendResult),
                     headers=_send_headers(token, idempotency_key), content=msgspec.json.encode(body),
                     repeatable=True)

    @staticmethod
    def send(to: Sequence[str], subject: str, text: str, *, capability_token: str, html: str | None,
             cc: Sequence[str], attachments: Sequence[Blob | str], idempotency_key: str | None) -> _Call[SendResult]:
        if isinstance(to, str):
            raise TypeError("to is a list of addresses, not one string")
        body = _SendBody(text=text, html=html, to=list(to), cc=list(cc), subject=subject,
                         attachments=_refs(attachments))
        return _Call("POST", "/api/v1/messages", _json(SendResult), headers=_send_headers(capability_token,
                     idempotency_key), content=msgspec.json.encode(body), repeatable=True)

    @staticmethod
    def outbox(limit: int, after: str | None) -> _Call[list[SentMessage]]:
        params = {"limit": str(int(limit)), **({"after": after} if after else {})}
        return _Call("GET", "/api/v1/outbox", _json(list[SentMessage]), params=params, repeatable=True)

    @staticmethod
    def sent(email_id: str) -> _Call[SentMessage]:
        return _Call("GET", f"/api/v1/outbox/{_quoted(email_id)}", _json(SentMessage), repeatable=True)

    @staticmethod
    def tools() -> _Call[list[ToolInfo]]:
        return _Call("GET", "/api/v1/tools", _json(list[ToolInfo]), repeatable=True)

    @staticmethod
    def call_tool(name: str, arguments: Mapping[str, Any] | msgspec.Struct | None, capability_token: str,
                  kind: type[T]) -> _Call[T]:
        return _Call("POST", f"/api/v1/tools/{_quoted(name)}", _json(kind),
                     headers={"content-type": "application/json", "x-capability-token": capability_token},
                     content=msgspec.json.encode({} if arguments is None else arguments))

    @staticmethod
    def report_usage(thread_id: str, tokens: int) -> _Call[UsageResult]:
        return _Call("POST", "/api/v1/usage", _json(UsageResult), headers={"content-type": "application/json"},
                     content=msgspec.json.encode(_UsageBody(thread_id=thread_id, tokens=int(tokens))))

    @staticmethod
    def introspect(token: str) -> _Call[TokenInfo]:
        return _Call("POST", "/api/v1/tokens/introspect", _json(TokenInfo),
                     headers={"content-type": "application/json"}, content=msgspec.json.encode(_TokenBody(token=token)),
                     repeatable=True)


# -- server-sent events ----------------------------------------------------------------------

class _SseParser:
    """The event-stream format (WHATWG HTML, "server-sent events"), one line at a time."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._type = ""
        self.last_id = ""
        """Persists across events, as the format says (an event without ``id:`` keeps the last one)."""

    def line(self, line: str) -> tuple[str, str, str] | None:
        """Feed one line (without its end); (id, type, data) when it completes an event."""
        if not line:
            data, kind = self._data, self._type or "message"
            self._data, self._type = [], ""
            if not data:
                return None  # a block of comments, retry: or id: only
            return self.last_id, kind, "\n".join(data)
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None


def _stream_event(event_id: str, kind: str, data: str) -> StreamEvent:
    raw = data.encode()
    parsed: Event | None = None
    if kind in _KNOWN_EVENTS:
        parsed = parse_event(raw)  # a known type that does not parse is the appliance's bug: PayloadError
    return StreamEvent(id=event_id, type=kind, event=parsed, data=raw)


@dataclass
class _Backoff:
    base: float
    ceiling: float
    failures: int = 0

    def next_delay(self, hint: float | None = None) -> float:
        self.failures += 1
        delay: float = min(self.ceiling, self.base * 2.0 ** (self.failures - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: agents restarted together do not reconnect together
        return max(delay, min(hint, self.ceiling)) if hint is not None else delay


def _stream_refusal(response: httpx.Response, backoff: _Backoff, max_retries: int) -> float:
    """The delay before reconnecting after an error answer; raises it when it is final or retries are spent."""
    error = _api_error(response)
    if response.status_code not in (*_RETRY_STATUSES, 429) or backoff.failures >= max_retries:
        raise error
    return backoff.next_delay(error.retry_after)


def _dropped(backoff: _Backoff, opened: float | None, max_retries: int, exc: Exception | None = None) -> float:
    """The delay before reconnecting after the connection failed or ended; raises when retries are spent.

    A connection that lived ``HEALTHY_AFTER`` seconds (keepalives came) starts the count again, as an
    event does; one that dies at once after its 200 counts as a failure, so a broken stream is not
    reopened forever.
    """
    if opened is not None and time.monotonic() - opened >= HEALTHY_AFTER:
        backoff.failures = 0
    if backoff.failures >= max_retries:
        what = _describe(exc) if exc is not None else "closed by the appliance"
        raise TransportError(f"event stream: {what} (after {backoff.failures + 1} attempts)") from exc
    return backoff.next_delay()


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- the clients -----------------------------------------------------------------------------

def _from_env(url_env: str, key_env: str) -> tuple[str, str]:
    url, key = os.environ.get(url_env, "http://127.0.0.1:8025"), os.environ.get(key_env, "")
    if not key:
        raise ValueError(f"${key_env} is not set (the agent's API key)")
    return url, key


class _Base:
    def __init__(self, base_url: str, api_key: str, *, retries: int, backoff: float) -> None:
        if not api_key:
            raise ValueError("api_key is empty")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._headers = {"authorization": f"Bearer {api_key}", "user-agent": _USER_AGENT}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _should_retry(self, call: _Call[Any], response: httpx.Response) -> bool:
        if not call.repeatable:
            return False
        if response.status_code in _RETRY_STATUSES:
            return True
        return response.status_code == 409 and _problem(response)[0] == "idempotency_conflict"


class Client(_Base):
    """The agent API, blocking. Use it as a context manager, or ``close()`` it.

    Args:
        base_url: where the appliance's HTTP API listens (``http://127.0.0.1:8025``).
        api_key: the agent's API key (``Authorization: Bearer``).
        timeout: seconds for connecting and for each read.
        retries: how many times a failed request is tried again (see the module's rules).
        backoff: the first retry's delay in seconds; each next one doubles (with jitter).
        transport: an httpx transport (tests: ``httpx.MockTransport``).
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT, retries: int = 2,
                 backoff: float = 0.25, transport: httpx.BaseTransport | None = None) -> None:
        import httpx

        super().__init__(base_url, api_key, retries=retries, backoff=backoff)
        self._httpx = httpx
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout,
                                  transport=transport)

    @classmethod
    def from_env(cls, url_env: str = "APPLIANCE_URL", key_env: str = "AGENT_API_KEY") -> Client:
        """A client for ``$APPLIANCE_URL`` (default ``http://127.0.0.1:8025``) with the key in ``$AGENT_API_KEY``."""
        return cls(*_from_env(url_env, key_env))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: _Call[T]) -> T:
        httpx = self._httpx
        delays = _Backoff(self.backoff, 30.0)
        while True:
            try:
                response = self._http.request(call.method, call.path, headers=call.headers, params=call.params,
                                              content=call.content)
            except httpx.TransportError as exc:
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if delays.failures < self.retries and (unsent or call.repeatable):
                    time.sleep(delays.next_delay())
                    continue
                raise TransportError(f"{call.method} {call.path}: {_describe(exc)}") from exc
            if delays.failures < self.retries and self._should_retry(call, response):
                time.sleep(delays.next_delay(_retry_after(response)))
                continue
            return call.parse(response)

    # messages
    def message(self, email_id: str) -> MessageSummary:
        """The summary of one of the agent's messages."""
        return self._run(_Calls.message(email_id))

    def body(self, email_id: str) -> MessageBody:
        """The whole readable body (the event's ``text`` and ``html`` may have been cut)."""
        return self._run(_Calls.body(email_id))

    def raw(self, email_id: str) -> bytes:
        """The message as stored (RFC 5322 bytes, the appliance's Authentication-Results on top)."""
        return self._run(_Calls.raw(email_id))

    def attachment(self, email_id: str, index: int) -> AttachmentContent:
        """Attachment ``index`` (as numbered in the event's ``attachments``)."""
        return self._run(_Calls.attachment(email_id, index))

    # sending
    def upload_blob(self, data: bytes, *, content_type: str = "application/octet-stream",
                    filename: str | None = None) -> Blob:
        """Upload bytes to attach to a reply or a new message (pass the ``Blob`` in ``attachments``)."""
        return self._run(_Calls.upload_blob(data, content_type, filename))

    def reply(self, message: str | MessageData, text: str, *, capability_token: str | None = None,
              html: str | None = None, cc: Sequence[str] = (), subject: str | None = None,
              attachments: Sequence[Blob | str] = (), idempotency_key: str | None = None) -> SendResult:
        """Reply to a received message, in its thread, to its verified sender.

        ``message`` is the event's ``MessageData`` (its email id and capability token are used) or an
        email id with ``capability_token``. Pass a stable ``idempotency_key`` (say, derived from the
        webhook id) so that a redelivered event never sends twice; without one a fresh key makes this
        call's own retries safe.
        """
        return self._run(_Calls.reply(message, text, capability_token=capability_token, html=html, cc=cc,
                                      subject=subject, attachments=attachments, idempotency_key=idempotency_key))

    def send(self, to: Sequence[str], subject: str, text: str, *, capability_token: str, html: str | None = None,
             cc: Sequence[str] = (), attachments: Sequence[Blob | str] = (),
             idempotency_key: str | None = None) -> SendResult:
        """New mail (the token's grant needs ``send_email``, the recipients the policy's ``allowRecipients``)."""
        return self._run(_Calls.send(to, subject, text, capability_token=capability_token, html=html, cc=cc,
                                     attachments=attachments, idempotency_key=idempotency_key))

    def outbox(self, *, limit: int = 50, after: str | None = None) -> list[SentMessage]:
        """The agent's sent messages, newest first (``after``: the last email id of the previous page)."""
        return self._run(_Calls.outbox(limit, after))

    def sent(self, email_id: str) -> SentMessage:
        """One sent message (``SendResult.email_id``) and where each recipient's copy is."""
        return self._run(_Calls.sent(email_id))

    # tools, usage, tokens
    def tools(self) -> list[ToolInfo]:
        """The operator's tools and the capability each needs."""
        return self._run(_Calls.tools())

    @overload
    def call_tool(self, name: str, arguments: Mapping[str, Any] | msgspec.Struct | None = None, *,
                  capability_token: str) -> Any: ...

    @overload
    def call_tool(self, name: str, arguments: Mapping[str, Any] | msgspec.Struct | None = None, *,
                  capability_token: str, type: type[T]) -> T: ...

    def call_tool(self, name: str, arguments: Mapping[str, Any] | msgspec.Struct | None = None, *,
                  capability_token: str, type: Any = Any) -> Any:
        """Call operator tool ``name`` with a JSON body; its JSON answer (decoded as ``type`` when given).

        Refused without reaching the tool when the token's grant lacks the tool's capability
        (``CapabilityMissing``). Sent once: a tool call is never retried after it may have arrived.
        """
        return self._run(_Calls.call_tool(name, arguments, capability_token, type))

    def report_usage(self, thread_id: str, tokens: int) -> UsageResult:
        """Charge tokens really spent (by the model) to the thread's budget."""
        return self._run(_Calls.report_usage(thread_id, tokens))

    def introspect(self, capability_token: str) -> TokenInfo:
        """What a capability token grants (``active`` false when expired, forged or another agent's)."""
        return self._run(_Calls.introspect(capability_token))

    # events
    def events(self, *, last_event_id: str | None = None, max_retries: int = 8, backoff: float = 1.0,
               max_backoff: float = 30.0, read_timeout: float = STREAM_READ_TIMEOUT) -> Iterator[StreamEvent]:
        """The agent's events, forever: the same payloads and ids as its webhooks.

        Starts after ``last_event_id`` (else from the oldest event kept). A dropped connection is
        reopened with ``Last-Event-ID`` set to the last event yielded, so nothing is missed or
        repeated; after ``max_retries`` failed attempts in a row (an event, or a connection that
        lived ``HEALTHY_AFTER`` seconds, ends a row) the last failure is raised (``TransportError``
        or ``ApiError``). 401/403/404 are raised at once.
        """
        httpx = self._httpx
        cursor = last_event_id or ""
        delays = _Backoff(backoff, max_backoff)
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        while True:
            opened: float | None = None
            try:
                with self._http.stream("GET", "/api/v1/events", timeout=timeout,
                                       headers={"last-event-id": cursor} if cursor else {}) as response:
                    if response.status_code != 200:
                        response.read()
                        delay = _stream_refusal(response, delays, max_retries)
                    else:
                        opened = time.monotonic()
                        parser = _SseParser()
                        for line in response.iter_lines():
                            found = parser.line(line)
                            if found is not None and found[0]:
                                item = _stream_event(*found)
                                cursor = item.id
                                delays.failures = 0  # progress: the retry budget starts again
                                yield item
                        delay = _dropped(delays, opened, max_retries)  # closed (the appliance restarts)
            except httpx.TransportError as exc:
                delay = _dropped(delays, opened, max_retries, exc)
            time.sleep(delay)


class AsyncClient(_Base):
    """The agent API for asyncio: ``Client``'s methods, awaited. ``async with`` it, or ``await aclose()``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT, retries: int = 2,
                 backoff: float = 0.25, transport: httpx.AsyncBaseTransport | None = None) -> None:
        import httpx

        super().__init__(base_url, api_key, retries=retries, backoff=backoff)
        self._httpx = httpx
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=timeout,
                                       transport=transport)

    @classmethod
    def from_env(cls, url_env: str = "APPLIANCE_URL", key_env: str = "AGENT_API_KEY") -> AsyncClient:
        """A client for ``$APPLIANCE_URL`` (default ``http://127.0.0.1:8025``) with the key in ``$AGENT_API_KEY``."""
        return cls(*_from_env(url_env, key_env))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, call: _Call[T]) -> T:
        httpx = self._httpx
        delays = _Backoff(self.backoff, 30.0)
        while True:
            try:
                response = await self._http.request(call.method, call.path, headers=call.headers,
                                                    params=call.params, content=call.content)
            except httpx.TransportError as exc:
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if delays.failures < self.retries and (unsent or call.repeatable):
                    await asyncio.sleep(delays.next_delay())
                    continue
                raise TransportError(f"{call.method} {call.path}: {_describe(exc)}") from exc
            if delays.failures < self.retries and self._should_retry(call, response):
                await asyncio.sleep(delays.next_delay(_retry_after(response)))
                continue
            return call.parse(response)

    async def message(self, email_id: str) -> MessageSummary:
        return await self._run(_Calls.message(email_id))

    async def body(self, email_id: str) -> MessageBody:
        return await self._run(_Calls.body(email_id))

    async def raw(self, email_id: str) -> bytes:
        return await self._run(_Calls.raw(email_id))

    async def attachment(self, email_id: str, index: int) -> AttachmentContent:
        return await self._run(_Calls.attachment(email_id, index))

    async def upload_blob(self, data: bytes, *, content_type: str = "application/octet-stream",
                          filename: str | None = None) -> Blob:
        return await self._run(_Calls.upload_blob(data, content_type, filename))

    async def reply(self, message: str | MessageData, text: str, *, capability_token: str | None = None,
                    html: str | None = None, cc: Sequence[str] = (), subject: str | None = None,
                    attachments: Sequence[Blob | str] = (), idempotency_key: str | None = None) -> SendResult:
        return await self._run(_Calls.reply(message, text, capability_token=capability_token, html=html, cc=cc,
                                            subject=subject, attachments=attachments,
                                            idempotency_key=idempotency_key))

    async def send(self, to: Sequence[str], subject: str, text: str, *, capability_token: str,
                   html: str | None = None, cc: Sequence[str] = (), attachments: Sequence[Blob | str] = (),
                   idempotency_key: str | None = None) -> SendResult:
        return await self._run(_Calls.send(to, subject, text, capability_token=capability_token, html=html, cc=cc,
                                           attachments=attachments, idempotency_key=idempotency_key))

    async def outbox(self, *, limit: int = 50, after: str | None = None) -> list[SentMessage]:
        return await self._run(_Calls.outbox(limit, after))

    async def sent(self, email_id: str) -> SentMessage:
        return await self._run(_Calls.sent(email_id))

    async def tools(self) -> list[ToolInfo]:
        return await self._run(_Calls.tools())

    @overload
    async def call_tool(self, name: str, arguments: Mapping[str, Any] | msgspec.Struct | None = None, *,
                        capability_token: str) -> Any: ...

    @overload
    async def call_tool(self, name: str, arguments: Mapping[str, Any] | msgspec.Struct | None = None, *,
                        capability_token: str, type: type[T]) -> T: ...

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | msgspec.Struct | None = None, *,
                        capability_token: str, type: Any = Any) -> Any:
        return await self._run(_Calls.call_tool(name, arguments, capability_token, type))

    async def report_usage(self, thread_id: str, tokens: int) -> UsageResult:
        return await self._run(_Calls.report_usage(thread_id, tokens))

    async def introspect(self, capability_token: str) -> TokenInfo:
        return await self._run(_Calls.introspect(capability_token))

    async def events(self, *, last_event_id: str | None = None, max_retries: int = 8, backoff: float = 1.0,
                     max_backoff: float = 30.0,
                     read_timeout: float = STREAM_READ_TIMEOUT) -> AsyncIterator[StreamEvent]:
        """``Client.events``, asynchronously (``async for item in client.events(): ...``)."""
        httpx = self._httpx
        cursor = last_event_id or ""
        delays = _Backoff(backoff, max_backoff)
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        while True:
            opened: float | None = None
            try:
                async with self._http.stream("GET", "/api/v1/events", timeout=timeout,
                                             headers={"last-event-id": cursor} if cursor else {}) as response:
                    if response.status_code != 200:
                        await response.aread()
                        delay = _stream_refusal(response, delays, max_retries)
                    else:
                        opened = time.monotonic()
                        parser = _SseParser()
                        async for line in response.aiter_lines():
                            found = parser.line(line)
                            if found is not None and found[0]:
                                item = _stream_event(*found)
                                cursor = item.id
                                delays.failures = 0
                                yield item
                        delay = _dropped(delays, opened, max_retries)
            except httpx.TransportError as exc:
                delay = _dropped(delays, opened, max_retries, exc)
            await asyncio.sleep(delay)

