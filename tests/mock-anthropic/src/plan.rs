//! What an admitted request is answered with: a scenario (or the default
//! reply) turned into an error, a JSON message, a stream plan or a token
//! count. Pure decisions, no I/O and no locks: the server decides under its
//! lock and writes the answer out afterwards.

use std::time::Duration;

use crate::Scenario;
use crate::reply::{self, Reply};
use crate::validate::{MessagesRequest, Prompt, Rejection};
use crate::wire;

/// An error response.
pub(crate) struct ApiError {
    pub status: u16,
    pub kind: String,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Self {
        ApiError {
            status,
            kind: kind.to_owned(),
            message: message.to_owned(),
            retry_after,
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError {
            status: r.status,
            kind: r.kind.to_owned(),
            message: r.message,
            retry_after: None,
        }
    }
}

/// An SSE response: the blocks to stream and how it ends.
pub(crate) struct StreamPlan {
    pub id: String,
    pub model: String,
    pub reply: Reply,
    pub end: StreamEnd,
    pub delay: Duration,
}

pub(crate) enum StreamEnd {
    Complete,
    /// After this many text deltas, an `overloaded_error` event.
    Overloaded {
        after_deltas: usize,
    },
}

pub(crate) enum Answer {
    Error(ApiError),
    Message {
        id: String,
        model: String,
        reply: Reply,
    },
    Stream(StreamPlan),
    Count {
        input_tokens: u64,
    },
}

pub(crate) enum Plan {
    Answer(Answer),
    Hang,
}

impl Plan {
    /// The HTTP status to record; `0` for a request that is never answered.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Plan::Answer(Answer::Error(e)) => e.status,
            Plan::Answer(_) => 200,
            Plan::Hang => 0,
        }
    }

    /// The tokens this answer consumes as far as rate limiting is
    /// concerned, or `None` for an answer the Messages limits do not cover.
    pub(crate) fn tokens(&self) -> Option<(u64, u64)> {
        match self {
            Plan::Answer(Answer::Message { reply, .. }) => {
                Some((reply.input_tokens, reply.output_tokens))
            }
            Plan::Answer(Answer::Stream(s)) => match s.end {
                StreamEnd::Complete => Some((s.reply.input_tokens, s.reply.output_tokens)),
                StreamEnd::Overloaded { .. } => Some((s.reply.input_tokens, 1)),
            },
            Plan::Answer(Answer::Count { .. }) => None,
            Plan::Answer(Answer::Error(_)) | Plan::Hang => Some((0, 0)),
        }
    }
}

/// The answer to a token count: what the next turn will report as its
/// input, if it names that, else the formula's count for this prompt.
pub(crate) fn count(next: Option<&Scenario>, prompt: &Prompt) -> Plan {
    let input_tokens = next
        .and_then(Scenario::named_input_tokens)
        .unwrap_or_else(|| reply::input_tokens(prompt));
    Plan::Answer(Answer::Count { input_tokens })
}

/// The answer to a Messages request that got `scenario` (`None`: the
/// default reply).
pub(crate) fn messages(scenario: Option<Scenario>, req: &MessagesRequest, delay: Duration) -> Plan {
    let answer = match scenario {
        None => reply_answer(req, reply::default_reply(req), delay),
        Some(Scenario::Reply {
            text,
            input_tokens,
            output_tokens,
        }) => {
            let reply = Reply {
                text,
                calls: Vec::new(),
                input_tokens,
                output_tokens,
                stop_reason: wire::StopReason::EndTurn,
            };
            reply_answer(req, reply, delay)
        }
        Some(Scenario::ToolUse {
            text,
            calls,
            input_tokens,
            output_tokens,
        }) => {
            let reply = Reply::tool_use(text, calls, input_tokens, output_tokens);
            reply_answer(req, reply, delay)
        }
        Some(Scenario::Error {
            status,
            kind,
            message,
            retry_after,
        }) => Answer::Error(ApiError {
            status,
            kind,
            message,
            retry_after,
        }),
        Some(Scenario::RateLimited { retry_after }) => Answer::Error(ApiError::new(
            429,
            wire::RATE_LIMIT,
            "Number of request tokens has exceeded your per-minute rate limit",
            Some(retry_after),
        )),
        Some(Scenario::Overloaded) => {
            Answer::Error(ApiError::new(529, wire::OVERLOADED, "Overloaded", None))
        }
        Some(Scenario::MidStreamError { after_deltas }) if req.stream => {
            // The untruncated default text, so that there are always words
            // to repeat, however small `max_tokens` is.
            let reply = Reply {
                text: reply::reply_text(&req.prompt),
                calls: Vec::new(),
                input_tokens: reply::input_tokens(&req.prompt),
                output_tokens: 1,
                stop_reason: wire::StopReason::EndTurn,
            };
            Answer::Stream(StreamPlan {
                id: wire::new_id("msg_"),
                model: req.model.clone(),
                reply,
                end: StreamEnd::Overloaded { after_deltas },
                delay,
            })
        }
        Some(Scenario::MidStreamError { .. }) => Answer::Error(ApiError::new(
            500,
            wire::API_ERROR,
            "Internal server error",
            None,
        )),
        Some(Scenario::Hang) => return Plan::Hang,
    };
    Plan::Answer(answer)
}

fn reply_answer(req: &MessagesRequest, reply: Reply, delay: Duration) -> Answer {
    let id = wire::new_id("msg_");
    let model = req.model.clone();
    if !req.stream {
        return Answer::Message { id, model, reply };
    }
    Answer::Stream(StreamPlan {
        id,
        model,
        reply,
        end: StreamEnd::Complete,
        delay,
    })
}
