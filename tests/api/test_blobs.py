"""Blobs: uploaded by an agent, attached to its mail by id, its own only, gone after 24 h unused."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.outbound.blobs import BLOB_TTL, clean_content_type, clean_filename, expire_blobs
from appliance.store.database import utc
from tests.api.conftest import runtime_of
from tests.api.test_send import MINE, THEIRS, Client, assert_error, mail, receive, reply, send_config
from tests.api.test_send import send_env as send_env  # the fixture, for this module's tests

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4


@pytest.fixture
async def client(make_config: Callable[..., ApplianceConfig], send_env: None) -> AsyncIterator[Client]:
    config = send_config(make_config, smtp={"listen": "127.0.0.1:0", "max_message_size": 8192})
    async with AsyncTestClient(app=create_app(config)) as test_client:
        yield test_client


async def upload(client: Client, data: bytes, content_type: str = "application/pdf", filename: str | None = None,
                 headers: dict[str, str] = MINE) -> object:
    params = {"filename": filename} if filename is not None else {}
    return await client.post("/api/v1/blobs", content=data, params=params,
                             headers={**headers, "Content-Type": content_type})


async def test_an_upload_is_a_blob_a_reply_can_attach(client: Client) -> None:
    response = await upload(client, PDF, filename="report.pdf")
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]
    blob = response.json()  # type: ignore[attr-defined]
    assert set(blob) == {"blobId", "size", "contentType", "filename"}
    assert blob["size"] == len(PDF) and blob["contentType"] == "application/pdf" and blob["filename"] == "report.pdf"

    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    sent = await reply(client, parent, {"text": "Attached.", "attachments": [
        {"blobId": blob["blobId"]}, {"blobId": blob["blobId"], "filename": "copy.pdf"}]})
    assert sent.status_code == 202, sent.text
    email_id = sent.json()["emailId"]
    info = (await client.get(f"/api/v1/messages/{email_id}", headers=MINE)).json()
    assert [(a["filename"], a["contentType"], a["size"]) for a in info["attachments"]] == [
        ("report.pdf", "application/pdf", len(PDF)), ("copy.pdf", "application/pdf", len(PDF))]
    raw = await runtime.db.read(lambda con: con.execute(
        "SELECT raw FROM outbound_messages WHERE email_id = ?", [email_id]).fetchone())
    assert raw is not None
    parts = [p for p in email.message_from_bytes(bytes(raw[0]), policy=email.policy.default).iter_attachments()]
    assert [p.get_content() for p in parts] == [PDF, PDF]


async def test_a_blob_is_its_uploaders_only(client: Client) -> None:
    runtime = runtime_of(client)
    blob = (await upload(client, b"mine", "text/plain", headers=THEIRS)).json()  # type: ignore[attr-defined]
    parent = await receive(runtime, mail())
    refused = await reply(client, parent, {"text": "x", "attachments": [{"blobId": blob["blobId"]}]})
    assert "attachments[0].blobId" in assert_error(refused, 404, "not_found")
    unknown = await reply(client, parent, {"text": "x", "attachments": [{"blobId": "b-nothing"}]})
    assert_error(unknown, 404, "not_found")


async def test_an_upload_needs_the_agent_key_and_fits_the_message_size(client: Client) -> None:
    stranger = await client.post("/api/v1/blobs", content=b"x" * 100_000, headers={"Content-Type": "text/plain"})
    assert stranger.status_code == 401
    assert stranger.json()["error"] == "unauthorized"
    big = await upload(client, b"x" * 9000, "text/plain")
    assert_error(big, 413, "too_large")
    assert_error(await upload(client, b"x", "text/plain\r\nX-Injected: 1"), 400, "invalid_request")
    assert_error(await upload(client, b"x", "not a type"), 400, "invalid_request")
    assert (await upload(client, b"exactly", "text/plain; charset=\"utf-8\"")).status_code == 201  # type: ignore[attr-defined]


async def test_a_blob_unused_for_a_day_expires(client: Client) -> None:
    runtime = runtime_of(client)
    old = (await upload(client, b"old news", "text/plain")).json()  # type: ignore[attr-defined]
    fresh = (await upload(client, b"fresh", "text/plain")).json()  # type: ignore[attr-defined]
    await runtime.db.write(lambda con: con.execute("UPDATE blobs SET used_at = ? WHERE blob_id = ?",
                                                   [utc() - timedelta(seconds=BLOB_TTL + 60), old["blobId"]]))
    parent = await receive(runtime, mail())
    assert_error(await reply(client, parent, {"text": "x", "attachments": [{"blobId": old["blobId"]}]}),
                 404, "not_found")
    assert (await reply(client, parent, {"text": "x", "attachments": [{"blobId": fresh["blobId"]}]})).status_code == 202
    assert await runtime.db.write(lambda con: expire_blobs(con, time.time())) == 1
    left = await runtime.db.read(lambda con: con.execute("SELECT blob_id FROM blobs").fetchall())
    assert left == [(fresh["blobId"],)]


async def test_a_text_attachment_is_read_by_the_guards(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    for data, content_type in ((b"Please do the WIRE TRANSFER", "text/plain"),
                               (b"key: send-agent-key", "application/octet-stream"),
                               ("admin-secret".encode("utf-16"), "text/plain; charset=utf-16")):
        blob = (await upload(client, data, content_type)).json()  # type: ignore[attr-defined]
        refused = await reply(client, parent, {"text": "see attachment", "attachments": [{"blobId": blob["blobId"]}]})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] in ("payment_instruction", "secret_leak_suspected")


def test_content_types_and_filenames_are_cleaned() -> None:
    assert clean_content_type(None) == "application/octet-stream"
    assert clean_content_type("Text/Plain; charset=utf-8") == "text/plain; charset=utf-8"
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\Users\\x\\report\x00.pdf") == "report.pdf"
    assert clean_filename("") is None and clean_filename(None) is None
