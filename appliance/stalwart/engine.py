"""Stalwart in a Docker container (``supervise = "docker"``), through the Docker Engine API.

The container is found by name (``[stalwart] container``) and labelled ``appliance.managed=true``:
a restarted appliance adopts the one that runs rather than starting a second; a stopped one is
started; one made from another image than ``[stalwart] image`` is recreated (its named volumes, and
so Stalwart's configuration and mail, stay). A container of that name without the label is not the
appliance's and is left alone (an error says so). A missing image is pulled.

The Docker client blocks: every call runs in a worker thread (``asyncio.to_thread``), and the log
stream (``follow``) has a thread of its own, each line into our log (``backend.forward_line``).
"""

from __future__ import annotations

__all__ = ["MANAGED_LABEL", "DockerBackend"]

import asyncio
import contextlib
import logging
import threading
import time
from pathlib import PurePosixPath
from typing import Any, Literal

import docker
import docker.errors
from docker.models.containers import Container

from appliance.config import StalwartConfig
from appliance.stalwart.backend import BackendError, RunStatus, forward_line

log = logging.getLogger("appliance.stalwart")

MANAGED_LABEL = "appliance.managed"
"""Label (value ``true``) on the containers and volumes the appliance made."""
CONFIG_MOUNT = "/etc/stalwart"
DATA_MOUNT = "/var/lib/stalwart"


class DockerBackend:
    """One Stalwart container, as ``section`` describes it, with ``environment`` set."""

    name: Literal["docker"] = "docker"

    def __init__(self, section: StalwartConfig, environment: dict[str, str],
                 client: docker.DockerClient | None = None) -> None:
        self.section = section
        self.environment = environment
        self._client = client
        self._container: Container | None = None
        self._container_id: str | None = None
        self._logs: _LogFollower | None = None

    @property
    def container_id(self) -> str | None:
        """The container last seen (kept after ``close``, for the state shown)."""
        if self._container is not None:
            self._container_id = self._container.id
        return self._container_id

    # -- the protocol -------------------------------------------------------------------------------

    async def ensure_running(self) -> str:
        return await asyncio.to_thread(self._ensure_running)

    async def status(self) -> RunStatus:
        return await asyncio.to_thread(self._status)

    async def stop(self, grace: float) -> RunStatus:
        return await asyncio.to_thread(self._stop, grace)

    async def close(self) -> None:
        """Stop following the logs and close the connection to the engine (a later call opens it again)."""
        follower, self._logs = self._logs, None
        if follower is not None:
            await asyncio.to_thread(follower.close)
        self._container_id = self.container_id
        self._container = None
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def remove(self) -> None:
        """Remove the container (stopped first); its volumes stay."""
        await asyncio.to_thread(self._remove)

    # -- in worker threads --------------------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as exc:
                self._client = None
                raise BackendError(f"stalwart.supervise = \"docker\": the Docker Engine is unreachable "
                                   f"(DOCKER_HOST or /var/run/docker.sock): {exc}") from exc
        return self._client

    def _ensure_running(self) -> str:
        name = self.section.container
        try:
            container = self._find()
            if container is None:
                self._container = self._create()
                done = "created"
            else:
                self._container = container
                if self._image_differs(container) or self._mounts_differ(container):
                    old = str(container.attrs.get("Config", {}).get("Image"))
                    self._stop(self.section.timeout)
                    container.remove()
                    self._container = self._create()
                    done = (f"recreated (image {old} -> {self.section.image})" if old != self.section.image
                            else "recreated (the certificate's folders were not mounted)")
                elif container.status == "running":
                    self._follow_logs(since=time.time())
                    return f"adopted (container {container.short_id} was running)"
                else:
                    done = f"started (container {container.short_id} was {container.status})"
            since = time.time()
            self._container.start()
            self._follow_logs(since=since)  # this run's lines, not the last run's again
            return done
        except docker.errors.APIError as exc:
            raise BackendError(f"stalwart.container {name!r}: the Docker Engine refused: {exc}") from exc

    def _find(self) -> Container | None:
        name = self.section.container
        try:
            container = self.client().containers.get(name)
        except docker.errors.NotFound:
            return None
        if container.labels.get(MANAGED_LABEL) != "true":
            raise BackendError(f"stalwart.container: a container named {name!r} exists but is not the "
                               f"appliance's (no label {MANAGED_LABEL}=true); remove or rename it, or set "
                               f"[stalwart] container to another name")
        return container

    def _certificate_folders(self) -> list[str]:
        """The folders of ``tls_certificate`` and ``tls_private_key``, mounted read-only at the same path."""
        s = self.section
        return sorted({str(PurePosixPath(p).parent) for p in (s.tls_certificate, s.tls_private_key) if p})

    def _mounts_differ(self, container: Container) -> bool:
        mounted = {str(m.get("Destination")) for m in container.attrs.get("Mounts", []) if isinstance(m, dict)}
        return not set(self._certificate_folders()) <= mounted

    def _image_differs(self, container: Container) -> bool:
        if container.attrs.get("Config", {}).get("Image") != self.section.image:
            return True
        try:  # same name, but the name may point at a newer image now (a pull, a rebuild)
            return bool(self.client().images.get(self.section.image).id != container.attrs.get("Image"))
        except docker.errors.ImageNotFound:
            return False

    def _ensure_image(self) -> None:
        image = self.section.image
        images = self.client().images
        try:
            images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        log.info("stalwart image %s is not present locally; pulling it", image)
        try:
            images.pull(image)
        except docker.errors.DockerException as exc:
            raise BackendError(f"stalwart.image: image {image!r} is not present locally and could not be pulled "
                               f"({exc}); pull or load it (docker pull / docker load), or set [stalwart] image "
                               f"to one that is") from exc

    def _ensure_volume(self, name: str) -> None:
        volumes = self.client().volumes
        try:
            volumes.get(name)
        except docker.errors.NotFound:
            volumes.create(name, labels={MANAGED_LABEL: "true"})

    def _create(self) -> Container:
        s = self.section
        self._ensure_image()
        self._ensure_volume(s.config_volume)
        self._ensure_volume(s.data_volume)
        options: dict[str, Any] = {
            "name": s.container,
            "environment": self.environment,
            "network_mode": s.network_mode,
            "volumes": {s.config_volume: {"bind": CONFIG_MOUNT, "mode": "rw"},
                        s.data_volume: {"bind": DATA_MOUNT, "mode": "rw"},
                        **{folder: {"bind": folder, "mode": "ro"} for folder in self._certificate_folders()}},
            "labels": {MANAGED_LABEL: "true"},
            # a tiny init as PID 1 passes our SIGTERM on (PID 1 without a handler would ignore it) and reaps
            "init": True,
            "detach": True,
        }
        if s.network_mode != "host" and s.ports:
            options["ports"] = {(k if "/" in k else f"{k}/tcp"): v for k, v in s.ports.items()}
        container: Container = self.client().containers.create(s.image, s.command or None, **options)
        log.info("stalwart container %s created from %s", container.short_id, s.image)
        return container

    def _status(self) -> RunStatus:
        container = self._container
        if container is None:
            return RunStatus(running=False, detail="no container")
        try:
            container.reload()
        except docker.errors.NotFound:
            self._container = None
            return RunStatus(running=False, detail="container removed")
        except docker.errors.APIError as exc:
            raise BackendError(f"stalwart.container {self.section.container!r}: could not inspect it: {exc}") from exc
        state = container.attrs.get("State", {})
        if state.get("Running"):
            return RunStatus(running=True)
        return RunStatus(running=False, exit_code=state.get("ExitCode"),
                         detail="OOM killed" if state.get("OOMKilled") else None)

    def _stop(self, grace: float) -> RunStatus:
        container = self._container
        if container is None:
            return RunStatus(running=False, detail="no container")
        began = time.monotonic()
        try:
            container.stop(timeout=max(1, round(grace)))  # the engine: SIGTERM, the timeout, then SIGKILL
            container.wait(timeout=grace + 30)
        except docker.errors.NotFound:
            self._container = None
            return RunStatus(running=False, detail="container removed")
        except docker.errors.APIError as exc:
            raise BackendError(f"stalwart.container {self.section.container!r}: could not stop it: {exc}") from exc
        except Exception as exc:  # a wait that timed out: the engine did not report the exit
            raise BackendError(f"stalwart.container {self.section.container!r}: still not stopped "
                               f"{grace + 30:g} s after SIGTERM: {exc!r}") from exc
        status = self._status()
        if time.monotonic() - began >= grace and status.exit_code == 137:
            return RunStatus(running=False, exit_code=137, detail=f"killed: still running {grace:g} s after SIGTERM")
        return status

    def _remove(self) -> None:
        container = self._container or self._find()
        if container is None:
            return
        self._container = container
        self._stop(self.section.timeout)
        with contextlib.suppress(docker.errors.NotFound):
            container.remove()
        self._container = None

    def _follow_logs(self, since: float) -> None:
        assert self._container is not None
        if self._logs is not None:
            self._logs.close()
        self._logs = _LogFollower(self._container, since)


class _LogFollower:
    """A thread reading the container's output (``follow``) into our log until it ends or is closed."""

    def __init__(self, container: Container, since: float) -> None:
        self._stream: Any = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(container, since), daemon=True,
                                        name=f"stalwart-logs-{container.short_id}")
        self._thread.start()

    def _run(self, container: Container, since: float) -> None:
        try:
            self._stream = container.logs(stream=True, follow=True, since=since)
            if self._closed.is_set():
                return
            pending = b""
            for chunk in self._stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    forward_line(line.decode("utf-8", "replace"))
            if pending:
                forward_line(pending.decode("utf-8", "replace"))
        except Exception as exc:  # the thread must not die with a traceback nobody reads
            if not self._closed.is_set():
                log.warning("stalwart logs: following container %s stopped: %r", container.short_id, exc)

    def close(self) -> None:
        self._closed.set()
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
        self._thread.join(timeout=5)
