"""``POST /api/v1/audit/sql`` reads and nothing else; ``POST /api/v1/audit/export`` writes nothing on the host."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from litestar.testing import AsyncTestClient

from tests.api.conftest import ADMIN, runtime_of
from tests.api.test_audit import receive

Client = AsyncTestClient  # type: ignore[type-arg]


async def sql(client: Client, query: str, **extra: object) -> tuple[int, str]:
    response = await client.post("/api/v1/audit/sql", json={"sql": query, **extra}, headers=ADMIN)
    return response.status_code, response.text


async def state(client: Client) -> tuple[object, ...]:
    def read(con):  # type: ignore[no-untyped-def]
        return con.execute(
            "SELECT (SELECT count(*) FROM decisions), (SELECT list(mailbox ORDER BY email_id) FROM messages), "
            "(SELECT count(*) FROM events WHERE type = 'forged'), "
            "(SELECT max(last_value) FROM duckdb_sequences() WHERE sequence_name = 'delivery_seq')").fetchall()[0]

    return tuple(await runtime_of(client).db.read(read))


@pytest.mark.parametrize("query", [
    "WITH x AS (DELETE FROM decisions RETURNING *) SELECT * FROM x",
    "WITH x AS (UPDATE messages SET mailbox = 'inbox' RETURNING *) SELECT * FROM x",
    "WITH x AS (INSERT INTO events VALUES (now(), 'forged', NULL, 'x') RETURNING *) SELECT * FROM x",
    "SELECT nextval('delivery_seq')",
    "SELECT setval('delivery_seq', 1)",
])
async def test_a_select_that_writes_is_refused_and_the_database_is_unchanged(client: Client, query: str) -> None:
    await receive(client, "a@example.net", 1)
    await receive(client, "h@held.example", 2)
    before = await state(client)
    assert sorted(before[1]) == ["inbox", "quarantine"]  # type: ignore[call-overload]
    status, text = await sql(client, query)
    assert status == 400 and "audit SQL is read-only" in text
    assert await state(client) == before


@pytest.mark.parametrize("template", [
    "SELECT * FROM read_text('{path}')", "SELECT * FROM read_csv('{path}')", "SELECT * FROM read_blob('{path}')",
    "SELECT * FROM glob('{dir}/*')", "SELECT * FROM read_parquet('{path}')", "SELECT * FROM read_json('{path}')",
    "SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    "ATTACH '{path}' AS stolen", "COPY decisions TO '{dir}/copied.csv'", "INSTALL httpfs", "LOAD httpfs",
])
async def test_host_files_urls_and_extensions_are_refused(client: Client, tmp_path: Path, template: str) -> None:
    await receive(client, "a@example.net", 1)
    secret = tmp_path / "secret.txt"
    secret.write_text("the-secret-content\n")
    status, text = await sql(client, template.format(path=secret, dir=tmp_path))
    assert status == 400, text
    assert "audit SQL is read-only" in text and "the-secret-content" not in text
    assert not (tmp_path / "copied.csv").exists()


async def test_row_limit_and_time_limit_over_http(client: Client) -> None:
    status, text = await sql(client, "SELECT * FROM range(11)", maxRows=10)
    assert status == 400 and "more than 10 rows" in text
    status, text = await sql(client, "SELECT * FROM range(10)", maxRows=10)
    assert status == 200
    status, text = await sql(client, "SELECT count(*) FROM range(1000000000000)", timeout=0.3)
    assert status == 400 and "time limit" in text
    assert (await sql(client, "SELECT 1", maxRows=0))[0] == 400
    assert (await sql(client, "SELECT 1", timeout=10_000))[0] == 400


async def test_export_is_the_response_body(client: Client) -> None:
    for n in range(3):
        await receive(client, "a@example.net", n)
    response = await client.post("/api/v1/audit/export", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.apache.parquet")
    assert response.headers["x-audit-rows"] == "3"
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == 3 and "row_hash" in table.column_names


async def test_export_never_writes_where_the_caller_says(client: Client, tmp_path: Path) -> None:
    await receive(client, "a@example.net", 1)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for out in (str(victim), str(tmp_path / "new.parquet"), str(tmp_path)):
        response = await client.post("/api/v1/audit/export", json={"out": out}, headers=ADMIN)
        assert response.status_code == 200
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "new.parquet").exists()


async def test_export_requires_the_admin_token(client: Client) -> None:
    assert (await client.post("/api/v1/audit/export")).status_code == 401
