"""`chkdctl db backup FILE` and `chkdctl db check` against a running daemon."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import apsw

from chkd.protocol.messages import Ping, TaskAdd

from conftest import Daemon


def add_tasks(daemon: Daemon, repo: Path, n: int, prefix: str = "T") -> None:
    client = daemon.client()
    for i in range(n):
        client.call(TaskAdd(title=f"task {prefix}{i}", id=f"{prefix}{i}", repo=str(repo)))


def open_copy(path: Path) -> apsw.Connection:
    return apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_backup_while_the_daemon_writes_is_complete_private_and_verified(
    daemon: Daemon, repo: Path, tmp_path: Path
) -> None:
    add_tasks(daemon, repo, 50)
    writer_done = threading.Event()
    errors: list[BaseException] = []

    def keep_writing() -> None:
        try:
            add_tasks(daemon, repo, 200, prefix="W")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            writer_done.set()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    out = tmp_path / "backups"
    out.mkdir()
    res = daemon.ctl("db", "backup", "chkd-copy.db", cwd=out)  # relative to chkdctl's cwd, not the daemon's
    writer.join(60)
    assert res.code == 0, res
    copy = out / "chkd-copy.db"
    assert res.out.startswith(f"Backed up the database to {copy}: ")
    assert res.out.rstrip().endswith("integrity_check ok.")
    assert not errors and writer_done.is_set()

    conn = open_copy(copy)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # a single self-contained file
    assert conn.execute("SELECT count(*) FROM task_queue WHERE id LIKE 'T%'").fetchone()[0] == 50
    conn.close()
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["chkd-copy.db"]  # no temporary file, no -wal
    assert daemon.call(Ping()).tasks == 250  # and the daemon kept serving throughout


def test_backup_json_reports_pages_bytes_and_seconds(daemon: Daemon, repo: Path, tmp_path: Path) -> None:
    add_tasks(daemon, repo, 3)
    target = tmp_path / "b.db"
    res = daemon.ctl("db", "backup", str(target), "--json")
    assert res.code == 0, res
    data = res.json()
    assert data["path"] == str(target)
    assert data["bytes"] == target.stat().st_size and data["pages"] * 512 <= data["bytes"]
    assert data["pages"] > 0 and data["seconds"] >= 0


def test_backup_never_overwrites_a_file_without_force(daemon: Daemon, repo: Path, tmp_path: Path) -> None:
    add_tasks(daemon, repo, 2)
    target = tmp_path / "precious.txt"
    target.write_text("not a database, and not chkd's\n")
    res = daemon.ctl("db", "backup", str(target))
    assert res.code == 1
    assert res.err.splitlines()[0] == f"chkdctl: {target} already exists; pass --force to replace it."
    assert target.read_text() == "not a database, and not chkd's\n"
    assert leftovers(tmp_path) == []

    forced = daemon.ctl("db", "backup", str(target), "--force")
    assert forced.code == 0, forced
    conn = open_copy(target)
    assert conn.execute("SELECT count(*) FROM task_queue").fetchone()[0] == 2
    conn.close()


def test_backup_into_a_missing_directory_is_one_sentence(daemon: Daemon, tmp_path: Path) -> None:
    res = daemon.ctl("db", "backup", str(tmp_path / "nope" / "b.db"))
    assert res.code == 1
    assert res.err.splitlines()[0] == f"chkdctl: The directory {tmp_path / 'nope'} does not exist."


def test_backup_to_a_name_the_filesystem_refuses_is_one_sentence(daemon: Daemon, tmp_path: Path) -> None:
    res = daemon.ctl("db", "backup", "/" + "p" * 300)  # found by the protocol fuzzer: ENAMETOOLONG
    assert res.code == 1
    assert res.err.startswith("chkdctl: Cannot write the backup /ppp"), res.err
    assert "File name too long" in res.err and "Traceback" not in res.err
    assert daemon.ctl("ping").code == 0


def test_check_says_ok(daemon: Daemon, repo: Path) -> None:
    add_tasks(daemon, repo, 3)
    res = daemon.ctl("db", "check")
    assert res.code == 0, res
    assert res.out.startswith(f"{daemon.db}: ok")
    data = daemon.ctl("db", "check", "--json").json()
    assert (data["ok"], data["problems"], data["foreign_key_problems"]) == (True, [], [])


def test_check_finds_a_corrupt_index_and_a_dangling_reference_and_backup_refuses_the_copy(
    daemon: Daemon, repo: Path, tmp_path: Path
) -> None:
    add_tasks(daemon, repo, 3)
    daemon.stop()
    conn = apsw.Connection(str(daemon.db))
    # the index now claims to cover task_id while it holds worker_id values: integrity_check notices
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute(
        "UPDATE sqlite_schema SET sql='CREATE INDEX events_worker ON events(task_id, seq)' WHERE name='events_worker'"
    )
    conn.execute("PRAGMA writable_schema=OFF")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("INSERT INTO task_deps(task_pk, depends_on_pk) VALUES(1, 999)")
    conn.close()
    daemon.start()

    res = daemon.ctl("db", "check")
    assert res.code == 1, res
    assert "events_worker" in res.out
    assert "task_deps row (without rowid) refers to a missing task_queue row" in res.out
    data = daemon.ctl("db", "check", "--json")
    assert data.code == 1 and data.json()["ok"] is False

    doctor = daemon.ctl("doctor", "--json")
    assert doctor.code == 1
    found = {f["check"]: f for f in doctor.json()["findings"]}["database"]
    assert (found["status"], found["fix"]) == ("fail", "chkdctl db check")
    assert found["message"].startswith(f"{daemon.db} has ") and "problem(s), the first: " in found["message"]

    target = tmp_path / "b.db"
    backup = daemon.ctl("db", "backup", str(target))
    assert backup.code == 1
    assert backup.err.startswith("chkdctl: The copy failed integrity_check (")
    assert not target.exists() and leftovers(tmp_path) == []


def test_backup_never_replaces_the_live_database_or_its_wal(daemon: Daemon, repo: Path) -> None:
    add_tasks(daemon, repo, 2)
    for target in (daemon.db, Path(f"{daemon.db}-wal")):
        res = daemon.ctl("db", "backup", str(target), "--force")
        assert res.code == 1, res
        assert res.err.splitlines()[0] == (
            f"chkdctl: {target} is the live database (or one of its files); back it up to another file."
        )
    assert daemon.ctl("db", "check").code == 0
    assert daemon.call(Ping()).tasks == 2
