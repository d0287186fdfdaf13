-- grctl schema, version 6. Forward migrations live in sqlite.py (MIGRATIONS) - never edit a
-- released version in place.
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS workflow_types (
    workflow_type TEXT PRIMARY KEY,
    definition    BLOB NOT NULL,
    updated_ms    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
    run_id             TEXT PRIMARY KEY,
    workflow_id        TEXT NOT NULL,
    workflow_type      TEXT NOT NULL,
    status             TEXT NOT NULL,
    created_ms         INTEGER NOT NULL,
    updated_ms         INTEGER NOT NULL,
    ended_ms           INTEGER,
    input              BLOB,
    result             BLOB,
    error              BLOB,
    reason             TEXT,
    step_name          TEXT,
    handler_kind       TEXT,
    step_args          BLOB,
    attempt            INTEGER NOT NULL DEFAULT 0,
    failures           INTEGER NOT NULL DEFAULT 0,
    step_seq           INTEGER NOT NULL DEFAULT 0,
    wait_timeout_step  TEXT,
    cancel_requested   INTEGER NOT NULL DEFAULT 0,
    parent_workflow_id TEXT,
    parent_run_id      TEXT,
    completion_event   TEXT,
    history_seq        INTEGER NOT NULL DEFAULT 0,
    inbox_seq          INTEGER NOT NULL DEFAULT 0,
    worker_losses      INTEGER NOT NULL DEFAULT 0,
    version            INTEGER NOT NULL DEFAULT 0,
    partition          INTEGER NOT NULL DEFAULT 0
);

-- The ownership epoch: bumped by each daemon that opens the database, checked by every commit.
CREATE TABLE IF NOT EXISTS owner (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);

-- One active run per workflow_id, enforced by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active ON runs (workflow_id)
    WHERE status IN ('running', 'waiting');
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow_id, created_ms);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_ms);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_ms);
CREATE INDEX IF NOT EXISTS runs_by_type ON runs (workflow_type, created_ms);
-- Runs with a step to run, for the start-up scan that hands them to workers.
CREATE INDEX IF NOT EXISTS runs_running ON runs (run_id) WHERE status = 'running';
-- Retention: ended runs by when they ended (active runs have no entry).
CREATE INDEX IF NOT EXISTS runs_by_ended ON runs (ended_ms) WHERE ended_ms IS NOT NULL;

CREATE TABLE IF NOT EXISTS store (
    run_id TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS history (
    run_id    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    ts_ms     INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    step_name TEXT,
    data      BLOB,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS inbox (
    run_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    event_name TEXT NOT NULL,
    payload    BLOB,
    arrived_ms INTEGER NOT NULL,
    state      TEXT NOT NULL,
    step_name  TEXT,
    idempotency_key TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE UNIQUE INDEX IF NOT EXISTS inbox_by_key ON inbox (run_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS step_records (
    run_id   TEXT NOT NULL,
    step_seq INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    record   BLOB NOT NULL,
    PRIMARY KEY (run_id, step_seq, n)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS timers (
    run_id TEXT NOT NULL,
    kind   TEXT NOT NULL,
    due_ms INTEGER NOT NULL,
    token  TEXT NOT NULL,
    PRIMARY KEY (run_id, kind)
) WITHOUT ROWID;
-- Timers are loaded by due time, a window at a time, never all at once.
CREATE INDEX IF NOT EXISTS timers_by_due ON timers (due_ms);

-- Durable cron schedules (runtime/schedules.py): each fire and the next fire time commit together.
CREATE TABLE IF NOT EXISTS schedules (
    name             TEXT PRIMARY KEY,
    workflow_type    TEXT NOT NULL,
    cron             TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    input            BLOB,
    overlap          TEXT NOT NULL,
    paused           INTEGER NOT NULL DEFAULT 0,
    next_fire_ms     INTEGER NOT NULL,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    partition        INTEGER NOT NULL,
    last_fire_ms     INTEGER,
    last_workflow_id TEXT,
    last_run_id      TEXT,
    skips            INTEGER NOT NULL DEFAULT 0,
    last_skip_ms     INTEGER
);
