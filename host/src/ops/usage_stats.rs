//! Usage analytics over job records: per-day task counts, token totals,
//! outcomes and duration percentiles for a window of UTC days, plus a
//! per-model breakdown.
//!
//! Everything here is pure: no store access, no clock. The caller passes
//! `today`, so a report is reproducible and tests need no time mocking.
//!
//! # Definitions
//!
//! * A job belongs to the UTC day it was admitted ([`JobSample::day`]).
//! * *succeeded* = state `finished`; *failed* = `failed`, `timed_out` or
//!   `aborted`; *cancelled* = `cancelled` (stopped by its owner: neither a
//!   success nor a failure, so outside the success rate). The live states
//!   `admitted` and `running`, and any state this module does not know,
//!   count as tasks only, so `succeeded + failed + cancelled <= tasks`.
//! * Percentiles use the **nearest-rank** method over the ascending
//!   durations of the jobs that have one: the p-th percentile of `n` values
//!   is the value at 1-based rank `ceil(p/100 * n)` (at least 1). It always
//!   returns an observed duration, never an interpolation; p95 of a single
//!   sample is that sample, p50 of two samples is the smaller one.
//! * Counters saturate instead of overflowing.
//!
//! # JSON shape
//!
//! [`UsageReport`] serializes (via `serde_json`) as below. Dates are
//! `"YYYY-MM-DD"` strings, absent durations and rates are `null`, `share`
//! and `success_rate` are numbers in `0..=1`, `days` is oldest first with
//! one entry per day of the window, and `models` is sorted by `tasks`
//! descending, then `model` ascending.
//!
//! ```json
//! {
//!   "from": "2026-11-18",
//!   "to": "2026-11-20",
//!   "days": [
//!     { "day": "2026-11-18", "tasks": 0, "input_tokens": 0, "output_tokens": 0,
//!       "succeeded": 0, "failed": 0, "cancelled": 0, "duration_p50_ms": null,
//!       "duration_p95_ms": null }
//!   ],
//!   "totals": { "tasks": 3, "input_tokens": 1200, "output_tokens": 340,
//!               "succeeded": 2, "failed": 1, "cancelled": 0,
//!               "success_rate": 0.6666666666666666,
//!               "duration_p50_ms": 4100, "duration_p95_ms": 9000 },
//!   "models": [ { "model": "claude-opus-4", "tasks": 3, "tokens": 1540, "share": 1.0 } ]
//! }
//! ```

use std::collections::BTreeMap;

use serde::Serialize;
use time::{Date, Duration};

/// One job as the store recorded it, reduced to what analytics needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSample {
    /// UTC day the job was admitted.
    #[serde(serialize_with = "ymd::serialize")]
    pub day: Date,
    pub model: String,
    /// "admitted","running","finished","failed","timed_out","cancelled","aborted"
    pub state: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// started→finished; None if it never ran or still runs.
    pub duration_ms: Option<u64>,
}

/// Usage over the window `from..=to`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    #[serde(serialize_with = "ymd::serialize")]
    pub from: Date,
    #[serde(serialize_with = "ymd::serialize")]
    pub to: Date,
    /// Every day of the window, oldest first, including days without jobs.
    pub days: Vec<DayUsage>,
    pub totals: Totals,
    /// Sorted by `tasks` descending, then `model` ascending.
    pub models: Vec<ModelShare>,
}

/// Figures for one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayUsage {
    #[serde(serialize_with = "ymd::serialize")]
    pub day: Date,
    pub tasks: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub duration_p50_ms: Option<u64>,
    pub duration_p95_ms: Option<u64>,
}

/// The same figures as [`DayUsage`] over the whole window. Percentiles are
/// computed over all durations of the window, not averaged from the days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub tasks: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    /// `succeeded / (succeeded + failed)`; `None` when both are zero.
    pub success_rate: Option<f64>,
    pub duration_p50_ms: Option<u64>,
    pub duration_p95_ms: Option<u64>,
}

/// One model's part of the window's jobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelShare {
    pub model: String,
    pub tasks: u32,
    /// Input plus output tokens.
    pub tokens: u64,
    /// Fraction of the window's tasks, `0..=1`.
    pub share: f64,
}

/// Summarizes `samples` over the `days` UTC days ending with `today`
/// (inclusive). Samples outside the window are ignored. `days` of 0 is
/// treated as 1, and a window reaching before [`Date::MIN`] starts there.
pub fn summarize(samples: &[JobSample], today: Date, days: u32) -> UsageReport {
    let span = days.max(1);
    let from = today
        .checked_sub(Duration::days(i64::from(span - 1)))
        .unwrap_or(Date::MIN);
    let len = usize::try_from((today - from).whole_days()).unwrap_or(0) + 1;

    let mut buckets = vec![Bucket::default(); len];
    let mut all = Bucket::default();
    let mut per_model: BTreeMap<&str, (u32, u64)> = BTreeMap::new();
    for sample in samples {
        if sample.day < from || sample.day > today {
            continue;
        }
        let index = usize::try_from((sample.day - from).whole_days()).ok();
        if let Some(bucket) = index.and_then(|i| buckets.get_mut(i)) {
            bucket.add(sample);
        }
        all.add(sample);
        let entry = per_model.entry(sample.model.as_str()).or_default();
        entry.0 = entry.0.saturating_add(1);
        entry.1 = entry
            .1
            .saturating_add(sample.input_tokens.saturating_add(sample.output_tokens));
    }

    let mut day = from;
    let mut day_rows = Vec::with_capacity(len);
    for mut bucket in buckets {
        bucket.durations.sort_unstable();
        day_rows.push(DayUsage {
            day,
            tasks: bucket.tasks,
            input_tokens: bucket.input_tokens,
            output_tokens: bucket.output_tokens,
            succeeded: bucket.succeeded,
            failed: bucket.failed,
            cancelled: bucket.cancelled,
            duration_p50_ms: nearest_rank(&bucket.durations, 50),
            duration_p95_ms: nearest_rank(&bucket.durations, 95),
        });
        // `next_day` is only `None` at `Date::MAX`, which can only be the
        // last day of the window, after which the value is unused.
        day = day.next_day().unwrap_or(day);
    }

    all.durations.sort_unstable();
    let decided = u64::from(all.succeeded) + u64::from(all.failed);
    let totals = Totals {
        tasks: all.tasks,
        input_tokens: all.input_tokens,
        output_tokens: all.output_tokens,
        succeeded: all.succeeded,
        failed: all.failed,
        cancelled: all.cancelled,
        success_rate: (decided > 0).then(|| f64::from(all.succeeded) / decided as f64),
        duration_p50_ms: nearest_rank(&all.durations, 50),
        duration_p95_ms: nearest_rank(&all.durations, 95),
    };

    let mut models: Vec<ModelShare> = per_model
        .into_iter()
        .map(|(model, (tasks, tokens))| ModelShare {
            model: model.to_owned(),
            tasks,
            tokens,
            // `all.tasks > 0` whenever a model was seen.
            share: f64::from(tasks) / f64::from(all.tasks.max(1)),
        })
        .collect();
    // The map iterates in name order and the sort is stable, so ties on
    // `tasks` stay sorted by name.
    models.sort_by_key(|m| std::cmp::Reverse(m.tasks));

    UsageReport {
        from,
        to: today,
        days: day_rows,
        totals,
        models,
    }
}

/// How a job's final (or current) state counts toward the success rate.
enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    Neither,
}

fn outcome(state: &str) -> Outcome {
    match state {
        "finished" => Outcome::Succeeded,
        "failed" | "timed_out" | "aborted" => Outcome::Failed,
        "cancelled" => Outcome::Cancelled,
        _ => Outcome::Neither,
    }
}

/// Accumulator for one day or the whole window.
#[derive(Debug, Clone, Default)]
struct Bucket {
    tasks: u32,
    input_tokens: u64,
    output_tokens: u64,
    succeeded: u32,
    failed: u32,
    cancelled: u32,
    durations: Vec<u64>,
}

impl Bucket {
    fn add(&mut self, sample: &JobSample) {
        self.tasks = self.tasks.saturating_add(1);
        self.input_tokens = self.input_tokens.saturating_add(sample.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(sample.output_tokens);
        match outcome(&sample.state) {
            Outcome::Succeeded => self.succeeded = self.succeeded.saturating_add(1),
            Outcome::Failed => self.failed = self.failed.saturating_add(1),
            Outcome::Cancelled => self.cancelled = self.cancelled.saturating_add(1),
            Outcome::Neither => {}
        }
        if let Some(ms) = sample.duration_ms {
            self.durations.push(ms);
        }
    }
}

/// Nearest-rank percentile of ascending `sorted`; `pct` in `0..=100`.
fn nearest_rank(sorted: &[u64], pct: usize) -> Option<u64> {
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Serializes a [`Date`] as `"YYYY-MM-DD"`, so the JSON does not depend on
/// `time`'s own serde representation.
mod ymd {
    use serde::Serializer;
    use time::Date;
    use time::format_description::BorrowedFormatItem;
    use time::macros::format_description;

    const FORMAT: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]");

    pub fn serialize<S: Serializer>(date: &Date, serializer: S) -> Result<S::Ok, S::Error> {
        let text = date.format(FORMAT).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn job(day: Date, model: &str, state: &str, tokens: (u64, u64), ms: Option<u64>) -> JobSample {
        JobSample {
            day,
            model: model.to_owned(),
            state: state.to_owned(),
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            duration_ms: ms,
        }
    }

    fn finished_with(ms: &[u64]) -> Vec<JobSample> {
        ms.iter()
            .map(|&d| job(date!(2026 - 11 - 20), "m", "finished", (0, 0), Some(d)))
            .collect()
    }

    #[test]
    fn empty_input_fills_every_day_with_zeros() {
        let report = summarize(&[], date!(2026 - 11 - 20), 3);
        assert_eq!(report.from, date!(2026 - 11 - 18));
        assert_eq!(report.to, date!(2026 - 11 - 20));
        let days: Vec<Date> = report.days.iter().map(|d| d.day).collect();
        assert_eq!(
            days,
            [
                date!(2026 - 11 - 18),
                date!(2026 - 11 - 19),
                date!(2026 - 11 - 20)
            ]
        );
        for day in &report.days {
            assert_eq!(day.tasks, 0);
            assert_eq!(day.input_tokens + day.output_tokens, 0);
            assert_eq!(day.duration_p50_ms, None);
            assert_eq!(day.duration_p95_ms, None);
        }
        assert_eq!(report.totals.tasks, 0);
        assert_eq!(report.totals.success_rate, None);
        assert_eq!(report.totals.duration_p95_ms, None);
        assert!(report.models.is_empty());
    }

    #[test]
    fn zero_days_means_one_day() {
        let report = summarize(&[], date!(2026 - 11 - 20), 0);
        assert_eq!(report.from, report.to);
        assert_eq!(report.days.len(), 1);
    }

    #[test]
    fn gaps_are_filled_across_month_and_year_ends() {
        let samples = [
            job(date!(2025 - 12 - 30), "m", "finished", (10, 1), Some(5)),
            job(date!(2026 - 01 - 02), "m", "failed", (20, 2), None),
        ];
        let report = summarize(&samples, date!(2026 - 01 - 02), 5);
        let tasks: Vec<(Date, u32)> = report.days.iter().map(|d| (d.day, d.tasks)).collect();
        assert_eq!(
            tasks,
            [
                (date!(2025 - 12 - 29), 0),
                (date!(2025 - 12 - 30), 1),
                (date!(2025 - 12 - 31), 0),
                (date!(2026 - 01 - 01), 0),
                (date!(2026 - 01 - 02), 1),
            ]
        );
        assert_eq!(report.days[1].input_tokens, 10);
        assert_eq!(report.days[4].output_tokens, 2);
        assert_eq!(report.days[4].failed, 1);
    }

    #[test]
    fn samples_outside_the_window_are_ignored() {
        let samples = [
            job(
                date!(2026 - 11 - 17),
                "old",
                "finished",
                (100, 100),
                Some(1),
            ),
            job(date!(2026 - 11 - 18), "in", "finished", (1, 2), Some(7)),
            job(
                date!(2026 - 11 - 21),
                "future",
                "failed",
                (100, 100),
                Some(1),
            ),
        ];
        let report = summarize(&samples, date!(2026 - 11 - 20), 3);
        assert_eq!(report.totals.tasks, 1);
        assert_eq!(report.totals.input_tokens, 1);
        assert_eq!(report.totals.output_tokens, 2);
        assert_eq!(report.totals.failed, 0);
        assert_eq!(report.totals.duration_p50_ms, Some(7));
        assert_eq!(report.models.len(), 1);
        assert_eq!(report.models[0].model, "in");
    }

    #[test]
    fn percentile_of_one_sample_is_that_sample() {
        let report = summarize(&finished_with(&[4200]), date!(2026 - 11 - 20), 1);
        assert_eq!(report.totals.duration_p50_ms, Some(4200));
        assert_eq!(report.totals.duration_p95_ms, Some(4200));
        assert_eq!(report.days[0].duration_p95_ms, Some(4200));
    }

    #[test]
    fn percentile_of_two_samples() {
        let report = summarize(&finished_with(&[900, 100]), date!(2026 - 11 - 20), 1);
        // ceil(0.5 * 2) = rank 1, ceil(0.95 * 2) = rank 2.
        assert_eq!(report.totals.duration_p50_ms, Some(100));
        assert_eq!(report.totals.duration_p95_ms, Some(900));
    }

    #[test]
    fn percentile_of_twenty_samples() {
        // 20, 19, ..., 1 seconds, deliberately unsorted.
        let ms: Vec<u64> = (1..=20).rev().map(|s| s * 1000).collect();
        let report = summarize(&finished_with(&ms), date!(2026 - 11 - 20), 1);
        // ceil(0.5 * 20) = rank 10, ceil(0.95 * 20) = rank 19.
        assert_eq!(report.totals.duration_p50_ms, Some(10_000));
        assert_eq!(report.totals.duration_p95_ms, Some(19_000));
    }

    #[test]
    fn jobs_without_duration_are_left_out_of_percentiles() {
        let mut samples = finished_with(&[300]);
        samples.push(job(date!(2026 - 11 - 20), "m", "running", (0, 0), None));
        samples.push(job(date!(2026 - 11 - 20), "m", "admitted", (0, 0), None));
        let report = summarize(&samples, date!(2026 - 11 - 20), 1);
        assert_eq!(report.totals.tasks, 3);
        assert_eq!(report.totals.duration_p50_ms, Some(300));
        assert_eq!(report.totals.duration_p95_ms, Some(300));
    }

    #[test]
    fn outcomes_and_success_rate() {
        let d = date!(2026 - 11 - 20);
        let samples = [
            job(d, "m", "finished", (0, 0), None),
            job(d, "m", "finished", (0, 0), None),
            job(d, "m", "finished", (0, 0), None),
            job(d, "m", "failed", (0, 0), None),
            job(d, "m", "timed_out", (0, 0), None),
            job(d, "m", "aborted", (0, 0), None),
            job(d, "m", "cancelled", (0, 0), None),
            job(d, "m", "admitted", (0, 0), None),
            job(d, "m", "running", (0, 0), None),
        ];
        let report = summarize(&samples, d, 1);
        let t = &report.totals;
        assert_eq!((t.tasks, t.succeeded, t.failed, t.cancelled), (9, 3, 3, 1));
        assert_eq!(t.success_rate, Some(0.5));
        let day = &report.days[0];
        assert_eq!((day.succeeded, day.failed, day.cancelled), (3, 3, 1));
    }

    #[test]
    fn success_rate_is_none_without_decided_jobs() {
        let d = date!(2026 - 11 - 20);
        let samples = [
            job(d, "m", "cancelled", (0, 0), None),
            job(d, "m", "running", (0, 0), None),
        ];
        let report = summarize(&samples, d, 1);
        assert_eq!(report.totals.tasks, 2);
        assert_eq!(report.totals.success_rate, None);
    }

    #[test]
    fn success_rate_all_failed_is_zero() {
        let d = date!(2026 - 11 - 20);
        let report = summarize(&[job(d, "m", "failed", (0, 0), None)], d, 1);
        assert_eq!(report.totals.success_rate, Some(0.0));
    }

    #[test]
    fn models_sorted_by_tasks_then_name() {
        let d = date!(2026 - 11 - 20);
        let samples = [
            job(d, "zeta", "finished", (1, 1), None),
            job(d, "beta", "finished", (5, 5), None),
            job(d, "alpha", "finished", (2, 0), None),
            job(d, "zeta", "finished", (1, 1), None),
        ];
        let report = summarize(&samples, d, 1);
        let order: Vec<(&str, u32, u64)> = report
            .models
            .iter()
            .map(|m| (m.model.as_str(), m.tasks, m.tokens))
            .collect();
        assert_eq!(order, [("zeta", 2, 4), ("alpha", 1, 2), ("beta", 1, 10)]);
        assert_eq!(report.models[0].share, 0.5);
        assert_eq!(report.models[1].share, 0.25);
        let sum: f64 = report.models.iter().map(|m| m.share).sum();
        assert!((sum - 1.0).abs() < 1e-12);
    }

    #[test]
    fn totals_aggregate_percentiles_over_the_whole_window() {
        let samples = [
            job(date!(2026 - 11 - 19), "m", "finished", (1, 0), Some(10)),
            job(date!(2026 - 11 - 20), "m", "finished", (0, 1), Some(30)),
            job(date!(2026 - 11 - 20), "m", "finished", (0, 1), Some(20)),
        ];
        let report = summarize(&samples, date!(2026 - 11 - 20), 2);
        assert_eq!(report.days[0].duration_p50_ms, Some(10));
        assert_eq!(report.days[1].duration_p50_ms, Some(20));
        assert_eq!(report.days[1].duration_p95_ms, Some(30));
        assert_eq!(report.totals.duration_p50_ms, Some(20));
        assert_eq!(report.totals.duration_p95_ms, Some(30));
        assert_eq!(report.totals.input_tokens, 1);
        assert_eq!(report.totals.output_tokens, 2);
    }

    #[test]
    fn token_sums_saturate() {
        let d = date!(2026 - 11 - 20);
        let samples = [
            job(d, "m", "finished", (u64::MAX, u64::MAX), None),
            job(d, "m", "finished", (1, 1), None),
        ];
        let report = summarize(&samples, d, 1);
        assert_eq!(report.totals.input_tokens, u64::MAX);
        assert_eq!(report.models[0].tokens, u64::MAX);
    }

    #[test]
    fn huge_window_is_clamped_to_the_calendar() {
        let report = summarize(&[], Date::MIN, u32::MAX);
        assert_eq!(report.from, Date::MIN);
        assert_eq!(report.days.len(), 1);
    }

    #[test]
    fn json_shape_is_stable() {
        let d = date!(2026 - 11 - 20);
        let samples = [
            job(d, "claude-opus-4", "finished", (1000, 300), Some(4100)),
            job(d, "claude-opus-4", "failed", (200, 40), Some(9000)),
        ];
        let report = summarize(&samples, d, 2);
        let json = serde_json::to_value(&report).unwrap();
        let expected = serde_json::json!({
            "from": "2026-11-19",
            "to": "2026-11-20",
            "days": [
                { "day": "2026-11-19", "tasks": 0, "input_tokens": 0, "output_tokens": 0,
                  "succeeded": 0, "failed": 0, "cancelled": 0, "duration_p50_ms": null,
                  "duration_p95_ms": null },
                { "day": "2026-11-20", "tasks": 2, "input_tokens": 1200, "output_tokens": 340,
                  "succeeded": 1, "failed": 1, "cancelled": 0, "duration_p50_ms": 4100,
                  "duration_p95_ms": 9000 }
            ],
            "totals": { "tasks": 2, "input_tokens": 1200, "output_tokens": 340,
                        "succeeded": 1, "failed": 1, "cancelled": 0, "success_rate": 0.5,
                        "duration_p50_ms": 4100, "duration_p95_ms": 9000 },
            "models": [ { "model": "claude-opus-4", "tasks": 2, "tokens": 1540, "share": 1.0 } ]
        });
        assert_eq!(json, expected);

        let sample = serde_json::to_value(&samples[0]).unwrap();
        assert_eq!(sample["day"], "2026-11-20");
    }
}
