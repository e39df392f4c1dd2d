//! Brings a database up to the schema this build knows, tracked in
//! `PRAGMA user_version`. Migrations are append-only: it must never edit or
//! reorder a released one, and it must refuse a database that is newer than
//! this build rather than run against tables it does not understand.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::error::StoreError;

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_job_runs",
        sql: include_str!("migrations/0002_job_runs.sql"),
    },
    Migration {
        version: 3,
        name: "0003_policy_bundles",
        sql: include_str!("migrations/0003_policy_bundles.sql"),
    },
    Migration {
        version: 4,
        name: "0004_market",
        sql: include_str!("migrations/0004_market.sql"),
    },
    Migration {
        version: 5,
        name: "0005_agent_jobs",
        sql: include_str!("migrations/0005_agent_jobs.sql"),
    },
];

/// The newest schema version this build can read and write.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

pub(super) fn run(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if check_version(user_version(conn).map_err(open_err)?, path)? == SCHEMA_VERSION {
        return Ok(());
    }
    // Several processes may open a fresh file at once. IMMEDIATE queues us
    // behind whichever migrates first, and the re-read sees its work.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err)?;
    let found = check_version(user_version(&tx).map_err(open_err)?, path)?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        let migrate_err = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            migration: migration.name,
            source,
        };
        tx.execute_batch(migration.sql).map_err(migrate_err)?;
        tx.pragma_update(None, "user_version", migration.version)
            .map_err(migrate_err)?;
        tracing::info!(migration = migration.name, "applied schema migration");
    }
    tx.commit().map_err(open_err)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn check_version(found: i64, path: &Path) -> Result<i64, StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::super::test_support::{raw_conn, temp_store};
    use super::*;

    #[test]
    fn versions_are_numbered_from_one_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1);
            assert!(
                migration
                    .name
                    .starts_with(&format!("{:04}_", migration.version))
            );
        }
    }

    #[test]
    fn open_migrates_once_and_reopens_cleanly() {
        let (dir, store) = temp_store();
        drop(store);
        let path = dir.path().join("state.db");
        assert_eq!(user_version(&raw_conn(&path)).unwrap(), SCHEMA_VERSION);
        Store::open(&path).expect("reopening a current database");
    }

    #[test]
    fn a_version_1_job_survives_the_job_runs_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut conn = raw_conn(&path);
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0].sql).unwrap();
        tx.execute_batch(
            "INSERT INTO jobs (id, created_at, model, max_tokens, prompt_bytes, prompt_sha256,
                               source, requester, state, granted_tokens, timeout_secs)
             VALUES ('old', '2026-02-10T08:00:00.000000Z', 'claude-haiku-4-5', 10, 1,
                     printf('%064d', 0), 'local', 'local', 'admitted', 10, 60);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        tx.commit().unwrap();
        drop(conn);
        let store = Store::open(&path).expect("migrating a version 1 database");
        let job = store.job("old").unwrap().expect("the old job is kept");
        assert_eq!((job.state.as_str(), job.requests), ("admitted", 0));
        assert_eq!((job.budget.tokens, job.image.as_str()), (10, ""));
        assert_eq!(store.live_jobs().unwrap().len(), 1);
        let day: String = store
            .conn
            .query_row("SELECT usage_day FROM jobs", [], |row| row.get(0))
            .unwrap();
        assert_eq!(day, "2026-02-10");
    }

    #[test]
    fn parallel_first_opens_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    Store::open(&path).map(drop)
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap().expect("a concurrent first open");
        }
        assert_eq!(user_version(&raw_conn(&path)).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_database_is_refused_with_upgrade_advice() {
        let (dir, store) = temp_store();
        drop(store);
        let path = dir.path().join("state.db");
        raw_conn(&path)
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = Store::open(&path)
            .err()
            .expect("a newer schema must be refused");
        match &err {
            StoreError::SchemaTooNew {
                found, supported, ..
            } => {
                assert_eq!(*found, SCHEMA_VERSION + 1);
                assert_eq!(*supported, SCHEMA_VERSION);
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        assert!(err.to_string().contains("upgrade claude-max-market"));
    }
}
