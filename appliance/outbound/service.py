"""The Outbox: one agent's send, from its request to a committed queue job.

``Outbox.submit`` runs the send path the model module draws::

    token checked ──> idempotency key looked up ──> parent loaded (a reply) ──> attachments read
      ──> composed ──> SendFacts ──> gate.outbound.evaluate_send ──> signed (DKIM, when keys exist)
      ──> ONE transaction: the Sent copy, the audit row, the queue job(s), the blobs' use,
          the idempotency record, the rate charge ──> SendResult (202)

It decides nothing itself: the token issuer says whether a token is genuine,
the gate whether the message may go. Whatever is refused is audited in the
same hash chain as inbound decisions (``intake = "outbound"``, action
``refuse``) and raised as ``Refused`` carrying the HTTP status, the reason
code and the detail; a send is audited as action ``send`` in its own
transaction. A reply goes to the parent's verified sender (the stored
``sender`` the inbound gate matched), or to its Reply-To only when
``reply_target`` honours it; a token for an accepted message always allows
that reply, in that message's thread.

The read side serves the agent API and ``appliance outbox``: ``message_info``
(a message of the agent's, inbox or sent) and ``list_sent`` / ``sent_message``
(sent messages with each recipient's delivery status).
"""

from __future__ import annotations

__all__ = [
    "SENT",
    "AttachmentSummary",
    "MessageInfo",
    "Outbox",
    "RecipientStatus",
    "Refused",
    "SentMessage",
    "appliance_secrets",
    "list_sent",
    "message_info",
    "sent_message",
    "verify_token",
]

import asyncio
import base64
import binascii
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb
import msgspec

from appliance.audit import DecisionRecord, append_decision
from appliance.config import ApplianceConfig
from appliance.delivery.tokens import Claims, TokenIssuer
from appliance.errors import ApplianceError
from appliance.gate import LimitCharge, new_decision_id
from appliance.gate.limits import InMemoryLimits
from appliance.gate.outbound import evaluate_send
from appliance.mail import AttachmentInfo, ParsedMessage, ascii_address, list_attachments, parse_tree
from appliance.mailauth.keys import load_signing_keys
from appliance.mailauth.signing import sign
from appliance.outbound.blobs import Blob, get_blobs, touch_blobs
from appliance.outbound.compose import Attachment, Draft, compose
from appliance.outbound.events import MessageBouncedData, MessageSentData
from appliance.outbound.idempotency import (
    IdempotencyRecord,
    InFlight,
    check_key,
    expire_keys,
    find_key,
    fingerprint,
    remember_key,
)
from appliance.outbound.model import OutboundMessage, SendDecision, SendFacts, SendKind, SendRequest, SendResult
from appliance.outbound.queue import enqueue
from appliance.outbound.threading import reply_target
from appliance.policy import MailPolicy
from appliance.policy.book import PolicyBook
from appliance.store.database import Batch, Database, utc
from appliance.store.deliveries import send_outcomes_of
from appliance.store.limits import PersistentLimits
from appliance.store.messages import (
    INBOX,
    SENT,
    StoredMessage,
    get_message,
    mailbox_email_ids,
    message_received_at,
    save_message,
)
from appliance.store.outbound import jobs_of_message

log = logging.getLogger("appliance.outbound")

_TOKEN_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
"""A JWT (header and payload are base64url JSON, so both start ``eyJ``): what a capability token looks like."""


class Refused(Exception):
    """A request the appliance will not carry out: the HTTP status, the reason code and what decided."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


def verify_token(issuer: TokenIssuer, token: str | None, *, agent: str, now: float) -> Claims:
    """The claims of ``token`` when it is genuine, unexpired and ``agent``'s; ``Refused`` (401) saying why not."""
    if not token:
        raise Refused(401, "token_invalid", "no capability token: send the one of the message's event "
                                            "in the X-Capability-Token header (or capabilityToken)")
    claims = issuer.verify(token, now=now)
    if claims is None:
        raise Refused(401, "token_invalid", _why_invalid(issuer, token, now))
    if claims.sub != agent:
        raise Refused(401, "token_invalid", "the capability token was issued to another agent")
    return claims


def _why_invalid(issuer: TokenIssuer, token: str, now: float) -> str:
    """Expired (or not yet valid) when the token verifies at a time inside its own window; else not genuine."""
    parts = token.split(".")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)) if len(parts) == 3 else b""
        claimed = msgspec.json.decode(payload, type=Claims)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        claimed = None
    if claimed is not None and claimed.exp > claimed.iat and issuer.verify(token, now=claimed.exp - 1) is not None:
        when = datetime.fromtimestamp(claimed.exp, UTC).isoformat(timespec="seconds")
        if now >= claimed.exp:
            return f"the capability token expired at {when}; use the token of a newer event of the thread"
        return "the capability token is not valid yet (issued in the future: check the clock)"
    return "the capability token is not genuine (tampered, cut short, or not issued by this appliance)"


def appliance_secrets(config: ApplianceConfig, *, agent_keys: Mapping[str, str], admin_token: str,
                      token_key: bytes | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Everything an agent's mail must never carry: every agent's API key, every webhook secret (whole and
    without ``whsec_``), the admin, hook and metrics tokens, the capability-token key, the relay password."""
    env = os.environ if environ is None else environ
    found: list[str] = [*agent_keys, admin_token]
    for agent in config.agents:
        if agent.webhook_secret_env:
            for secret in env.get(agent.webhook_secret_env, "").split():
                found += [secret, secret.removeprefix("whsec_")]
    for name in (config.hook.secret_env, config.http.metrics_token_env, config.outbound.smarthost_password_env):
        if name and env.get(name, "").strip():
            found.append(env[name].strip())
    if token_key is not None:
        found += [base64.b64encode(token_key).decode(), base64.urlsafe_b64encode(token_key).decode().rstrip("=")]
    return list(dict.fromkeys(s for s in found if s))


# -- the send path -------------------------------------------------------------------------------


class _Attempt:
    """What is known of a send so far, for the audit row of its refusal (or its send)."""

    def __init__(self, agent: str, kind: SendKind, now: float) -> None:
        self.agent = agent
        self.kind = kind
        self.now = now
        self.decision_id = new_decision_id(now)
        self.thread_id = ""
        self.recipients: list[str] = []
        self.subject: str | None = None
        self.message_id: str | None = None
        self.size = 0
        self.body_sha256: str | None = None
        self.granted: list[str] = []
        self.token_id: str | None = None

    def record(self, *, action: Literal["send", "refuse"], reason: str | None, detail: str | None,
               latency_ms: float, dkim: str = "none") -> DecisionRecord:
        return DecisionRecord(
            decision_id=self.decision_id, ts=utc(self.now), agent=self.agent, client_ip="", helo="",
            mail_from=self.agent, rcpt_to=list(self.recipients), header_from=self.agent,
            message_id=self.message_id, subject=self.subject, thread_id=self.thread_id,
            spf="none", dkim=dkim, dmarc="none", rule=None, action=action, reason=reason,
            capabilities=list(self.granted), estimated_tokens=0, size=self.size, body_sha256=self.body_sha256,
            latency_ms=round(latency_ms, 3), intake="outbound", detail=detail, token_id=self.token_id)


class Outbox:
    """Sends agents' mail: checks, composes, signs and queues it (``submit``); the module docstring says how."""

    def __init__(self, *, db: Database, config: ApplianceConfig, policies: PolicyBook, limits: InMemoryLimits,
                 tokens: TokenIssuer, secrets: list[str], clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.config = config
        self.policies = policies
        self.limits = limits
        self.tokens = tokens
        self.secrets = secrets
        """The appliance's own secrets (``appliance_secrets``), which the gate refuses to let out."""
        self.clock = clock
        self.keys_dir: Path = config.data_path
        self.on_committed: Callable[[SendResult], None] | None = None
        """Called after each committed send (wakes the outbound worker)."""
        self._in_flight = InFlight()
        self._unsigned_warned: set[str] = set()

    async def submit(self, agent: str, kind: SendKind, parent_email_id: str | None, request: SendRequest,
                     token: str | None, idempotency_key: str | None) -> SendResult:
        """Send ``request`` for ``agent``: a reply to ``parent_email_id``, or new mail.

        Returns once the message, its audit row and its queue job are committed. ``Refused``
        (audited) when the token, the request or the policy does not allow it.
        """
        started = time.perf_counter()
        agent = agent.lower()
        attempt = _Attempt(agent, kind, self.clock())
        token = token or request.capability_token
        claimed: str | None = None
        try:
            if idempotency_key is not None:
                try:
                    idempotency_key = check_key(idempotency_key)
                except ValueError as exc:
                    raise Refused(400, "invalid_request", str(exc)) from None
            claims = verify_token(self.tokens, token, agent=agent, now=attempt.now)
            attempt.granted, attempt.token_id = list(claims.capabilities), claims.jti
            attempt.thread_id = claims.thread_id
            digest = fingerprint(kind, parent_email_id, request)
            if idempotency_key is not None:
                if not self._in_flight.claim(agent, idempotency_key):
                    raise Refused(409, "idempotency_conflict", f"a request with Idempotency-Key {idempotency_key!r} "
                                                               "is still being processed; retry in a moment")
                claimed = idempotency_key
                key = idempotency_key
                earlier = await self.db.read(lambda con: find_key(con, agent, key, attempt.now))
                if earlier is not None:
                    if earlier.request_sha256 != digest:
                        raise Refused(422, "idempotency_conflict",
                                      f"Idempotency-Key {key!r} was used within 24 h for another request "
                                      f"(it sent {earlier.result.email_id}); use a new key for a new message")
                    return earlier.result
            return await self._send(attempt, claims, parent_email_id, request, digest, idempotency_key, started)
        except Refused as refused:
            record = attempt.record(action="refuse", reason=refused.reason, detail=refused.detail,
                                    latency_ms=(time.perf_counter() - started) * 1000)
            await self.db.write_batch(lambda batch: append_decision(batch, record))
            log.info("send by %s refused: %s", agent, refused)
            raise
        finally:
            if claimed is not None:
                self._in_flight.release(agent, claimed)

    async def _send(self, attempt: _Attempt, claims: Claims, parent_email_id: str | None, request: SendRequest,
                    digest: str, idempotency_key: str | None, started: float) -> SendResult:
        agent, now = attempt.agent, attempt.now
        policy = self.policies.get(agent)
        if policy is None:
            raise Refused(503, "policy_unavailable", f"{agent} has no policy loaded")
        if request.to and attempt.kind == "reply":
            raise Refused(400, "invalid_request", "to: a reply goes to the replied message's sender; "
                                                  "name anyone else in cc")
        parent, parsed, reply_to = None, None, None
        if attempt.kind == "reply":
            parent, parsed, reply_to = await self._parent(agent, parent_email_id)
            attempt.thread_id = parent.thread_id
        else:
            attempt.thread_id = f"T{secrets.token_hex(8)}"
        blobs = await self._blobs(agent, request, now)
        draft = Draft(agent=agent, to=[reply_to] if reply_to else list(request.to), cc=list(request.cc),
                      subject=request.subject, text=request.text, html=request.html,
                      attachments=[Attachment(filename=ref.filename or blob.filename or "attachment",
                                              content_type=blob.content_type, data=blob.data)
                                   for ref, blob in zip(request.attachments, blobs, strict=True)])
        attempt.recipients = [ascii_address(a) for a in (*draft.to, *draft.cc)]
        email_id = "e" + attempt.decision_id[1:]
        try:
            message = compose(draft, config=self.config, email_id=email_id, thread_id=attempt.thread_id,
                              now=now, parent=parsed)
        except ValueError as exc:
            raise Refused(400, "invalid_request", str(exc)) from None
        attempt.subject, attempt.message_id = message.subject, message.message_id
        attempt.recipients = [ascii_address(a) for a in message.recipients]
        attempt.size, attempt.body_sha256 = len(message.raw), message.body_sha256
        facts = self._facts(attempt, claims, request, message, reply_to, blobs)
        decision = evaluate_send(policy, facts, self.limits)
        if decision.action != "send":
            raise Refused(decision.status, decision.reason or "refused", decision.detail)
        return await self._commit(attempt, policy, decision, message, request, digest, idempotency_key, started)

    async def _parent(self, agent: str, email_id: str | None) -> tuple[StoredMessage, ParsedMessage, str]:
        """The replied message (the agent's, in its inbox), parsed, and where the reply goes."""
        stored = await self.db.read(lambda con: get_message(con, email_id)) if email_id else None
        if stored is None or stored.agent != agent or stored.mailbox != INBOX:
            raise Refused(404, "not_found", f"no message {email_id} in {agent}'s inbox to reply to")
        try:
            parsed, tree = await asyncio.to_thread(parse_tree, stored.raw)
        except ApplianceError as exc:  # stored under older, looser reading limits than today's
            raise Refused(404, "not_found", f"message {email_id} cannot be read to reply to: {exc}") from None
        reply_to = tree.get("reply-to")
        return stored, parsed, reply_target(stored.sender, str(reply_to) if reply_to is not None else None)

    async def _blobs(self, agent: str, request: SendRequest, now: float) -> list[Blob]:
        wanted = [ref.blob_id for ref in request.attachments]
        found = await self.db.read(lambda con: get_blobs(con, agent, wanted, now))
        for i, blob_id in enumerate(wanted):
            if blob_id not in found:
                raise Refused(404, "not_found", f"attachments[{i}].blobId: no blob {blob_id!r} of {agent} "
                                                "(never uploaded, or expired after 24 h unused)")
        return [found[b] for b in wanted]

    def _facts(self, attempt: _Attempt, claims: Claims, request: SendRequest, message: OutboundMessage,
               reply_to: str | None, blobs: list[Blob]) -> SendFacts:
        texts = [t for t in (_as_text(b) for b in blobs) if t is not None]
        seen = [message.subject, request.text, request.html or "", *texts]
        tokens = [m.group(0) for text in seen for m in _TOKEN_SHAPE.finditer(text)]
        return SendFacts(
            agent=attempt.agent, kind=attempt.kind, recipients=list(attempt.recipients),
            granted=list(claims.capabilities), token_thread_id=claims.thread_id, thread_id=attempt.thread_id,
            reply_to=ascii_address(reply_to) if reply_to else None, subject=message.subject, text=request.text,
            html=request.html, attachment_texts=texts, secrets=[*self.secrets, *dict.fromkeys(tokens)],
            now=attempt.now)

    async def _commit(self, attempt: _Attempt, policy: MailPolicy, decision: SendDecision, message: OutboundMessage,
                      request: SendRequest, digest: str, idempotency_key: str | None, started: float) -> SendResult:
        agent, now = attempt.agent, attempt.now
        charge = LimitCharge(rate_keys=list(decision.rate_keys), token_keys=[], tokens=0)
        # Counted now, before the first await, so concurrent sends see each other (no overshoot);
        # withdrawn below if the commit fails, so only committed sends count (as Reception does).
        self.limits.record(charge, now)
        try:
            raw, dkim = await self._signed(message, now)
            message = msgspec.structs.replace(message, raw=raw)
            attempt.size = len(raw)
            if len(raw) > self.config.smtp.max_message_size:
                raise Refused(413, "message_too_large", f"the message is {len(raw)} bytes; the limit is "
                                                        f"{self.config.smtp.max_message_size} (smtp.max_message_size)")
            result = SendResult(email_id=message.email_id, message_id=message.message_id, thread_id=message.thread_id)
            record = attempt.record(action="send", reason=None, detail=decision.detail, dkim=dkim,
                                    latency_ms=(time.perf_counter() - started) * 1000)
            sent = StoredMessage(
                email_id=message.email_id, agent=agent, mailbox=SENT, thread_id=message.thread_id,
                message_id=message.message_id, subject=message.subject, sender=agent, received_at=utc(now),
                decision_id=attempt.decision_id, size=len(raw), keywords=["$seen"], raw=raw)
            blob_ids = [ref.blob_id for ref in request.attachments]
            remembered = None if idempotency_key is None else IdempotencyRecord(
                agent=agent, key=idempotency_key, request_sha256=digest, result=result, created_at=now)

            def commit(batch: Batch) -> None:
                save_message(batch, sent)
                append_decision(batch, record)
                enqueue(batch, message, now=now)
                touch_blobs(batch, blob_ids, now)
                if remembered is not None:
                    remember_key(batch, remembered)
                PersistentLimits.write_charge(batch, charge, now)

            await self.db.write_batch(commit)
        except BaseException:
            self.limits.withdraw(charge, now)
            raise
        log.info("%s sent %s (%s) to %s", agent, message.email_id, message.message_id, ", ".join(message.recipients))
        if self.on_committed is not None:
            try:
                self.on_committed(result)
            except Exception:  # the send is committed: a failed notification changes nothing
                log.exception("on_committed callback failed")
        return result

    async def _signed(self, message: OutboundMessage, now: float) -> tuple[bytes, str]:
        """The message DKIM-signed with its domain's keys, and the audit's word for it (``signed`` / ``none``)."""
        domain = message.mail_from.rpartition("@")[2]
        keys = await asyncio.to_thread(load_signing_keys, self.keys_dir, domain, self.config.outbound.dkim_selector)
        if not keys:
            if domain not in self._unsigned_warned:
                self._unsigned_warned.add(domain)
                log.warning("no DKIM keys for %s in %s: its mail goes out unsigned (run appliance dkim keygen)",
                            domain, self.keys_dir)
            return message.raw, "none"
        signed = await asyncio.to_thread(sign, message.raw, domain=domain, keys=keys, now=now)
        return signed, "signed"

    async def expire(self, now: float | None = None) -> tuple[int, int]:
        """Remove blobs unused for 24 h and idempotency keys older than 24 h; return (blobs, keys) removed."""
        from appliance.outbound.blobs import expire_blobs

        current = self.clock() if now is None else now
        return await self.db.write(lambda con: (expire_blobs(con, current), expire_keys(con, current)))


def _as_text(blob: Blob) -> str | None:
    """A blob as the recipient's mail program could show it, for the guards: ``text/*`` in its charset,
    anything else that is UTF-8 (a leak labelled ``application/octet-stream`` is still read)."""
    media, _, params = blob.content_type.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset" and value.strip('"'):
            charset = value.strip('"')
    if media.strip().startswith("text/"):
        try:
            return blob.data.decode(charset, "replace")
        except LookupError:
            return blob.data.decode("utf-8", "replace")
    try:
        text = blob.data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if "\x00" not in text else None


# -- the read side -------------------------------------------------------------------------------


class AttachmentSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One attachment of a message: its number, name, type and size."""

    index: int
    filename: str | None
    content_type: str
    size: int
    download_path: str | None = None
    """Where its bytes are (received messages)."""


class MessageInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``GET /api/v1/messages/{emailId}``: a message of the agent's (received or sent), without its content."""

    email_id: str
    thread_id: str
    message_id: str | None
    mailbox: str
    sender: str = msgspec.field(name="from")
    to: list[str]
    cc: list[str]
    subject: str
    received_at: datetime
    """When it was received (a sent message: when it was queued), UTC."""
    size: int
    decision_id: str
    attachments: list[AttachmentSummary]


DeliveryState = Literal["queued", "sent", "retrying", "bounced"]


class RecipientStatus(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Where one recipient's copy of a sent message is."""

    address: str
    status: DeliveryState
    """``queued`` (not tried yet), ``retrying`` (tried, temporary failures), ``sent`` (a peer took it),
    ``bounced`` (refused for good, or retried too long)."""
    attempts: int
    last_code: int | None = None
    last_detail: str | None = None
    """The last reply or error (a bounce: why)."""
    peer: str | None = None


class SentMessage(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``GET /api/v1/outbox``: a message an agent sent and the fate of each of its recipients."""

    email_id: str
    agent: str
    thread_id: str
    message_id: str | None
    subject: str
    to: list[str]
    cc: list[str]
    sent_at: datetime
    """When it was queued, UTC."""
    size: int
    decision_id: str
    status: DeliveryState
    """The least advanced recipient's: ``queued`` or ``retrying`` while any is; else ``bounced`` if any bounced."""
    recipients: list[RecipientStatus]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _header_view(stored: StoredMessage) -> tuple[list[str], list[str], list[AttachmentInfo]]:
    """To, Cc and the attachments of a stored message; nothing for one that no longer reads
    (stored under older, looser reading limits than today's)."""
    try:
        parsed, tree = parse_tree(stored.raw)
    except ApplianceError:
        return [], [], []
    return [m.address for m in parsed.to], [m.address for m in parsed.cc], list_attachments(tree)


def message_info(con: duckdb.DuckDBPyConnection, agent: str, email_id: str) -> MessageInfo | None:
    """The agent's message ``email_id`` (inbox or sent), or None (another agent's, quarantined, unknown)."""
    stored = get_message(con, email_id)
    if stored is None or stored.agent != agent.lower() or stored.mailbox not in (INBOX, SENT):
        return None
    to, cc, found = _header_view(stored)
    received = stored.mailbox == INBOX
    attachments = [AttachmentSummary(index=a.index, filename=a.filename, content_type=a.content_type, size=a.size,
                                     download_path=f"/api/v1/messages/{email_id}/attachments/{a.index}"
                                     if received else None) for a in found]
    return MessageInfo(email_id=stored.email_id, thread_id=stored.thread_id, message_id=stored.message_id,
                       mailbox=stored.mailbox, sender=stored.sender, to=to, cc=cc, subject=stored.subject,
                       received_at=_aware(stored.received_at), size=stored.size, decision_id=stored.decision_id,
                       attachments=attachments)


_RANK: dict[str, int] = {"queued": 0, "retrying": 1, "bounced": 2, "sent": 3}


def _recipients(con: duckdb.DuckDBPyConnection, email_id: str, addresses: list[str]) -> list[RecipientStatus]:
    """Each recipient's status: its latest queue job (one per recipient domain; a job whose recipients
    came apart is followed by one for the rest), then the message's ``message.sent`` / ``message.bounced``
    events, which say recipient by recipient how each copy ended (a DSN after a 250 included)."""
    found: dict[str, RecipientStatus] = {}
    for job in jobs_of_message(con, email_id):
        state: DeliveryState
        if job.status == "sent":
            state = "sent"
        elif job.status in ("failed", "bounced"):
            state = "bounced"
        else:
            state = "retrying" if job.attempts else "queued"
        for address in job.recipients:
            found[str(address).lower()] = RecipientStatus(address=str(address), status=state,
                                                          attempts=int(job.attempts), last_code=job.last_code,
                                                          last_detail=job.last_detail, peer=job.peer)
    for event in send_outcomes_of(con, email_id):
        payload = event.payload
        try:
            if event.event_type == "message.sent":
                sent = msgspec.json.decode(payload, type=MessageSentData)
                for address in sent.recipients:
                    found[address.lower()] = RecipientStatus(address=address, status="sent", attempts=sent.attempts,
                                                             last_detail=sent.reply, peer=sent.peer)
            else:
                bounced = msgspec.json.decode(payload, type=MessageBouncedData)
                for r in bounced.recipients:
                    before = found.get(r.address.lower())
                    found[r.address.lower()] = RecipientStatus(
                        address=r.address, status="bounced", attempts=bounced.attempts or (before.attempts if before
                                                                                           else 0),
                        last_code=r.code, last_detail=r.detail, peer=before.peer if before else None)
        except msgspec.DecodeError:  # an event of another version: the job's state stands
            continue
    out = [found.pop(a.lower()) if a.lower() in found else RecipientStatus(address=a, status="queued", attempts=0)
           for a in addresses]
    return out + list(found.values())


def _sent(con: duckdb.DuckDBPyConnection, stored: StoredMessage) -> SentMessage:
    to, cc, _ = _header_view(stored)
    recipients = _recipients(con, stored.email_id, list(dict.fromkeys([*to, *cc])))
    status: DeliveryState = min((r.status for r in recipients), key=lambda s: _RANK[s], default="queued")
    return SentMessage(email_id=stored.email_id, agent=stored.agent, thread_id=stored.thread_id,
                       message_id=stored.message_id, subject=stored.subject, to=to, cc=cc,
                       sent_at=_aware(stored.received_at), size=stored.size, decision_id=stored.decision_id,
                       status=status, recipients=recipients)


def sent_message(con: duckdb.DuckDBPyConnection, email_id: str, *, agent: str | None = None) -> SentMessage | None:
    """One sent message with its recipients' status (only ``agent``'s when given), or None."""
    stored = get_message(con, email_id)
    if stored is None or stored.mailbox != SENT or (agent is not None and stored.agent != agent.lower()):
        return None
    return _sent(con, stored)


def list_sent(con: duckdb.DuckDBPyConnection, *, agent: str | None = None, limit: int = 50,
              after: str | None = None) -> list[SentMessage]:
    """Sent messages, newest first (only ``agent``'s when given); ``after`` an email id: those older than it."""
    before = None
    if after is not None:
        cursor = message_received_at(con, after)
        if cursor is None:
            return []
        before = (cursor, after)
    ids = mailbox_email_ids(con, SENT, agent=agent.lower() if agent is not None else None, before=before,
                            limit=limit)
    out = []
    for email_id in ids:
        stored = get_message(con, email_id)
        if stored is not None:
            out.append(_sent(con, stored))
    return out
