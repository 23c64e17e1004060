"""The store: migrations upgrade old databases without losing data; newer ones are refused."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from chkd.daemon.store import SCHEMA_VERSION, Store, StoreError, db_path
from chkd.protocol.paths import resolve

FROZEN_V1 = Path(__file__).parent / "data" / "chkd_v1.sql"


def test_fresh_database_is_at_the_latest_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "chkd.db")
    assert store.version == SCHEMA_VERSION
    assert store.scalar("PRAGMA journal_mode") == "wal"
    store.close()
    again = Store(tmp_path / "chkd.db")  # reopening runs nothing twice
    assert again.migrate() == 0
    again.close()


def test_frozen_v1_database_upgrades_and_keeps_its_data(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = apsw.Connection(str(db))
    conn.execute(FROZEN_V1.read_text())
    conn.close()
    store = Store(db)
    assert store.version == SCHEMA_VERSION
    assert store.all("SELECT id, title, status FROM task_queue ORDER BY pk") == [
        ("SD.1", "Old pending task", "pending"),
        ("SD.2", "Old done task", "done"),
    ]
    assert store.all("SELECT task_pk, depends_on_pk FROM task_deps") == [(1, 2)]
    w = store.dict("SELECT * FROM workers WHERE id='w1'")
    assert w is not None and w["tokens_in"] == 1234 and w["status"] == "merged"
    assert store.scalar("SELECT result_sha FROM merges WHERE id=1") == "ccc"
    assert store.scalar("SELECT count(*) FROM events") == 1
    assert store.meta_next("worker") == 2  # counters continue, ids are never reused
    store.close()


def test_the_database_lives_in_the_state_directory(tmp_path: Path) -> None:
    assert db_path(resolve(tmp_path / "h")) == tmp_path / "h" / "state" / "chkd.db"


def test_newer_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    conn = apsw.Connection(str(db))
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this chkd understands"):
        Store(db)


def test_savepoint_rolls_back_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "chkd.db")
    with store.tx():
        store.x("INSERT INTO meta(key, value) VALUES('a', '1')")
        with pytest.raises(RuntimeError), store.savepoint():
            store.x("INSERT INTO meta(key, value) VALUES('b', '2')")
            raise RuntimeError("handler failed")
    assert store.all("SELECT key FROM meta ORDER BY key") == [("a",)]
    store.close()
