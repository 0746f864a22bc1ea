from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from appliance.delivery.tokens import TOKEN_KEY_ENV, TokenIssuer, load_token_key

NOW = 1_700_000_000.0


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(os.urandom(32), issuer="mx.example.test", ttl=600)


def token(issuer: TokenIssuer, now: float = NOW) -> str:
    return issuer.issue(agent="agent@example.test", thread_id="T1", decision_id="d1", email_id="e1",
                        capabilities=["read", "reply"], now=now)


def test_a_fresh_token_grants_what_was_issued(issuer: TokenIssuer) -> None:
    seen = issuer.introspect(token(issuer), now=NOW + 10)
    assert seen.active and seen.agent == "agent@example.test" and seen.thread_id == "T1"
    assert seen.decision_id == "d1" and seen.capabilities == ["read", "reply"] and seen.exp == NOW + 600


def test_expired_tampered_foreign_and_garbage_tokens_are_inactive(issuer: TokenIssuer) -> None:
    good = token(issuer)
    assert not issuer.introspect(good, now=NOW + 600).active
    header, claims, sig = good.split(".")
    forged = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(claims + "==").replace(b'"read","reply"', b'"read","send"')).rstrip(b"=").decode()
    assert not issuer.introspect(f"{header}.{forged}.{sig}", now=NOW).active
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert not issuer.introspect(f"{header}.{claims}.{flipped}", now=NOW).active
    other = TokenIssuer(os.urandom(32), issuer="mx.example.test", ttl=600)
    assert not other.introspect(good, now=NOW).active
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    assert not issuer.introspect(f"{none_alg}.{claims}.", now=NOW).active
    for junk in ("", "a.b", "a.b.c", "...", "é.é.é"):
        assert issuer.introspect(junk, now=NOW).active is False


def test_an_agent_sees_only_its_own_tokens(issuer: TokenIssuer) -> None:
    assert issuer.introspect(token(issuer), agent="agent@example.test", now=NOW).active
    assert not issuer.introspect(token(issuer), agent="other@example.test", now=NOW).active


def test_inactive_answer_is_only_active_false(issuer: TokenIssuer) -> None:
    import msgspec

    assert msgspec.json.encode(issuer.introspect("bad")) == b'{"active":false}'


def test_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    key = load_token_key(tmp_path, environ={})
    assert len(key) == 32 and load_token_key(tmp_path, environ={}) == key
    assert stat.S_IMODE((tmp_path / "token.key").stat().st_mode) == 0o600
    env_key = os.urandom(32)
    assert load_token_key(tmp_path, environ={TOKEN_KEY_ENV: base64.b64encode(env_key).decode()}) == env_key
    with pytest.raises(ValueError, match="32 bytes"):
        TokenIssuer(b"short", issuer="x", ttl=60)


def test_only_the_canonical_spelling_of_the_signature_verifies(issuer: TokenIssuer) -> None:
    # Python's base64 decoder skips characters outside the alphabet, accepts padding and ignores the
    # unused low bits of the last character: each of these decodes to the genuine MAC.
    good = token(issuer)
    header, claims, sig = good.split(".")
    assert issuer.verify(good, now=NOW) is not None
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    respelled = sig[:-1] + alphabet[last | 1 if last & 1 == 0 else last & ~1]  # the same 256 bits
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(sig + "=")
    variants = [sig + "=", sig + "==", sig + "!", sig + "$$", sig + " ", sig + "\n", sig[:10] + "*" + sig[10:],
                sig + "A", sig + "AA", sig + "AAAA", respelled, sig.replace("-", "+").replace("_", "/")]
    for variant in variants:
        if variant == sig:
            continue
        forged = f"{header}.{claims}.{variant}"
        assert issuer.verify(forged, now=NOW) is None, variant
        assert not issuer.introspect(forged, now=NOW).active, variant
    for around in (f" {good}", f"{good} ", f"{good}\n", f"{header}.{claims}=.{sig}"):
        assert issuer.verify(around, now=NOW) is None, around


def test_key_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    for n, mask in enumerate((0o022, 0o000)):
        data_dir = tmp_path / f"data{n}" / "var"
        old = os.umask(mask)
        try:
            load_token_key(data_dir, environ={})
        finally:
            os.umask(old)
        assert stat.S_IMODE((data_dir / "token.key").stat().st_mode) == 0o600
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    loose = tmp_path / "data0" / "var" / "token.key"
    loose.chmod(0o644)  # left readable by an older version or a careless copy
    load_token_key(loose.parent, environ={})
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
