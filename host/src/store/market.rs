//! This node's part in the market: the tasks it posted or served, each
//! step written with its audit row, and a count of the market messages it
//! dropped. The market's own record (offers, tasks, the ledger) lives in
//! the NATS streams; nothing here is needed to compute a balance.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value;

use super::error::{During, StoreError};
use super::{Store, audit, now};

/// One task this node posted (`requester`) or took (`provider`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MarketTaskRow {
    pub task: String,
    pub role: String,
    /// The other node's id, once known.
    pub counterpart: Option<String>,
    pub price: Option<u64>,
    pub state: String,
    pub detail: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

fn task_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MarketTaskRow> {
    Ok(MarketTaskRow {
        task: row.get(0)?,
        role: row.get(1)?,
        counterpart: row.get(2)?,
        price: row.get::<_, Option<i64>>(3)?.map(|p| p as u64),
        state: row.get(4)?,
        detail: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

const TASK_COLUMNS: &str = "task, role, counterpart, price, state, detail, created_at, updated_at";

/// A step in a market task, for [`Store::market_step`].
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub task: &'a str,
    pub role: &'a str,
    pub counterpart: Option<&'a str>,
    pub price: Option<u64>,
    pub state: &'a str,
    pub detail: Option<&'a str>,
}

impl Store {
    /// Records a step of a market task and its audit row (`kind`, with
    /// `details`) in one transaction, before the message it records is
    /// sent or acted on. Known fields are kept when a step leaves them out.
    pub fn market_step(
        &mut self,
        step: Step<'_>,
        kind: &str,
        details: &Value,
    ) -> Result<(), StoreError> {
        const OP: &str = "recording a market step";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(OP)?;
        let at = now()?;
        tx.execute(
            "INSERT INTO market_tasks (task, role, counterpart, price, state, detail, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
             ON CONFLICT (task) DO UPDATE SET
                 counterpart = COALESCE(excluded.counterpart, counterpart),
                 price = COALESCE(excluded.price, price),
                 state = excluded.state,
                 detail = COALESCE(excluded.detail, detail),
                 updated_at = excluded.updated_at",
            params![
                step.task,
                step.role,
                step.counterpart,
                step.price.map(|p| i64::try_from(p).unwrap_or(i64::MAX)),
                step.state,
                step.detail,
                at
            ],
        )
        .during(OP)?;
        audit::append(&tx, kind, step.task, details)?;
        tx.commit().during(OP)
    }

    /// The row of `task`, if this node took part in it.
    pub fn market_task(&self, task: &str) -> Result<Option<MarketTaskRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {TASK_COLUMNS} FROM market_tasks WHERE task = ?1"),
                [task],
                task_row,
            )
            .optional()
            .during("reading a market task")
    }

    /// The newest `limit` market tasks, newest first.
    pub fn market_tasks(&self, limit: usize) -> Result<Vec<MarketTaskRow>, StoreError> {
        const OP: &str = "reading market tasks";
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {TASK_COLUMNS} FROM market_tasks ORDER BY created_at DESC, task LIMIT ?1"
            ))
            .during(OP)?;
        let rows = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], task_row)
            .during(OP)?;
        rows.map(|r| r.during(OP)).collect()
    }

    /// Counts one dropped market message.
    pub fn count_market_drop(&mut self, reason: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO market_drops (reason, count) VALUES (?1, 1)
                 ON CONFLICT (reason) DO UPDATE SET count = count + 1",
                [reason],
            )
            .map(drop)
            .during("counting a dropped market message")
    }

    /// Dropped market messages by reason.
    pub fn market_drops(&self) -> Result<Vec<(String, u64)>, StoreError> {
        const OP: &str = "reading dropped market messages";
        let mut stmt = self
            .conn
            .prepare("SELECT reason, count FROM market_drops ORDER BY reason")
            .during(OP)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))
            .during(OP)?;
        rows.map(|r| r.during(OP)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    #[test]
    fn steps_keep_what_later_steps_leave_out_and_are_audited() {
        let (_dir, mut store) = temp_store();
        let step = Step {
            task: "t1",
            role: "requester",
            counterpart: None,
            price: None,
            state: "posted",
            detail: None,
        };
        store
            .market_step(step, "market.task-posted", &serde_json::json!({}))
            .unwrap();
        store
            .market_step(
                Step {
                    counterpart: Some("p1"),
                    price: Some(30),
                    state: "locked",
                    ..step
                },
                "market.locked",
                &serde_json::json!({}),
            )
            .unwrap();
        store
            .market_step(
                Step {
                    state: "completed",
                    ..step
                },
                "market.released",
                &serde_json::json!({}),
            )
            .unwrap();
        let row = store.market_task("t1").unwrap().unwrap();
        assert_eq!(row.counterpart.as_deref(), Some("p1"));
        assert_eq!(row.price, Some(30));
        assert_eq!(row.state, "completed");
        assert_eq!(store.market_tasks(10).unwrap().len(), 1);
        let kinds: Vec<String> = store
            .audit_entries(None)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            ["market.task-posted", "market.locked", "market.released"]
        );
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let (_dir, mut store) = temp_store();
        store.count_market_drop("unsigned").unwrap();
        store.count_market_drop("unsigned").unwrap();
        store.count_market_drop("bad-signature").unwrap();
        assert_eq!(
            store.market_drops().unwrap(),
            [
                ("bad-signature".to_string(), 1),
                ("unsigned".to_string(), 2)
            ]
        );
    }
}
