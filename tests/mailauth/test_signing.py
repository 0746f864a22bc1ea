"""DKIM signing: our signatures verified by dkimpy (the reference) and by our own verifier over real DNS."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.config import ApplianceConfig
from appliance.mailauth import verify_dkim
from appliance.mailauth.keys import (
    KeyRecord,
    SigningKey,
    generate_key,
    key_path,
    load_key_file,
    load_signing_keys,
    public_record,
    write_key,
)
from appliance.mailauth.signing import SIGNED_HEADERS, sign
from appliance.outbound.compose import Attachment, Draft, compose
from tests.dnsserver import Record

NOW = 1_736_157_600
DOMAIN = "example.test"


@pytest.fixture(scope="module")
def keys() -> list[SigningKey]:
    return [generate_key("appliance-rsa", "rsa-sha256"), generate_key("appliance-ed25519", "ed25519-sha256")]


def records(domain: str, keys: list[SigningKey]) -> list[KeyRecord]:
    return [public_record(domain, key) for key in keys]


def dnsfunc_for(published: list[KeyRecord]):  # type: ignore[no-untyped-def]
    """dkimpy's DNS hook, answering with the character-strings as published (joined, as resolvers do)."""
    table = {f"{r.name}.": "".join(r.strings) for r in published}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return table.get(name.decode(), "").encode()

    return dnsfunc


def message(**changes: object) -> bytes:
    draft = Draft(agent=f"agent@{DOMAIN}", to=["boss@acme.com"], cc=["cfo@acme.com"], subject="Quarterly numbers",
                  text="Numbers attached.\nGrüße\n", html="<p>Numbers attached.</p>",
                  attachments=[Attachment(filename="q1.csv", content_type="text/csv", data=b"a,b\r\n1,2\r\n")])
    config = ApplianceConfig(hostname=f"mx.{DOMAIN}")
    return compose(draft, config=config, email_id="e1", thread_id="T1", now=NOW).raw


def dkimpy_verdicts(raw: bytes, published: list[KeyRecord]) -> list[bool]:
    verifier = dkim.DKIM(raw)
    count = len(re.findall(rb"^DKIM-Signature:", raw, re.M | re.I))
    verdicts = []
    for i in range(count):
        try:
            verdicts.append(bool(verifier.verify(idx=i, dnsfunc=dnsfunc_for(published))))
        except dkim.ValidationError:  # dkimpy raises for a body hash mismatch
            verdicts.append(False)
    return verdicts


def test_each_key_adds_one_signature_that_dkimpy_verifies(keys: list[SigningKey]) -> None:
    signed = sign(message(), domain=DOMAIN, keys=keys, now=NOW)
    assert signed.count(b"DKIM-Signature:") == 2
    assert signed.index(b"a=rsa-sha256") < signed.index(b"a=ed25519-sha256")  # in key order, on top
    assert signed.startswith(b"DKIM-Signature:")
    assert dkimpy_verdicts(signed, records(DOMAIN, keys)) == [True, True]


async def test_our_verifier_passes_both_over_real_dns(keys: list[SigningKey], dns_zone, resolver_for) -> None:  # type: ignore[no-untyped-def]
    signed = sign(message(), domain=DOMAIN, keys=keys, now=NOW)
    server = dns_zone([Record(r.name, "TXT", tuple(r.strings)) for r in records(DOMAIN, keys)])
    results = await verify_dkim(signed, resolver_for(server), NOW)
    assert [(r.result, r.domain, r.selector, r.algorithm) for r in results] == [
        ("pass", DOMAIN, "appliance-rsa", "rsa-sha256"), ("pass", DOMAIN, "appliance-ed25519", "ed25519-sha256")]
    assert "2048-bit rsa" in results[0].detail
    assert all(r.covers_whole_body for r in results)


def _tags(signed: bytes) -> list[dict[str, str]]:
    out = []
    for field in re.findall(rb"^DKIM-Signature:(.*?)(?=\r\n\S)", signed, re.M | re.S):
        value = re.sub(r"\s+", "", field.decode())
        out.append(dict(tag.split("=", 1) for tag in value.split(";")))
    return out


def test_tags_relaxed_t_and_oversigned_headers(keys: list[SigningKey]) -> None:
    raw = message()
    signed = sign(raw, domain="EXAMPLE.test", keys=keys, now=NOW + 0.7)
    for tags in _tags(signed):
        assert (tags["v"], tags["c"], tags["d"], tags["t"]) == ("1", "relaxed/relaxed", DOMAIN, str(NOW))
        names = tags["h"].split(":")
        head = raw.split(b"\r\n\r\n")[0].decode().lower()
        for name in SIGNED_HEADERS:
            present = len(re.findall(rf"^{name}:", head, re.M))
            assert names.count(name) == present + 1, name  # RFC 6376 8.15
        assert {"from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references", "reply-to",
                "mime-version", "content-type"} <= set(names)


def test_signature_lines_are_folded(keys: list[SigningKey]) -> None:
    signed = sign(message(), domain=DOMAIN, keys=keys, now=NOW)
    head = signed.split(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))


@pytest.mark.parametrize("added", [b"Subject: Pay the invoice\r\n", b"From: ceo@acme.com\r\n",
                                   b"Reply-To: attacker@evil.example\r\n", b"To: eve@evil.example\r\n"])
async def test_an_added_header_breaks_every_signature(keys: list[SigningKey], added: bytes, dns_zone,  # type: ignore[no-untyped-def]
                                                      resolver_for) -> None:
    signed = sign(message(), domain=DOMAIN, keys=keys, now=NOW)
    # Above the signed one (what a reader shows), and, for the absent Reply-To, anywhere.
    cut = signed.index(b"\r\nFrom:") + 2
    tampered = signed[:cut] + added + signed[cut:]
    assert dkimpy_verdicts(tampered, records(DOMAIN, keys)) == [False, False]
    server = dns_zone([Record(r.name, "TXT", tuple(r.strings)) for r in records(DOMAIN, keys)])
    assert [r.result for r in await verify_dkim(tampered, resolver_for(server), NOW)] == ["fail", "fail"]


def test_a_changed_body_breaks_the_signatures(keys: list[SigningKey]) -> None:
    signed = sign(message(), domain=DOMAIN, keys=keys, now=NOW)
    changed = signed.replace(b"Numbers attached.\r\n", b"Numbers detached.\r\n", 1)
    assert changed != signed
    assert dkimpy_verdicts(changed, records(DOMAIN, keys)) == [False, False]


def test_relaxed_canonicalization_survives_refolding_and_white_space(keys: list[SigningKey]) -> None:
    signed = sign(message(), domain=DOMAIN, keys=keys, now=NOW)
    refolded = signed.replace(b"Subject: Quarterly numbers", b"Subject:  Quarterly\r\n\tnumbers ")
    refolded = refolded.replace(b"Numbers attached.\r\n", b"Numbers   attached.  \r\n", 1)
    assert refolded != signed
    assert dkimpy_verdicts(refolded, records(DOMAIN, keys)) == [True, True]


def test_a_reply_with_threading_headers_verifies(keys: list[SigningKey]) -> None:
    from appliance.mail import parse_message

    parent = parse_message(b"From: boss@acme.com\r\nTo: agent@example.test\r\nSubject: Q\r\n"
                           b"Message-ID: <p@acme.com>\r\nReferences: <r@acme.com>\r\n\r\nx\r\n")
    raw = compose(Draft(agent=f"agent@{DOMAIN}", to=["boss@acme.com"], text="Yes."),
                  config=ApplianceConfig(hostname="mx.example.test"), email_id="e", thread_id="T", now=NOW,
                  parent=parent).raw
    signed = sign(raw, domain=DOMAIN, keys=keys, now=NOW)
    assert dkimpy_verdicts(signed, records(DOMAIN, keys)) == [True, True]
    names = _tags(signed)[0]["h"].split(":")
    assert names.count("in-reply-to") == 2 and names.count("references") == 2


def test_bare_lf_input_is_signed_in_crlf_form(keys: list[SigningKey]) -> None:
    raw = b"From: agent@example.test\nTo: boss@acme.com\nSubject: x\n\nbody\n"
    signed = sign(raw, domain=DOMAIN, keys=keys, now=NOW)
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert dkimpy_verdicts(signed, records(DOMAIN, keys)) == [True, True]


def test_no_keys_leaves_the_message_unsigned() -> None:
    raw = message()
    assert sign(raw, domain=DOMAIN, keys=[], now=NOW) == raw


def test_an_invalid_domain_is_refused(keys: list[SigningKey]) -> None:
    with pytest.raises(ValueError):
        sign(message(), domain="-bad-.example", keys=keys, now=NOW)


def test_an_idn_domain_signs_as_a_labels(keys: list[SigningKey]) -> None:
    signed = sign(message(), domain="bücher.de", keys=keys[:1], now=NOW)
    assert _tags(signed)[0]["d"] == "xn--bcher-kva.de"
    assert dkimpy_verdicts(signed, records("bücher.de", keys[:1])) == [True]


# -- keys on disk ---------------------------------------------------------------------------------------

def test_keys_are_written_private_and_read_back(tmp_path: Path, keys: list[SigningKey]) -> None:
    for key in keys:
        path = write_key(tmp_path, DOMAIN, key)
        assert path == tmp_path / "dkim" / DOMAIN / f"{key.selector}.pem"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert load_key_file(path) == key
    assert stat.S_IMODE((tmp_path / "dkim" / DOMAIN).stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "dkim").stat().st_mode) == 0o700
    assert load_signing_keys(tmp_path, DOMAIN, "appliance") == keys
    assert load_signing_keys(tmp_path, DOMAIN, "other") == []
    assert not [p for p in (tmp_path / "dkim" / DOMAIN).iterdir() if p.name.startswith(".")]  # no temporaries


def test_rewriting_a_key_replaces_it(tmp_path: Path) -> None:
    first = generate_key("s-ed25519", "ed25519-sha256")
    second = generate_key("s-ed25519", "ed25519-sha256")
    write_key(tmp_path, DOMAIN, first)
    path = write_key(tmp_path, DOMAIN, second)
    assert load_key_file(path) == second != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unusable_key_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = key_path(tmp_path, DOMAIN, "weak")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a key")
    with pytest.raises(ValueError, match=r"weak\.pem"):
        load_key_file(path)
    # RFC 8301 3.2: verifiers ignore RSA keys under 1024 bits, so signing with one is an error.
    from tests.mailauth.conftest import _small_rsa_private_key

    weak = _small_rsa_private_key(512)
    path.write_bytes(weak.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    with pytest.raises(ValueError, match="512 bits"):
        load_key_file(path)


def test_key_records(keys: list[SigningKey]) -> None:
    rsa_record, ed_record = records(DOMAIN, keys)
    assert rsa_record.name == "appliance-rsa._domainkey.example.test"
    assert rsa_record.value.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    assert len(rsa_record.strings) == 2 and all(len(s) <= 255 for s in rsa_record.strings)
    assert "".join(rsa_record.strings) == rsa_record.value
    assert ed_record.value.startswith("v=DKIM1; k=ed25519; p=") and ed_record.strings == [ed_record.value]
    assert rsa_record.zone_line == (f'appliance-rsa._domainkey.example.test. IN TXT "{rsa_record.strings[0]}" '
                                    f'"{rsa_record.strings[1]}"')
    private = serialization.load_pem_private_key(keys[0].pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
