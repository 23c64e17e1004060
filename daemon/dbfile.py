"""The database as a file: online backup and integrity checks, each on its own connection.

Everything here blocks (a large database takes seconds), so it only runs off-loop
(`ctx.submit`), and never touches the loop's connection: apsw connections belong to the
thread that uses them, and the loop's one writer must never wait for a backup. WAL lets a
second connection read a consistent snapshot while the loop keeps writing.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import apsw

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import DbBackupResult, DbCheckResult

BUSY_TIMEOUT_MS = 5000


def _reader(db: str | os.PathLike[str]) -> apsw.Connection:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    return conn


def integrity_problems(conn: apsw.Connection) -> list[str]:
    """integrity_check's findings; empty when it says "ok"."""
    lines = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    return [] if lines == ["ok"] else lines


def foreign_key_problems(conn: apsw.Connection) -> list[str]:
    """One sentence per row that refers to a row that does not exist."""
    return [
        f"{table} row {rowid if rowid is not None else '(without rowid)'} refers to a missing {parent} row "
        f"(foreign key {fkid})"
        for table, rowid, parent, fkid in conn.execute("PRAGMA foreign_key_check")
    ]


def check_database(db: str) -> DbCheckResult:
    """Off-loop: integrity_check and foreign_key_check on a separate read connection."""
    started = time.monotonic()
    conn = _reader(db)
    try:
        problems = integrity_problems(conn)
        dangling = foreign_key_problems(conn)
    finally:
        conn.close()
    return DbCheckResult(
        ok=not problems and not dangling,
        db=db,
        problems=problems,
        foreign_key_problems=dangling,
        seconds=round(time.monotonic() - started, 3),
    )


def backup_database(db: str, target: str, *, force: bool = False) -> DbBackupResult:
    """Off-loop: copy the live database to `target` through a temporary file beside it.

    The copy gets its name only after it opened and passed integrity_check, so `target`
    is either the old file or a verified copy, never half of one. Without `force` an
    existing `target` is refused, also when it appears while the copy is made.
    """
    dest = Path(target)
    try:
        return _backup(db, dest, force)
    except OSError as exc:  # a name too long, a read-only or full disk, a permission: one sentence
        raise ChkdError("bad_request", f"Cannot write the backup {dest} ({exc.strerror or exc}).") from None


def _backup(db: str, dest: Path, force: bool) -> DbBackupResult:
    started = time.monotonic()
    _check_destination(dest, force, db)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)  # 0600
    except OSError as exc:
        raise ChkdError("bad_request", f"Cannot write a backup in {dest.parent} ({exc.strerror}).") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        pages = _copy(db, tmp)
        problems = _verify(tmp)
        if problems:
            raise ChkdError(
                "internal",
                f"The copy failed integrity_check ({problems[0]}); nothing was written to "
                f"{dest}. Run `chkdctl db check`.",
            )
        _fsync(tmp)
        _publish(tmp, dest, force)
        _fsync_dir(dest.parent)
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
    return DbBackupResult(
        path=str(dest), pages=pages, bytes=dest.stat().st_size, seconds=round(time.monotonic() - started, 3)
    )


def _check_destination(dest: Path, force: bool, db: str) -> None:
    if _is_database_file(dest, db):
        raise ChkdError("refused", f"{dest} is the live database (or one of its files); back it up to another file.")
    if not dest.parent.is_dir():
        raise ChkdError("not_found", f"The directory {dest.parent} does not exist.")
    if dest.is_dir():
        raise ChkdError("bad_request", f"{dest} is a directory; name the backup file.")
    if dest.exists() and not force:
        raise ChkdError("refused", f"{dest} already exists; pass --force to replace it.")


def _is_database_file(dest: Path, db: str) -> bool:
    """Whether `dest` names the database or its -wal/-shm/-journal (by path, or the same file by inode)."""
    for own in (db, f"{db}-wal", f"{db}-shm", f"{db}-journal"):
        if os.path.realpath(dest) == os.path.realpath(own):
            return True
        try:
            if os.path.samefile(dest, own):
                return True
        except OSError:
            continue
    return False


def _copy(db: str, tmp: Path) -> int:
    """SQLite's online backup in one step (one read snapshot: a busy writer cannot make it restart).
    The copy is switched to a rollback journal, so it is one self-contained file. Returns its pages."""
    source = _reader(db)
    copy = apsw.Connection(str(tmp))
    try:
        with copy.backup("main", source, "main") as job:
            while not job.step(-1):
                pass
        copy.execute("PRAGMA journal_mode=DELETE")
        (pages,) = copy.execute("PRAGMA page_count").fetchone() or (0,)
        return int(pages)
    finally:
        copy.close()
        source.close()


def _verify(tmp: Path) -> list[str]:
    conn = _reader(tmp)
    try:
        return integrity_problems(conn)
    finally:
        conn.close()


def _publish(tmp: Path, dest: Path, force: bool) -> None:
    """Give the verified copy its name: replace with `force`, else link (which never overwrites)."""
    if force:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise ChkdError("refused", f"{dest} already exists; pass --force to replace it.") from None
    except OSError:  # a filesystem without hard links: check, then rename (the small race is ours alone)
        if dest.exists():
            raise ChkdError("refused", f"{dest} already exists; pass --force to replace it.") from None
        os.rename(tmp, dest)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the data itself is synced
