"""The SQLite store: one apsw connection, one writer (the daemon's loop), WAL.

Schema changes are numbered migrations keyed by `PRAGMA user_version`; each runs
in its own transaction, so an upgrade either happens whole or not at all.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import apsw

from chkd.protocol.paths import Paths, make_private

Row = tuple[Any, ...]

#: Migration N turns a version N-1 database into version N. Append only; never edit a shipped one.
MIGRATIONS: list[str] = [
    # 1: the whole schema of DESIGN.md.
    """
    CREATE TABLE repos(
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL UNIQUE,
        main_branch TEXT NOT NULL,
        test_cmd TEXT,                       -- JSON argv or NULL
        added_at INTEGER NOT NULL
    );
    CREATE TABLE task_queue(
        pk INTEGER PRIMARY KEY,
        repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
        id TEXT NOT NULL,                    -- the user's id (SD.13) or generated (T-1); unique per repo
        spec_item_id TEXT,
        title TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'pending',
        held INTEGER NOT NULL DEFAULT 0,
        tags TEXT NOT NULL DEFAULT '[]',     -- JSON list
        claimed_by TEXT,
        priority INTEGER NOT NULL DEFAULT 2,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 3,
        created_at INTEGER NOT NULL,
        claimed_at INTEGER,
        completed_at INTEGER,
        UNIQUE(repo_id, id)
    );
    CREATE INDEX task_queue_claim ON task_queue(repo_id, status, held, priority, created_at);
    CREATE TABLE task_deps(
        task_pk INTEGER NOT NULL REFERENCES task_queue(pk) ON DELETE CASCADE,
        depends_on_pk INTEGER NOT NULL REFERENCES task_queue(pk) ON DELETE CASCADE,
        PRIMARY KEY(task_pk, depends_on_pk)
    ) WITHOUT ROWID;
    CREATE INDEX task_deps_reverse ON task_deps(depends_on_pk);
    CREATE TABLE workers(
        id TEXT PRIMARY KEY,                 -- w1, w2, ...
        seq INTEGER NOT NULL UNIQUE,
        repo_id INTEGER NOT NULL REFERENCES repos(id),
        status TEXT NOT NULL,
        worktree_path TEXT,
        branch_name TEXT,
        task_pk INTEGER REFERENCES task_queue(pk) ON DELETE SET NULL,
        task_id TEXT,
        task_title TEXT,
        agent TEXT,
        cmd TEXT,                            -- JSON argv the shim runs
        pid INTEGER,                         -- the agent (its process group leader)
        pgid INTEGER,
        proc_started REAL,                   -- agent create time (psutil), with pid its identity
        shim_pid INTEGER,
        shim_started REAL,
        started_at INTEGER NOT NULL,
        completed_at INTEGER,
        heartbeat_at INTEGER,                -- last shim heartbeat: the process lives
        activity_at INTEGER,                 -- last agent activity: it gets somewhere
        message TEXT,
        exit_code INTEGER,
        exit_signal INTEGER,
        tokens_in INTEGER NOT NULL DEFAULT 0,
        tokens_out INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX workers_status ON workers(status);
    CREATE INDEX workers_repo ON workers(repo_id, status);
    CREATE TABLE sessions(
        id INTEGER PRIMARY KEY,
        repo_id INTEGER REFERENCES repos(id),
        worker_id TEXT,
        is_master INTEGER NOT NULL DEFAULT 0,
        started_at INTEGER NOT NULL,
        ended_at INTEGER
    );
    CREATE TABLE merges(
        id INTEGER PRIMARY KEY,
        worker_id TEXT NOT NULL,
        repo_id INTEGER NOT NULL REFERENCES repos(id),
        strategy TEXT NOT NULL,
        status TEXT NOT NULL,
        target TEXT,
        priority INTEGER NOT NULL DEFAULT 2,
        run_tests INTEGER NOT NULL DEFAULT 1,
        base_sha TEXT,
        head_sha TEXT,
        result_sha TEXT,
        conflict_files TEXT NOT NULL DEFAULT '[]',
        log TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX merges_status ON merges(repo_id, status);
    CREATE TABLE events(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        repo TEXT,
        worker_id TEXT,
        task_id TEXT,
        data BLOB                             -- msgpack map
    );
    CREATE INDEX events_worker ON events(worker_id, seq);
    CREATE INDEX events_task ON events(task_id, seq);
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: a reviewed merge remembers its approval, so it lands (after a re-check) without asking again.
    """
    ALTER TABLE merges ADD COLUMN approved_at INTEGER;
    """,
    # 3: intents recorded before the step that needs them, so a kill -9 at any moment can be resumed:
    #    a worker's base commit (its worktree and branch are recorded before they are created), the
    #    exit of an agent whose leftovers are still being committed, and a merge's CAS (old -> new)
    #    until its checkouts have been brought along.
    """
    ALTER TABLE workers ADD COLUMN base_sha TEXT;
    ALTER TABLE workers ADD COLUMN finish_pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE merges ADD COLUMN land_old TEXT;
    ALTER TABLE merges ADD COLUMN land_new TEXT;
    """,
    # 4: interactive workers run in a tmux session on chkd's own tmux server (issue 13).
    """
    ALTER TABLE workers ADD COLUMN interactive INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: messages for workers (a broadcast is one row per worker it reached, so each is read once),
    #    and MCP sessions that know their process (pid, create time): a session whose chkd-mcp was
    #    killed is ended by the daemon, at start-up and while it runs.
    """
    CREATE TABLE messages(
        id INTEGER PRIMARY KEY,
        to_worker TEXT NOT NULL,
        sender TEXT NOT NULL,                -- master | user | worker
        from_worker TEXT,
        broadcast INTEGER NOT NULL DEFAULT 0,
        text TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        read_at INTEGER
    );
    CREATE INDEX messages_unread ON messages(to_worker, read_at, id);
    ALTER TABLE sessions ADD COLUMN pid INTEGER;
    ALTER TABLE sessions ADD COLUMN proc_started REAL;
    ALTER TABLE sessions ADD COLUMN client TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN end_reason TEXT;
    CREATE INDEX sessions_open ON sessions(ended_at);
    """,
    # 6: workspaces (issue 14): a repository's settings from `repo edit` (JSON RepoSettings), the warm
    #    pool's worktrees (recorded before they are created, so a kill mid-refill leaves only recorded
    #    things), and the merge train a merge was gated in.
    """
    ALTER TABLE repos ADD COLUMN settings TEXT;
    CREATE TABLE pool(
        id INTEGER PRIMARY KEY,
        repo_id INTEGER NOT NULL REFERENCES repos(id),
        path TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,                -- creating | ready | taken
        base_sha TEXT,
        setup_hash TEXT,
        worker_id TEXT,
        created_at INTEGER NOT NULL
    );
    ALTER TABLE merges ADD COLUMN train INTEGER;
    """,
    # 7: agents that report usage and sessions (Claude Code's stream-json): the session `resume`
    #    continues and the model; the last run result counted (a report sent twice is added once) and
    #    its error as a sentence; the intent to start the agent again (its prompt), recorded before the
    #    new shim starts so a kill -9 in between is resumed at start-up; how many runs so far.
    """
    ALTER TABLE workers ADD COLUMN session_id TEXT;
    ALTER TABLE workers ADD COLUMN model TEXT;
    ALTER TABLE workers ADD COLUMN usage_ref TEXT;
    ALTER TABLE workers ADD COLUMN agent_error TEXT;
    ALTER TABLE workers ADD COLUMN agent_error_kind TEXT;
    ALTER TABLE workers ADD COLUMN resume_prompt TEXT;
    ALTER TABLE workers ADD COLUMN resume_at INTEGER;
    ALTER TABLE workers ADD COLUMN runs INTEGER NOT NULL DEFAULT 1;
    """,
    # 8: the autopilot (issue 15): per-repository scheduler settings, a usage ledger (cost per task,
    #    repository and day), usage-limit waits per agent profile, and why a worker is paused
    #    (a budget pause is resumed by the budget, a user's pause only by the user).
    """
    CREATE TABLE autopilot(
        repo_id INTEGER PRIMARY KEY REFERENCES repos(id) ON DELETE CASCADE,
        workers INTEGER NOT NULL,
        agent TEXT,
        merge TEXT NOT NULL DEFAULT 'auto',
        until_empty INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'running',   -- running | stopped | finished
        started_at INTEGER NOT NULL,
        stopped_at INTEGER,
        stop_reason TEXT
    );
    CREATE TABLE usage(
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        day TEXT NOT NULL,                       -- the daemon's local date, YYYY-MM-DD
        repo_id INTEGER,
        worker_id TEXT,
        task_id TEXT,
        tokens_in INTEGER NOT NULL DEFAULT 0,
        tokens_out INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX usage_day ON usage(day, repo_id);
    CREATE TABLE profile_waits(
        profile TEXT PRIMARY KEY,
        until_ms INTEGER NOT NULL,               -- spawns of this profile wait until then
        reason TEXT NOT NULL,
        strikes INTEGER NOT NULL DEFAULT 0,      -- consecutive 429s: the back-off grows with them
        notified INTEGER NOT NULL DEFAULT 0      -- its end was announced (autopilot.limit_over)
    );
    ALTER TABLE workers ADD COLUMN paused_by TEXT;
    ALTER TABLE workers ADD COLUMN usage_limited INTEGER NOT NULL DEFAULT 0;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def db_path(paths: Paths) -> Path:
    """Where the database lives: in the state directory. Only the daemon ever opens it."""
    return paths.state / "chkd.db"


def now_ms() -> int:
    return int(time.time() * 1000)


class StoreError(Exception):
    pass


def private_database(path: Path) -> None:
    """The database file 0600 before SQLite opens it, and its existing -wal/-shm too.

    Why: SQLite creates -wal and -shm with the database file's mode, and creates the file
    itself with the umask's (0644), so a state directory that was ever open to others left
    it readable. Tightening the files, not a process-wide umask: checkouts keep the user's modes.
    """
    make_private(path)
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        if extra.exists():
            make_private(extra)


class Store:
    """The one connection. Only the daemon's loop thread may use it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_database(path)
        self.conn = apsw.Connection(str(path))
        self.conn.set_busy_timeout(5000)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    # -- schema ---------------------------------------------------------------------
    @property
    def version(self) -> int:
        row = self.one("PRAGMA user_version")
        return int(row[0]) if row is not None else 0

    def migrate(self) -> int:
        """Apply every migration past the database's version; returns how many ran."""
        current = self.version
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database {self.path} is schema version {current}, newer than this chkd "
                f"understands ({SCHEMA_VERSION}); upgrade chkd or use another CHKD_HOME"
            )
        for number in range(current + 1, SCHEMA_VERSION + 1):
            with self.conn:
                self.conn.execute(MIGRATIONS[number - 1])
                self.conn.execute(f"PRAGMA user_version={number}")
        return SCHEMA_VERSION - current

    # -- transactions -------------------------------------------------------------------
    def tx(self) -> apsw.Connection:
        """`with store.tx():` — the outer transaction of one loop turn (group commit).

        Nested `with store.savepoint():` blocks inside it roll back alone when they raise.
        (apsw's connection is itself the context manager: BEGIN outside, SAVEPOINT inside.)
        """
        return self.conn

    savepoint = tx

    # -- queries --------------------------------------------------------------------------
    def x(self, sql: str, params: tuple | dict = ()) -> int:
        """Execute a write; returns the number of rows changed."""
        self.conn.execute(sql, params)
        return self.conn.changes()

    def insert(self, sql: str, params: tuple | dict = ()) -> int:
        self.conn.execute(sql, params)
        return self.conn.last_insert_rowid()

    def all(self, sql: str, params: tuple | dict = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | dict = ()) -> Row | None:
        for row in self.conn.execute(sql, params):
            return row
        return None

    def scalar(self, sql: str, params: tuple | dict = (), default: Any = None) -> Any:
        row = self.one(sql, params)
        return default if row is None else row[0]

    def dicts(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        try:
            names = [d[0] for d in cur.get_description()]
        except apsw.ExecutionCompleteError:  # no rows at all
            return []
        return [dict(zip(names, row, strict=False)) for row in cur]

    def dict(self, sql: str, params: tuple | dict = ()) -> dict[str, Any] | None:
        rows = self.dicts(sql, params)
        return rows[0] if rows else None

    def meta_next(self, key: str) -> int:
        """A per-database counter (worker numbers, generated ids): never reused."""
        value = int(self.scalar("SELECT value FROM meta WHERE key=?", (key,), 0)) + 1
        self.x(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, str(value)),
        )
        return value

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except apsw.Error:
            pass
        self.conn.close()


#: The loop's own (automatic) WAL checkpoint only past this many pages (~40 MB): a backstop.
WAL_BACKSTOP_PAGES = 10_000


def checkpoint_wal(db: str) -> tuple[int, int, int]:
    """Off-loop, on its own connection: copy committed WAL frames into the database.

    Why: SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL pages,
    on the loop, with fsyncs — 5-20 ms stalls about once a second at 1,000 heartbeats/s
    (p99 ~5 ms; under 1.5 ms without). PASSIVE never waits for, nor blocks, the loop's
    writer. (A RESTART from this connection would make the loop's writes fail with
    SQLITE_BUSY.) The loop's autocheckpoint stays as a backstop at WAL_BACKSTOP_PAGES:
    a writer that never pauses keeps a concurrent checkpoint from catching up.
    Returns SQLite's (busy, frames in the WAL, frames checkpointed).
    """
    conn = apsw.Connection(db)
    try:
        busy, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone() or (0, 0, 0)
        return int(busy), int(log), int(done)
    finally:
        conn.close()
