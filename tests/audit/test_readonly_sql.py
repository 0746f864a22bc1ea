"""Audit SQL runs in a locked-down instance of its own over a snapshot: it reads, and nothing else.

Each query is run both ways the appliance runs it: on a cursor of the running writer
(``Database.read_sync``, the API path) and on a read-only connection to the closed file
(the offline CLI path).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from appliance.audit import append_decision
from appliance.audit import query as audit_query
from appliance.audit.query import QueryResult, readonly_sql
from appliance.errors import InputError
from appliance.store.database import Database, utc
from tests.audit.test_chain import record


def seed(db: Database) -> None:
    for i in range(5):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i)))
    db.write_sync(lambda con: con.execute(
        "INSERT INTO messages (email_id, agent, mailbox, thread_id, message_id, subject, subject_key, sender, "
        "received_at, decision_id, keywords, size, raw) VALUES "
        "('E1', 'agent@example.test', 'quarantine', 'T1', '<1@x>', 's', 's', 'a@held.example', ?, 'd0001', [], 3, "
        "'\\x01\\x02\\x03'::BLOB)", [utc()]))
    db.write_sync(lambda con: con.execute("INSERT INTO events (ts, type, agent, detail) VALUES (?, 'x', NULL, 'real')",
                                          [utc()]))
    db.write_sync(lambda con: con.execute("SELECT nextval('delivery_seq')").fetchall())


class Target:
    """The database as ``readonly_sql`` meets it: the live writer's cursor, or the closed file."""

    def __init__(self, read: Callable[[Callable[[duckdb.DuckDBPyConnection], object]], object]) -> None:
        self._read = read

    def __call__(self, sql: str, **limits: object) -> QueryResult:
        result = self._read(lambda con: readonly_sql(con, sql, **limits))  # type: ignore[arg-type]
        assert isinstance(result, QueryResult)
        return result

    def state(self) -> dict[str, object]:
        """What the real database holds now (on the same connection the queries were given)."""

        def read(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
            def one(sql: str) -> object:
                rows = con.execute(sql).fetchall()
                return rows[0][0] if rows else None
            return {"decisions": one("SELECT count(*) FROM decisions"),
                    "mailbox": one("SELECT mailbox FROM messages WHERE email_id = 'E1'"),
                    "events": one("SELECT count(*) FROM events"),
                    "delivery_seq": one("SELECT max(last_value) FROM duckdb_sequences() "
                                        "WHERE sequence_name = 'delivery_seq'")}

        state = self._read(read)
        assert isinstance(state, dict)
        return state


UNTOUCHED = {"decisions": 5, "mailbox": "quarantine", "events": 1, "delivery_seq": 1}


@pytest.fixture(scope="module", params=["live", "offline"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One database per way for the module: every test asserts that it is still untouched."""
    path = tmp_path_factory.mktemp("sql") / "appliance.duckdb"
    db = Database(path)
    seed(db)
    if request.param == "live":
        yield Target(db.read_sync)
        db.close()
        return
    db.close()
    con = duckdb.connect(str(path), read_only=True)
    yield Target(lambda work: work(con))
    con.close()


def refused(run: Target, sql: str, **kw: object) -> str:
    with pytest.raises(InputError) as caught:
        run(sql, **kw)
    return str(caught.value)


def test_reads_every_table_it_names(run: Target) -> None:
    result = run("SELECT action, count(*) AS n FROM decisions GROUP BY action")
    assert result.columns == ["action", "n"] and result.rows == [["accept", 5]]
    joined = run("SELECT m.mailbox, d.decision_id, m.received_at IS NOT NULL FROM messages m "
                 "JOIN decisions d USING (decision_id)")
    assert joined.rows == [["quarantine", "d0001", True]]
    assert run("SELECT type, detail FROM events").rows == [["x", "real"]]
    assert run("SELECT rcpt_to, ts < now() FROM decisions WHERE seq = 1").rows == [[["agent@example.test"], True]]
    assert run("SELECT 1 AS one").rows == [[1]]


def test_message_bytes_are_copied_only_when_named(run: Target) -> None:
    assert "raw" not in run("SELECT * FROM messages").columns
    assert run("SELECT raw FROM messages").rows == [["010203"]]


@pytest.mark.parametrize("sql", [
    "WITH x AS (DELETE FROM decisions RETURNING *) SELECT * FROM x",
    "SELECT * FROM (WITH x AS (DELETE FROM decisions RETURNING seq) SELECT * FROM x)",
    "WITH x AS (UPDATE messages SET mailbox = 'inbox' RETURNING *) SELECT * FROM x",
    "WITH x AS (INSERT INTO events VALUES (now(), 'forged', NULL, 'x') RETURNING *) SELECT * FROM x",
])
def test_writes_inside_a_select_are_refused_and_change_nothing(run: Target, sql: str) -> None:
    message = refused(run, sql)
    assert "audit SQL is read-only" in message and "not even inside WITH" in message
    assert run.state() == UNTOUCHED


@pytest.mark.parametrize("sql", ["SELECT nextval('delivery_seq')", "SELECT currval('delivery_seq')",
                                 "SELECT setval('delivery_seq', 1)"])
def test_sequence_functions_are_refused(run: Target, sql: str) -> None:
    assert "audit SQL is read-only" in refused(run, sql)
    assert run.state() == UNTOUCHED


def test_writes_never_reach_the_database_even_past_the_parse_check(
        run: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    # The root of the fix: the query runs on a copy. With the clear-error check switched off,
    # a DELETE inside a WITH empties the copy and nothing else.
    monkeypatch.setattr(audit_query, "_refuse_writes", lambda tree: None)
    run("WITH x AS (DELETE FROM decisions RETURNING *) SELECT count(*) FROM x")
    run("WITH x AS (UPDATE messages SET mailbox = 'inbox' RETURNING *) SELECT count(*) FROM x")
    assert "Sequence" in refused(run, "SELECT nextval('delivery_seq')")  # no sequence in the copy
    assert run.state() == UNTOUCHED


@pytest.mark.parametrize("sql", [
    "DELETE FROM decisions", "DROP TABLE decisions", "UPDATE messages SET mailbox = 'inbox'",
    "INSERT INTO events VALUES (now(), 'forged', NULL, 'x')", "CREATE TABLE t AS SELECT 1",
    "SET enable_external_access = true", "ATTACH '/tmp/other.duckdb' AS other",
    "COPY decisions TO '/tmp/stolen.csv'", "INSTALL httpfs", "LOAD httpfs", "CALL pragma_version()",
    "PRAGMA version", "SELECT 1; DELETE FROM decisions", "EXPORT DATABASE '/tmp/dump'",
])
def test_statements_other_than_select_are_refused(run: Target, sql: str) -> None:
    message = refused(run, sql)
    assert "audit SQL is read-only: only SELECT statements are allowed" in message
    assert run.state() == UNTOUCHED


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.csv"
    path.write_text("token\nsandbox-admin-token-XYZ\n")
    return path


@pytest.mark.parametrize("template", [
    "SELECT * FROM read_text('{path}')", "SELECT * FROM read_blob('{path}')", "SELECT * FROM read_csv('{path}')",
    "SELECT * FROM read_csv_auto('{path}')", "SELECT * FROM glob('{dir}/*')", "SELECT * FROM read_parquet('{path}')",
    "SELECT * FROM read_json('{path}')", "SELECT * FROM read_json_auto('{path}')", "SELECT * FROM '{path}'",
    "SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')", "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM parquet_metadata('{path}')", "SELECT * FROM sniff_csv('{path}')",
])
def test_host_files_and_urls_are_out_of_reach(run: Target, secret: Path, template: str) -> None:
    message = refused(run, template.format(path=secret, dir=secret.parent))
    assert "audit SQL is read-only: files, URLs and extensions are out of its reach" in message
    assert "XYZ" not in message
    assert "\n" not in message  # one line


def test_slow_query_is_stopped_at_the_time_limit(run: Target) -> None:
    started = time.monotonic()
    message = refused(run, "SELECT count(*) FROM range(1000000000000) a", timeout=0.3)
    assert "time limit" in message
    assert time.monotonic() - started < 10


def test_rows_past_the_cap_are_an_error_not_a_cut(run: Target) -> None:
    assert len(run("SELECT * FROM range(10)", max_rows=10).rows) == 10
    assert "more than 10 rows (the row limit)" in refused(run, "SELECT * FROM range(11)", max_rows=10)


def test_default_row_cap_is_100000(run: Target) -> None:
    assert len(run("SELECT * FROM range(100000)").rows) == 100_000
    assert "more than 100000 rows" in refused(run, "SELECT * FROM range(100001)")


def test_bad_sql_is_an_input_error(run: Target) -> None:
    assert "syntax error" in refused(run, "SELEC 1")
    assert "no statement given" in refused(run, "  ")
    assert "no_such_table" in refused(run, "SELECT * FROM no_such_table")
