//! Daily usage counters and the snapshot the limits policy decides on. Usage is
//! reserved at admission (the granted budget, not the tokens later spent), so
//! a limit holds even while jobs are still running. It must not apply limits
//! itself; it only counts.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use time::Date;

use super::error::{During, StoreError};
use super::{Store, day_key};

/// What has been used on one UTC day, plus the jobs live right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageSnapshot {
    pub tasks_today: u32,
    pub tokens_today: u64,
    /// Jobs admitted or running, on any day.
    pub running_jobs: u32,
}

pub(super) fn snapshot(conn: &Connection, day: Date) -> Result<UsageSnapshot, StoreError> {
    let (tasks_today, tokens_today) = conn
        .query_row(
            "SELECT tasks, tokens FROM usage_daily WHERE day = ?1",
            [day_key(day)?],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .during("reading today's usage")?
        .unwrap_or((0, 0));
    let running_jobs = conn
        .query_row(
            "SELECT count(*) FROM jobs WHERE state IN ('admitted', 'running')",
            [],
            |row| row.get(0),
        )
        .during("counting running jobs")?;
    Ok(UsageSnapshot {
        tasks_today,
        tokens_today,
        running_jobs,
    })
}

/// Counts one more task and its granted tokens against `day`.
pub(super) fn reserve(conn: &Connection, day: Date, tokens: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO usage_daily (day, tasks, tokens) VALUES (?1, 1, ?2)
         ON CONFLICT (day) DO UPDATE SET tasks = tasks + 1, tokens = tokens + excluded.tokens",
        params![day_key(day)?, tokens],
    )
    .during("reserving usage")?;
    Ok(())
}

impl Store {
    pub fn usage_snapshot(&self, day: Date) -> Result<UsageSnapshot, StoreError> {
        snapshot(&self.conn, day)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;
    use time::macros::date;

    #[test]
    fn reservations_add_up_per_day() {
        let (_dir, store) = temp_store();
        let day = date!(2026 - 02 - 10);
        assert_eq!(store.usage_snapshot(day).unwrap(), UsageSnapshot::default());
        reserve(&store.conn, day, 1000).unwrap();
        reserve(&store.conn, day, 500).unwrap();
        reserve(&store.conn, date!(2026 - 02 - 11), 7).unwrap();
        let snapshot = store.usage_snapshot(day).unwrap();
        assert_eq!((snapshot.tasks_today, snapshot.tokens_today), (2, 1500));
        let next = store.usage_snapshot(date!(2026 - 02 - 11)).unwrap();
        assert_eq!((next.tasks_today, next.tokens_today), (1, 7));
    }
}
