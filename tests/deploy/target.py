"""A throwaway Debian "VPS" in a container for the Ansible tests: systemd as PID 1, sshd, a `deploy`
user with passwordless sudo, its own Docker Engine once the `docker` role installs one.

``with DeployTarget() as target:`` builds the image (tests/deploy/target/, cached by content hash),
starts it on a bridge network of its own (nothing published: the test talks to ``target.address``),
and waits until sshd lets the test's key in and systemd has finished booting.

How it runs on this engine (Docker 20.10, cgroup v1): ``--privileged`` fails here ("unable to apply
caps": the machine's bounding set lacks CAP_SYS_RESOURCE), so the container gets every capability
this machine has, no seccomp or AppArmor profile, unmasked /proc and /sys paths, the host's cgroup
hierarchy (``--cgroupns=host``, /sys/fs/cgroup bind-mounted read-write) and tmpfs on /run: systemd
runs as PID 1 with that. /var/lib/docker is a volume (ext4 underneath), so the target's own Docker
Engine runs overlay2 (on the container's fuse-overlayfs root it would fall back to vfs).
/etc/resolv.conf names this machine's upstream resolvers, not Docker's embedded 127.0.0.11, whose
NAT rules live in the target's nftables ruleset and would go with a firewall's `flush ruleset`.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import docker.errors
import yaml
from docker.models.containers import Container
from docker.models.networks import Network

from tests.images import base_image, built_image, directory_digest

TARGET_DIR = Path(__file__).resolve().parent / "target"
TARGET_REPOSITORY = "appliance-deploy-target"
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR")
"""A fresh target has new host keys every run: nothing to check them against."""

# Capability names Docker 20.10 accepts, by number (linux/capability.h); CAP_PERFMON (38) and later
# it does not know.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
)  # fmt: skip


def target_digest() -> str:
    """The target directory's digest, the base image's tag in it (``directory_digest``)."""
    return directory_digest(TARGET_DIR, base_image().encode() + b"\0")


def target_image() -> str:
    """The target image tag ``appliance-deploy-target:<digest>``, built unless it exists."""
    return built_image(TARGET_DIR, f"{TARGET_REPOSITORY}:{target_digest()}")


def granted_capabilities(status: str) -> list[str]:
    """The capabilities in CAPABILITIES that the bounding set in ``status`` (/proc/self/status) holds."""
    match = re.search(r"^CapBnd:\s*([0-9a-f]+)$", status, re.MULTILINE)
    if match is None:
        raise ValueError("/proc/self/status: no CapBnd line, expected 'CapBnd:\\t<hex mask>'")
    mask = int(match.group(1), 16)
    return [name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1]


def upstream_nameservers(resolv_conf: str) -> list[str]:
    """The nameservers in a resolv.conf text that a container can reach (loopback ones it cannot)."""
    servers = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and not fields[1].startswith(("127.", "::1")):
            servers.append(fields[1])
    return servers


class DeployTarget:
    """A fresh Debian VPS in a container, reached over SSH as `deploy` (see the module docstring)."""

    def __init__(self, *, boot_timeout: float = 90.0) -> None:
        self.boot_timeout = boot_timeout
        self.address = ""
        """The target's IP on its bridge network (sshd on port 22)."""
        self.gateway = ""
        """This machine's IP on the target's bridge network: where the target reaches the test."""
        self._dir = Path(tempfile.mkdtemp(prefix="deploy-target-"))
        self.key_file = self._dir / "id_ed25519"
        """The private key that logs in as `deploy` (made for this target, deleted with it)."""
        self._name = f"appliance-deploy-target-{uuid.uuid4().hex[:8]}"
        self._client = docker.from_env()
        self._network: Network | None = None
        self._container: Container | None = None
        self._volume: Any = None

    def __enter__(self) -> DeployTarget:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        image = target_image()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy-test", "-f", str(self.key_file)],
            check=True,
        )
        public_key = self.key_file.with_suffix(".pub").read_text().strip()
        labels = {"appliance.test": "deploy-target"}
        self._network = self._client.networks.create(self._name, driver="bridge", labels=labels)
        self._volume = self._client.volumes.create(f"{self._name}-docker", labels=labels)
        volumes: dict[str, Mapping[str, str]] = {
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            self._volume.name: {"bind": "/var/lib/docker", "mode": "rw"},
        }
        nameservers = upstream_nameservers(Path("/etc/resolv.conf").read_text())
        if nameservers:
            resolv = self._dir / "resolv.conf"
            resolv.write_text("".join(f"nameserver {server}\n" for server in nameservers))
            volumes[str(resolv)] = {"bind": "/etc/resolv.conf", "mode": "rw"}
        api = self._client.api
        host_config = api.create_host_config(
            cap_add=granted_capabilities(Path("/proc/self/status").read_text()),
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            cgroupns="host",
            tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},
            binds=volumes,
            network_mode=self._network.name,
        )
        # `--security-opt systempaths=unconfined`, which docker-py does not translate: /proc/sys
        # writable (dockerd and systemd set sysctls), nothing under /proc masked.
        host_config.update(MaskedPaths=[], ReadonlyPaths=[])
        created = api.create_container(
            image, name=self._name, hostname="vps", labels=labels, host_config=host_config,
            environment={"DEPLOY_AUTHORIZED_KEY": public_key},
        )  # fmt: skip
        self._container = self._client.containers.get(created["Id"])
        self._container.start()
        self._container.reload()
        settings = self._container.attrs["NetworkSettings"]["Networks"][self._network.name]
        self.address = settings["IPAddress"]
        self.gateway = settings["Gateway"]
        self._wait_booted()

    def _wait_booted(self) -> None:
        """Until sshd takes the key and systemd says the boot is over (running, or degraded)."""
        deadline = time.monotonic() + self.boot_timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                done = self.ssh("systemctl is-system-running --wait", timeout=30)
            except subprocess.TimeoutExpired:
                continue
            state = done.stdout.strip()
            if state in ("running", "degraded"):
                return
            last = f"exit {done.returncode}: {state} {done.stderr.strip()}"
            time.sleep(0.5)
        logs = self._container.logs(tail=30).decode(errors="replace") if self._container else ""
        raise TimeoutError(
            f"deploy target {self._name} at {self.address}: not booted with sshd in {self.boot_timeout} s"
            f" (last: {last}); container log tail:\n{logs}"
        )

    def ssh_command(self, command: str) -> list[str]:
        """The argv that runs ``command`` on the target as `deploy` (sudo works without a password)."""
        return [
            "ssh", "-i", str(self.key_file), *SSH_OPTIONS, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            f"deploy@{self.address}", command,
        ]  # fmt: skip

    def ssh(self, command: str, *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on the target as `deploy`; the exit status is the caller's to check."""
        return subprocess.run(self.ssh_command(command), capture_output=True, text=True, timeout=timeout)

    def inventory(self, path: Path, *, group: str = "appliance", **host_vars: object) -> Path:
        """Write an Ansible inventory (YAML) at ``path``: the target as host ``vps`` in ``group``.

        ``host_vars`` are set on the host, above any group_vars beside ``path``.
        """
        host = {
            "ansible_host": self.address,
            "ansible_user": "deploy",
            "ansible_ssh_private_key_file": str(self.key_file),
            "ansible_ssh_common_args": " ".join(SSH_OPTIONS[:4]),
            "ansible_python_interpreter": "/usr/bin/python3",
            **host_vars,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"all": {"children": {group: {"hosts": {"vps": host}}}}}, sort_keys=False))
        return path

    def load_image(self, tag: str) -> None:
        """Copy image ``tag`` from this machine's engine into the target's (``docker save | ssh docker load``)."""
        image = self._client.images.get(tag)
        with subprocess.Popen(
            self.ssh_command("sudo docker load"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as load:  # fmt: skip
            assert load.stdin is not None
            for chunk in image.save(named=True):
                load.stdin.write(chunk)
            out, err = load.communicate(timeout=300)
        if load.returncode != 0:
            raise RuntimeError(
                f"deploy target {self.address}: docker load of {tag} failed (exit {load.returncode}): "
                f"{err.decode(errors='replace').strip()}"
            )
        if tag not in out.decode(errors="replace"):
            raise RuntimeError(f"deploy target {self.address}: docker load did not report {tag}: {out!r}")

    def close(self) -> None:
        """Remove the container, its Docker volume and network, and the key directory."""
        for remove in (self._remove_container, self._remove_volume, self._remove_network):
            with contextlib.suppress(docker.errors.NotFound):
                remove()
        self._client.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _remove_container(self) -> None:
        if self._container is not None:
            self._container.remove(force=True, v=True)
            self._container = None

    def _remove_volume(self) -> None:
        if self._volume is not None:
            self._volume.remove(force=True)
            self._volume = None

    def _remove_network(self) -> None:
        if self._network is not None:
            self._network.remove()
            self._network = None
