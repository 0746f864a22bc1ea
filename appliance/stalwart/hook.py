"""Answering Stalwart's MTA hook: a request mapped onto ``Reception``, a decision onto a response.

Stalwart verifies DKIM/SPF/DMARC itself but does not tell the hook, so the gate
verifies again from what the request carries: client IP, HELO, envelope and the
message, rebuilt byte for byte from Stalwart's split of it.
"""

from __future__ import annotations

__all__ = ["HookRequestError", "MtaHook", "rebuild_message"]

import logging
import re

from appliance.audit import record_event
from appliance.config import ApplianceConfig
from appliance.gate import Decision, Envelope
from appliance.gate.outbound import recheck_submission
from appliance.inbound.reception import Reception
from appliance.inbound.replies import smtp_reply
from appliance.mail import is_forged, sniff_message_id
from appliance.outbound.model import Submission
from appliance.reports import is_report_recipient, take_report
from appliance.stalwart.proto import (
    AddHeader,
    DeleteHeader,
    HookMessage,
    HookRequest,
    HookResponse,
    Modification,
    SmtpResponse,
)
from appliance.store.outbound import approved_submission

log = logging.getLogger("appliance.stalwart")

ACCEPT = HookResponse(action="accept")
TEMPFAIL = HookResponse(action="reject", response=SmtpResponse.of(
    451, "4.3.0", "Temporary failure, try again later"))
ONE_AGENT = SmtpResponse.of(
    452, "4.5.3", "One agent per transaction, send again for this recipient")


class HookRequestError(ValueError):
    """A request that decodes but cannot be answered (e.g. a DATA stage without a message)."""


def rebuild_message(message: HookMessage) -> bytes:
    """The raw message as Stalwart got it: ``name:rawValue`` per header, blank line, body.

    The blank line is CRLF unless only LF reproduces ``size`` (a message written with bare LF).
    Stalwart sends text decoded lossily from UTF-8, so only a non-UTF-8 message cannot be
    rebuilt exactly (its size then differs, which is logged).
    """
    head = "".join(f"{name}:{value}" for name, value in message.headers).encode("utf-8")
    body = message.contents.encode("utf-8")
    for blank in (b"\r\n", b"\n"):
        if len(head) + len(blank) + len(body) == message.size:
            return head + blank + body
    log.warning("rebuilt message is %d bytes, Stalwart reported %d (not UTF-8?)",
                len(head) + 2 + len(body), message.size)
    return head + b"\r\n" + body


class MtaHook:
    """Decides one hook call: accept, reject (with its SMTP reply) or discard."""

    def __init__(self, reception: Reception, reports: ApplianceConfig | None = None) -> None:
        self.reception = reception
        self.reports = reports
        """The configuration whose DMARC report address the hook takes reports for (None: none)."""

    def _is_report(self, address: str) -> bool:
        return self.reports is not None and is_report_recipient(address, self.reports)

    async def answer(self, request: HookRequest) -> HookResponse:
        stage = request.context.stage
        if stage == "rcpt":
            return self.rcpt(request)
        if stage == "data":
            return await self.data(request)
        return ACCEPT  # connect, ehlo, auth, mail: nothing to decide before there is a recipient

    def rcpt(self, request: HookRequest) -> HookResponse:
        envelope = request.envelope
        if envelope is None or not envelope.to:
            raise HookRequestError("rcpt stage without envelope.to")
        recipient = envelope.to[-1].address
        earlier_reports = any(self._is_report(a.address) for a in envelope.to[:-1])
        if self._is_report(recipient):
            # A report is kept and dropped at DATA (nobody's mailbox): alone in its transaction.
            alone = all(a.address.lower() == recipient.lower() for a in envelope.to[:-1])
            return ACCEPT if alone else HookResponse(action="reject", response=ONE_AGENT)
        if earlier_reports:
            return HookResponse(action="reject", response=ONE_AGENT)
        if not self.reception.is_agent(recipient):
            if request.context.sasl is not None:
                # An authenticated session (an agent's JMAP EmailSubmission) sending out: not
                # inbound mail, so not the inbound gate's to judge.
                return ACCEPT
            return HookResponse(action="reject", response=SmtpResponse.of(
                550, "5.1.1", f"<{recipient}>: no such agent here"))
        earlier = {a.address.lower() for a in envelope.to[:-1]
                   if self.reception.is_agent(a.address)}
        if earlier and recipient.lower() not in earlier:
            # One decision = one SMTP reply: the reply to DATA carries the gate's decision for
            # one agent. RFC 5321 3.3 lets the client send this recipient again in a new
            # transaction after a 4xx.
            return HookResponse(action="reject", response=ONE_AGENT)
        return ACCEPT

    async def submission(self, agent: str, mail_from: str, recipients: list[str], raw: bytes) -> HookResponse | None:
        """An agent's mail leaving through Stalwart: the outbound policy's second word (``recheck_submission``);
        None when it may go, the refusal otherwise (audited)."""
        policy = self.reception.policies.get(agent)
        message_id = sniff_message_id(raw)
        approved = (await self.reception.db.read(lambda con: approved_submission(con, agent, message_id))
                    if message_id and policy is not None else None)
        if policy is None:
            return None
        verdict = recheck_submission(policy, Submission(agent=agent, mail_from=mail_from, recipients=recipients,
                                                        message_id=message_id, raw=raw), approved)
        if verdict.action == "send":
            return None
        log.warning("MTA hook: refused a submission as %s: %s", agent, verdict.detail)
        detail = f"{verdict.reason}: {verdict.detail}"
        await self.reception.db.write(lambda con: record_event(con, "outbound.refused", agent, detail))
        return HookResponse(action="reject", response=SmtpResponse.of(550, "5.7.1", detail[:400]))

    async def data(self, request: HookRequest) -> HookResponse:
        envelope, message = request.envelope, request.message
        if envelope is None or message is None:
            raise HookRequestError("data stage without envelope and message")
        recipients = [a.address.lower() for a in envelope.to]
        raw = rebuild_message(message)
        if recipients and all(self._is_report(r) for r in recipients):
            return await self.report(raw)
        sasl = request.context.sasl
        if sasl is not None and self.reception.is_agent(sasl.login):
            refused = await self.submission(sasl.login.lower(), envelope.from_.address, recipients, raw)
            if refused is not None:
                return refused
        agents = list(dict.fromkeys(r for r in recipients if self.reception.is_agent(r)))
        if not agents:
            if sasl is not None:
                return ACCEPT  # outbound submission (see ``rcpt``), rechecked above when an agent's
            return HookResponse(action="reject", response=SmtpResponse.of(
                550, "5.1.1", "No such agent here"))
        if len(agents) > 1:
            # Only when the RCPT stage hook is off (we always configure it): no single reply fits
            # two decisions, and a tempfail loses nothing.
            log.error("MTA hook: DATA for %d agents in one transaction; is the rcpt stage enabled?",
                      len(agents))
            return HookResponse(action="reject", response=SmtpResponse.of(
                451, "4.5.3", "One agent per transaction, try again later"))
        client = request.context.client
        facts = Envelope(client_ip=client.ip, helo=client.helo or "",
                         mail_from=envelope.from_.address, rcpt_to=recipients)
        try:
            received = await self.reception.receive(facts, raw, agent=agents[0], intake="hook")
        except Exception:
            log.exception("could not decide or record a message from %s for %s",
                          client.ip, agents[0])
            return TEMPFAIL
        return self.response(received.decision, message)

    async def report(self, raw: bytes) -> HookResponse:
        """A DMARC aggregate report: kept (``appliance.reports``), then discarded (250, no mailbox)."""
        try:
            await take_report(self.reception.db, raw)
        except Exception:
            log.exception("could not record a DMARC report")
            return TEMPFAIL
        # RFC 7489 7.2: best effort; a report we cannot read is logged and still not bounced.
        return HookResponse(action="discard")

    def response(self, decision: Decision, message: HookMessage) -> HookResponse:
        action = decision.action
        reply = smtp_reply(decision)
        if action == "drop":
            return HookResponse(action="discard")
        if action in ("bounce", "tempfail"):
            # Stalwart passes status, enhanced code and text through to the SMTP client.
            return HookResponse(action="reject", response=SmtpResponse.of(
                reply.code, reply.enhanced, reply.text))
        # accept, and quarantine: Stalwart's own "quarantine" only adds X-Quarantine and delivers,
        # so the real quarantine is ours: the message lands in the agent's mailbox, but the
        # appliance holds it (stored in our quarantine, never dispatched to the agent).
        return HookResponse(action="accept",
                            modifications=self.trace_modifications(decision, message))

    def trace_modifications(self, decision: Decision, message: HookMessage) -> list[Modification]:
        """Our Authentication-Results and X-Appliance-Decision, after deleting forged copies.

        RFC 8601 5: Authentication-Results claiming our authserv-id that came from outside are
        deleted, as are X-Appliance-Decision headers (only the appliance writes those).
        Deletions come first and from the last one up (indices are 1-based per name and
        shift as headers go); Stalwart prepends added headers.
        """
        ours = self.reception.hostname
        forged: list[Modification] = []
        counts: dict[str, int] = {}
        for name, value in message.headers:
            key = name.strip().lower()  # Stalwart counts names case-insensitively, as given
            counts[key] = counts.get(key, 0) + 1
            if is_forged(name, value, ours):
                forged.append(DeleteHeader(index=counts[key], name=name))
        added: list[Modification] = [AddHeader(name=n, value=v)
                                     for n, v in _fields(self.reception.trace_headers(decision))]
        return [*reversed(forged), *added]


def _fields(block: bytes) -> list[tuple[str, str]]:
    """``Name: value`` header lines as (name, value), folded values joined on one line."""
    fields = []
    for line in re.split(r"\r?\n(?![ \t])", block.decode("ascii", "replace").strip("\r\n")):
        name, _, value = line.partition(":")
        fields.append((name.strip(), " ".join(value.split())))
    return fields
