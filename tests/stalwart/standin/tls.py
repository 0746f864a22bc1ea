"""TLS certificates: x:Certificate objects loaded into the context SMTP's STARTTLS uses.

As Stalwart does, a File text is read when certificates are (re)loaded: at start and on the
``ReloadTlsCertificates`` action, so a renewed file takes effect on a reload, not before."""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from typing import Any

from app import App
from logs import log


def _text(value: dict[str, Any]) -> bytes:
    kind = value["@type"]
    if kind == "File":
        with open(value["filePath"], "rb") as handle:
            return handle.read()
    if kind == "EnvironmentVariable":
        return os.environ[value["variableName"]].encode()
    return str(value.get("value", value.get("secret", ""))).encode()


def _context(certificate: bytes, key: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as folder:  # ssl loads chains from files only
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        with open(cert_path, "wb") as handle:
            handle.write(certificate)
        with open(key_path, "wb") as handle:
            handle.write(key)
        context.load_cert_chain(cert_path, key_path)
    return context


def load_certificates(app: App) -> None:
    """(Re)load every x:Certificate; the newest that loads is the one SMTP presents."""
    context = None
    for object_id, obj in sorted(app.state.data.get("certificates", {}).items()):
        try:
            certificate = _text(obj["certificate"])
            context = _context(certificate, _text(obj["privateKey"]))
        except (OSError, KeyError, ssl.SSLError, ValueError) as exc:
            log("ERROR", "tls.certificate-invalid", f"certificate {object_id} could not be loaded: {exc}",
                id=object_id)
            continue
        log("INFO", "tls.certificate-loaded", f"certificate {object_id} loaded", id=object_id,
            sha256=hashlib.sha256(certificate).hexdigest())
    app.tls_context = context
