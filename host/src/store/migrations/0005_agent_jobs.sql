-- 0005: a job is a command in an image on a workspace, within a budget. Adds
-- what the job asked to spend (tokens, requests, seconds), the image it runs
-- (the reference and the id it resolved to), its command line and agent, its
-- workspace (the owner's folder, its size and file count), whether it asked
-- for server-side tools that reach the internet, the requests limits granted,
-- and the end state 'out_of_budget'. The one-prompt job's `max_tokens` becomes
-- its asked token budget, which is what it was granted against. A command job
-- has no prompt of its own, so an empty digest is allowed. SQLite cannot alter
-- a CHECK, so the table is rebuilt.

CREATE TABLE jobs_v3 (
    id               TEXT    PRIMARY KEY,
    created_at       TEXT    NOT NULL,
    usage_day        TEXT    NOT NULL CHECK (length(usage_day) = 10),
    model            TEXT    NOT NULL,
    budget_tokens    INTEGER NOT NULL CHECK (budget_tokens >= 0),
    budget_requests  INTEGER NOT NULL CHECK (budget_requests >= 0),
    budget_secs      INTEGER NOT NULL CHECK (budget_secs >= 0),
    prompt_bytes     INTEGER NOT NULL CHECK (prompt_bytes >= 0),
    prompt_sha256    TEXT    NOT NULL CHECK (length(prompt_sha256) IN (0, 64)),
    image            TEXT    NOT NULL DEFAULT '',
    image_id         TEXT    NOT NULL DEFAULT '',
    command          TEXT    NOT NULL DEFAULT '[]',
    agent            TEXT    NOT NULL DEFAULT '',
    workspace        TEXT,
    workspace_bytes  INTEGER CHECK (workspace_bytes >= 0),
    workspace_files  INTEGER CHECK (workspace_files >= 0),
    egress           INTEGER NOT NULL DEFAULT 0 CHECK (egress IN (0, 1)),
    source           TEXT    NOT NULL CHECK (source IN ('local', 'market')),
    requester        TEXT    NOT NULL,
    state            TEXT    NOT NULL
                     CHECK (state IN ('admitted', 'running', 'finished', 'failed',
                                      'timed_out', 'cancelled', 'aborted', 'out_of_budget')),
    granted_tokens   INTEGER NOT NULL CHECK (granted_tokens >= 0),
    granted_requests INTEGER NOT NULL DEFAULT 0 CHECK (granted_requests >= 0),
    timeout_secs     INTEGER NOT NULL CHECK (timeout_secs >= 0),
    host_pid         INTEGER,
    host_start       INTEGER,
    container_id     TEXT,
    started_at       TEXT,
    requests         INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),
    input_tokens     INTEGER CHECK (input_tokens >= 0),
    output_tokens    INTEGER CHECK (output_tokens >= 0),
    exit_code        INTEGER,
    end_reason       TEXT,
    finished_at      TEXT
);

INSERT INTO jobs_v3 (id, created_at, usage_day, model, budget_tokens, budget_requests,
                     budget_secs, prompt_bytes, prompt_sha256, source, requester, state,
                     granted_tokens, timeout_secs, host_pid, host_start, container_id,
                     started_at, requests, input_tokens, output_tokens, exit_code, end_reason,
                     finished_at)
SELECT id, created_at, usage_day, model, max_tokens, 1, timeout_secs, prompt_bytes,
       prompt_sha256, source, requester, state, granted_tokens, timeout_secs, host_pid,
       host_start, container_id, started_at, requests, input_tokens, output_tokens, exit_code,
       end_reason, finished_at
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_v3 RENAME TO jobs;

CREATE INDEX jobs_live ON jobs (state) WHERE state IN ('admitted', 'running');
