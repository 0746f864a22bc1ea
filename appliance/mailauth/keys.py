"""DKIM signing keys: made, kept on disk, and published as DNS TXT records.

Each signing domain has a directory ``data_dir/dkim/<domain>/`` (0700) with one
PEM file per selector (0600, PKCS #8, unencrypted: the appliance signs without
an operator present). ``appliance dkim keygen`` makes a pair per selector
stem: ``<stem>-rsa`` (RSA 2048, rsa-sha256; RFC 8301 3.2 asks for at least
1024 bits and recommends 2048) and ``<stem>-ed25519`` (ed25519-sha256,
RFC 8463), so every verifier finds one signature it understands.

A key file is written to a temporary name, flushed, and renamed over its
place, so a crash never leaves half a key, and a rotation replaces the old key
in one step.
"""

from __future__ import annotations

__all__ = [
    "KEY_KINDS",
    "RSA_BITS",
    "Algorithm",
    "KeyOutcome",
    "KeyRecord",
    "PublicKey",
    "SigningKey",
    "ensure_signing_keys",
    "generate_key",
    "key_dir",
    "key_path",
    "key_value",
    "load_key_file",
    "load_signing_keys",
    "public_key",
    "public_record",
    "selectors_for",
    "valid_domain",
    "valid_selector",
    "write_key",
]

import base64
import contextlib
import functools
import os
import re
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from appliance.mail.address import ascii_domain

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
KEY_KINDS: dict[str, Algorithm] = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
"""Selector suffix → the algorithm its key signs with."""
RSA_BITS = 2048

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class SigningKey(msgspec.Struct, frozen=True, kw_only=True):
    """One private key and the selector it is published under."""

    selector: str
    algorithm: Algorithm
    pem: bytes
    """PKCS #8 PEM, unencrypted."""


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The DNS TXT record that publishes a key's public half (RFC 6376 3.6.1, RFC 8463 4)."""

    name: str
    """``<selector>._domainkey.<domain>``."""
    value: str
    """``v=DKIM1; k=rsa; p=...``."""
    strings: list[str]
    """``value`` split into the 255-byte character-strings one TXT record holds (RFC 1035 3.3.14)."""

    @property
    def zone_line(self) -> str:
        """The record as a zone-file line: ``name. IN TXT "..." "..."``."""
        return f"{self.name}. IN TXT " + " ".join(f'"{s}"' for s in self.strings)


class PublicKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key's public half as its DNS record carries it (RFC 6376 3.6.1, RFC 8463 4.2)."""

    selector: str
    kind: Literal["rsa", "ed25519"]
    """The record's ``k=``."""
    p: str
    """The record's ``p=``: base64 of the DER SubjectPublicKeyInfo (RSA) or of the raw 32 bytes (ed25519)."""


class KeyOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One key ``ensure_signing_keys`` looked after: kept as it was, created, or replaced."""

    key: SigningKey
    path: Path
    outcome: Literal["kept", "created", "replaced"]


def valid_selector(selector: str) -> str:
    """``selector`` lowercased; ValueError saying why when it is not a DNS name (RFC 6376 3.1)."""
    name = selector.strip().lower()
    if not name or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"selector {selector!r} is not a DNS name (letters, digits, '-' and '_' in dot-separated "
                         "labels of 1-63 characters)")
    return name


def selectors_for(stem: str) -> dict[str, Algorithm]:
    """The pair of selectors ``keygen`` makes for ``stem``: ``<stem>-rsa``, ``<stem>-ed25519``."""
    stem = valid_selector(stem)
    return {f"{stem}-{kind}": algorithm for kind, algorithm in KEY_KINDS.items()}


def valid_domain(domain: str) -> str:
    """``domain`` lowercased in A-labels; ValueError saying why when it is not a host name."""
    try:
        name = ascii_domain(domain, strict=True)
    except ValueError as exc:
        raise ValueError(f"domain {domain!r} is not a valid IDN: {exc}") from None
    if not 0 < len(name) <= 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"domain {domain!r} is not a domain name (letters, digits and '-' in dot-separated labels)")
    return name


def key_dir(data_dir: Path, domain: str) -> Path:
    """Where ``domain``'s keys live: ``data_dir/dkim/<domain in A-labels>``."""
    return data_dir / "dkim" / valid_domain(domain)


def key_path(data_dir: Path, domain: str, selector: str) -> Path:
    return key_dir(data_dir, domain) / f"{valid_selector(selector)}.pem"


def generate_key(selector: str, algorithm: Algorithm) -> SigningKey:
    """A new private key for ``selector``."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa-sha256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return SigningKey(selector=valid_selector(selector), algorithm=algorithm, pem=pem)


def _private_dir(path: Path) -> None:
    """``data_dir/dkim/<domain>`` and ``data_dir/dkim`` made 0700 whatever the umask.

    ``appliance.store.database.private_dir`` does the same for one directory, but mailauth imports no
    database code (layout.md).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for directory in (path.parent, path):
        if directory.stat().st_mode & 0o777 != 0o700:
            os.chmod(directory, 0o700)


def write_key(data_dir: Path, domain: str, key: SigningKey) -> Path:
    """Store ``key`` as ``data_dir/dkim/<domain>/<selector>.pem``, 0600, replacing any older one."""
    path = key_path(data_dir, domain, key.selector)
    _private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # 0600 from the start: the key is never readable by others, not even for a moment.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key.pem)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
    return path


def load_key_file(path: Path) -> SigningKey:
    """The key in ``path`` (its selector is the file name); ValueError naming the file when unusable."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    # Checking an RSA private key costs tens of milliseconds: once per file version, not once per send.
    return _load_key_file(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _load_key_file(path: Path, _mtime_ns: int, _size: int) -> SigningKey:
    try:
        pem = path.read_bytes()
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < 1024:
            raise ValueError(f"{path}: RSA key of {private.key_size} bits; verifiers ignore keys under 1024 "
                             "(RFC 8301 3.2)")
        algorithm: Algorithm = "rsa-sha256"
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        algorithm = "ed25519-sha256"
    else:
        raise ValueError(f"{path}: a {type(private).__name__}; DKIM signs with RSA or ed25519 keys")
    return SigningKey(selector=valid_selector(path.stem), algorithm=algorithm, pem=pem)


def load_signing_keys(data_dir: Path, domain: str, stem: str) -> list[SigningKey]:
    """The keys ``keygen`` made for ``stem`` that exist (RSA first), to sign ``domain``'s mail with."""
    keys = []
    for selector in selectors_for(stem):
        path = key_path(data_dir, domain, selector)
        if path.exists():
            keys.append(load_key_file(path))
    return keys


def ensure_signing_keys(data_dir: Path, domain: str, stem: str, *, replace: bool = False) -> list[KeyOutcome]:
    """The keys of ``stem``'s selectors for ``domain`` (RSA first): those that exist kept (replaced with
    ``replace``: a rotation), the missing ones made and written. ValueError naming the file or the name."""
    outcomes = []
    for selector, algorithm in selectors_for(stem).items():
        path = key_path(data_dir, domain, selector)
        existed = path.exists()
        if existed and not replace:
            outcomes.append(KeyOutcome(key=load_key_file(path), path=path, outcome="kept"))
            continue
        key = generate_key(selector, algorithm)
        write_key(data_dir, domain, key)
        outcomes.append(KeyOutcome(key=key, path=path, outcome="replaced" if existed else "created"))
    return outcomes


def public_key(key: SigningKey) -> PublicKey:
    """The public half of ``key`` as its record's ``k=`` and ``p=``.

    RSA: ``p=`` is the DER SubjectPublicKeyInfo (RFC 6376 3.6.1); ed25519: the
    raw 32-byte public key (RFC 8463 4.2). Both base64.
    """
    private = serialization.load_pem_private_key(key.pem, password=None)
    kind: Literal["rsa", "ed25519"]
    if isinstance(private, ed25519.Ed25519PrivateKey):
        kind = "ed25519"
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    elif isinstance(private, rsa.RSAPrivateKey):
        kind = "rsa"
        public = private.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    else:  # pragma: no cover - load_key_file and generate_key make only these
        raise ValueError(f"selector {key.selector}: not an RSA or ed25519 key")
    return PublicKey(selector=key.selector, kind=kind, p=base64.b64encode(public).decode("ascii"))


def key_value(key: PublicKey) -> str:
    """The text of the TXT record that publishes ``key``: ``v=DKIM1; k=...; p=...``."""
    return f"v=DKIM1; k={key.kind}; p={key.p}"


def public_record(domain: str, key: SigningKey) -> KeyRecord:
    """The TXT record publishing ``key`` for ``domain``."""
    value = key_value(public_key(key))
    strings = [value[i:i + 255] for i in range(0, len(value), 255)]
    return KeyRecord(name=f"{key.selector}._domainkey.{valid_domain(domain)}", value=value,
                     strings=strings)
