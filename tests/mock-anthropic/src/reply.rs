//! The default reply and the token formulas behind its `usage`.
//!
//! Tests compare the host's metering with what the mock reported, so the
//! figures only need to be deterministic and easy to recompute by hand, not
//! close to a real tokenizer:
//!
//! - `input_tokens = ceil(prompt_chars / 4) + 8`, where `prompt_chars` counts
//!   the Unicode scalar values of the system prompt plus every message's
//!   text (a string content counts whole; a block list counts its `text`
//!   blocks; other blocks count nothing). The 8 stands for the per-request
//!   framing overhead a real tokenizer adds.
//! - The reply text is `"Mock reply to: "` followed by the first 40
//!   characters of the last user message's text.
//! - `output_tokens = words(reply) + 1`, words being whitespace-separated.
//! - If that exceeds `max_tokens`, the reply is cut after its first
//!   `max_tokens - 1` words, `output_tokens = max_tokens` and the stop reason
//!   is `max_tokens`; otherwise it is `end_turn`.

use crate::validate::{MessagesRequest, Role};
use crate::wire::StopReason;

/// Fixed per-request overhead added to the character-based estimate.
const INPUT_OVERHEAD: u64 = 8;
/// How much of the last user message the reply quotes.
const QUOTED_CHARS: usize = 40;

/// What the mock answers with, whichever way it is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub stop_reason: StopReason,
}

pub(crate) fn input_tokens(req: &MessagesRequest) -> u64 {
    let chars = req.system.chars().count()
        + req
            .messages
            .iter()
            .map(|(_, text)| text.chars().count())
            .sum::<usize>();
    (chars as u64).div_ceil(4) + INPUT_OVERHEAD
}

/// The default reply's text before any `max_tokens` cut.
pub(crate) fn reply_text(req: &MessagesRequest) -> String {
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|(role, _)| *role == Role::User)
        .map_or("", |(_, text)| text.as_str());
    let quoted: String = last_user.chars().take(QUOTED_CHARS).collect();
    format!("Mock reply to: {quoted}")
}

pub(crate) fn default_reply(req: &MessagesRequest) -> Reply {
    let full = reply_text(req);
    let output_tokens = full.split_whitespace().count() as u64 + 1;
    let input_tokens = input_tokens(req);
    if output_tokens <= req.max_tokens {
        return Reply {
            text: full,
            input_tokens,
            output_tokens,
            stop_reason: StopReason::EndTurn,
        };
    }
    Reply {
        text: first_words(&full, req.max_tokens - 1).to_owned(),
        input_tokens,
        output_tokens: req.max_tokens,
        stop_reason: StopReason::MaxTokens,
    }
}

/// The prefix of `text` that ends with its `n`th word (empty for 0), keeping
/// the original spacing so the cut reply is a prefix of the full one.
fn first_words(text: &str, n: u64) -> &str {
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                seen += 1;
                if seen == n {
                    return &text[..i];
                }
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    if n == 0 { "" } else { text }
}

/// Splits `text` into the pieces sent as successive `text_delta`s: one word
/// with its trailing whitespace per piece, so that several deltas arrive for
/// any multi-word reply and they concatenate back to `text` exactly.
pub(crate) fn delta_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut prev_space = false;
    for (i, c) in text.char_indices() {
        if prev_space && !c.is_whitespace() {
            pieces.push(&text[start..i]);
            start = i;
        }
        prev_space = c.is_whitespace();
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max_tokens: u64, system: &str, messages: &[(Role, &str)]) -> MessagesRequest {
        MessagesRequest {
            model: "m".into(),
            max_tokens,
            stream: false,
            system: system.into(),
            messages: messages
                .iter()
                .map(|(r, t)| (*r, (*t).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn formulas_hold() {
        // 3 + 5 + 4 = 12 chars -> 3 tokens, + 8 overhead.
        let req = request(
            100,
            "sys",
            &[(Role::User, "hello"), (Role::Assistant, "okay")],
        );
        let reply = default_reply(&req);
        assert_eq!(reply.input_tokens, 11);
        assert_eq!(reply.text, "Mock reply to: hello");
        assert_eq!(reply.output_tokens, 5);
        assert_eq!(reply.stop_reason, StopReason::EndTurn);
    }

    #[test]
    fn quotes_the_last_user_message_and_counts_chars_not_bytes() {
        let long = "é".repeat(50);
        let req = request(100, "", &[(Role::User, "first"), (Role::User, &long)]);
        let reply = default_reply(&req);
        assert_eq!(reply.text, format!("Mock reply to: {}", "é".repeat(40)));
        assert_eq!(reply.input_tokens, 55u64.div_ceil(4) + 8);
    }

    #[test]
    fn truncates_to_max_tokens() {
        let req = request(3, "", &[(Role::User, "one two three")]);
        let reply = default_reply(&req);
        assert_eq!(reply.text, "Mock reply");
        assert_eq!(reply.output_tokens, 3);
        assert_eq!(reply.stop_reason, StopReason::MaxTokens);

        let reply = default_reply(&request(1, "", &[(Role::User, "x")]));
        assert_eq!(reply.text, "");
        assert_eq!(reply.output_tokens, 1);

        // Exactly at the limit is not a truncation.
        let reply = default_reply(&request(5, "", &[(Role::User, "x")]));
        assert_eq!(reply.stop_reason, StopReason::EndTurn);
    }

    #[test]
    fn delta_pieces_reassemble() {
        let text = "Mock reply  to:\nhi ";
        let pieces = delta_pieces(text);
        assert_eq!(pieces, vec!["Mock ", "reply  ", "to:\n", "hi "]);
        assert_eq!(pieces.concat(), text);
        assert!(delta_pieces("").is_empty());
    }
}
