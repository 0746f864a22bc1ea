"""DKIM public keys (RFC 6376 3.6.1, RFC 8463) as ``cryptography`` keys, and signature checks in OpenSSL."""

from __future__ import annotations

__all__ = ["DkimKey", "UnusableKey", "load_key", "signature_valid"]

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class UnusableKey(ValueError):
    """The key record's p= (or k=) cannot be made into a public key."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    public: PublicKey
    bits: int
    kind: bytes
    """``rsa`` or ``ed25519`` (the ``k=`` tag)."""


def _first_der_object(der: bytes) -> bytes:
    """The outer DER TLV of ``der``, without what follows it (dkimpy ignores trailing bytes too)."""
    if len(der) < 2 or der[0] != 0x30:
        return der
    length = der[1]
    start = 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or len(der) < 2 + count:
            return der
        length = int.from_bytes(der[2 : 2 + count], "big")
        start = 2 + count
    return der[: start + length]


@functools.lru_cache(maxsize=1024)
def load_key(kind: bytes, p_value: bytes) -> DkimKey:
    """The public key of a key record's ``k=`` and ``p=``; raises UnusableKey saying why not.

    RSA: DER SubjectPublicKeyInfo, or the bare PKCS#1 RSAPublicKey some
    publishers use (dkimpy accepts both); ed25519: the raw 32 bytes (RFC 8463 4).
    Parsed keys are kept (keys are few and the same ones sign most mail).
    """
    try:
        data = base64.b64decode(p_value)  # not validating: white space inside p= is allowed
    except (binascii.Error, ValueError) as exc:
        raise UnusableKey(f"p= is not base64 ({exc})") from None
    if kind == b"ed25519":
        try:
            return DkimKey(ed25519.Ed25519PublicKey.from_public_bytes(data), 256, kind)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise UnusableKey(f"could not parse ed25519 public key: {exc}") from None
    if kind != b"rsa":
        raise UnusableKey(f"unknown algorithm in k= tag: {kind.decode('ascii', 'replace')}")
    try:
        public = serialization.load_der_public_key(_first_der_object(data))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UnusableKey(f"could not parse RSA public key: {exc}") from None
    if not isinstance(public, rsa.RSAPublicKey):
        raise UnusableKey(f"p= holds a {type(public).__name__}, not an RSA key")
    return DkimKey(public, public.key_size, kind)


_RSA_HASHES: dict[bytes, type[hashes.HashAlgorithm]] = {
    b"rsa-sha256": hashes.SHA256,
    b"rsa-sha1": hashes.SHA1,
}


def signature_valid(key: DkimKey, algorithm: bytes, header_input: bytes, signature: bytes) -> bool:
    """Does ``signature`` (b=, decoded) sign ``header_input`` under ``key`` and ``algorithm``?

    rsa-*: RSASSA-PKCS1-v1_5 over the header hash input (RFC 6376 3.3);
    ed25519-sha256: Ed25519 over the SHA-256 of it (RFC 8463 3).
    """
    public = key.public
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            if algorithm != b"ed25519-sha256":
                return False
            public.verify(signature, hashlib.sha256(header_input).digest())
            return True
        hash_type = _RSA_HASHES.get(algorithm)
        if hash_type is None:
            return False
        size = (public.key_size + 7) // 8
        if len(signature) < size:
            # The same integer with its leading zero bytes (a signer may drop them; dkimpy
            # reads b= as a number): OpenSSL wants exactly the modulus length.
            signature = signature.rjust(size, b"\0")
        public.verify(signature, header_input, padding.PKCS1v15(), hash_type())
        return True
    except InvalidSignature:
        return False
