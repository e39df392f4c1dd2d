//! The job's running totals and how the host hears about them.
//!
//! The [`Ledger`] is the one place the totals change. It admits a request
//! only if the request count and the token budget allow it, and then holds a
//! [`Reservation`] of a bound on the request's input plus the `max_tokens`
//! it may produce until the reply is done, so two concurrent requests cannot
//! both squeeze under the budget. When the budget is short it grants a
//! smaller `max_tokens` (the caller rewrites the request) instead of
//! refusing; only when not one output token fits does it refuse. As usage is
//! metered the reservation shrinks to what may still come; when the reply
//! ends it is released.
//!
//! Every change is reported through [`Meter::usage`] while the ledger's lock
//! is held, so the host sees totals in the order they happened and a later
//! write never overwrites a newer one with an older one.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::policy::{JobGrant, Refusal};

/// The job's totals so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metered {
    /// Requests forwarded upstream (retries of one request count once).
    pub requests: u32,
    /// Input tokens, including prompt-cache writes and reads.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Requests refused because the budget or the request cap was used up.
    pub exhausted: u32,
}

impl Metered {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// One request the gateway forwarded, once its reply has ended: what the
/// audit log records for each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestRecord {
    /// `messages` or `count_tokens`.
    pub endpoint: &'static str,
    pub model: String,
    /// The upstream's status (502 when it could not be reached).
    pub status: u16,
    /// The `max_tokens` the client asked for, and the one sent when the
    /// budget clamped it.
    pub max_tokens_asked: Option<u64>,
    pub max_tokens_sent: Option<u64>,
    /// The input bound reserved before forwarding.
    pub input_bound: u64,
    /// Every input token the upstream processed, cache writes and reads
    /// included (what the budget counts).
    pub input_tokens: u64,
    /// Of those, the prompt-cache writes and reads it reported.
    pub cache_creation_tokens: u64,
    pub cache_read_tokens: u64,
    pub output_tokens: u64,
    /// The upstream's `request-id`, for the owner's own records.
    pub request_id: Option<String>,
    /// `anthropic-beta` values the allow-list dropped.
    pub betas_dropped: Vec<String>,
    /// From forwarding the request to the end of its reply.
    pub took: Duration,
}

/// Something the audit log should record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayEvent {
    /// The gateway answered a request itself; nothing reached the upstream.
    Refused { reason: String, status: u16 },
    /// The upstream answered with an error status, sent an `error` event
    /// mid-stream (`status` is then the stream's own, usually 200), or could
    /// not be reached (status 502, `error_type` `connection_error`).
    UpstreamError { status: u16, error_type: String },
    /// A 429/529 (or a failed connection, as status 502) is being retried
    /// after `wait`; `attempt` counts retries from 1.
    Retried {
        status: u16,
        attempt: u32,
        wait: Duration,
    },
}

/// The host's side of metering.
///
/// All methods are called on the gateway's tokio worker threads, and
/// `usage` with the ledger lock held: implementations should be quick (a
/// small SQLite write or a channel send) and must not block on the gateway.
pub trait Meter: Send + Sync + 'static {
    /// The job's new totals; called each time they change, as tokens arrive.
    fn usage(&self, totals: Metered);
    /// Refusals and upstream errors.
    fn event(&self, event: GatewayEvent);
    /// A forwarded request whose reply has ended.
    fn request(&self, record: RequestRecord);
}

struct State {
    totals: Metered,
    /// Tokens held by requests in flight, beyond what they have used so far.
    reserved: u64,
}

pub(crate) struct Ledger {
    grant: JobGrant,
    meter: Arc<dyn Meter>,
    state: Mutex<State>,
}

impl Ledger {
    pub fn new(grant: JobGrant, meter: Arc<dyn Meter>) -> Arc<Ledger> {
        Arc::new(Ledger {
            grant,
            meter,
            state: Mutex::new(State {
                totals: Metered::default(),
                reserved: 0,
            }),
        })
    }

    pub fn grant(&self) -> &JobGrant {
        &self.grant
    }

    pub fn meter(&self) -> &dyn Meter {
        self.meter.as_ref()
    }

    pub fn totals(&self) -> Metered {
        self.lock().totals
    }

    /// A panic elsewhere while holding the lock leaves plain numbers behind,
    /// still the best record there is, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tokens neither used nor held by requests in flight.
    fn room(&self, state: &State) -> u64 {
        self.grant
            .budget_tokens
            .saturating_sub(state.totals.total_tokens())
            .saturating_sub(state.reserved)
    }

    /// Whether a message with input of at most `input_bound` fits with its
    /// whole `max_tokens`: then no exact count is needed to admit it.
    pub fn fits(&self, input_bound: u64, max_tokens: u64) -> bool {
        let state = self.lock();
        input_bound.saturating_add(max_tokens) <= self.room(&state)
    }

    /// Refuses at once when the request cap is reached or no token is left,
    /// before the gateway spends a token count on the request.
    pub fn check_open(&self) -> Result<(), Refusal> {
        let mut state = self.lock();
        self.refuse_if_spent(&mut state, 1)
    }

    fn refuse_if_spent(&self, state: &mut State, needed: u64) -> Result<(), Refusal> {
        let grant = &self.grant;
        let refusal = if state.totals.requests >= grant.max_requests {
            format!(
                "job {} has made {} of its {} allowed requests; no more are allowed",
                grant.job_id, state.totals.requests, grant.max_requests
            )
        } else if self.room(state) < needed {
            let used = state.totals.total_tokens();
            let in_flight = if state.reserved > 0 {
                format!(" and {} are held by requests in progress", state.reserved)
            } else {
                String::new()
            };
            format!(
                "job {} has used {used} of its {}-token budget{in_flight}; not enough is left \
                 for this request's input and any output",
                grant.job_id, grant.budget_tokens
            )
        } else {
            return Ok(());
        };
        state.totals.exhausted += 1;
        self.meter.usage(state.totals);
        Err(Refusal::forbidden(refusal))
    }

    /// Counts a message request and reserves `input_bound` plus the
    /// `max_tokens` it may have: what it asked for, or less when that is
    /// all the budget still holds. Returns the reservation; its
    /// [`Reservation::max_tokens`] is what must be sent.
    pub fn admit_message(
        self: &Arc<Self>,
        input_bound: u64,
        asked: u64,
    ) -> Result<Reservation, Refusal> {
        let mut state = self.lock();
        self.refuse_if_spent(&mut state, input_bound.saturating_add(1))?;
        let max_tokens = asked.min(self.room(&state) - input_bound);
        Ok(self.reserve(&mut state, input_bound, max_tokens))
    }

    /// Counts a token-count request: it uses the request cap, never tokens.
    pub fn admit_count(self: &Arc<Self>) -> Result<Reservation, Refusal> {
        let mut state = self.lock();
        self.refuse_if_spent(&mut state, 0)?;
        Ok(self.reserve(&mut state, 0, 0))
    }

    fn reserve(
        self: &Arc<Self>,
        state: &mut State,
        input_bound: u64,
        max_tokens: u64,
    ) -> Reservation {
        state.totals.requests += 1;
        state.reserved += input_bound + max_tokens;
        self.meter.usage(state.totals);
        Reservation {
            ledger: Arc::clone(self),
            input_bound,
            max_tokens,
            input: None,
            output: 0,
            held: input_bound + max_tokens,
            released: false,
        }
    }
}

/// One admitted request's claim on the budget. Dropping it releases
/// whatever is still reserved; metered usage stays in the totals.
pub(crate) struct Reservation {
    ledger: Arc<Ledger>,
    input_bound: u64,
    max_tokens: u64,
    /// The input the upstream reported, once it has.
    input: Option<u64>,
    output: u64,
    held: u64,
    /// The reply is over: later usage still counts, but nothing is held.
    released: bool,
}

impl Reservation {
    /// The `max_tokens` this request may send.
    pub fn max_tokens(&self) -> u64 {
        self.max_tokens
    }

    pub fn input_bound(&self) -> u64 {
        self.input_bound
    }

    /// What the upstream reported so far: input and output tokens.
    pub fn used(&self) -> (u64, u64) {
        (self.input.unwrap_or(0), self.output)
    }

    /// Replaces this request's usage with what the upstream reported so far
    /// (its counts are cumulative per message, so they replace, not add).
    /// `None` leaves that count as it was.
    pub fn record(&mut self, input: Option<u64>, output: Option<u64>) {
        self.set(input.or(self.input), output.unwrap_or(self.output));
    }

    /// Charges the worst case: a successful reply ended before its final
    /// usage arrived, and the upstream may have taken all the input it was
    /// bounded by and generated up to `max_tokens`. Only this keeps a
    /// client from dodging the budget by hanging up early.
    pub fn charge_reserved(&mut self) {
        let input = self.input.unwrap_or(self.input_bound);
        self.set(Some(input), self.output.max(self.max_tokens));
    }

    /// Charges what was seen of a reply the gateway cut when the job ended:
    /// its output so far, and its input as reported or else as bounded (the
    /// upstream took the input whether or not it said so yet).
    pub fn charge_seen(&mut self) {
        let input = self.input.unwrap_or(self.input_bound);
        self.set(Some(input), self.output);
    }

    fn set(&mut self, input: Option<u64>, output: u64) {
        let mut state = self.ledger.lock();
        let before = state.totals;
        let totals = &mut state.totals;
        let (old_input, new_input) = (self.input.unwrap_or(0), input.unwrap_or(0));
        totals.input_tokens = totals.input_tokens.saturating_sub(old_input) + new_input;
        totals.output_tokens = totals.output_tokens.saturating_sub(self.output) + output;
        let held = if self.released {
            0
        } else {
            let input_held = if input.is_some() { 0 } else { self.input_bound };
            input_held + self.max_tokens.saturating_sub(output)
        };
        state.reserved = state.reserved.saturating_sub(self.held) + held;
        self.input = input;
        self.output = output;
        self.held = held;
        if state.totals != before {
            self.ledger.meter.usage(state.totals);
        }
    }

    /// Gives back what is still held, once the reply is over.
    pub fn release(&mut self) {
        let mut state = self.ledger.lock();
        state.reserved = state.reserved.saturating_sub(self.held);
        self.held = 0;
        self.released = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_upstream::RecordingMeter;
    use super::*;

    fn ledger(budget_tokens: u64, max_requests: u32) -> (Arc<Ledger>, Arc<RecordingMeter>) {
        let meter = Arc::new(RecordingMeter::default());
        let grant = JobGrant {
            job_id: "job-7".into(),
            allowed_models: vec!["m".into()],
            budget_tokens,
            max_requests,
            egress: false,
            allowed_betas: Vec::new(),
        };
        (Ledger::new(grant, meter.clone()), meter)
    }

    fn reserved(ledger: &Ledger) -> u64 {
        ledger.lock().reserved
    }

    #[test]
    fn admission_counts_the_request_and_reserves_input_and_output() {
        let (ledger, meter) = ledger(1000, 10);
        let reservation = ledger.admit_message(100, 300).expect("admitted");
        assert_eq!(reservation.max_tokens(), 300);
        assert_eq!(ledger.totals().requests, 1);
        assert_eq!(reserved(&ledger), 400);
        assert_eq!(meter.usages().last().map(|t| t.requests), Some(1));
        drop(reservation);
        assert_eq!(reserved(&ledger), 0);
        assert_eq!(
            ledger.totals().requests,
            1,
            "a forwarded request stays counted"
        );
    }

    #[test]
    fn usage_replaces_instead_of_adding_and_shrinks_the_reservation() {
        let (ledger, meter) = ledger(1000, 10);
        let mut r = ledger.admit_message(100, 300).expect("admitted");
        r.record(Some(40), Some(1));
        assert_eq!(
            reserved(&ledger),
            299,
            "the input bound is freed once input is known"
        );
        r.record(None, Some(15));
        r.record(None, Some(120));
        let totals = ledger.totals();
        assert_eq!((totals.input_tokens, totals.output_tokens), (40, 120));
        assert_eq!(reserved(&ledger), 180);
        r.record(None, Some(120));
        assert_eq!(
            meter.usages().len(),
            4,
            "admit + three changes; an unchanged record is silent"
        );
        drop(r);
        assert_eq!(reserved(&ledger), 0);
        assert_eq!(ledger.totals().total_tokens(), 160);
    }

    #[test]
    fn a_short_budget_clamps_max_tokens_and_only_nothing_left_refuses() {
        let (ledger, meter) = ledger(1000, 10);
        let mut first = ledger.admit_message(100, 500).expect("fits");
        assert!(
            !ledger.fits(100, 500),
            "400 are left with the first in flight"
        );
        let second = ledger
            .admit_message(100, 500)
            .expect("clamped, not refused");
        assert_eq!(second.max_tokens(), 300);
        let refusal = ledger.admit_message(1, 1).err().expect("nothing left");
        assert!(
            refusal.message.contains("held by requests in progress"),
            "{}",
            refusal.message
        );
        assert_eq!(meter.usages().last().map(|t| t.exhausted), Some(1));
        first.record(Some(50), Some(100));
        drop(first);
        drop(second);
        // 150 used, nothing held: 850 left.
        assert_eq!(ledger.admit_message(50, 10_000).unwrap().max_tokens(), 800);
    }

    #[test]
    fn request_cap_is_enforced_and_counts_reach_it() {
        let (ledger, _) = ledger(1000, 2);
        drop(ledger.admit_count().expect("1"));
        drop(ledger.admit_message(1, 1).expect("2"));
        let refusal = ledger.admit_count().err().expect("cap reached");
        assert!(
            refusal.message.contains("2 of its 2"),
            "{}",
            refusal.message
        );
        assert_eq!(
            ledger.totals().total_tokens(),
            0,
            "a count spends no tokens"
        );
        assert!(ledger.check_open().is_err());
    }

    #[test]
    fn charging_the_reservation_counts_the_whole_bound_and_max_tokens() {
        let (ledger, _) = ledger(1000, 10);
        let mut r = ledger.admit_message(200, 300).expect("admitted");
        r.record(None, Some(1));
        r.charge_reserved();
        drop(r);
        let totals = ledger.totals();
        assert_eq!((totals.input_tokens, totals.output_tokens), (200, 300));
        assert_eq!(reserved(&ledger), 0);
    }
}
