"""The gate: one pure evaluation of a message's verified facts against a policy.

No I/O happens here. DNS answers arrive as ``AuthResults``, limit state through
``LimitCounter``, the clock as ``Facts.now``; ``assess`` in ``gate.assess``
gathers those facts for the SMTP intake, the Stalwart hook and the CLI alike.
"""

from __future__ import annotations

__all__ = ["Facts", "Unreadable", "evaluate"]

import msgspec

from appliance.gate import reasons
from appliance.gate.decision import AuthSummary, Decision, Envelope, LimitCharge, TraceStep
from appliance.gate.limits import DAY, HOUR, MINUTE, LimitCounter, day_key, rate_key, thread_key
from appliance.gate.loop import automatic_mail_reason
from appliance.gate.sender import match_sender, rule_key
from appliance.gate.tokens import estimate_tokens
from appliance.guards import GuardHit, scan
from appliance.mail import MessageBytes, ParsedMessage, ReadableText, Unreadable
from appliance.mailauth.results import AuthResults
from appliance.policy import Action, MailPolicy, SenderRule


class Facts(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the gate decides on, established before it runs."""

    decision_id: str
    agent: str
    """The recipient agent's address (lowercased)."""
    envelope: Envelope
    size: int
    """Length of the raw message in bytes."""
    max_size: int | None
    message: MessageBytes | None
    """The bytes as read once (``appliance.mail``); None when they could not be read."""
    parsed: ParsedMessage | None
    """None when reading or strict parsing failed; ``unreadable`` then says why."""
    unreadable: Unreadable | None
    readable: ReadableText | None
    guard_hit: GuardHit | None = None
    """The content guards' verdict when they already ran (in a reader process); see ``guards_scanned``."""
    guards_scanned: bool = False
    """``guard_hit`` is the scan of ``readable`` with this policy's guards; otherwise the gate scans."""
    auth: AuthResults | None
    thread_id: str
    now: float


def evaluate(policy: MailPolicy, facts: Facts, limits: LimitCounter) -> Decision:
    """Decide what happens to one message (product.md, "The gate, in order")."""
    return _Evaluation(policy, facts, limits).run()


class _Evaluation:
    def __init__(self, policy: MailPolicy, facts: Facts, limits: LimitCounter) -> None:
        self.policy = policy
        self.facts = facts
        self.limits = limits
        self.trace: list[TraceStep] = []
        self.rule: int | None = None
        self.tokens = estimate_tokens(facts.readable) if facts.readable is not None else 0
        self.budget_remaining: int | None = None
        self.guard: GuardHit | None = None

    def note(self, step: str, outcome: str, detail: str) -> None:
        self.trace.append(TraceStep(step=step, outcome=outcome, detail=detail))

    def run(self) -> Decision:
        facts = self.facts
        if facts.max_size is not None and facts.size > facts.max_size:
            self.note("size", "fail", f"{facts.size} bytes exceeds the limit of {facts.max_size}")
            return self.finish("bounce", reasons.MESSAGE_TOO_LARGE)
        if facts.parsed is None or facts.readable is None or facts.message is None:
            unread = facts.unreadable or Unreadable(reason="malformed_message", detail="message could not be parsed")
            self.note("parse", "fail", unread.detail)
            return self.finish("bounce", unread.reason)
        parsed, message = facts.parsed, facts.message
        self.note("parse", "pass", f"From <{parsed.sender.address}>")

        self.rule = match_sender(self.policy, parsed.sender.address)
        if self.rule is None:
            default = self.policy.default_action
            self.note("sender", "no match", f"no rule matches {parsed.sender.address}; defaultAction is {default}")
            if default != "accept":
                return self.finish(default, reasons.SENDER_NOT_ALLOWED)
            rule = None
        else:
            rule = self.policy.senders[self.rule]
            self.note("sender", "match", f"senders[{self.rule}] ({rule_key(rule.match)})")

        if rule is not None:
            failed = self.verify(rule, parsed)
            if failed is not None:
                return failed
        guarded = self.content(facts.readable)
        if guarded is not None:
            return guarded
        loop = automatic_mail_reason(parsed, message, facts.envelope, facts.agent)
        if loop is not None:
            self.note("loop", "fail", loop)
            return self.finish("drop", reasons.LOOP_SUSPECTED)
        self.note("loop", "pass", "not automatic mail")
        if rule is None:
            self.note("decision", "accept", "defaultAction accept; no capabilities granted")
            return self.finish("accept", None)
        limited = self.rate(rule)
        if limited is not None:
            return limited
        exhausted = self.budget(rule)
        if exhausted is not None:
            return exhausted
        self.note("decision", rule.action, f"granted {', '.join(rule.capabilities) or 'no capabilities'}")
        charge = self.charge(rule)
        held = {"accept": None, "quarantine": reasons.QUARANTINED_BY_RULE, "drop": reasons.DROPPED_BY_RULE}
        return self.finish(rule.action, held[rule.action],
                           capabilities=list(rule.capabilities), charge=charge)

    # -- step 3 ---------------------------------------------------------------
    def verify(self, rule: SenderRule, parsed: ParsedMessage) -> Decision | None:
        auth = self.facts.auth
        match = rule.match
        if not (match.require_dkim or match.require_spf or match.require_dmarc):
            self.note("verification", "skipped", "rule requires no authentication")
            return None
        if auth is None:  # pragma: no cover - assess always authenticates a parsed message
            self.note("verification", "fail", "no authentication results")
            return self.finish("tempfail", reasons.DNS_TEMPORARY_FAILURE)
        domain = parsed.sender.domain
        # Alignment is relaxed unless the domain's DMARC record says strict; when that record could
        # not be read, only an exact (strict) match is known to align, and a relaxed one must wait.
        mode_unknown = auth.dmarc.result == "temperror"
        if match.require_dkim:
            exact = any(d.result == "pass" and d.covers_whole_body and d.domain == domain for d in auth.dkim)
            if auth.dmarc.dkim_aligned and mode_unknown and not exact:
                self.note("verification", "temperror", f"DKIM aligns with {domain} only under relaxed alignment, "
                          "and its DMARC record (adkim) could not be read")
                return self.finish("tempfail", reasons.DNS_TEMPORARY_FAILURE)
            if auth.dmarc.dkim_aligned:
                signers = [d.domain for d in auth.dkim if d.result == "pass" and d.covers_whole_body]
                self.note("verification", "pass", f"DKIM pass aligned with {domain} (d={', '.join(signers)})")
            elif any(d.result == "temperror" for d in auth.dkim):
                self.note("verification", "temperror", "DKIM key lookup failed temporarily")
                return self.finish("tempfail", reasons.DNS_TEMPORARY_FAILURE)
            else:
                self.note("verification", "fail", _dkim_failure(auth, domain))
                return self.finish("bounce", reasons.DKIM_REQUIRED)
        if match.require_spf:
            spf = auth.spf
            if auth.dmarc.spf_aligned and mode_unknown and spf.domain != domain:
                self.note("verification", "temperror", f"SPF domain {spf.domain} aligns with {domain} only under "
                          "relaxed alignment, and its DMARC record (aspf) could not be read")
                return self.finish("tempfail", reasons.DNS_TEMPORARY_FAILURE)
            if auth.dmarc.spf_aligned:
                self.note("verification", "pass", f"SPF pass for {spf.domain}, aligned with {domain}")
            elif spf.result == "temperror":
                self.note("verification", "temperror", f"SPF lookup for {spf.domain} failed temporarily")
                return self.finish("tempfail", reasons.DNS_TEMPORARY_FAILURE)
            else:
                why = (f"SPF {spf.result} for {spf.identity} {spf.domain}" if spf.result != "pass"
                       else f"SPF pass for {spf.domain} is not aligned with {domain}")
                self.note("verification", "fail", why)
                return self.finish("bounce", reasons.SPF_REQUIRED)
        if match.require_dmarc:
            dmarc = auth.dmarc
            if dmarc.result == "pass":
                self.note("verification", "pass", f"DMARC pass for {dmarc.domain}")
            elif dmarc.result == "temperror":
                self.note("verification", "temperror", f"DMARC lookup for {dmarc.domain} failed temporarily")
                return self.finish("tempfail", reasons.DNS_TEMPORARY_FAILURE)
            else:
                self.note("verification", "fail", f"DMARC {dmarc.result} for {dmarc.domain}")
                return self.finish("bounce", reasons.DMARC_REQUIRED)
        return None

    # -- step 4 ---------------------------------------------------------------
    def content(self, readable: ReadableText) -> Decision | None:
        if not self.policy.content_guards:
            self.note("content", "skipped", "no content guards")
            return None
        if readable.truncated:
            # Text past the extraction limit was never scanned, yet the agent could read it
            # (the html field, attachments, the raw message): refuse rather than pass it unseen.
            self.note("content", "fail", f"readable text exceeds {readable.total_chars} characters; "
                                         "the rest could not be scanned")
            return self.finish("bounce", reasons.MESSAGE_TOO_LARGE)
        facts = self.facts
        hit = facts.guard_hit if facts.guards_scanned else scan(readable, self.policy.content_guards)
        if hit is None:
            self.note("content", "pass",
                      f"{len(self.policy.content_guards)} guard(s), no match in {len(readable.parts)} part(s)")
            return None
        self.guard = hit
        self.note("content", "fail",
                  f"contentGuards[{hit.guard_index}] /{hit.pattern}/ matched in {hit.where}: {hit.excerpt!r}")
        return self.finish("bounce", hit.reason)

    # -- step 6 ---------------------------------------------------------------
    def rate(self, rule: SenderRule) -> Decision | None:
        limit = rule.rate_limit
        if limit is None:
            self.note("rate", "skipped", "no rate limit")
            return None
        key = rate_key(self.facts.agent, rule_key(rule.match))
        for name, allowed, window in (("perMinute", limit.per_minute, MINUTE),
                                      ("perHour", limit.per_hour, HOUR),
                                      ("perDay", limit.per_day, DAY)):
            if allowed is None:
                continue
            seen = self.limits.count_since(key, self.facts.now - window)
            if seen >= allowed:
                self.note("rate", "fail", f"{seen} messages in the last {int(window)} s; {name} is {allowed}")
                return self.finish("tempfail", reasons.RATE_LIMITED)
        self.note("rate", "pass", "within limits")
        return None

    # -- step 7 ---------------------------------------------------------------
    def budget(self, rule: SenderRule) -> Decision | None:
        budget = rule.token_budget
        if budget is None:
            self.note("budget", "skipped", f"no token budget; estimate {self.tokens} tokens")
            return None
        agent, now = self.facts.agent, self.facts.now
        checks = (("perThread", budget.per_thread, thread_key(agent, self.facts.thread_id), 0.0),
                  ("perDay", budget.per_day, day_key(agent, rule_key(rule.match)), now - DAY))
        remaining: list[int] = []
        for name, allowed, key, since in checks:
            if allowed is None:
                continue
            used = self.limits.tokens_since(key, since)
            if used + self.tokens > allowed:
                self.note("budget", "fail", f"{name} {allowed}: {used} used + {self.tokens} estimated")
                return self.finish("bounce", reasons.TOKEN_BUDGET_EXHAUSTED)
            remaining.append(allowed - used - self.tokens)
        self.budget_remaining = min(remaining) if remaining else None
        self.note("budget", "pass", f"estimate {self.tokens} tokens; {self.budget_remaining} left")
        return None

    def charge(self, rule: SenderRule) -> LimitCharge:
        agent, key = self.facts.agent, rule_key(rule.match)
        return LimitCharge(
            rate_keys=[rate_key(agent, key)],
            token_keys=[thread_key(agent, self.facts.thread_id), day_key(agent, key)],
            tokens=self.tokens,
        )

    def finish(self, action: Action, reason: str | None, *,
               capabilities: list[str] | None = None, charge: LimitCharge | None = None) -> Decision:
        facts = self.facts
        if action not in ("accept", "quarantine"):
            capabilities = []
        auth = facts.auth
        return Decision(
            decision_id=facts.decision_id,
            agent=facts.agent,
            action=action,
            reason=reason,
            capabilities=capabilities or [],
            rule=self.rule,
            auth=AuthSummary(spf=auth.spf.result, dkim=auth.dkim_summary, dmarc=auth.dmarc.result)
            if auth is not None else AuthSummary(),
            trace=self.trace,
            sender=facts.parsed.sender.address if facts.parsed is not None else None,
            thread_id=facts.thread_id,
            estimated_tokens=self.tokens,
            budget_remaining=self.budget_remaining,
            charge=charge,
            guard=self.guard,
        )


def _dkim_failure(auth: AuthResults, domain: str) -> str:
    if not auth.dkim:
        return "no DKIM signature"
    parts = []
    for d in auth.dkim:
        note = f"d={d.domain} {d.result}"
        if d.result == "pass" and not d.covers_whole_body:
            note += " (l= leaves part of the body unsigned)"
        elif d.result == "pass":
            note += f" (not aligned with {domain})"
        parts.append(note)
    return "no aligned DKIM pass: " + "; ".join(parts)
