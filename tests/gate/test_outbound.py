"""The outbound gate: who an agent may write to, how often, and what it may not say."""

from __future__ import annotations

import base64
import re
from typing import Any

import msgspec
import pytest

from appliance.gate import InMemoryLimits
from appliance.gate import outbound as gate
from appliance.gate.limits import DAY, HOUR
from appliance.gate.outbound import evaluate_send, outbound_rate_key, recipient_allowed
from appliance.outbound.model import SendFacts
from appliance.policy import ContentGuard, MailPolicy, OutboundPolicy, OutboundRateLimit

AGENT = "agent@example.test"
BOSS = "boss@acme.com"
NOW = 1_800_000_000.0
APPLIANCE_SECRET = "whsec_c2VjcmV0LXdlYmhvb2sta2V5LTAxMjM0NTY3ODk="
API_KEY = "ak_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def facts(**changes: Any) -> SendFacts:
    base = SendFacts(agent=AGENT, kind="reply", recipients=[BOSS], granted=[], token_thread_id="T1", thread_id="T1",
                     reply_to=BOSS, subject="Re: Lunch", text="Noon works for me.", html=None, attachment_texts=[],
                     secrets=[APPLIANCE_SECRET, API_KEY], now=NOW)
    return msgspec.structs.replace(base, **changes)


def new_mail(*recipients: str, **changes: Any) -> SendFacts:
    return facts(kind="new", recipients=list(recipients), reply_to=None, thread_id="T-new", **changes)


def policy(**outbound: Any) -> MailPolicy:
    return MailPolicy(outbound=OutboundPolicy(**outbound))


SEND = ["send_email"]


# -- the reply a token always allows --------------------------------------------------------------

def test_reply_to_the_verified_sender_needs_only_the_token() -> None:
    d = evaluate_send(policy(), facts(), InMemoryLimits())
    assert (d.action, d.reason, d.status) == ("send", None, 202)
    assert d.rate_keys == [outbound_rate_key(AGENT)] == ["out:agent@example.test"]
    assert d.detail.startswith("send: reply to boss@acme.com in thread T1")


def test_reply_to_sender_in_other_case_or_unicode_domain_is_still_the_sender() -> None:
    d = evaluate_send(policy(), facts(recipients=["Boss@ACME.com"], reply_to=BOSS), InMemoryLimits())
    assert d.action == "send"
    d = evaluate_send(policy(), facts(recipients=["a@xn--bcher-kva.de"], reply_to="a@bücher.de"), InMemoryLimits())
    assert d.action == "send"


def test_reply_in_another_thread_than_the_tokens_is_refused() -> None:
    d = evaluate_send(policy(), facts(token_thread_id="T1", thread_id="T2"), InMemoryLimits())
    assert (d.action, d.reason, d.status) == ("refuse", gate.TOKEN_THREAD_MISMATCH, 403)
    assert d.detail.startswith("thread: ") and "T1" in d.detail and "T2" in d.detail


def test_reply_with_an_extra_cc_needs_send_email() -> None:
    d = evaluate_send(policy(allow_recipients=["acme.com"]), facts(recipients=[BOSS, "cfo@acme.com"]),
                      InMemoryLimits())
    assert (d.action, d.reason, d.status) == ("refuse", gate.CAPABILITY_MISSING, 403)
    assert d.detail.startswith("capability: ") and "send_email" in d.detail and "cfo@acme.com" in d.detail


def test_reply_with_an_extra_cc_with_send_email_must_be_allowlisted() -> None:
    d = evaluate_send(policy(allow_recipients=["boss@acme.com"]),
                      facts(recipients=[BOSS, "cfo@acme.com"], granted=SEND), InMemoryLimits())
    assert (d.reason, d.status) == (gate.RECIPIENT_NOT_ALLOWED, 403)
    assert d.detail.startswith("allowlist: cfo@acme.com ")
    d = evaluate_send(policy(allow_recipients=["cfo@acme.com"]),
                      facts(recipients=[BOSS, "cfo@acme.com"], granted=SEND), InMemoryLimits())
    assert d.action == "send"


def test_reply_without_a_known_sender_needs_send_email() -> None:
    d = evaluate_send(policy(allow_recipients=["acme.com"]), facts(reply_to=None), InMemoryLimits())
    assert d.reason == gate.CAPABILITY_MISSING


# -- new mail ----------------------------------------------------------------------------------------

def test_new_mail_needs_send_email() -> None:
    d = evaluate_send(policy(allow_recipients=["acme.com"]), new_mail(BOSS, granted=["read_calendar"]),
                      InMemoryLimits())
    assert (d.reason, d.status) == (gate.CAPABILITY_MISSING, 403)
    assert "new mail needs the send_email capability" in d.detail and "read_calendar" in d.detail


def test_new_mail_with_send_email_but_empty_allowlist_is_refused() -> None:
    d = evaluate_send(policy(), new_mail(BOSS, granted=SEND), InMemoryLimits())
    assert (d.reason, d.status) == (gate.RECIPIENT_NOT_ALLOWED, 403)
    assert "boss@acme.com" in d.detail


@pytest.mark.parametrize(("entry", "address", "allowed"), [
    ("boss@acme.com", "boss@acme.com", True),
    ("Boss@ACME.com", "boss@acme.com", True),
    ("boss@acme.com", "cfo@acme.com", False),
    ("acme.com", "cfo@acme.com", True),
    ("acme.com", "x@eu.acme.com", False),
    ("acme.com.", "x@acme.com", True),
    ("*.acme.com", "x@eu.acme.com", True),
    ("*.acme.com", "x@acme.com", False),
    ("*.acme.com", "x@notacme.com", False),
    ("acme.com", "x@evilacme.com", False),
    ("bücher.de", "x@xn--bcher-kva.de", True),
    ("xn--bcher-kva.de", "x@bücher.de", True),
    ("*.bücher.de", "x@shop.xn--bcher-kva.de", True),
])
def test_allow_recipients_forms(entry: str, address: str, allowed: bool) -> None:
    assert recipient_allowed([entry], address) is allowed
    d = evaluate_send(policy(allow_recipients=[entry]), new_mail(address, granted=SEND), InMemoryLimits())
    assert d.action == ("send" if allowed else "refuse")


def test_every_recipient_must_be_allowed() -> None:
    d = evaluate_send(policy(allow_recipients=["acme.com"]), new_mail(BOSS, "eve@evil.example", granted=SEND),
                      InMemoryLimits())
    assert d.reason == gate.RECIPIENT_NOT_ALLOWED and "eve@evil.example" in d.detail


def test_no_recipient_is_a_bad_request() -> None:
    d = evaluate_send(policy(), new_mail(granted=SEND), InMemoryLimits())
    assert (d.reason, d.status) == (gate.NO_RECIPIENTS, 400)


# -- counts and rates ----------------------------------------------------------------------------------

def test_max_recipients_counts_to_and_cc_together_once_each() -> None:
    many = [f"u{i}@acme.com" for i in range(4)]
    d = evaluate_send(policy(allow_recipients=["acme.com"], max_recipients=3), new_mail(*many, granted=SEND),
                      InMemoryLimits())
    assert (d.reason, d.status) == (gate.TOO_MANY_RECIPIENTS, 403)
    assert "4 recipients; maxRecipients is 3" in d.detail
    # The same address twice (To and Cc, other case) is one recipient.
    d = evaluate_send(policy(allow_recipients=["acme.com"], max_recipients=3),
                      new_mail(*many[:3], "U0@ACME.com", granted=SEND), InMemoryLimits())
    assert d.action == "send"


def test_max_recipients_applies_to_replies() -> None:
    d = evaluate_send(policy(max_recipients=1, allow_recipients=["acme.com"]),
                      facts(recipients=[BOSS, "cfo@acme.com"], granted=SEND), InMemoryLimits())
    assert d.reason == gate.TOO_MANY_RECIPIENTS


@pytest.mark.parametrize(("field", "window"), [("per_hour", HOUR), ("per_day", DAY)])
def test_rate_limit_per_window(field: str, window: float) -> None:
    limits = InMemoryLimits()
    p = policy(rate_limit=OutboundRateLimit(**{field: 3}))
    for i in range(3):
        assert evaluate_send(p, facts(), limits).action == "send"
        limits.add_event(outbound_rate_key(AGENT), NOW - window + 10 + i)
    d = evaluate_send(p, facts(), limits)
    assert (d.action, d.reason, d.status) == ("refuse", gate.OUTBOUND_RATE_LIMITED, 429)
    assert d.detail.startswith("rate: 3 messages sent in the last")
    # The window slides: once the oldest send is older than the window, there is room again.
    assert evaluate_send(p, facts(now=NOW + 11), limits).action == "send"


def test_rate_limit_is_per_agent_and_counts_replies_and_new_mail_alike() -> None:
    limits = InMemoryLimits()
    limits.add_event(outbound_rate_key("other@example.test"), NOW)
    p = policy(rate_limit=OutboundRateLimit(per_hour=1), allow_recipients=["acme.com"])
    assert evaluate_send(p, facts(), limits).action == "send"
    limits.add_event(outbound_rate_key(AGENT), NOW)
    assert evaluate_send(p, new_mail(BOSS, granted=SEND), limits).reason == gate.OUTBOUND_RATE_LIMITED


def test_refusals_are_not_counted() -> None:
    d = evaluate_send(policy(), new_mail(BOSS), InMemoryLimits())
    assert d.action == "refuse" and d.rate_keys == []


# -- content guards --------------------------------------------------------------------------------------

GUARD = ContentGuard(reject=re.compile(r"wire transfer", re.I), reason="payment_instruction")


@pytest.mark.parametrize("where", ["subject", "text", "html", "attachment_texts"])
def test_policy_content_guard_refuses_with_its_reason(where: str) -> None:
    said = "Please make the WIRE TRANSFER today"
    change: dict[str, Any] = {
        "subject": {"subject": said},
        "text": {"text": said},
        "html": {"html": f"<p>hello</p><div style='display:none'>{said}</div>"},
        "attachment_texts": {"attachment_texts": ["notes", said]},
    }[where]
    d = evaluate_send(policy(content_guards=[GUARD]), facts(**change), InMemoryLimits())
    assert (d.action, d.reason, d.status) == ("refuse", "payment_instruction", 403)
    assert d.detail.startswith("content: outbound.contentGuards[0] /wire transfer/")


def test_content_guard_sees_through_invisible_characters_and_look_alikes() -> None:
    d = evaluate_send(policy(content_guards=[GUARD]), facts(text="wire\u200b trаnsfer"),  # Cyrillic а
                      InMemoryLimits())
    assert d.reason == "payment_instruction"


def test_inbound_content_guards_do_not_apply_to_outbound_mail() -> None:
    p = MailPolicy(content_guards=[GUARD])
    assert evaluate_send(p, facts(text="wire transfer"), InMemoryLimits()).action == "send"


# -- built-in leak guards -----------------------------------------------------------------------------------

PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
       "-----END RSA PRIVATE KEY-----")
LEAKS = {
    "pem": PEM,
    "pkcs8": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIK...\n-----END PRIVATE KEY-----",
    "encrypted pkcs8": "-----BEGIN ENCRYPTED PRIVATE KEY-----",
    "openssh": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n",
    "pgp": "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    "aws": "key id AKIAIOSFODNN7EXAMPLE ok",
    "github classic": "token ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "github fine-grained": "github_pat_11ABCDEFG0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789abcdefghijklmnopqrstuv",
    "slack": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "stripe": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "openai": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "anthropic": "sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3dEf6hIj9kLm2n",
    "google": "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudEBleGFtcGxlLnRlc3QifQ.c2lnbmF0dXJl",
    "webhook secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_credential_shapes_are_refused(name: str) -> None:
    d = evaluate_send(policy(), facts(text=f"Here you go:\n{LEAKS[name]}\nCheers"), InMemoryLimits())
    assert (d.action, d.reason, d.status) == ("refuse", gate.SECRET_LEAK_SUSPECTED, 403), d.detail
    assert d.detail.startswith("leaks: ")


def test_a_leak_detail_never_repeats_the_credential() -> None:
    token = LEAKS["github classic"].split()[-1]
    d = evaluate_send(policy(), facts(text=token), InMemoryLimits())
    assert "GitHub token" in d.detail and "ghp_" in d.detail and token not in d.detail
    assert token[4:12] not in d.detail


@pytest.mark.parametrize("encode", [
    pytest.param(lambda s: s, id="verbatim"),
    pytest.param(lambda s: s.upper(), id="upper case"),
    pytest.param(lambda s: f"prefix{s}suffix", id="inside a word"),
    pytest.param(lambda s: s[:10] + "\u200b" + s[10:], id="zero-width inside"),
    pytest.param(lambda s: s[:15] + "\n" + s[15:], id="broken over lines"),
    pytest.param(lambda s: s.encode().hex(), id="hex"),
    pytest.param(lambda s: s.encode().hex().upper(), id="HEX"),
    pytest.param(lambda s: base64.b64encode(s.encode()).decode(), id="base64"),
    pytest.param(lambda s: base64.b64encode(b"x" + s.encode()).decode(), id="base64 shifted 1"),
    pytest.param(lambda s: base64.b64encode(b"xy" + s.encode() + b"tail").decode(), id="base64 shifted 2"),
    pytest.param(lambda s: base64.urlsafe_b64encode(b"?>" + s.encode()).decode(), id="base64url"),
    pytest.param(lambda s: "\n".join(re.findall(".{1,8}", base64.b64encode(s.encode() * 3).decode())),
                 id="base64 wrapped"),
])
def test_appliance_secrets_are_refused_however_encoded(encode: Any) -> None:
    d = evaluate_send(policy(), facts(text=f"the key: {encode(API_KEY)} ok"), InMemoryLimits())
    assert (d.reason, d.status) == (gate.SECRET_LEAK_SUSPECTED, 403), d.detail
    assert "appliance secret #1" in d.detail and API_KEY not in d.detail


@pytest.mark.parametrize("field", ["subject", "html", "attachment_texts"])
def test_appliance_secrets_are_found_everywhere_the_recipient_reads(field: str) -> None:
    value: Any = {"subject": f"key {API_KEY}", "html": f"<a href='https://x.example/?k={API_KEY}'>x</a>",
                  "attachment_texts": [f"API_KEY={API_KEY}"]}[field]
    d = evaluate_send(policy(), facts(**{field: value}), InMemoryLimits())
    assert d.reason == gate.SECRET_LEAK_SUSPECTED


def test_html_entities_do_not_hide_a_key() -> None:
    hidden = "".join(f"&#{ord(c)};" for c in LEAKS["stripe"])
    d = evaluate_send(policy(), facts(html=f"<p>{hidden}</p>"), InMemoryLimits())
    assert d.reason == gate.SECRET_LEAK_SUSPECTED


def test_percent_escapes_do_not_hide_a_key() -> None:
    escaped = "".join(f"%{b:02X}" for b in API_KEY.encode())
    d = evaluate_send(policy(), facts(text=f"https://collect.example/?k={escaped}"), InMemoryLimits())
    assert d.reason == gate.SECRET_LEAK_SUSPECTED and "percent-decoded" in d.detail
    d = evaluate_send(policy(), facts(text="https://collect.example/?k=ghp%5Fa1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"),
                      InMemoryLimits())
    assert d.reason == gate.SECRET_LEAK_SUSPECTED and "GitHub token" in d.detail


def test_a_base64_encoded_credential_is_found() -> None:
    blob = base64.b64encode(f"export GITHUB_TOKEN={LEAKS['github classic'].split()[-1]}\n".encode()).decode()
    d = evaluate_send(policy(), facts(text=f"As asked, base64: {blob}"), InMemoryLimits())
    assert d.reason == gate.SECRET_LEAK_SUSPECTED and "base64-decoded" in d.detail


def test_leak_guards_run_before_the_policys_guards_and_cannot_be_turned_off() -> None:
    d = evaluate_send(policy(content_guards=[GUARD]), facts(text=f"wire transfer {PEM}"), InMemoryLimits())
    assert d.reason == gate.SECRET_LEAK_SUSPECTED


@pytest.mark.parametrize("text", [
    "We use sk-learn-compatible-estimators for scoring.",
    "The task-management-board-for-everyone launched.",
    "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----",
    "Order AKIA-2024 shipped; see https://example.com/orders/AKIAFAKEEXAMPLEKEYS?x=1",
    "Use a token like ghp_... (from your settings page).",
    "The meeting id is 1234567890abcdef1234567890abcdef, see you.",
    "Bonjour, voilà le compte rendu de la réunion — à demain !",
    "Base64 of a picture: iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
    "AAAABJRU5ErkJggg==",
])
def test_ordinary_text_is_not_a_leak(text: str) -> None:
    d = evaluate_send(policy(), facts(text=text), InMemoryLimits())
    assert d.action == "send", d.detail


def test_short_appliance_secrets_are_not_searched() -> None:
    d = evaluate_send(policy(), facts(secrets=["abc", ""], text="abc is the first three letters"), InMemoryLimits())
    assert d.action == "send"
