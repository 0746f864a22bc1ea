"""The appliance's image, built from deploy/Dockerfile over a wheelhouse of this checkout (cached by content)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from tests.images import REPO, base_image

DOCKERFILE = REPO / "deploy" / "Dockerfile"
APPLIANCE_REPOSITORY = "appliance"


def runtime_versions() -> str:
    """``name==version`` lines, as installed here, of the appliance's runtime dependencies and theirs (no
    extras, no test tools): the versions the image is made with, and part of its digest."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    pending = list(metadata.requires("appliance") or [])
    while pending:
        requirement = Requirement(pending.pop())
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in pins:
            continue
        pins[name] = metadata.version(name)
        pending.extend(metadata.requires(name) or [])
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def appliance_digest(constraints: str) -> str:
    """First 12 hex digits of a SHA-256 over what the image is made of: the Dockerfile, pyproject.toml,
    the package's files (names and bytes) and the dependency versions (``constraints``)."""
    digest = hashlib.sha256()
    package = REPO / "appliance"
    files = [DOCKERFILE, REPO / "pyproject.toml",
             *(p for p in sorted(package.rglob("*"))
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")]
    for path in files:
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(constraints.encode())
    return digest.hexdigest()[:12]


def build_wheelhouse(directory: Path, constraints: str) -> None:
    """The appliance's wheel and one per dependency, pinned to ``constraints``, into ``directory``
    (the image's build context: the build itself reaches no package index)."""
    pins = directory / "constraints.txt"
    pins.write_text(constraints)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(directory), "-c", str(pins),
                    str(REPO)], check=True)
    pins.unlink()


@cache
def appliance_image() -> str:
    """The image tag ``appliance:<digest>``, built from deploy/Dockerfile on the local base unless it exists."""
    import docker
    import docker.errors

    constraints = runtime_versions()
    tag = f"{APPLIANCE_REPOSITORY}:{appliance_digest(constraints)}"
    client = docker.from_env()
    try:
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            with tempfile.TemporaryDirectory(prefix="appliance-wheels-") as context:
                build_wheelhouse(Path(context), constraints)
                try:
                    # The Dockerfile lives outside the context: the client sends it along.
                    client.images.build(path=context, dockerfile=str(DOCKERFILE), buildargs={"BASE": base_image()},
                                        tag=tag, rm=True, forcerm=True)
                except docker.errors.BuildError as exc:
                    log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
                    raise RuntimeError(f"building {tag} from {DOCKERFILE} failed: {exc.msg}\n{log[-4000:]}") from exc
        return tag
    finally:
        client.close()
