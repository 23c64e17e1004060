-- A chkd database as schema version 1 wrote it (frozen: never regenerate from the code).
PRAGMA user_version=1;
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

INSERT INTO repos(id, path, name, main_branch, test_cmd, added_at) VALUES(1, '/srv/old-repo', 'old-repo', 'main', '["pytest", "-q"]', 1700000000000);
INSERT INTO task_queue(pk, repo_id, id, title, description, status, tags, priority, attempts, max_attempts, created_at) VALUES
  (1, 1, 'SD.1', 'Old pending task', 'from v1', 'pending', '["ui"]', 1, 0, 3, 1700000000001),
  (2, 1, 'SD.2', 'Old done task', '', 'done', '[]', 2, 1, 3, 1700000000002);
INSERT INTO task_deps(task_pk, depends_on_pk) VALUES(1, 2);
INSERT INTO workers(id, seq, repo_id, status, worktree_path, branch_name, task_pk, task_id, task_title, started_at, tokens_in, cost_usd)
  VALUES('w1', 1, 1, 'merged', '/srv/old-repo-SD.2', 'chkd/SD.2', 2, 'SD.2', 'Old done task', 1700000000100, 1234, 0.5);
INSERT INTO merges(id, worker_id, repo_id, strategy, status, base_sha, head_sha, result_sha, created_at)
  VALUES(1, 'w1', 1, 'auto', 'merged', 'aaa', 'bbb', 'ccc', 1700000000200);
INSERT INTO events(seq, at, kind, repo, worker_id, task_id, data) VALUES(1, 1700000000300, 'worker.status', 'old-repo', 'w1', 'SD.2', NULL);
INSERT INTO meta(key, value) VALUES('worker', '1');
