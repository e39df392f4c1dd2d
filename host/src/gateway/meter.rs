//! The job's running totals and how the host hears about them.
//!
//! The [`Ledger`] is the one place the totals change. It admits a request
//! only if the request count and the token budget allow it, and then holds a
//! [`Reservation`] of the request's `max_tokens` until the reply is done, so
//! two concurrent requests cannot both squeeze under the budget. As usage is
//! metered the reservation shrinks to the output still to come; when the
//! reply ends it is released.
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
}

impl Metered {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
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
/// Both methods are called on the gateway's tokio worker threads, and
/// `usage` with the ledger lock held: implementations should be quick (a
/// small SQLite write or a channel send) and must not block on the gateway.
pub trait Meter: Send + Sync + 'static {
    /// The job's new totals; called each time they change, as tokens arrive.
    fn usage(&self, totals: Metered);
    /// Refusals and upstream errors.
    fn event(&self, event: GatewayEvent);
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

    /// Counts the request and reserves its `max_tokens`, or refuses it if the
    /// request cap is reached or the budget could be overrun.
    pub fn admit(self: &Arc<Self>, max_tokens: u64) -> Result<Reservation, Refusal> {
        let mut state = self.lock();
        let grant = &self.grant;
        if state.totals.requests >= grant.max_requests {
            return Err(Refusal::forbidden(format!(
                "job {} has made {} of its {} allowed requests; no more are allowed",
                grant.job_id, state.totals.requests, grant.max_requests
            )));
        }
        let budget = u64::from(grant.max_tokens);
        let used = state.totals.total_tokens();
        let committed = used.saturating_add(state.reserved);
        if committed.saturating_add(max_tokens) > budget {
            let in_flight = if state.reserved > 0 {
                format!(
                    " and {} are reserved by requests in progress",
                    state.reserved
                )
            } else {
                String::new()
            };
            return Err(Refusal::forbidden(format!(
                "job {} has used {used} of its {budget}-token budget{in_flight}; max_tokens {max_tokens} could exceed it, so ask for at most {}",
                grant.job_id,
                budget.saturating_sub(committed)
            )));
        }
        state.totals.requests += 1;
        state.reserved += max_tokens;
        self.meter.usage(state.totals);
        Ok(Reservation {
            ledger: Arc::clone(self),
            max_tokens,
            input: 0,
            output: 0,
            held: max_tokens,
            released: false,
        })
    }
}

/// One admitted request's claim on the budget. Dropping it releases
/// whatever is still reserved; metered usage stays in the totals.
pub(crate) struct Reservation {
    ledger: Arc<Ledger>,
    max_tokens: u64,
    input: u64,
    output: u64,
    held: u64,
    /// The reply is over: later usage still counts, but nothing is held.
    released: bool,
}

impl Reservation {
    /// Replaces this request's usage with what the upstream reported so far
    /// (its counts are cumulative per message, so they replace, not add).
    /// `None` leaves that count as it was.
    pub fn record(&mut self, input: Option<u64>, output: Option<u64>) {
        self.set(input.unwrap_or(self.input), output.unwrap_or(self.output));
    }

    /// Charges the whole reservation as output: used when a successful reply
    /// ended before its final usage arrived, since the upstream may have
    /// generated up to `max_tokens` and only a worst-case charge keeps a
    /// client from dodging the budget by hanging up early.
    pub fn charge_reserved(&mut self) {
        self.set(self.input, self.output.max(self.max_tokens));
    }

    fn set(&mut self, input: u64, output: u64) {
        let mut state = self.ledger.lock();
        let before = state.totals;
        let totals = &mut state.totals;
        totals.input_tokens = totals.input_tokens.saturating_sub(self.input) + input;
        totals.output_tokens = totals.output_tokens.saturating_sub(self.output) + output;
        let held = if self.released {
            0
        } else {
            self.max_tokens.saturating_sub(output)
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

    fn ledger(max_tokens: u32, max_requests: u32) -> (Arc<Ledger>, Arc<RecordingMeter>) {
        let meter = Arc::new(RecordingMeter::default());
        let grant = JobGrant {
            job_id: "job-7".into(),
            allowed_models: vec!["m".into()],
            max_tokens,
            max_requests,
        };
        (Ledger::new(grant, meter.clone()), meter)
    }

    fn reserved(ledger: &Ledger) -> u64 {
        ledger.lock().reserved
    }

    #[test]
    fn admission_counts_the_request_and_reserves_max_tokens() {
        let (ledger, meter) = ledger(1000, 10);
        let reservation = ledger.admit(300).expect("admitted");
        assert_eq!(ledger.totals().requests, 1);
        assert_eq!(reserved(&ledger), 300);
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
        let mut r = ledger.admit(300).expect("admitted");
        r.record(Some(40), Some(1));
        assert_eq!(reserved(&ledger), 299);
        r.record(None, Some(15));
        r.record(None, Some(120));
        let totals = ledger.totals();
        assert_eq!((totals.input_tokens, totals.output_tokens), (40, 120));
        assert_eq!(reserved(&ledger), 180);
        r.record(None, Some(120));
        let calls = meter.usages().len();
        assert_eq!(
            calls, 4,
            "admit + three changes; an unchanged record is silent"
        );
        drop(r);
        assert_eq!(reserved(&ledger), 0);
        assert_eq!(ledger.totals().total_tokens(), 160);
    }

    #[test]
    fn budget_counts_usage_and_reservations_of_requests_in_flight() {
        let (ledger, _) = ledger(1000, 10);
        let mut first = ledger.admit(600).expect("first fits");
        let refusal = ledger
            .admit(500)
            .err()
            .expect("would overrun with the reservation");
        assert!(refusal.message.contains("reserved"), "{}", refusal.message);
        assert!(
            refusal.message.contains("at most 400"),
            "{}",
            refusal.message
        );
        first.record(Some(100), Some(200));
        drop(first);
        // 300 used, nothing reserved: 700 left.
        assert!(ledger.admit(701).is_err());
        assert!(ledger.admit(700).is_ok());
    }

    #[test]
    fn request_cap_is_enforced() {
        let (ledger, _) = ledger(1000, 2);
        drop(ledger.admit(1).expect("1"));
        drop(ledger.admit(1).expect("2"));
        let refusal = ledger.admit(1).err().expect("cap reached");
        assert!(
            refusal.message.contains("2 of its 2"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn charging_the_reservation_counts_max_tokens_as_output() {
        let (ledger, _) = ledger(1000, 10);
        let mut r = ledger.admit(300).expect("admitted");
        r.record(Some(50), Some(1));
        r.charge_reserved();
        drop(r);
        assert_eq!(ledger.totals().output_tokens, 300);
        assert_eq!(ledger.totals().input_tokens, 50);
        assert_eq!(reserved(&ledger), 0);
    }
}
