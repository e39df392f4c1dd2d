//! The default pricing policy: what a job costs on the market, and whether a
//! bid for it is enough.
//!
//! The list price is `market.basePrice` plus `market.pricePerKiloToken` for
//! every started thousand of the job's token budget. It is then raised with
//! this node's load (up to double when every slot is busy) and with the
//! counterpart's bad reputation (up to half again for the worst). As the
//! seller, a bid is accepted when it reaches the quote; as the buyer (this
//! node's own job on the market), a seller's price is accepted up to list
//! price × (1 + its load) × (1 + its reputation). The arithmetic is in plain functions
//! and uses whole numbers, so a quote is exact and the same on every machine.

cmm_policy_sdk::bindings!("pricing-policy");

use cmm_policy_sdk::{Cached, Reader, Settings};

use claude_max_market::policy::settings;
use claude_max_market::policy::types::{Job, JobSource, MarketContext};
use exports::claude_max_market::policy::config_check::Guest as ConfigCheck;
use exports::claude_max_market::policy::pricing::{BidVerdict, Guest as Pricing, Quote};

const DEFAULT_BASE_PRICE: u64 = 10;
const DEFAULT_PRICE_PER_KILO_TOKEN: u64 = 2;

/// The settings this policy reads, with the documented defaults filled in.
#[derive(Debug, Clone, Copy)]
struct Rates {
    base: u64,
    per_kilo_token: u64,
}

impl Settings for Rates {
    fn read(r: &mut Reader<'_>) -> Rates {
        Rates {
            base: r.count("market.basePrice", DEFAULT_BASE_PRICE),
            per_kilo_token: r.count("market.pricePerKiloToken", DEFAULT_PRICE_PER_KILO_TOKEN),
        }
    }
}

/// How a price was reached. Fractions are kept in thousandths so the
/// arithmetic stays in integers: `f64` would turn 100 × 1.1 into
/// 110.00000000000001 and round it up to 111.
struct Breakdown {
    kilo_tokens: u64,
    list_price: u64,
    load_thousandths: u64,
    reputation_thousandths: u64,
    price: u64,
}

/// A fraction from the host as thousandths within 0..=1000. `NaN` has no
/// place in the range, so it becomes `if_nan`, which callers choose to be
/// the value that prices highest.
fn thousandths(fraction: f64, if_nan: u64) -> u64 {
    if fraction.is_nan() {
        return if_nan;
    }
    // In range after the clamp, so the cast cannot truncate.
    (fraction.clamp(0.0, 1.0) * 1000.0).round() as u64
}

/// The price of a job with a budget of `tokens` at the given load and reputation:
/// list price × (1 + load) × (1.5 − reputation / 2), rounded up.
fn price(rates: Rates, tokens: u64, load: f64, reputation: f64) -> Breakdown {
    let kilo_tokens = tokens.div_ceil(1000);
    let list_price = rates
        .base
        .saturating_add(kilo_tokens.saturating_mul(rates.per_kilo_token));
    let load_thousandths = thousandths(load, 1000);
    let reputation_thousandths = thousandths(reputation, 0);
    // (1000 + load) / 1000 × (3000 − reputation) / 2000, in one division so
    // only the final result is rounded. u128 holds u64::MAX × 2000 × 3000.
    let scaled = u128::from(list_price)
        * u128::from(1000 + load_thousandths)
        * u128::from(3000 - reputation_thousandths);
    let price = u64::try_from(scaled.div_ceil(2_000_000)).unwrap_or(u64::MAX);
    Breakdown {
        kilo_tokens,
        list_price,
        load_thousandths,
        reputation_thousandths,
        price,
    }
}

/// The breakdown in words, for the owner and the counterpart.
fn explain(rates: Rates, b: &Breakdown) -> String {
    // The factors in ten-thousandths: the reputation factor can end in a half
    // thousandth, and printing it exactly avoids a rounding puzzle. One
    // format call, since this runs for every quote.
    let load_factor = (1000 + b.load_thousandths) * 10;
    let reputation_factor = (3000 - b.reputation_thousandths) * 5;
    format!(
        "{} RUV base + {} × {} RUV per started 1000 budget tokens = {} RUV; \
         × {}.{:04} for load {}.{:03}; × {}.{:04} for counterpart reputation {}.{:03}; \
         = {} RUV (rounded up)",
        rates.base,
        b.kilo_tokens,
        rates.per_kilo_token,
        b.list_price,
        load_factor / 10_000,
        load_factor % 10_000,
        b.load_thousandths / 1000,
        b.load_thousandths % 1000,
        reputation_factor / 10_000,
        reputation_factor % 10_000,
        b.reputation_thousandths / 1000,
        b.reputation_thousandths % 1000,
        b.price
    )
}

fn quote_for(rates: Rates, job: &impl JobFacts, market: &MarketContext) -> Quote {
    let b = price(rates, job.budget().tokens, market.load, market.reputation);
    Quote {
        price: b.price,
        explanation: explain(rates, &b),
    }
}

/// The most this node pays, as the buyer, to a seller at `load` with
/// `reputation`: list price × (1 + load) × (1 + reputation), rounded down.
/// A neutral seller at no load may ask one and a half times the list price;
/// a seller with the worst reputation, no more than the list price.
fn ceiling(rates: Rates, tokens: u64, load: f64, reputation: f64) -> u64 {
    let list = price(rates, tokens, 0.0, 1.0).list_price;
    let scaled = u128::from(list)
        * u128::from(1000 + thousandths(load, 0))
        * u128::from(1000 + thousandths(reputation, 0));
    u64::try_from(scaled / 1_000_000).unwrap_or(u64::MAX)
}

fn judge_offer(
    rates: Rates,
    job: &impl JobFacts,
    market: &MarketContext,
    asked: u64,
) -> BidVerdict {
    let most = ceiling(rates, job.budget().tokens, market.load, market.reputation);
    if asked <= most {
        BidVerdict::Accept
    } else {
        BidVerdict::Reject(format!(
            "{asked} RUV is over the {most} RUV this node pays for the job \
             (list price × (1 + load {:.3}) × (1 + seller reputation {:.3}))",
            market.load, market.reputation
        ))
    }
}

fn judge_bid(quote: &Quote, bid: u64) -> BidVerdict {
    if bid >= quote.price {
        BidVerdict::Accept
    } else {
        BidVerdict::Reject(format!(
            "a bid of {bid} RUV is under this node's quote of {} RUV ({})",
            quote.price, quote.explanation
        ))
    }
}

static RATES: Cached<Rates> = Cached::new();

/// The rates in force. The host only activates a plugin whose configuration
/// validated, so an error here means the settings changed underneath us.
fn current_rates() -> Result<Rates, String> {
    RATES
        .get(settings::get)
        .clone()
        .map_err(|problems| format!("bad configuration: {}", problems.join("; ")))
}

struct PricingPolicy;

impl ConfigCheck for PricingPolicy {
    fn validate_config(config: Vec<(String, String)>) -> Result<(), Vec<String>> {
        Rates::validate(&config)
    }
}

impl Pricing for PricingPolicy {
    /// Always an opinion: the default policy prices every job.
    fn quote_job(job: &Job, market: MarketContext) -> Option<Quote> {
        Some(match current_rates() {
            Ok(rates) => quote_for(rates, job, &market),
            // Nobody can pay u64::MAX, so a misconfigured node sells nothing
            // instead of selling at a price nobody chose.
            Err(explanation) => Quote {
                price: u64::MAX,
                explanation,
            },
        })
    }

    /// As the seller (a market job), a bid must reach the quote. As the
    /// buyer (this node's own job, sent to the market), the seller's price
    /// must be within the buyer's ceiling.
    fn consider_bid(job: &Job, market: MarketContext, bid: u64) -> BidVerdict {
        match (current_rates(), job.source()) {
            (Ok(rates), JobSource::Market) => judge_bid(&quote_for(rates, job, &market), bid),
            (Ok(rates), JobSource::Local) => judge_offer(rates, job, &market, bid),
            (Err(reason), _) => BidVerdict::Reject(reason),
        }
    }
}

export!(PricingPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    const FIXED: Rates = Rates {
        base: 100,
        per_kilo_token: 50,
    };

    #[test]
    fn unset_keys_take_defaults_and_bad_ones_are_all_reported() {
        let defaults = Rates::from_pairs(&[]).unwrap();
        assert_eq!(defaults.base, DEFAULT_BASE_PRICE);
        let problems = Rates::from_lookup(&|_| Some("abc".into())).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert_eq!(
            problems[0],
            "market.basePrice: expected a whole number, got 'abc'"
        );
    }

    #[test]
    fn best_reputation_on_an_idle_node_pays_the_list_price() {
        let b = price(FIXED, 4096, 0.0, 1.0);
        assert_eq!((b.kilo_tokens, b.list_price, b.price), (5, 350, 350));
    }

    #[test]
    fn load_and_poor_reputation_raise_the_price_exactly() {
        // 300 × 1.25 × 1.25 = 468.75, rounded up.
        assert_eq!(price(FIXED, 4000, 0.25, 0.5).price, 469);
        // Full load, worst reputation: 300 × 2 × 1.5.
        assert_eq!(price(FIXED, 4000, 1.0, 0.0).price, 900);
    }

    #[test]
    fn out_of_range_inputs_price_high_and_never_overflow() {
        assert_eq!(price(FIXED, 4000, f64::NAN, f64::NAN).price, 900);
        assert_eq!(price(FIXED, 4000, 7.0, -3.0).price, 900);
        let huge = Rates {
            base: u64::MAX,
            per_kilo_token: u64::MAX,
        };
        assert_eq!(price(huge, u64::MAX, 1.0, 0.0).price, u64::MAX);
    }

    #[test]
    fn explanation_shows_each_step() {
        let b = price(FIXED, 4000, 0.25, 0.5);
        let text = explain(FIXED, &b);
        assert!(text.contains("= 300 RUV"), "{text}");
        assert!(text.contains("× 1.2500 for load 0.250"), "{text}");
        assert!(text.ends_with("= 469 RUV (rounded up)"), "{text}");
    }

    #[test]
    fn a_bid_must_reach_the_quote() {
        let quote = Quote {
            price: 469,
            explanation: String::new(),
        };
        assert!(matches!(judge_bid(&quote, 469), BidVerdict::Accept));
        assert!(matches!(judge_bid(&quote, 468), BidVerdict::Reject(r) if r.contains("469 RUV")));
    }

    #[test]
    fn a_buyer_pays_more_to_busier_and_better_sellers() {
        // List price 300 (a budget of 4000 tokens).
        assert_eq!(ceiling(FIXED, 4000, 0.0, 0.5), 450);
        assert_eq!(ceiling(FIXED, 4000, 0.0, 0.0), 300);
        assert_eq!(ceiling(FIXED, 4000, 1.0, 1.0), 1200);
        assert_eq!(ceiling(FIXED, 4000, f64::NAN, f64::NAN), 300);
    }
}
