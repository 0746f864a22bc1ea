"""After the hooks accept: local recipients get the message in their Inbox, remote ones go to the
outbox (and STANDIN_RELAY over SMTP when set). A Received field is prepended, as an MTA does."""

from __future__ import annotations

import smtplib
import threading
from email.utils import formatdate

from app import App
from hooks import Client
from logs import log
from mailstore import account_by_address, deliver_local, is_local_domain


def received_field(app: App, client: Client, queue_id: str, recipient_count: int) -> bytes:
    """The trace field Stalwart adds."""
    source = f"{client.helo or 'unknown'} ({client.ptr or 'unknown'} [{client.ip}])"
    auth = f"\r\n\t(authenticated as {client.login})" if client.login else ""
    via = "ESMTPSA" if client.login else "ESMTP"
    return (f"Received: from {source}{auth}\r\n\tby {app.hostname} (Stalwart) with {via} id {queue_id};\r\n"
            f"\t{formatdate(usegmt=True)}\r\n").encode()


def deliver(app: App, client: Client, queue_id: str, mail_from: str, rcpts: list[str], raw: bytes) -> None:
    """Hand an accepted message to its recipients."""
    traced = received_field(app, client, queue_id, len(rcpts)) + raw
    remote: list[str] = []
    for rcpt in rcpts:
        account_id = account_by_address(app, rcpt)
        if account_id is not None:
            deliver_local(app, account_id, traced)
        elif is_local_domain(app, rcpt):
            log("WARN", "delivery.unknown", f"no mailbox {rcpt}; dropped", rcpt=rcpt, queueId=queue_id)
        else:
            remote.append(rcpt)
    if not remote:
        return
    with app.state.lock:
        app.state.outbox.append({"from": mail_from, "to": remote, "raw": traced.decode("utf-8", "surrogateescape"),
                                 "queueId": queue_id})
    log("INFO", "delivery.remote", f"{queue_id} for {remote}", queueId=queue_id, rcpts=remote)
    if app.relay is not None:
        threading.Thread(target=_relay, args=(app, queue_id, mail_from, remote, traced), daemon=True).start()


def _relay(app: App, queue_id: str, mail_from: str, rcpts: list[str], raw: bytes) -> None:
    assert app.relay is not None
    try:
        with smtplib.SMTP(app.relay[0], app.relay[1], local_hostname=app.hostname, timeout=30) as smtp:
            smtp.sendmail(mail_from, rcpts, raw)
        log("INFO", "relay.sent", f"{queue_id} relayed to {app.relay[0]}:{app.relay[1]}", queueId=queue_id)
    except (OSError, smtplib.SMTPException) as error:
        log("ERROR", "relay.failed", f"{queue_id} not relayed: {error!r}", queueId=queue_id)
