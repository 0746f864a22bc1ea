"""DKIM verification time per message: dkimpy (pure Python) against ours (bytes ops in C, OpenSSL).

    .venv/bin/python bench/dkim.py [--rounds N]

For messages of about 2.7 KB, 100 KB and 1 MB (a text body with some tabs,
double spaces and trailing white space, so relaxed canonicalization has work
to do; from 100 KB also a base64 attachment, the usual shape of a big
message), signed rsa-sha256 (2048 bits) and ed25519-sha256, relaxed/relaxed
and simple/simple, prints the best time of one verification out of N (the
machine may be busy; the best run is the one the least disturbed):

- dkimpy: ``dkim.DKIM(raw).verify()`` with the key handed over in memory;
- ours: ``verify_dkim(raw, resolver, now)`` awaited on a running loop, the key
  from a ``StaticResolver`` (so no DNS time in either column), worker thread
  hops included for messages of ``OFFLOAD_BYTES`` or more;
- ours, CPU: the same work called synchronously, no event loop or thread.

Not part of the tests; every loop is bounded.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and this file is called dkim:
# move that folder last (a stable sort), so "import dkim" is dkimpy.
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import base64
import random
import time
from collections.abc import Awaitable, Callable

import dkim
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.mailauth import StaticResolver, verify_dkim
from appliance.mailauth import dkim as ours

SIZES = [("2.7 KB", 2_700), ("100 KB", 100_000), ("1 MB", 1_000_000)]
WORDS = ["the", "agent", "invoice", "please", "forward", "meeting", "tomorrow", "attached",
         "regards", "thanks", "report", "quarterly", "numbers", "review", "a", "of", "to"]
HEADERS = (b"From: Alice <alice@bench.example>\r\nTo: agent@appliance.test\r\n"
           b"Subject: Quarterly numbers\r\nDate: Mon, 6 Jan 2025 10:00:00 +0000\r\n"
           b"Message-ID: <bench-1@bench.example>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n")
SIGNED = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]


def body_of(size: int, rng: random.Random) -> bytes:
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        if rng.random() < 0.1:
            line = "\t" + line
        if rng.random() < 0.1:
            line = line.replace(" ", "  ", 1)
        if rng.random() < 0.05:
            line += " "
        lines.append(line)
        total += len(line) + 2
    return ("\r\n".join(lines) + "\r\n").encode()


def keys() -> dict[bytes, tuple[bytes, str]]:
    """Private key (as dkim.sign takes it) and TXT record, per algorithm."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    ed = nacl.signing.SigningKey.generate()
    return {
        b"rsa-sha256": (private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"),
        b"ed25519-sha256": (ed.encode(encoder=nacl.encoding.Base64Encoder),
                            f"v=DKIM1; k=ed25519; "
                            f"p={ed.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()}"),
    }


def attachment_of(size: int, rng: random.Random) -> bytes:
    """A MIME body carrying a base64 attachment (no white space runs: relaxed has nothing to do)."""
    data = base64.encodebytes(rng.randbytes(size * 3 // 4)).replace(b"\n", b"\r\n")
    return (b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n"
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + data + b"--b--\r\n")


def median_ms(function: Callable[[], object], rounds: int, budget: float = 5.0) -> float:
    times = []
    deadline = time.perf_counter() + budget
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline and len(times) >= 3:
            break
    return min(times) * 1000


async def median_ms_async(function: Callable[[], Awaitable[object]], rounds: int,
                          budget: float = 5.0) -> float:
    """The same, awaited on one running loop (as the gate calls verify_dkim)."""
    times = []
    deadline = time.perf_counter() + budget
    for _ in range(rounds):
        start = time.perf_counter()
        await function()
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline and len(times) >= 3:
            break
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="verifications per cell (at most; dkimpy gets a third)")
    args = parser.parse_args()
    rng = random.Random(14)
    material = keys()
    selector = {b"rsa-sha256": b"rsa", b"ed25519-sha256": b"ed"}
    resolver = StaticResolver({(f"{selector[a].decode()}._domainkey.bench.example", "TXT"): [record]
                               for a, (_, record) in material.items()})
    now = time.time()

    print(f"{'size':>7} {'body':>10} {'algorithm':>15} {'c=':>15} {'dkimpy ms':>10} {'ours ms':>8} "
          f"{'ours CPU ms':>12} {'speedup':>8}")
    for label, size in SIZES:
        bodies = [("text", body_of(size, rng))]
        if size >= 100_000:
            bodies.append(("base64", attachment_of(size, rng)))
        for kind, raw_body in bodies:
            for algorithm, (private, record) in material.items():
                for canon in ((b"relaxed", b"relaxed"), (b"simple", b"simple")):
                    message = HEADERS + b"\r\n" + raw_body
                    raw = dkim.sign(message, selector[algorithm], b"bench.example", private,
                                    signature_algorithm=algorithm, canonicalize=canon,
                                    include_headers=SIGNED) + message

                    def dkimpy_verify(raw: bytes = raw, record: str = record) -> None:
                        ok = dkim.DKIM(raw).verify(dnsfunc=lambda name, timeout=5: record.encode())
                        assert ok

                    async def ours_verify(raw: bytes = raw) -> None:
                        [result] = await verify_dkim(raw, resolver, now)
                        assert result.result == "pass", result.detail

                    def ours_cpu(raw: bytes = raw, record: str = record) -> None:
                        message = ours._read(raw)
                        signatures = ours._parse_signatures(message, now)
                        specs = [s for sig in signatures if (s := sig.body_spec) is not None]
                        hashes = ours._body_hashes(message.body, specs)
                        keys_ = {sig.key_name: [record] for sig in signatures if sig.key_name}
                        [result] = ours._verify_all(message, signatures, keys_, hashes)
                        assert result.result == "pass", result.detail

                    reference = median_ms(dkimpy_verify, max(3, args.rounds // 3))
                    mine = asyncio.run(median_ms_async(ours_verify, args.rounds))
                    cpu = median_ms(ours_cpu, args.rounds)
                    print(f"{label:>7} {kind:>10} {algorithm.decode():>15} "
                          f"{b'/'.join(canon).decode():>15} {reference:>10.2f} {mine:>8.2f} "
                          f"{cpu:>12.2f} {reference / mine:>7.0f}x")


if __name__ == "__main__":
    main()
