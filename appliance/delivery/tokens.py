"""Capability tokens: what the gate granted for one thread, signed by the appliance, short-lived.

A token is a JWT (RFC 7519) signed with HS256 under a key only the appliance
holds, issued when an event is sent. Whoever receives one (the agent, or a
tool the agent calls) asks ``POST /api/v1/tokens/introspect`` what it grants
(RFC 7662's shape: ``active`` false when expired, tampered or foreign).
"""

from __future__ import annotations

__all__ = ["TOKEN_KEY_ENV", "Claims", "Introspection", "TokenIssuer", "load_token_key"]

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

import msgspec

from appliance.store.database import private_dir, private_file

TOKEN_KEY_ENV = "APPLIANCE_TOKEN_KEY"
"""Environment variable holding the signing key (base64, at least 32 bytes); else ``data_dir/token.key``."""

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
"""A JWS segment: base64url, unpadded (RFC 7515 section 2), nothing else."""


class Claims(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """What a token says (JWT claims; ours in camelCase)."""

    iss: str
    sub: str
    """The agent."""
    iat: int
    exp: int
    jti: str
    thread_id: str
    decision_id: str
    email_id: str | None = None
    capabilities: list[str] = msgspec.field(default_factory=list)


class Introspection(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """The answer of ``/api/v1/tokens/introspect`` (RFC 7662 2.2): just ``active: false`` for a bad token."""

    active: bool
    agent: str | None = None
    thread_id: str | None = None
    decision_id: str | None = None
    email_id: str | None = None
    capabilities: list[str] | None = None
    exp: int | None = None
    iat: int | None = None
    iss: str | None = None
    sub: str | None = None
    jti: str | None = None
    token_type: str | None = None


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: str) -> bytes:
    """Strict base64url: the alphabet only, no padding, and only the canonical spelling of the bytes.

    Python's decoder skips characters outside the alphabet and ignores the unused low bits of the
    last character, so several strings decode to the same bytes; only the one ``_b64`` writes is taken.
    """
    if not _SEGMENT.fullmatch(data):
        raise ValueError("not unpadded base64url")
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    if _b64(raw) != data.encode("ascii"):
        raise ValueError("not the canonical base64url of its bytes")
    return raw


_MAX_TOKEN = 16_384
"""Characters a token may have at most (ours are a few hundred)."""


class TokenIssuer:
    """Issues and checks capability tokens under one key."""

    def __init__(self, key: bytes, *, issuer: str, ttl: int) -> None:
        if len(key) < 32:
            raise ValueError("capability token key must be at least 32 bytes")
        self._key = key
        self.issuer = issuer
        self.ttl = ttl

    def issue(self, *, agent: str, thread_id: str, decision_id: str, capabilities: list[str],
              email_id: str | None = None, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = Claims(iss=self.issuer, sub=agent, iat=issued, exp=issued + self.ttl, jti=secrets.token_hex(8),
                        thread_id=thread_id, decision_id=decision_id, email_id=email_id,
                        capabilities=list(capabilities))
        signing_input = _HEADER + b"." + _b64(msgspec.json.encode(claims))
        return (signing_input + b"." + _b64(self._mac(signing_input))).decode("ascii")

    def verify(self, token: str, *, now: float | None = None) -> Claims | None:
        """The claims of a genuine, unexpired token of ours; None otherwise.

        Exactly the token as issued: no surrounding whitespace, no padding, and a signature that is the
        canonical base64url of the 32-byte MAC (anything appended to or respelling it is refused).
        """
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _HEADER.decode() or len(token) > _MAX_TOKEN:
            return None
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
        try:
            given = _unb64(parts[2])
            if len(given) != hashlib.sha256().digest_size or not hmac.compare_digest(given, self._mac(signing_input)):
                return None
            claims = msgspec.json.decode(_unb64(parts[1]), type=Claims)
        except (binascii.Error, ValueError, msgspec.DecodeError):
            return None
        current = time.time() if now is None else now
        if claims.iss != self.issuer or not claims.iat - 60 <= current < claims.exp:
            return None
        return claims

    def introspect(self, token: str, *, agent: str | None = None, now: float | None = None) -> Introspection:
        """RFC 7662 view of ``token``; inactive unless genuine, unexpired and (when given) ``agent``'s."""
        claims = self.verify(token, now=now)
        if claims is None or (agent is not None and claims.sub != agent):
            return Introspection(active=False)
        return Introspection(active=True, agent=claims.sub, thread_id=claims.thread_id,
                             decision_id=claims.decision_id, email_id=claims.email_id,
                             capabilities=claims.capabilities, exp=claims.exp, iat=claims.iat, iss=claims.iss,
                             sub=claims.sub, jti=claims.jti, token_type="capability")  # noqa: S106

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()


def load_token_key(data_dir: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The signing key: ``$APPLIANCE_TOKEN_KEY`` (base64), else ``data_dir/token.key``, created once (0600)."""
    env = os.environ if environ is None else environ
    value = env.get(TOKEN_KEY_ENV, "").strip()
    if value:
        try:
            return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"${TOKEN_KEY_ENV} is not base64") from exc
    path = data_dir / "token.key"
    if path.exists():
        private_file(path)  # an older appliance (or a copy) may have left it readable
        return base64.b64decode(path.read_text().strip())
    private_dir(data_dir)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the umask can only narrow 0600
    except FileExistsError:  # another process won the race: use its key
        return base64.b64decode(path.read_text().strip())
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key
