//! The `anthropic-ratelimit-*` headers: a fixed 60-second window of counted
//! requests and tokens, and the RFC 3339 reset times. The limits are only
//! advertised, never enforced; they give clients that read the headers
//! realistic, changing values.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const REQUESTS_LIMIT: u64 = 4_000;
const INPUT_TOKENS_LIMIT: u64 = 2_000_000;
const OUTPUT_TOKENS_LIMIT: u64 = 400_000;
const RATE_WINDOW: Duration = Duration::from_secs(60);

pub(crate) type Headers = Vec<(&'static str, String)>;

/// The rate-limit header names, per limit: limit, remaining, reset.
const RATE_HEADER_NAMES: [[&str; 3]; 4] = [
    [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ],
    [
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ],
    [
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ],
    [
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ],
];

/// A fixed 60-second window of counted requests and tokens, opened by the
/// first request after the previous window closed.
#[derive(Default)]
pub(crate) struct RateWindow {
    /// When the current window closes, as a monotonic and as a wall-clock time.
    closes: Option<(Instant, SystemTime)>,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl RateWindow {
    /// Counts one Messages request and returns the headers to answer it with.
    pub(crate) fn count(&mut self, input_tokens: u64, output_tokens: u64) -> Headers {
        let reset_at = self.open();
        self.requests += 1;
        self.input_tokens += input_tokens;
        self.output_tokens += output_tokens;
        self.headers(reset_at)
    }

    /// The headers for an answer that uses none of these limits (a token
    /// count, which the API limits separately).
    pub(crate) fn peek(&mut self) -> Headers {
        let reset_at = self.open();
        self.headers(reset_at)
    }

    /// Starts a new window if the current one has closed; returns when the
    /// window in force closes.
    fn open(&mut self) -> SystemTime {
        let now = Instant::now();
        match self.closes {
            Some((closes, reset_at)) if now < closes => reset_at,
            _ => {
                let reset_at = SystemTime::now() + RATE_WINDOW;
                *self = RateWindow {
                    closes: Some((now + RATE_WINDOW, reset_at)),
                    ..RateWindow::default()
                };
                reset_at
            }
        }
    }

    fn headers(&self, reset_at: SystemTime) -> Headers {
        let input_left = INPUT_TOKENS_LIMIT.saturating_sub(self.input_tokens);
        let output_left = OUTPUT_TOKENS_LIMIT.saturating_sub(self.output_tokens);
        // The `tokens-*` headers describe whichever token limit is closest to
        // running out.
        let tokens = if output_left <= input_left {
            (OUTPUT_TOKENS_LIMIT, output_left)
        } else {
            (INPUT_TOKENS_LIMIT, input_left)
        };
        let values = [
            (REQUESTS_LIMIT, REQUESTS_LIMIT.saturating_sub(self.requests)),
            tokens,
            (INPUT_TOKENS_LIMIT, input_left),
            (OUTPUT_TOKENS_LIMIT, output_left),
        ];
        let reset = rfc3339(reset_at);
        RATE_HEADER_NAMES
            .iter()
            .zip(values)
            .flat_map(|([limit_name, left_name, reset_name], (limit, left))| {
                [
                    (*limit_name, limit.to_string()),
                    (*left_name, left.to_string()),
                    (*reset_name, reset.clone()),
                ]
            })
            .collect()
    }
}

/// `time` as an RFC 3339 UTC timestamp with second precision, the format of
/// the `anthropic-ratelimit-*-reset` headers.
fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01, computed in
/// 400-year eras (each era is exactly 146,097 days) so no calendar table or
/// date crate is needed. Only non-negative day counts occur here.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that the leap day ends each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
