-- 0001: the first schema. A released migration is never edited: a schema change
-- is a new numbered file, registered in migrate.rs.

CREATE TABLE consent_events (
    id            INTEGER PRIMARY KEY,
    ts            TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('terms_accepted', 'opt_in', 'opt_out')),
    terms_version TEXT,
    claude_jobs   INTEGER CHECK (claude_jobs IN (0, 1)),
    CHECK (kind <> 'terms_accepted' OR terms_version IS NOT NULL),
    CHECK (kind <> 'opt_in' OR (terms_version IS NOT NULL AND claude_jobs IS NOT NULL))
);

CREATE TABLE jobs (
    id             TEXT    PRIMARY KEY,
    created_at     TEXT    NOT NULL,
    model          TEXT    NOT NULL,
    max_tokens     INTEGER NOT NULL CHECK (max_tokens >= 0),
    prompt_bytes   INTEGER NOT NULL CHECK (prompt_bytes >= 0),
    prompt_sha256  TEXT    NOT NULL CHECK (length(prompt_sha256) = 64),
    source         TEXT    NOT NULL CHECK (source IN ('local', 'market')),
    requester      TEXT    NOT NULL,
    state          TEXT    NOT NULL
                   CHECK (state IN ('admitted', 'running', 'finished', 'failed', 'cancelled')),
    granted_tokens INTEGER NOT NULL CHECK (granted_tokens >= 0),
    timeout_secs   INTEGER NOT NULL CHECK (timeout_secs >= 0),
    input_tokens   INTEGER CHECK (input_tokens >= 0),
    output_tokens  INTEGER CHECK (output_tokens >= 0),
    finished_at    TEXT
);

-- Admission counts live jobs on every call; keep that off a full scan of history.
CREATE INDEX jobs_live ON jobs (state) WHERE state IN ('admitted', 'running');

-- Reserved usage per UTC day, as 'YYYY-MM-DD'.
CREATE TABLE usage_daily (
    day    TEXT    PRIMARY KEY CHECK (length(day) = 10),
    tasks  INTEGER NOT NULL DEFAULT 0 CHECK (tasks >= 0),
    tokens INTEGER NOT NULL DEFAULT 0 CHECK (tokens >= 0)
);

-- No foreign key to jobs: a refused job's decisions are kept, but it never gets a jobs row.
CREATE TABLE decisions (
    id          INTEGER PRIMARY KEY,
    job_id      TEXT    NOT NULL,
    ts          TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    plugin      TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    origin      TEXT    NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('allow', 'deny', 'ask')),
    reason      TEXT,
    error_class TEXT,
    elapsed_us  INTEGER NOT NULL CHECK (elapsed_us >= 0)
);

CREATE INDEX decisions_job ON decisions (job_id);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY CHECK (seq >= 1),
    ts        TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    details   TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL CHECK (length(prev_hash) = 64),
    hash      TEXT    NOT NULL CHECK (length(hash) = 64)
);

CREATE INDEX audit_log_ts ON audit_log (ts);

-- These stop a bug in this program from rewriting history. They are no defence
-- against someone holding the file, who can drop them; the hash chain is what
-- detects that.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- The newest row's seq and hash, updated with every append. A chain alone cannot
-- show that its newest rows were cut off; a mismatch with this row can.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL CHECK (seq >= 0),
    hash TEXT    NOT NULL CHECK (length(hash) = 64)
);

INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- An absent role means the embedded default policy is active.
CREATE TABLE active_policies (
    role         TEXT PRIMARY KEY
                 CHECK (role IN ('approval', 'limits', 'pricing', 'compliance')),
    origin       TEXT NOT NULL CHECK (origin IN ('file', 'bundle')),
    name         TEXT NOT NULL,
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    activated_at TEXT NOT NULL
);
