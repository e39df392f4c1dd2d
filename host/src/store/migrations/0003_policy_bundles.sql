-- 0003: signed policy bundles. The keys this node trusts to sign policy,
-- every bundle revision it accepted (the highest per name is the floor for
-- the next install), the URLs it installs from with their ETags, and which
-- bundle revision each active policy and each decision came from.

CREATE TABLE trusted_keys (
    key_id     TEXT PRIMARY KEY CHECK (length(key_id) = 64),
    name       TEXT NOT NULL,
    public_pem TEXT NOT NULL,
    added_at   TEXT NOT NULL
);

CREATE TABLE bundle_revisions (
    name         TEXT    NOT NULL,
    revision     INTEGER NOT NULL CHECK (revision >= 1),
    -- sha256 of the bundle file as installed.
    sha256       TEXT    NOT NULL CHECK (length(sha256) = 64),
    -- The canonical manifest and signatures.json's entries, kept so that
    -- every later load re-checks them against the trust store of that day.
    manifest     TEXT    NOT NULL,
    signatures   TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    installed_at TEXT    NOT NULL,
    PRIMARY KEY (name, revision)
);

CREATE TABLE bundle_sources (
    url        TEXT PRIMARY KEY,
    etag       TEXT,
    checked_at TEXT NOT NULL
);

ALTER TABLE active_policies ADD COLUMN bundle TEXT;
ALTER TABLE active_policies ADD COLUMN revision INTEGER;

-- name@revision of the bundle whose plugin made the decision, if any.
ALTER TABLE decisions ADD COLUMN bundle TEXT;
