"""Locally built Docker images for container tests: the Debian base and the Stalwart stand-in."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STANDIN_DIR = REPO / "tests" / "stalwart" / "standin"
BASE_TAG = "appliance-base:bookworm"
STANDIN_REPOSITORY = "appliance-stalwart-standin"


def docker_available() -> bool:
    """Whether a Docker Engine answers here."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@cache
def base_image() -> str:
    """The Debian base image tag, built by deploy/images/base.sh (which caches it itself)."""
    subprocess.run(["sh", str(REPO / "deploy" / "images" / "base.sh"), BASE_TAG], check=True, cwd=REPO)
    return BASE_TAG


def directory_digest(directory: Path, salt: bytes = b"") -> str:
    """First 12 hex digits of a SHA-256 over ``salt`` and the files under ``directory`` (names and bytes),
    bytecode left out: an image tag that changes exactly when its build context does."""
    digest = hashlib.sha256(salt)
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def built_image(directory: Path, tag: str) -> str:
    """``tag`` built from ``directory`` on the local base (``BASE`` build argument), unless it exists."""
    import docker
    import docker.errors

    client = docker.from_env()
    try:
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            client.images.build(path=str(directory), buildargs={"BASE": base_image()}, tag=tag, rm=True)
        return tag
    finally:
        client.close()


def standin_digest() -> str:
    """The stand-in directory's digest (``directory_digest``)."""
    return directory_digest(STANDIN_DIR)


@cache
def standin_image() -> str:
    """The stand-in image tag ``appliance-stalwart-standin:<digest>``, built unless it exists."""
    return built_image(STANDIN_DIR, f"{STANDIN_REPOSITORY}:{standin_digest()}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
