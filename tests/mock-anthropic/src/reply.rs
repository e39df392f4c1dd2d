//! The default reply and the token formulas behind its `usage`.
//!
//! Tests compare the host's metering with what the mock reported, so the
//! figures only need to be deterministic and easy to recompute by hand, not
//! close to a real tokenizer:
//!
//! - `input_tokens = ceil(prompt_chars / 4) + 8`, where `prompt_chars` counts
//!   the Unicode scalar values of the system prompt plus every message's
//!   text (a string content counts whole; a block list counts its `text`
//!   blocks and the text inside its `tool_result` blocks; other blocks count
//!   nothing). The 8 stands for the per-request framing overhead a real
//!   tokenizer adds. `count_tokens` answers with the same figure.
//! - The reply text is `"Mock reply to: "` followed by the first 40
//!   characters of the last user message's text.
//! - `output_tokens = words(reply) + 1`, words being whitespace-separated.
//! - If that exceeds `max_tokens`, the reply is cut after its first
//!   `max_tokens - 1` words, `output_tokens = max_tokens` and the stop reason
//!   is `max_tokens`; otherwise it is `end_turn`.
//!
//! Scripted turns bring their own text, tool calls and usage; this module
//! also splits any reply into the pieces a stream sends.

use crate::ToolCall;
use crate::validate::{MessagesRequest, Prompt, Role};
use crate::wire::{self, Block, StopReason};

/// Fixed per-request overhead added to the character-based estimate.
const INPUT_OVERHEAD: u64 = 8;
/// How much of the last user message the reply quotes.
const QUOTED_CHARS: usize = 40;
/// The longest `partial_json` piece of a streamed tool input. The real API
/// sends short fragments; clients must join them before parsing.
const JSON_PIECE_CHARS: usize = 16;

/// What the mock answers with, whichever way it is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub text: String,
    /// Tool calls after the text, each with its id filled in.
    pub calls: Vec<ToolCall>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub stop_reason: StopReason,
}

impl Reply {
    /// A turn that calls `calls`, with fresh `toolu_` ids where none is
    /// given.
    pub(crate) fn tool_use(
        text: String,
        calls: Vec<ToolCall>,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Reply {
        let calls = calls
            .into_iter()
            .map(|call| ToolCall {
                id: if call.id.is_empty() {
                    wire::new_id("toolu_")
                } else {
                    call.id
                },
                ..call
            })
            .collect();
        Reply {
            text,
            calls,
            input_tokens,
            output_tokens,
            stop_reason: StopReason::ToolUse,
        }
    }

    /// Whether the reply opens with a text block: a plain reply always does
    /// (even when cut to nothing), a tool-use turn only if it says something.
    pub(crate) fn has_text(&self) -> bool {
        !self.text.is_empty() || self.calls.is_empty()
    }

    /// The content blocks of the complete message.
    pub(crate) fn blocks(&self) -> Vec<Block<'_>> {
        let text = self.has_text().then_some(Block::Text { text: &self.text });
        let calls = self.calls.iter().map(|call| Block::ToolUse {
            id: &call.id,
            name: &call.name,
            input: &call.input,
        });
        text.into_iter().chain(calls).collect()
    }
}

pub(crate) fn input_tokens(prompt: &Prompt) -> u64 {
    let chars = prompt.system.chars().count()
        + prompt
            .messages
            .iter()
            .map(|(_, text)| text.chars().count())
            .sum::<usize>();
    (chars as u64).div_ceil(4) + INPUT_OVERHEAD
}

/// The default reply's text before any `max_tokens` cut.
pub(crate) fn reply_text(prompt: &Prompt) -> String {
    let last_user = prompt
        .messages
        .iter()
        .rev()
        .find(|(role, _)| *role == Role::User)
        .map_or("", |(_, text)| text.as_str());
    let quoted: String = last_user.chars().take(QUOTED_CHARS).collect();
    format!("Mock reply to: {quoted}")
}

pub(crate) fn default_reply(req: &MessagesRequest) -> Reply {
    let full = reply_text(&req.prompt);
    let output_tokens = full.split_whitespace().count() as u64 + 1;
    let input_tokens = input_tokens(&req.prompt);
    if output_tokens <= req.max_tokens {
        return Reply {
            text: full,
            calls: Vec::new(),
            input_tokens,
            output_tokens,
            stop_reason: StopReason::EndTurn,
        };
    }
    Reply {
        text: first_words(&full, req.max_tokens - 1).to_owned(),
        calls: Vec::new(),
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

/// Splits a tool input's JSON into the `partial_json` pieces of its
/// `input_json_delta`s: an empty piece first, as the real API sends, then
/// short fragments that concatenate back to `json`.
pub(crate) fn json_pieces(json: &str) -> Vec<&str> {
    let mut pieces = vec![""];
    let mut start = 0;
    for (n, (i, _)) in json.char_indices().enumerate() {
        if n > 0 && n % JSON_PIECE_CHARS == 0 {
            pieces.push(&json[start..i]);
            start = i;
        }
    }
    if start < json.len() {
        pieces.push(&json[start..]);
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
            prompt: Prompt {
                system: system.into(),
                messages: messages
                    .iter()
                    .map(|(r, t)| (*r, (*t).to_owned()))
                    .collect(),
            },
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

    #[test]
    fn json_pieces_reassemble_at_char_boundaries() {
        let json = r#"{"command":"echo héllo > /tmp/x/f.txt"}"#;
        let pieces = json_pieces(json);
        assert_eq!(pieces[0], "");
        assert!(pieces.len() >= 3, "{pieces:?}");
        assert!(pieces.iter().all(|p| p.chars().count() <= JSON_PIECE_CHARS));
        assert_eq!(pieces.concat(), json);
        assert_eq!(json_pieces("{}"), vec!["", "{}"]);
    }

    #[test]
    fn tool_use_turns_get_fresh_ids_and_text_only_if_given() {
        let call = ToolCall::new("Bash", serde_json::json!({"command": "ls"}));
        let named = ToolCall {
            id: "toolu_given".into(),
            ..call.clone()
        };
        let a = Reply::tool_use(String::new(), vec![call.clone(), named], 1, 2);
        let b = Reply::tool_use("Running.".into(), vec![call], 1, 2);
        assert!(a.calls[0].id.starts_with("toolu_01"));
        assert_eq!(a.calls[1].id, "toolu_given");
        assert_ne!(a.calls[0].id, b.calls[0].id);
        assert_eq!(a.blocks().len(), 2, "no empty text block");
        assert_eq!(b.blocks().len(), 2);
        assert!(matches!(b.blocks()[0], Block::Text { text: "Running." }));
    }
}
