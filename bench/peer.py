"""`make bench-peer`: the appliance's intake next to Postfix, and Postfix with OpenDKIM, on this machine.

Run by bench/peer.sh (which installs Debian's postfix and opendkim, runs this
as root and removes whatever it started). Everything listens on 127.0.0.1:

- a DNS server (tests/dnsserver.py) holding the signer's RSA-2048 DKIM key,
  its SPF and DMARC records, on a free port;
- one Postfix instance of its own (config and queue under the work
  directory, no chroot), delivering everything to ``discard``, with two
  smtpd listeners: one plain, one passing each message to OpenDKIM;
- OpenDKIM as a milter on a UNIX socket, verifying only (Mode v), refusing
  mail whose signature is missing, bad, or whose key is not found, and reading
  the key over DNS from the same loopback server, which also answers on
  127.0.0.1:53 for it (``Nameservers 127.0.0.1``: Debian's OpenDKIM resolves
  through libunbound, which takes no port there). Pointing libunbound at the
  free port instead (``ResolverConfiguration`` naming an unbound.conf with
  ``forward-addr: 127.0.0.1@PORT``) works for one session at a time, but this
  OpenDKIM re-reads that file for each message and libunbound's configuration
  parser is not reentrant: two concurrent sessions crash the milter. Its test
  options (``TestDNSData``, ``TestPublicKeys``) would skip DNS altogether;
- the appliance (``appliance run``, sandbox mode) whose policy requires DKIM
  for the signer's domain: each message is verified, decided, stored and
  audited (fsync) before its 250. A fresh data directory per measurement.

The same load generator (bench/loadgen.py, a process of its own) sends the
same DKIM-signed messages to each, interleaved, for several rounds; the
table gives medians over the rounds. CPU per message is the server's
process tree (for Postfix every process under master, for the appliance
its reader processes too), from /proc, including the work after the 250
(Postfix's queue is drained before the count is read). Postfix's and
OpenDKIM's durability: Postfix fsyncs the queue file before its 250, as the
appliance fsyncs its commit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its dkim.py would shadow dkimpy: last, then.
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib.server import DNSServer

from bench.loadgen import dot_stuffed, send
from tests.dnsserver import DnsTestServer, serve_zone
from tests.e2e.harness import ApplianceProcess, free_port, write_config

DOMAIN = "bench.example"
AGENT = "agent@example.test"
SENDER = f"s1@{DOMAIN}"
ROOT = Path(__file__).resolve().parents[1]
POLICY = f"""
defaultAction = "bounce"
[[senders]]
match = {{ domain = "{DOMAIN}", requireDkim = true }}
capabilities = ["read"]
"""
SIGNED = [b"from", b"to", b"subject", b"message-id", b"date", b"mime-version", b"content-type"]
VARIANTS = 32
"""Distinct messages per size (Message-ID and Subject differ; body and signer the same), sent in turn."""


@dataclass(frozen=True)
class Cell:
    label: str
    size: int
    sessions: int
    count: int
    seconds: float


CELLS = [Cell("2.7 KB", 2_700, 20, 6000, 20.0), Cell("2.7 KB", 2_700, 50, 6000, 20.0),
         Cell("100 KB", 100_000, 16, 2000, 20.0), Cell("1 MB", 1_000_000, 16, 400, 25.0)]
SERVERS = ["postfix", "postfix+opendkim", "appliance"]


# -- messages --------------------------------------------------------------------------------

def keypair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


def _body(size: int) -> tuple[bytes, bytes]:
    """(content headers, body) of about ``size`` bytes: plain text when small, else text plus a PDF attachment."""
    text = ("Hello,\r\n\r\nCan we meet on Thursday at 10:00 to go through the quarterly figures? "
            "I have attached the draft.\r\n\r\nBest regards,\r\nSender\r\n")
    if size < 10_000:
        filler = "Some ordinary text to make a realistic body, line after line of it.\r\n"
        body = text + filler * max(0, (size - 900 - len(text)) // len(filler))
        return b"Content-Type: text/plain; charset=utf-8\r\n", body.encode()
    rng = random.Random(size)
    payload = base64.encodebytes(rng.randbytes(int((size - 1500) * 0.74))).replace(b"\n", b"\r\n")
    boundary = "=_bench_boundary_0123456789"
    body = (f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            f"--{boundary}\r\nContent-Type: application/pdf; name=draft.pdf\r\n"
            f"Content-Disposition: attachment; filename=draft.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            ).encode() + payload + f"--{boundary}--\r\n".encode()
    return f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'.encode(), body


def signed_messages(size: int, private: bytes) -> list[bytes]:
    content, body = _body(size)
    out = []
    for n in range(VARIANTS):
        head = (f"From: Sender One <{SENDER}>\r\nTo: {AGENT}\r\nSubject: Quarterly figures, draft {n}\r\n"
                f"Message-ID: <peer-{size}-{n}-{os.urandom(6).hex()}@{DOMAIN}>\r\n"
                f"Date: {formatdate(localtime=False)}\r\nMIME-Version: 1.0\r\n").encode() + content
        raw = head + b"\r\n" + body
        out.append(dkim.sign(raw, b"s1", DOMAIN.encode(), private, include_headers=SIGNED) + raw)
    return out


# -- processes and their CPU -----------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / _TICK


def tree(root: int) -> list[int]:
    """``root`` and every live process under it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(st[0], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def cpu(roots: list[int]) -> float:
    """CPU seconds of every tree under ``roots``: live processes, and the dead ones their parents reaped."""
    return sum(st[1] for root in roots for pid in tree(root) if (st := _stat(pid)) is not None)


def memory(root: int) -> tuple[float, float]:
    """(peak RSS of ``root`` itself, summed peak RSS of the processes under it), MiB."""
    def hwm(pid: int) -> float:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0
    return hwm(root), sum(hwm(pid) for pid in tree(root)[1:])


# -- Postfix and OpenDKIM --------------------------------------------------------------------

class Peers:
    """One Postfix instance (plain and milter listeners) and one OpenDKIM, under ``work``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.conf = work / "postfix" / "conf"
        self.queue = work / "postfix" / "queue"
        self.dkim_dir = work / "opendkim"
        self.socket = self.dkim_dir / "opendkim.sock"
        self.plain_port, self.milter_port = free_port(), free_port()
        self.opendkim: subprocess.Popen[bytes] | None = None

    def write(self) -> None:
        for d in (self.conf, self.queue, self.work / "postfix" / "data", self.dkim_dir):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.work, self.work / "postfix", self.conf, self.queue, self.dkim_dir):
            d.chmod(0o755)
        shutil.chown(self.work / "postfix" / "data", "postfix", "postfix")
        shutil.chown(self.dkim_dir, "opendkim", "opendkim")
        work = self.work
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {work}/postfix/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.peer.test
mydomain = peer.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.test
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
relay_transport = discard
default_transport = discard
local_transport = discard
fast_flush_domains =
alias_maps =
alias_database =
biff = no
message_size_limit = 30000000
default_process_limit = 200
smtpd_client_connection_count_limit = 0
milter_default_action = tempfail
milter_protocol = 6
maillog_file = {work}/postfix/maillog
maillog_file_prefixes = {work}
""")
        (self.conf / "master.cf").write_text(f"""\
127.0.0.1:{self.plain_port} inet n - n - - smtpd
127.0.0.1:{self.milter_port} inet n - n - - smtpd
  -o smtpd_milters=unix:{self.socket}
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
""")
        (self.dkim_dir / "opendkim.conf").write_text(f"""\
Mode v
Socket local:{self.socket}
PidFile {self.dkim_dir}/opendkim.pid
UserID opendkim:opendkim
UMask 000
Background no
Syslog no
InternalHosts 192.0.2.1
On-NoSignature reject
On-BadSignature reject
On-KeyNotFound reject
On-DNSError tempfail
Nameservers 127.0.0.1
""")

    def start(self) -> None:
        self.write()
        with open(self.dkim_dir / "stderr", "wb") as stderr:
            self.opendkim = subprocess.Popen(["/usr/sbin/opendkim", "-x", str(self.dkim_dir / "opendkim.conf")],
                                             stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            if self.opendkim.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"opendkim did not start: {(self.dkim_dir / 'stderr').read_text()[-2000:]}")
            time.sleep(0.05)
        subprocess.run(["/usr/sbin/postfix", "-c", str(self.conf), "check"], check=True)
        subprocess.run(["/usr/sbin/postfix", "-c", str(self.conf), "start"], check=True)
        deadline = time.monotonic() + 15
        while not self._listening(self.plain_port) or not self._listening(self.milter_port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not listen: {self.maillog()[-2000:]}")
            time.sleep(0.1)

    @staticmethod
    def _listening(port: int) -> bool:
        import socket

        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def master_pid(self) -> int:
        return int((self.queue / "pid" / "master.pid").read_text().split()[0])

    def maillog(self) -> str:
        path = self.work / "postfix" / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def queued(self) -> int:
        return sum(len(files) for d in ("incoming", "active", "deferred", "maildrop", "hold")
                   for _, _, files in os.walk(self.queue / d))

    def drain(self, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run(["/usr/sbin/postfix", "-c", str(self.conf), "stop"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.opendkim is not None and self.opendkim.poll() is None:
            self.opendkim.terminate()
            try:
                self.opendkim.wait(10)
            except subprocess.TimeoutExpired:
                self.opendkim.kill()


class _Quiet:
    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


def also_on_port_53(dns: DnsTestServer) -> list[DNSServer]:
    """The test server's zone answered on 127.0.0.1:53 too (UDP and TCP), for OpenDKIM's resolver."""
    servers = []
    try:
        for tcp in (False, True):
            servers.append(DNSServer(dns, address="127.0.0.1", port=53, tcp=tcp, logger=_Quiet()))
    except OSError as exc:
        for server in servers:
            server.server.server_close()
        holder = subprocess.run(["ss", "-lnpu", "sport = :53"], capture_output=True, text=True).stdout.strip()
        raise SystemExit(f"127.0.0.1:53 is taken ({exc.strerror}), OpenDKIM needs it for its resolver:\n"
                         f"{holder}") from None
    for server in servers:
        threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return servers


# -- one measurement -------------------------------------------------------------------------

@dataclass
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    """Server CPU per accepted message."""
    accepted: int
    refused: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    rss_mb: float | None = None
    readers_mb: float | None = None


def loadgen(port: int, files: list[Path], cell: Cell, roots: list[int], after: object = None) -> Result:
    before = cpu(roots)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py"), "--port", str(port),
                          "--sessions", str(cell.sessions), "--count", str(cell.count), "--seconds", str(cell.seconds),
                          "--mail-from", SENDER, "--rcpt", AGENT, *map(str, files)],
                         check=True, capture_output=True, timeout=cell.seconds + 300).stdout
    if callable(after):
        after()
    spent = cpu(roots) - before
    run = json.loads(out)
    accepted = int(run["accepted"])
    return Result(rate=float(run["rate"]), p50_ms=float(run["p50_ms"]), p99_ms=float(run["p99_ms"]),
                  cpu_ms=spent / accepted * 1000 if accepted else float("nan"), accepted=accepted,
                  refused=dict(run["refused"]), errors=int(run["errors"]))


def one_message(port: int, raw: bytes) -> str:
    """Send one message; "250" or the refusing code."""
    run = asyncio.run(send(port, [dot_stuffed(raw)], sessions=1, count=1, seconds=30, mail_from=SENDER,
                           rcpt=[AGENT]))
    return "250" if run.accepted else (next(iter(run.refused), "") or f"error ({run.errors})")


def sanity(name: str, port: int, good: bytes) -> dict[str, str]:
    """A good signature is accepted; where DKIM is required, no signature or a broken one is refused."""
    unsigned = good.split(b"\r\nFrom: ", 1)[1]
    tampered = good.replace(b"Thursday at 10:00", b"Thursday at 11:00")
    return {"signed": one_message(port, good), "unsigned": one_message(port, b"From: " + unsigned),
            "body altered": one_message(port, tampered)}


def appliance_config(directory: Path, dns: str) -> Path:
    """The sandbox configuration, taking as many sessions from one client as the load generator opens
    (Postfix's connection limit does not apply to its mynetworks either)."""
    directory.mkdir(parents=True)
    config = write_config(directory, policy=POLICY, agent=AGENT, nameservers=[dns])
    text = config.read_text()
    config.write_text(text.replace("[smtp]\n", "[smtp]\nmax_connections_per_ip = 200\n", 1))
    return config


@contextlib.contextmanager
def running_appliance(config: Path, work: Path) -> Iterator[ApplianceProcess]:
    """``appliance run`` for the block, stopped however the block (or its start) ends."""
    proc = ApplianceProcess(config)
    try:
        proc.start()
        assert proc.proc is not None
        (work / "appliance.pid").write_text(str(proc.proc.pid))
        yield proc
        proc.terminate()
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(10)
        (work / "appliance.pid").unlink(missing_ok=True)


def appliance_run(work: Path, dns: str, files: list[Path], cell: Cell, label: str) -> Result:
    directory = work / "appliance" / label
    config = appliance_config(directory, dns)
    with running_appliance(config, work) as proc:
        assert proc.proc is not None
        # warm-up: start-up work and the first DNS lookups are not what is measured
        subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py"), "--port", str(proc.smtp_port),
                        "--sessions", "2", "--count", "20", "--seconds", "20", "--mail-from", SENDER, "--rcpt", AGENT,
                        *map(str, files[:4])], check=True, capture_output=True, timeout=120)
        result = loadgen(proc.smtp_port, files, cell, [proc.proc.pid])
        result.rss_mb, result.readers_mb = memory(proc.proc.pid)
    shutil.rmtree(directory / "var", ignore_errors=True)
    return result


# -- the table -------------------------------------------------------------------------------

def table(results: dict[tuple[int, str], list[Result]], rounds: int) -> str:
    lines = [f"medians over {rounds} round(s), interleaved; CPU = server process tree per accepted message",
             "",
             f"{'size':7} {'sess':>4}  {'server':17} {'msg/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/msg':>10}"
             f" {'RSS MiB (main+readers)':>23}  refused/errors"]

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    for i, cell in enumerate(CELLS):
        rates: dict[str, float] = {}
        cpus: dict[str, float] = {}
        for server in SERVERS:
            rs = results.get((i, server), [])
            if not rs:
                continue
            rates[server], cpus[server] = med([r.rate for r in rs]), med([r.cpu_ms for r in rs])
            rss = ""
            if rs[0].rss_mb is not None:
                rss = f"{med([r.rss_mb or 0 for r in rs]):.0f}+{med([r.readers_mb or 0 for r in rs]):.0f}"
            bad = sum(sum(r.refused.values()) for r in rs), sum(r.errors for r in rs)
            lines.append(f"{cell.label:7} {cell.sessions:>4}  {server:17} {rates[server]:7.0f} "
                         f"{med([r.p50_ms for r in rs]):8.1f} {med([r.p99_ms for r in rs]):8.1f} "
                         f"{cpus[server]:10.2f} {rss:>23}  {bad[0]}/{bad[1]}")
        if "appliance" in rates:
            for peer in ("postfix", "postfix+opendkim"):
                if rates.get(peer) and cpus.get(peer):
                    lines.append(f"{'':13}  appliance / {peer}: msg/s x{rates['appliance'] / rates[peer]:.2f}, "
                                 f"CPU per message x{cpus['appliance'] / cpus[peer]:.1f}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    global CELLS, SERVERS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="an empty directory for everything started")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply message counts and time bounds")
    parser.add_argument("--servers", default=",".join(SERVERS), help="which of them to measure (comma-separated)")
    parser.add_argument("--cells", default="", help="which rows of the table (0-based, comma-separated; all)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (bench/peer.sh): Postfix and OpenDKIM change to their own users")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop Postfix, OpenDKIM, the appliance
    CELLS = [Cell(c.label, c.size, c.sessions, max(20, int(c.count * args.scale)), max(5.0, c.seconds * args.scale))
             for i, c in enumerate(CELLS) if not args.cells or str(i) in args.cells.split(",")]
    SERVERS = [s for s in SERVERS if s in args.servers.split(",")]
    work = args.work
    private, public = keypair()
    zone = [(f"s1._domainkey.{DOMAIN}", "TXT", f"v=DKIM1; k=rsa; p={public}"),
            (DOMAIN, "TXT", "v=spf1 ip4:127.0.0.0/8 -all"),
            (f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject; adkim=r; aspf=r")]
    print(f"signing {VARIANTS} messages per size (rsa-sha256, 2048 bits)...", flush=True)
    files: dict[int, list[Path]] = {}
    for size in sorted({c.size for c in CELLS}):
        folder = work / "messages" / str(size)
        folder.mkdir(parents=True)
        files[size] = []
        for n, raw in enumerate(signed_messages(size, private)):
            path = folder / f"{n:03d}.eml"
            path.write_bytes(raw)
            files[size].append(path)
    sizes = {size: len(paths[0].read_bytes()) for size, paths in files.items()}
    print("message sizes: " + ", ".join(f"{v:,} B" for v in sizes.values()), flush=True)
    with serve_zone(zone) as dns:
        port_53 = also_on_port_53(dns)
        peers = Peers(work)
        try:
            peers.start()
            print(f"postfix on 127.0.0.1:{peers.plain_port} (plain) and :{peers.milter_port} (OpenDKIM milter); "
                  f"DNS on {dns.address} and 127.0.0.1:53", flush=True)
            good = files[min(files)][0].read_bytes()
            checks = {"postfix": sanity("postfix", peers.plain_port, good),
                      "postfix+opendkim": sanity("postfix+opendkim", peers.milter_port, good)}
            with running_appliance(appliance_config(work / "appliance" / "sanity", dns.address), work) as proc:
                checks["appliance"] = sanity("appliance", proc.smtp_port, good)
            for server, outcome in checks.items():
                print(f"  {server:17} " + ", ".join(f"{k}: {v}" for k, v in outcome.items()), flush=True)
            if checks["postfix+opendkim"] != {"signed": "250", "unsigned": "550", "body altered": "550"} or \
                    checks["appliance"]["signed"] != "250" or checks["appliance"]["unsigned"] == "250":
                print("verification is not doing what the comparison needs: see above", file=sys.stderr)
                return 1
            peers.drain()
            results: dict[tuple[int, str], list[Result]] = {}
            roots = {"postfix": lambda: [peers.master_pid()],
                     "postfix+opendkim": lambda: [peers.master_pid(), peers.opendkim.pid]}  # type: ignore[union-attr]
            for round_ in range(args.rounds):
                order = SERVERS if round_ % 2 == 0 else SERVERS[::-1]
                for i, cell in enumerate(CELLS):
                    for server in order:
                        if server == "appliance":
                            r = appliance_run(work, dns.address, files[cell.size], cell, f"r{round_}-{i}")
                        else:
                            port = peers.plain_port if server == "postfix" else peers.milter_port
                            r = loadgen(port, files[cell.size], cell, roots[server](), after=peers.drain)
                        results.setdefault((i, server), []).append(r)
                        print(f"round {round_ + 1}, {cell.label} x{cell.sessions}, {server}: {r.rate:.0f} msg/s, "
                              f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, CPU {r.cpu_ms:.2f} ms/msg"
                              + (f", refused {r.refused}" if r.refused else "")
                              + (f", errors {r.errors}" if r.errors else ""), flush=True)
            print()
            print(table(results, args.rounds))
        finally:
            peers.stop()
            for server in port_53:
                server.server.shutdown()
                server.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
