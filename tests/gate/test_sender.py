import pytest

from appliance.gate.sender import match_sender
from appliance.policy import MailPolicy, Match, SenderRule


def rules(*matches: Match) -> MailPolicy:
    return MailPolicy(senders=[SenderRule(match=m) for m in matches])


@pytest.mark.parametrize(("domain", "sender", "matched"), [
    ("acme.com", "boss@acme.com", True),
    ("acme.com", "boss@sub.acme.com", False),
    ("acme.com", "boss@evilacme.com", False),
    ("*.acme.com", "boss@sub.acme.com", True),
    ("*.acme.com", "boss@a.b.acme.com", True),
    ("*.acme.com", "boss@acme.com", False),
    ("*.acme.com", "boss@evilacme.com", False),
    ("ACME.com.", "boss@Acme.COM", True),
    ("*.ACME.com.", "boss@Sub.Acme.COM", True),
])
def test_domain_forms(domain: str, sender: str, matched: bool) -> None:
    assert (match_sender(rules(Match(domain=domain)), sender) == 0) is matched


@pytest.mark.parametrize("domain", ["bücher.de", "BÜCHER.de", "Bücher.de."])
def test_unicode_policy_domain_matches_its_a_label_sender(domain: str) -> None:
    assert match_sender(rules(Match(domain=domain)), "info@xn--bcher-kva.de") == 0
    assert match_sender(rules(Match(domain="*." + domain)), "info@mail.xn--bcher-kva.de") == 0


def test_idna_2008_keeps_sharp_s_apart_from_ss() -> None:
    # IDNA 2003 would fold straße.de into strasse.de, somebody else's domain.
    assert match_sender(rules(Match(domain="straße.de")), "info@strasse.de") is None
    assert match_sender(rules(Match(domain="straße.de")), "info@xn--strae-oqa.de") == 0


@pytest.mark.parametrize("address", ["Boss@ACME.com", "boss@acme.com.", "boss@ACME.COM."])
def test_address_rule_ignores_case_and_a_trailing_dot(address: str) -> None:
    assert match_sender(rules(Match(address=address)), "boss@acme.com") == 0


def test_address_rule_with_unicode_domain_matches_the_a_label() -> None:
    assert match_sender(rules(Match(address="info@bücher.de")), "info@xn--bcher-kva.de") == 0


def test_restrictive_rule_for_a_unicode_domain_is_not_bypassed_under_default_accept() -> None:
    policy = MailPolicy(default_action="accept",
                        senders=[SenderRule(match=Match(domain="bücher.de"), action="quarantine")])
    assert match_sender(policy, "info@xn--bcher-kva.de") == 0
