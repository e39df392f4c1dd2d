-- 0002: jobs run for real. Adds the ways a run can end, the host process and
-- container that ran it (so a later invocation can reconcile after a crash),
-- the day its usage was reserved on (so settling corrects the right day), and
-- what the gateway metered. SQLite cannot alter a CHECK, so the table is rebuilt.

CREATE TABLE jobs_v2 (
    id             TEXT    PRIMARY KEY,
    created_at     TEXT    NOT NULL,
    usage_day      TEXT    NOT NULL CHECK (length(usage_day) = 10),
    model          TEXT    NOT NULL,
    max_tokens     INTEGER NOT NULL CHECK (max_tokens >= 0),
    prompt_bytes   INTEGER NOT NULL CHECK (prompt_bytes >= 0),
    prompt_sha256  TEXT    NOT NULL CHECK (length(prompt_sha256) = 64),
    source         TEXT    NOT NULL CHECK (source IN ('local', 'market')),
    requester      TEXT    NOT NULL,
    state          TEXT    NOT NULL
                   CHECK (state IN ('admitted', 'running', 'finished', 'failed',
                                    'timed_out', 'cancelled', 'aborted')),
    granted_tokens INTEGER NOT NULL CHECK (granted_tokens >= 0),
    timeout_secs   INTEGER NOT NULL CHECK (timeout_secs >= 0),
    host_pid       INTEGER,
    host_start     INTEGER,
    container_id   TEXT,
    started_at     TEXT,
    requests       INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),
    input_tokens   INTEGER CHECK (input_tokens >= 0),
    output_tokens  INTEGER CHECK (output_tokens >= 0),
    exit_code      INTEGER,
    end_reason     TEXT,
    finished_at    TEXT
);

INSERT INTO jobs_v2 (id, created_at, usage_day, model, max_tokens, prompt_bytes, prompt_sha256,
                     source, requester, state, granted_tokens, timeout_secs,
                     input_tokens, output_tokens, finished_at)
SELECT id, created_at, substr(created_at, 1, 10), model, max_tokens, prompt_bytes, prompt_sha256,
       source, requester, state, granted_tokens, timeout_secs,
       input_tokens, output_tokens, finished_at
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_v2 RENAME TO jobs;

CREATE INDEX jobs_live ON jobs (state) WHERE state IN ('admitted', 'running');
