"""One agent's account at Stalwart, as the appliance itself uses it over mail JMAP (RFC 8620/8621):
its Session, method calls, uploads and the push stream. An adapter: it carries calls and answers.

The Session's URLs carry Stalwart's public hostname; the appliance talks to it
at ``jmap_url`` (often a loopback or container address), so they are rebased.
"""

from __future__ import annotations

__all__ = ["JMAP_USING", "AccountClient", "JmapCallError", "PushEvent", "rebase"]

from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import msgspec

JMAP_USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:submission"]


class JmapCallError(Exception):
    """A method- or request-level JMAP error, or Stalwart unreachable."""

    def __init__(self, method: str, kind: str, description: str = "") -> None:
        super().__init__(f"Stalwart {method}: {kind}" + (f" ({description})" if description else ""))
        self.method = method
        self.kind = kind


class PushEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the EventSource stream: ``state`` (a StateChange), ``ping``, or ``open`` (ours: the
    stream is connected, events from here on reach us)."""

    event: str
    data: str


def rebase(url: str, base: str) -> str:
    """``url`` with the scheme and host of ``base`` (path and query kept)."""
    target, origin = urlsplit(url), urlsplit(base)
    return urlunsplit((origin.scheme, origin.netloc, target.path, target.query, target.fragment))


class AccountClient:
    """Calls one Stalwart account's mail JMAP with the appliance's API key for it."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.session: dict[str, Any] | None = None

    async def _session(self) -> dict[str, Any]:
        if self.session is None:
            try:
                answer = await self.http.get(self.base_url + "/.well-known/jmap", headers=self.headers,
                                             follow_redirects=True)
            except httpx.HTTPError as exc:
                raise JmapCallError("session", "unreachable", f"{self.base_url}: {exc!r}") from exc
            if answer.status_code != 200:
                raise JmapCallError("session", f"HTTP {answer.status_code}", answer.text[:200])
            self.session = answer.json()
        return self.session

    async def account_id(self) -> str:
        """The account's id (the Session's primary mail account)."""
        primary = (await self._session()).get("primaryAccounts") or {}
        account = primary.get("urn:ietf:params:jmap:mail")
        if not isinstance(account, str):
            raise JmapCallError("session", "no primary mail account")
        return account

    async def call(self, method: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """One method call with ``accountId`` filled in; its response arguments."""
        session = await self._session()
        body = {"using": JMAP_USING,
                "methodCalls": [[method, {"accountId": await self.account_id(), **arguments}, "0"]]}
        url = rebase(str(session.get("apiUrl", "/jmap/")), self.base_url)
        try:
            answer = await self.http.post(url, json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise JmapCallError(method, "unreachable", f"{url}: {exc!r}") from exc
        if answer.status_code == 401:
            self.session = None
            raise JmapCallError(method, "unauthorized", "the appliance's API key was refused")
        if answer.status_code != 200:
            raise JmapCallError(method, f"HTTP {answer.status_code}", answer.text[:200])
        try:
            name, result, _ = answer.json()["methodResponses"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise JmapCallError(method, "malformed response", answer.text[:200]) from exc
        if name == "error":
            raise JmapCallError(method, str(result.get("type", "error")), str(result.get("description", "")))
        return dict(result)

    async def upload(self, content: bytes, content_type: str = "message/rfc822") -> str:
        """Upload a blob; its ``blobId``."""
        template = str((await self._session()).get("uploadUrl", "/jmap/upload/{accountId}/"))
        url = rebase(template.replace("{accountId}", quote(await self.account_id(), safe="")), self.base_url)
        try:
            answer = await self.http.post(url, content=content, headers={**self.headers, "Content-Type": content_type})
        except httpx.HTTPError as exc:
            raise JmapCallError("upload", "unreachable", f"{url}: {exc!r}") from exc
        if answer.status_code not in (200, 201):
            raise JmapCallError("upload", f"HTTP {answer.status_code}", answer.text[:200])
        return str(answer.json()["blobId"])

    async def events(self, *, types: str = "Email", ping: int = 30) -> AsyncIterator[PushEvent]:
        """The account's EventSource stream (RFC 8620 7.3) until Stalwart ends it or goes silent.

        Stalwart pings every ``ping`` seconds; three pings' silence is a dead stream (``JmapCallError``).
        """
        template = str((await self._session()).get("eventSourceUrl", "/jmap/eventsource/"))
        url = rebase(template.replace("{types}", types).replace("{closeafter}", "no")
                     .replace("{ping}", str(ping)), self.base_url)
        timeout = httpx.Timeout(10.0, read=ping * 3.0)
        try:
            async with self.http.stream("GET", url, headers={**self.headers, "Accept": "text/event-stream"},
                                        timeout=timeout) as answer:
                if answer.status_code != 200:
                    raise JmapCallError("eventsource", f"HTTP {answer.status_code}")
                # Ours, not Stalwart's: the stream is open. A change made before this point sent no
                # event to us, so the caller catches up now (Stalwart sends nothing on connect).
                yield PushEvent(event="open", data="")
                event, data = "message", list[str]()
                async for line in answer.aiter_lines():
                    if not line:
                        if data:
                            yield PushEvent(event=event, data="\n".join(data))
                        event, data = "message", list[str]()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
        except httpx.HTTPError as exc:
            raise JmapCallError("eventsource", "stream ended", repr(exc)) from exc
