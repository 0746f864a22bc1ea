import pytest

from appliance.gate import Envelope
from appliance.gate.loop import automatic_mail_reason
from appliance.mail import parse_message, read_message
from tests.gate.facts import AGENT, mail

ENVELOPE = Envelope(client_ip="203.0.113.5", helo="mail.acme.com", mail_from="boss@acme.com", rcpt_to=[AGENT])


@pytest.mark.parametrize("headers", [
    "Auto-Submitted: no\r\nAuto-Submitted: auto-replied\r\n",
    "Precedence: normal\r\nPrecedence: bulk\r\n",
])
def test_a_second_copy_of_a_loop_header_is_not_hidden_by_the_first(headers: str) -> None:
    raw = mail(headers=headers)
    assert automatic_mail_reason(parse_message(raw), read_message(raw), ENVELOPE, AGENT) is not None


def test_ordinary_mail_is_not_automatic() -> None:
    raw = mail(headers="Auto-Submitted: no\r\nPrecedence: normal\r\n")
    assert automatic_mail_reason(parse_message(raw), read_message(raw), ENVELOPE, AGENT) is None
