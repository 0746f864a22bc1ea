"""Building gate facts directly, without DNS: for tests of the pure evaluation."""

from __future__ import annotations

from appliance.gate import Envelope, Facts
from appliance.gate.assess import read_bytes
from appliance.mail import Reading, read_for_gate, thread_root
from appliance.mailauth.results import AuthResults, DkimResult, DmarcResult, SpfResult

AGENT = "agent@example.test"


def mail(sender: str = "boss@acme.com", *, subject: str = "Lunch", body: str = "See you at noon.",
         headers: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {AGENT}\r\nSubject: {subject}\r\nMessage-ID: <m1@acme.com>\r\n{headers}"
            f"\r\n{body}\r\n").encode()


def auth(*, dkim: str = "pass", dkim_domain: str = "acme.com", whole_body: bool = True, spf: str = "pass",
         spf_domain: str = "acme.com", dmarc: str = "pass", dkim_aligned: bool | None = None,
         spf_aligned: bool | None = None) -> AuthResults:
    dkim_ok = dkim == "pass" and whole_body and dkim_domain.endswith("acme.com")
    spf_ok = spf == "pass" and spf_domain.endswith("acme.com")
    return AuthResults(
        spf=SpfResult(result=spf, domain=spf_domain),  # type: ignore[arg-type]
        dkim=[DkimResult(result=dkim, domain=dkim_domain, selector="s1", covers_whole_body=whole_body)]  # type: ignore[arg-type]
        if dkim != "none" else [],
        dmarc=DmarcResult(result=dmarc, domain="acme.com", org_domain="acme.com",  # type: ignore[arg-type]
                          dkim_aligned=dkim_ok if dkim_aligned is None else dkim_aligned,
                          spf_aligned=spf_ok if spf_aligned is None else spf_aligned),
    )


def facts(raw: bytes | None = None, *, results: AuthResults | None = None, mail_from: str = "boss@acme.com",
          now: float = 1_800_000_000.0, max_size: int | None = None, thread_id: str | None = None) -> Facts:
    raw = raw if raw is not None else mail()
    message, unreadable = read_bytes(raw)
    read = read_for_gate(message) if message is not None else Reading(unreadable=unreadable)
    parsed = read.parsed
    return Facts(
        decision_id="d-test", agent=AGENT,
        envelope=Envelope(client_ip="203.0.113.5", helo="mail.acme.com", mail_from=mail_from, rcpt_to=[AGENT]),
        size=len(raw), max_size=max_size, message=message, parsed=parsed, unreadable=read.unreadable,
        readable=read.readable,
        auth=results if results is not None else auth(),
        thread_id=thread_id or (thread_root(parsed) if parsed else "T-none"), now=now)
