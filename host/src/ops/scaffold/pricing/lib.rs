//! {{name}}: prices jobs on the market, and decides whether a bid is
//! enough.
//!
//! A job costs `plugin.pricePerKTokens` RUV (1 when unset) for every started
//! thousand of its token budget, and a bid is accepted when it reaches that
//! quote. This starter ignores the market context; the built-in pricing
//! policy raises its price with this node's load and the counterpart's bad
//! reputation.
//!
//! The plugin's own values (`[roles.pricing.config]` in `bundle.toml`)
//! arrive as `plugin.<key>`, the node's settings as `section.key`: as a list
//! to `validate_config` before the plugin is activated, and one key at a
//! time through `settings::get` while it decides. Change the rules in
//! `quote` and `judge_bid`, then add a case for each to `cases.toml`.

wit_bindgen::generate!({ world: "{{world}}", path: "wit" });

use claude_max_market::policy::settings;
use claude_max_market::policy::types::{Job, MarketContext};
use exports::claude_max_market::policy::config_check::Guest as ConfigCheck;
use exports::claude_max_market::policy::pricing::{BidVerdict, Guest as Pricing, Quote};

/// RUV per started thousand tokens of budget.
const PRICE_PER_K_TOKENS: &str = "plugin.pricePerKTokens";
const DEFAULT_PRICE_PER_K_TOKENS: u64 = 1;

/// `plugin.pricePerKTokens` as a number, or the default when it is unset.
fn price_per_k_tokens(raw: Option<&str>) -> Result<u64, String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_PRICE_PER_K_TOKENS);
    };
    raw.parse()
        .map_err(|_| format!("{PRICE_PER_K_TOKENS}: expected a whole number of RUV, got '{raw}'"))
}

/// The price of one job. Whole numbers keep a quote exact and the same on
/// every machine; the multiplication saturates, since a plugin must not
/// trap on any input.
fn quote(job: &Job, per_k_tokens: u64) -> Quote {
    let thousands = job.budget.tokens.div_ceil(1000);
    let price = per_k_tokens.saturating_mul(thousands);
    Quote {
        price,
        explanation: format!(
            "{per_k_tokens} RUV per started 1000 budget tokens × {thousands} = {price} RUV"
        ),
    }
}

fn judge_bid(quote: &Quote, bid: u64) -> BidVerdict {
    if bid >= quote.price {
        BidVerdict::Accept
    } else {
        BidVerdict::Reject(format!(
            "a bid of {bid} RUV is under the quote of {} RUV ({})",
            quote.price, quote.explanation
        ))
    }
}

/// The quote for `job`. The host only activates a plugin whose
/// configuration validated, so a bad value should not reach here; if one
/// does, the job gets a price nobody can pay rather than a guessed one.
fn current_quote(job: &Job) -> Quote {
    match price_per_k_tokens(settings::get(PRICE_PER_K_TOKENS).as_deref()) {
        Ok(per_k_tokens) => quote(job, per_k_tokens),
        Err(problem) => Quote {
            price: u64::MAX,
            explanation: problem,
        },
    }
}

struct Policy;

impl ConfigCheck for Policy {
    fn validate_config(config: Vec<(String, String)>) -> Result<(), Vec<String>> {
        let raw = config
            .iter()
            .find(|(key, _)| key == PRICE_PER_K_TOKENS)
            .map(|(_, value)| value.as_str());
        price_per_k_tokens(raw)
            .map(|_| ())
            .map_err(|problem| vec![problem])
    }
}

impl Pricing for Policy {
    fn quote_job(job: Job, _market: MarketContext) -> Quote {
        current_quote(&job)
    }

    fn consider_bid(job: Job, _market: MarketContext, bid: u64) -> BidVerdict {
        judge_bid(&current_quote(&job), bid)
    }
}

export!(Policy);
