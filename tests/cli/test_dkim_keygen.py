"""``appliance dkim keygen|show``: keys made private on disk, records that verify real signatures."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import dkim
import pytest

from appliance.cli import main
from appliance.config import ApplianceConfig
from appliance.mailauth import DnsResolver, verify_dkim
from appliance.mailauth.keys import load_signing_keys
from appliance.mailauth.signing import sign
from appliance.outbound.compose import Draft, compose
from tests.dnsserver import DnsTestServer, Record

NOW = 1_736_157_600
_LINE = re.compile(r'^(?P<name>\S+)\. IN TXT (?P<strings>(?:"[^"]*" ?)+)$')


def write_config(tmp_path: Path, selector: str | None = None) -> Path:
    path = tmp_path / "appliance.toml"
    extra = f'[outbound]\ndkim_selector = "{selector}"\n' if selector else ""
    path.write_text(f'hostname = "mx.example.test"\ndata_dir = "var"\n[dns]\noffline = true\n{extra}')
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def published(out: str) -> dict[str, tuple[str, ...]]:
    """The printed zone lines as name -> character-strings."""
    records = {}
    for line in out.splitlines():
        if line.startswith(";"):
            continue
        match = _LINE.match(line)
        assert match, line
        records[match["name"]] = tuple(re.findall(r'"([^"]*)"', match["strings"]))
    return records


def signed_message(data_dir: Path, domain: str, stem: str) -> bytes:
    raw = compose(Draft(agent=f"agent@{domain}", to=["boss@acme.com"], subject="Hi", text="Hello.\n"),
                  config=ApplianceConfig(hostname="mx.example.test"), email_id="e", thread_id="T", now=NOW).raw
    keys = load_signing_keys(data_dir, domain, stem)
    assert len(keys) == 2
    return sign(raw, domain=domain, keys=keys, now=NOW)


def test_keygen_makes_two_private_keys_and_prints_their_records(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    code, out, err = run(capsys, "dkim", "keygen", "--domain", "Example.COM", "--config", str(config))
    assert code == 0, err
    directory = tmp_path / "var" / "dkim" / "example.com"
    assert sorted(p.name for p in directory.iterdir()) == ["appliance-ed25519.pem", "appliance-rsa.pem"]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "created" in err and "appliance-rsa.pem" in err
    records = published(out)
    assert set(records) == {"appliance-rsa._domainkey.example.com", "appliance-ed25519._domainkey.example.com"}
    rsa_strings = records["appliance-rsa._domainkey.example.com"]
    assert len(rsa_strings) == 2 and len(rsa_strings[0]) == 255  # RFC 1035 3.3.14: 255-byte strings
    assert "".join(rsa_strings).startswith("v=DKIM1; k=rsa; p=")
    assert records["appliance-ed25519._domainkey.example.com"][0].startswith("v=DKIM1; k=ed25519; p=")


async def test_printed_records_verify_signatures_with_dkimpy_and_over_dns(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    code, out, _ = run(capsys, "dkim", "keygen", "--domain", "example.com", "--config", str(config))
    assert code == 0
    records = published(out)
    signed = signed_message(tmp_path / "var", "example.com", "appliance")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return "".join(records.get(name.decode().rstrip("."), ())).encode()

    verifier = dkim.DKIM(signed)
    assert [verifier.verify(idx=i, dnsfunc=dnsfunc) for i in range(2)] == [True, True]

    server = DnsTestServer([Record(name, "TXT", strings) for name, strings in records.items()]).start()
    try:
        results = await verify_dkim(signed, DnsResolver([server.address]), NOW)
    finally:
        server.stop()
    assert [(r.result, r.algorithm) for r in results] == [("pass", "rsa-sha256"), ("pass", "ed25519-sha256")]


def test_keygen_refuses_to_replace_keys_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert run(capsys, "dkim", "keygen", "--domain", "example.com", "--config", str(config))[0] == 0
    rsa_path = tmp_path / "var" / "dkim" / "example.com" / "appliance-rsa.pem"
    before = rsa_path.read_bytes()
    code, out, err = run(capsys, "dkim", "keygen", "--domain", "example.com", "--config", str(config))
    assert code == 1 and "exist" in err and "--force" in err and out == ""
    assert rsa_path.read_bytes() == before
    code, _, err = run(capsys, "dkim", "keygen", "--domain", "example.com", "--force", "--config", str(config))
    assert code == 0 and "replaced" in err
    assert rsa_path.read_bytes() != before
    assert stat.S_IMODE(rsa_path.stat().st_mode) == 0o600


def test_keygen_makes_a_missing_half_and_keeps_the_other(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    run(capsys, "dkim", "keygen", "--domain", "example.com", "--config", str(config))
    directory = tmp_path / "var" / "dkim" / "example.com"
    kept = (directory / "appliance-rsa.pem").read_bytes()
    (directory / "appliance-ed25519.pem").unlink()
    code, out, err = run(capsys, "dkim", "keygen", "--domain", "example.com", "--config", str(config))
    assert code == 0 and "kept" in err and "created" in err
    assert (directory / "appliance-rsa.pem").read_bytes() == kept
    assert len(published(out)) == 2


def test_show_prints_the_same_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    _, made, _ = run(capsys, "dkim", "keygen", "--domain", "example.com", "--config", str(config))
    code, shown, _ = run(capsys, "dkim", "show", "--domain", "example.com", "--config", str(config))
    assert code == 0
    assert published(shown) == published(made)


def test_show_without_keys_says_how_to_make_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    code, out, err = run(capsys, "dkim", "show", "--domain", "example.com", "--config", str(config))
    assert code == 1 and "dkim keygen" in err and out == ""


def test_selector_comes_from_the_option_or_the_configuration(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, selector="mail2025")
    _, out, _ = run(capsys, "dkim", "keygen", "--domain", "example.com", "--config", str(config))
    assert set(published(out)) == {"mail2025-rsa._domainkey.example.com", "mail2025-ed25519._domainkey.example.com"}
    _, out, _ = run(capsys, "dkim", "keygen", "--domain", "example.com", "--selector", "next",
                    "--config", str(config))
    assert set(published(out)) == {"next-rsa._domainkey.example.com", "next-ed25519._domainkey.example.com"}


def test_an_idn_domain_is_stored_and_published_in_a_labels(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    code, out, _ = run(capsys, "dkim", "keygen", "--domain", "bücher.de", "--config", str(config))
    assert code == 0
    assert (tmp_path / "var" / "dkim" / "xn--bcher-kva.de" / "appliance-rsa.pem").exists()
    assert "appliance-rsa._domainkey.xn--bcher-kva.de" in published(out)


@pytest.mark.parametrize(("option", "value"), [("--domain", "../../etc"), ("--domain", "bad..domain"),
                                               ("--selector", "bad selector"), ("--selector", "-x")])
def test_bad_names_are_refused_naming_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 option: str, value: str) -> None:
    config = write_config(tmp_path)
    argv = {"--domain": "example.com", "--selector": "appliance", option: value}
    code, out, err = run(capsys, "dkim", "keygen", f"--domain={argv['--domain']}",
                         f"--selector={argv['--selector']}", "--config", str(config))
    assert code == 1 and option in err and out == ""
    assert not (tmp_path / "var" / "dkim").exists() or not any((tmp_path / "var" / "dkim").rglob("*.pem"))
