"""The one rule for forged trace headers, used by the stored copy and the Stalwart hook alike."""

import pytest

from appliance.mail import is_forged, read_message, without_forged_trace
from appliance.mail.trace import authserv_id

OURS = "mx.example.test"


def test_forged_trace_headers_claiming_our_name_are_removed_and_others_kept() -> None:
    raw = (b"Authentication-Results: MX.example.test;\r\n\tdkim=pass header.d=acme.com\r\n"
           b"Authentication-Results: upstream.example; spf=fail\r\n"
           b"X-Appliance-Decision: d123; action=accept\r\n"
           b"From: a@example.net\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.example.test; in the body\r\n")
    cleaned = without_forged_trace(read_message(raw), OURS)
    assert cleaned == (b"Authentication-Results: upstream.example; spf=fail\r\n"
                       b"From: a@example.net\r\nSubject: hi\r\n\r\n"
                       b"Authentication-Results: mx.example.test; in the body\r\n")
    untouched = read_message(b"From: a@example.net\r\n\r\nbody\r\n")
    assert without_forged_trace(untouched, OURS) is untouched.data


@pytest.mark.parametrize("value", [
    " mx.example.test (our filter); dkim=pass",
    " (comment first) mx.example.test; dkim=pass",
    " mx.example.test 1; dkim=pass",               # RFC 8601 2.2 authres-version
    " mx.example.test.; dkim=pass",                # trailing dot of an absolute name
    "\r\n mx.example.test\r\n\t(folded (nested) comment); spf=pass",
    ' "mx.example.test"; dkim=pass',
])
def test_our_authserv_id_is_recognised_in_every_legal_spelling(value: str) -> None:
    assert authserv_id(value) == OURS
    assert is_forged("Authentication-Results", value, OURS)


def test_a_bare_lf_message_loses_its_forged_results_too() -> None:
    raw = (b"Authentication-Results: mx.example.test (filter); dkim=pass header.d=acme.com\n"
           b"From: a@example.net\nSubject: hi\n\nbody\n")
    cleaned = without_forged_trace(read_message(raw), OURS)
    assert cleaned == b"From: a@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


def test_results_of_other_servers_and_lookalike_names_are_kept() -> None:
    assert not is_forged("Authentication-Results", " mx.example.test.evil; dkim=pass", OURS)
    assert not is_forged("Authentication-Results", " evil.example (mx.example.test); dkim=pass", OURS)
    assert not is_forged("Received", " from mx.example.test", OURS)
    assert is_forged("x-appliance-DECISION", " d1; action=accept", OURS)
