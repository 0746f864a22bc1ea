"""Tampering with a closed database file, as someone with the file would: every kind is detected.

The appliance writes its chains through ``Database``, which is closed; a separate connection
then edits the file; ``verify_chain`` reads it back from a fresh read-only connection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from appliance.audit import VerifyReport, append_decision, apply_retention, verify_chain
from appliance.cli import main
from appliance.store.database import Database, utc
from tests.audit.test_chain import record
from tests.e2e.harness import write_config

A, B = "a@example.test", "b@example.test"


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    """Seqs 1..10, alternating: A holds 1, 3, 5, 7, 9 and B holds 2, 4, 6, 8, 10 (which stored a message)."""
    path = tmp_path / "var" / "appliance.duckdb"
    db = Database(path)
    for i in range(10):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i, agent=A if i % 2 == 0 else B)))
    db.write_sync(lambda con: con.execute(
        "INSERT INTO messages (email_id, agent, mailbox, thread_id, received_at, decision_id, size, raw) "
        "VALUES ('E10', ?, 'inbox', 'T1', ?, 'd0009', 1, 'x'::BLOB)", [B, utc()]))
    db.close()
    return path


def tamper(path: Path, *statements: str) -> None:
    with duckdb.connect(str(path)) as con:
        for sql in statements:
            con.execute(sql)


def verify(path: Path) -> VerifyReport:
    with duckdb.connect(str(path), read_only=True) as con:
        return verify_chain(con)


def test_untouched_file_verifies(db_file: Path) -> None:
    report = verify(db_file)
    assert report.ok, report.detail
    assert (report.rows, report.agents) == (10, 2)


TAMPERING: dict[str, tuple[tuple[str, ...], Callable[[VerifyReport], bool]]] = {
    "first row of a chain deleted": (
        ("DELETE FROM decisions WHERE seq = 1",), lambda r: r.broken_seq == 3 and r.broken_agent == A),
    "middle row deleted": (
        ("DELETE FROM decisions WHERE seq = 5",), lambda r: r.broken_seq == 7 and r.broken_agent == A),
    "last row deleted": (
        ("DELETE FROM decisions WHERE seq = 10",), lambda r: r.broken_agent == B and r.broken_seq == 10),
    "chain truncated after its second row": (
        ("DELETE FROM decisions WHERE agent = 'a@example.test' AND seq > 3",), lambda r: r.broken_agent == A),
    "every row of one agent deleted": (
        ("DELETE FROM decisions WHERE agent = 'b@example.test'",),
        lambda r: r.broken_agent == B and r.rows == 5 and "every row" in r.detail),
    "every row of one agent deleted, chain head too": (
        ("DELETE FROM decisions WHERE agent = 'a@example.test'",
         "DELETE FROM chain_head WHERE agent = 'a@example.test'"),
        lambda r: "missing" in r.detail),
    "the whole table emptied": (("DELETE FROM decisions",), lambda r: r.rows == 0),
    "a field edited": (
        ("UPDATE decisions SET action = 'bounce' WHERE seq = 6",),
        lambda r: r.broken_seq == 6 and r.broken_decision_id == "d0005"),
    "a field edited and its hash recomputed by hand": (
        ("UPDATE decisions SET row_hash = md5('x') || md5('y') WHERE seq = 4",), lambda r: r.broken_seq == 4),
    "two rows of a chain swapped": (
        ("UPDATE decisions SET seq = -1 WHERE seq = 3", "UPDATE decisions SET seq = 3 WHERE seq = 5",
         "UPDATE decisions SET seq = 5 WHERE seq = -1"), lambda r: r.broken_agent == A and r.broken_seq == 3),
    "rows of two chains swapped": (
        ("UPDATE decisions SET seq = -1 WHERE seq = 9", "UPDATE decisions SET seq = 9 WHERE seq = 10",
         "UPDATE decisions SET seq = 10 WHERE seq = -1"), lambda r: r.broken_agent in (A, B)),
    "a row forged at the end": (
        ("INSERT INTO decisions SELECT * REPLACE (11 AS seq, 'forged' AS decision_id, row_hash AS prev_hash) "
         "FROM decisions WHERE seq = 9",), lambda r: r.broken_seq == 11),
    # The newest row of all removed and its chain head moved back to match: nothing in the chains
    # shows it; the message that decision let in does.
    "the newest row deleted and the chain head moved back": (
        ("DELETE FROM decisions WHERE seq = 10",
         "UPDATE chain_head SET seq = 8, hash = (SELECT row_hash FROM decisions WHERE seq = 8) "
         "WHERE agent = 'b@example.test'"), lambda r: r.broken_decision_id == "d0009" and "E10" in r.detail),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_detected(db_file: Path, case: str) -> None:
    statements, names_it = TAMPERING[case]
    tamper(db_file, *statements)
    report = verify(db_file)
    assert not report.ok, f"{case}: {report}"
    assert names_it(report), report


def test_a_chain_with_no_rows_left_is_broken_on_the_command_line(db_file: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(db_file.parent.parent, policy='defaultAction = "bounce"\n')
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert "ok: 10 row(s) in 2 chain(s) verify" in capsys.readouterr().out
    tamper(db_file, "DELETE FROM decisions WHERE agent = 'a@example.test'",
           "DELETE FROM decisions WHERE agent = 'b@example.test'")
    assert main(["audit", "verify", "--config", str(config)]) == 1  # was "ok: 0 row(s) in 0 chain(s)"
    assert "BROKEN" in capsys.readouterr().err


@pytest.fixture
def retained(tmp_path: Path) -> Path:
    """A's four oldest rows removed by retention (one checkpoint); B untouched; then two new rows."""
    path = tmp_path / "appliance.duckdb"
    db = Database(path)
    for i, age in enumerate([50, 50, 45, 45, 44, 44, 43, 43, 1, 1]):
        db.write_batch_sync(lambda b, i=i, age=age: append_decision(
            b, record(i, agent=A if i % 2 == 0 else B, days_ago=age)))
    assert db.write_sync(lambda con: apply_retention(con, A, 30, utc())) == 4
    for i in (10, 11):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i, agent=A)))
    db.close()
    return path


def test_retention_checkpoint_still_verifies(retained: Path) -> None:
    report = verify(retained)
    assert report.ok, report.detail
    assert report.rows == 8


def test_every_row_of_a_chain_removed_by_retention_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "appliance.duckdb"
    db = Database(path)
    for i in range(3):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i, days_ago=60)))
    assert db.write_sync(lambda con: apply_retention(con, "agent@example.test", 30, utc())) == 3
    db.close()
    report = verify(path)
    assert report.ok and report.rows == 0 and report.agents == 1, report.detail


@pytest.mark.parametrize(("case", "statements"), [
    ("checkpoint deleted", ("DELETE FROM audit_checkpoints",)),
    ("first row after the checkpoint deleted", (
        "DELETE FROM decisions WHERE seq = (SELECT min(seq) FROM decisions WHERE agent = 'a@example.test')",)),
    ("a row put back before the checkpoint", (
        "INSERT INTO decisions SELECT * REPLACE (1 AS seq, 'back' AS decision_id) FROM decisions WHERE seq = 9",)),
    ("rows removed beyond what the checkpoint says", (
        "UPDATE audit_checkpoints SET rows_removed = rows_removed + 1",)),
    ("every remaining row of the retained chain deleted", ("DELETE FROM decisions WHERE agent = 'a@example.test'",)),
])
def test_tampering_after_retention_is_detected(retained: Path, case: str, statements: tuple[str, ...]) -> None:
    tamper(retained, *statements)
    report = verify(retained)
    assert not report.ok, f"{case}: {report}"
