"""Fixtures for mail authentication tests: loopback DNS zones and DKIM keys made on the spot."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.canonicalization
import dkim.crypto
import nacl.encoding
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.mailauth import DnsResolver
from tests.dnsserver import DnsTestServer, Record


@dataclass(frozen=True)
class DkimKey:
    """A key pair; ``record`` is the TXT value to publish at ``<selector>._domainkey.<domain>``."""

    algorithm: bytes
    private: bytes
    record: str

    def txt(self, selector: str, domain: str) -> Record:
        return Record(f"{selector}._domainkey.{domain}", "TXT", self.record)

    def sign(
        self,
        message: bytes,
        *,
        domain: str,
        selector: str,
        timestamp: int | None = None,
        expires: int | None = None,
        length: bool = False,
        headers: Sequence[bytes] = (b"from", b"to", b"subject", b"date", b"message-id"),
        algorithm: bytes | None = None,
        identity: bytes | None = None,
    ) -> bytes:
        """The message with a DKIM-Signature prepended, made by dkimpy's own header code.

        Unlike ``dkim.sign`` this sets ``t=`` and ``x=`` as told, so expiry can be tested.
        The header is written with the message's own line ends (a header block mixing
        CRLF and bare LF is refused, by the gate and by DKIM alike).
        """
        algorithm = algorithm or self.algorithm
        signer = dkim.DKIM(message, signature_algorithm=algorithm)
        if algorithm.startswith(b"rsa"):
            pk: Any = dkim.crypto.parse_pem_private_key(self.private)
        else:
            pk = nacl.signing.SigningKey(self.private, encoder=nacl.encoding.Base64Encoder)
        canon = dkim.canonicalization.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        signer.hasher = dkim.HASH_ALGORITHMS[algorithm]
        body = canon.canonicalize_body(signer.body)
        fields = [
            (b"v", b"1"), (b"a", algorithm), (b"c", canon.to_c_value()),
            (b"d", domain.encode()), (b"s", selector.encode()),
            (b"t", str(int(time.time()) if timestamp is None else timestamp).encode()),
        ]
        if identity is not None:
            fields.append((b"i", identity))
        if expires is not None:
            fields.append((b"x", str(expires).encode()))
        if length:
            fields.append((b"l", str(len(body)).encode()))
        fields += [
            (b"h", b":".join(headers)),
            (b"bh", base64.b64encode(signer.hasher(body).digest())),
            (b"b", b"0" * 60),
        ]
        value = signer.gen_header(fields, list(headers), canon, b"DKIM-Signature", pk)
        return with_line_ends_of(message, b"DKIM-Signature: " + value) + message


def with_line_ends_of(message: bytes, header: bytes) -> bytes:
    """``header`` (CRLF line ends, as dkimpy writes it) with bare LF when ``message`` uses them."""
    return header if b"\r\n" in message else header.replace(b"\r\n", b"\n")


def _prime(bits: int, rng: random.Random) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        d, r = candidate - 1, 0
        while d % 2 == 0:
            d, r = d // 2, r + 1
        for _ in range(32):  # Miller-Rabin
            x = pow(rng.randrange(2, candidate - 2), d, candidate)
            if x in (1, candidate - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, candidate)
                if x == candidate - 1:
                    break
            else:
                break
        else:
            return candidate


def _small_rsa_private_key(bits: int) -> rsa.RSAPrivateKey:
    """An RSA key under the 1024 bits ``cryptography`` will generate (to test RFC 8301 3.2)."""
    rng = random.Random(bits)
    e = 65537
    while True:
        p, q = _prime(bits // 2, rng), _prime(bits - bits // 2, rng)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e and (p * q).bit_length() == bits:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p),
                                    rsa.RSAPublicNumbers(e, p * q))
    return numbers.private_key()


def _rsa_key(bits: int) -> DkimKey:
    if bits < 1024:
        key = _small_rsa_private_key(bits)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return DkimKey(b"rsa-sha256", private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")


@pytest.fixture(scope="session")
def rsa_key() -> DkimKey:
    return _rsa_key(2048)


@pytest.fixture(scope="session")
def ed25519_key() -> DkimKey:
    key = nacl.signing.SigningKey.generate()
    private = key.encode(encoder=nacl.encoding.Base64Encoder)
    public = key.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()
    return DkimKey(b"ed25519-sha256", private, f"v=DKIM1; k=ed25519; p={public}")


def make_message(*, sender: str = "alice@example.com", subject: str = "Hello",
                 body: str = "Hi there.\n\nSee you soon.\n") -> bytes:
    return (f"From: Alice <{sender}>\nTo: agent@appliance.test\nSubject: {subject}\n"
            f"Date: Mon, 6 Jan 2025 10:00:00 +0000\nMessage-ID: <m1@{sender.partition('@')[2]}>\n"
            f"\n{body}").encode()


@pytest.fixture
def message() -> Callable[..., bytes]:
    return make_message


@pytest.fixture
def dns_zone() -> Iterator[Callable[..., DnsTestServer]]:
    """Start loopback DNS servers for a test: ``server = dns_zone([(name, type, value), ...])``."""
    servers: list[DnsTestServer] = []

    def start(records: Any = (), **options: Any) -> DnsTestServer:
        server = DnsTestServer(records, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def resolver_for() -> Callable[..., DnsResolver]:
    """A fresh caching resolver that asks only the given test server."""

    def make(server: DnsTestServer, timeout: float = 2.0, **options: Any) -> DnsResolver:
        return DnsResolver([server.address], timeout=timeout, **options)

    return make
