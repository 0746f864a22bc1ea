"""DKIM keys made the way Stalwart does after x:Domain/set create: an RSA-2048 and an ed25519 key,
a little later (asynchronously), with month selectors like 202612r / 202612e."""

from __future__ import annotations

import base64
import threading
import time
from datetime import UTC, datetime

from app import App
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from logs import log

KEY_DELAY_S = 0.5


def _keys() -> list[tuple[str, str, str, str]]:
    """(@type, selector suffix, publicKey as DKIM p= wants, private PEM) for both algorithms."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_public = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    return [
        ("Dkim1RsaSha256", "r", base64.b64encode(rsa_public).decode(),
         rsa_key.private_bytes(pem, pkcs8, none).decode()),
        ("Dkim1Ed25519Sha256", "e", base64.b64encode(ed_public).decode(),
         ed_key.private_bytes(pem, pkcs8, none).decode()),
    ]


def generate_later(app: App, domain_id: str) -> None:
    """Make the domain's two keys in a thread, ~0.5 s from now (a client must poll for them)."""

    def run() -> None:
        time.sleep(KEY_DELAY_S)
        month = datetime.now(UTC).strftime("%Y%m")
        keys = _keys()
        with app.state.lock:
            if domain_id not in app.state.data["domains"]:
                return
            for kind, suffix, public, private in keys:
                key_id = app.state.new_id()
                app.state.data["dkim"][key_id] = {
                    "id": key_id, "domainId": domain_id, "selector": f"{month}{suffix}", "@type": kind,
                    "publicKey": public, "privateKey": private,
                }
            app.state.data["managementState"] += 1
            app.state.save()
        log("INFO", "dkim.generated", f"DKIM keys made for domain {domain_id}", domainId=domain_id)

    threading.Thread(target=run, daemon=True, name=f"dkim-{domain_id}").start()


def txt_chunks(text: str) -> str:
    """A TXT value as BIND quoted strings of at most 255 characters each."""
    return " ".join(f'"{text[i:i + 255]}"' for i in range(0, len(text), 255))


def zone_file(app: App, domain: dict[str, str]) -> str:
    """The computed BIND zone text for a domain: MX, SPF, one DKIM TXT per key, DMARC."""
    name = domain["name"]
    host = app.hostname if "." in app.hostname else f"mail.{name}"
    lines = [
        f"{name}. 3600 IN MX 10 {host}.",
        f'{name}. 3600 IN TXT "v=spf1 mx -all"',
    ]
    for key in sorted(app.state.data["dkim"].values(), key=lambda k: k["selector"]):
        if key["domainId"] != domain["id"]:
            continue
        algorithm = "rsa" if key["@type"] == "Dkim1RsaSha256" else "ed25519"
        record = f"v=DKIM1; k={algorithm}; h=sha256; p={key['publicKey']}"
        lines.append(f"{key['selector']}._domainkey.{name}. 3600 IN TXT {txt_chunks(record)}")
    lines.append(f'_dmarc.{name}. 3600 IN TXT "v=DMARC1; p=reject; rua=mailto:postmaster@{name}"')
    return "\n".join(lines) + "\n"
