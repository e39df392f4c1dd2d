-- The market as this node took part in it. The market's own record is the
-- NATS streams; these rows are this node's view: the tasks it posted or
-- served, and how many market messages it dropped, by reason.
CREATE TABLE market_tasks (
    task        TEXT    PRIMARY KEY,
    role        TEXT    NOT NULL CHECK (role IN ('requester', 'provider')),
    counterpart TEXT,
    price       INTEGER,
    state       TEXT    NOT NULL,
    detail      TEXT,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);

CREATE TABLE market_drops (
    reason TEXT    PRIMARY KEY,
    count  INTEGER NOT NULL
);
