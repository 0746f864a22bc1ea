"""The MTA-STS policy served for the domains: RFC 8461 text, and an id that follows its content."""

from __future__ import annotations

import re

from appliance.domains.mta_sts import MAX_AGE, policy, policy_id, policy_text
from appliance.outbound.mtasts import parse_policy


def test_the_policy_text_is_rfc_8461_and_reads_back() -> None:
    text = policy_text(policy("enforce", "MX.Example.Test."))
    assert text == f"version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: {MAX_AGE}\r\n"
    parsed = parse_policy(text)
    assert parsed.mode == "enforce" and parsed.mx == ["mx.example.test"] and parsed.max_age == MAX_AGE


def test_the_id_changes_when_the_policy_does_and_only_then() -> None:
    testing = policy_id(policy("testing", "mx.example.test"))
    assert testing == policy_id(policy("testing", "mx.example.test"))
    assert testing != policy_id(policy("enforce", "mx.example.test"))
    assert testing != policy_id(policy("testing", "mx2.example.test"))
    assert testing != policy_id(policy("testing", "mx.example.test", max_age=86_400))
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", testing)  # RFC 8461 3.1
