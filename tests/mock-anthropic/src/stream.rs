//! Writes a planned SSE answer event by event, so that hyper sends each as
//! its own chunk: `message_start`, then per content block its start (a
//! `ping` after the first), its deltas and its stop, then `message_delta`
//! and `message_stop`, pausing between deltas when a delay is set.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::{SendError, Sender};
use serde_json::{Map, Value};

use crate::plan::{StreamEnd, StreamPlan};
use crate::reply;
use crate::server::Shared;
use crate::wire::{self, Block};

/// Spaces out deltas: no pause before the stream's first delta, `delay`
/// before each later one.
struct Pacer {
    delay: Duration,
    started: bool,
}

impl Pacer {
    async fn pause(&mut self) {
        if self.started && !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.started = true;
    }
}

pub(crate) async fn produce(
    tx: &mut Sender<Bytes>,
    shared: &Shared,
    plan: StreamPlan,
) -> Result<(), SendError> {
    let StreamPlan {
        id,
        model,
        reply,
        end,
        delay,
    } = plan;
    let mut pacer = Pacer {
        delay,
        started: false,
    };
    tx.send_data(wire::message_start(&id, &model, reply.input_tokens))
        .await?;
    if let StreamEnd::Overloaded { after_deltas } = end {
        tx.send_data(wire::content_block_start(0, Block::Text { text: "" }))
            .await?;
        tx.send_data(wire::ping()).await?;
        let words = reply::delta_pieces(&reply.text);
        for piece in words.into_iter().cycle().take(after_deltas) {
            pacer.pause().await;
            tx.send_data(wire::text_delta(0, piece)).await?;
        }
        pacer.pause().await;
        return tx
            .send_data(wire::stream_error(wire::OVERLOADED, "Overloaded"))
            .await;
    }
    for (index, block) in reply.blocks().into_iter().enumerate() {
        send_block(tx, index, block, &mut pacer).await?;
    }
    tx.send_data(wire::message_delta(reply.stop_reason, reply.output_tokens))
        .await?;
    // Counted before `message_stop` goes out, so a test that has read the
    // whole stream always finds it in `reported()`.
    shared
        .state()
        .reported
        .add(reply.input_tokens, reply.output_tokens);
    tx.send_data(wire::message_stop()).await
}

/// One content block: its empty start, its deltas, its stop.
async fn send_block(
    tx: &mut Sender<Bytes>,
    index: usize,
    block: Block<'_>,
    pacer: &mut Pacer,
) -> Result<(), SendError> {
    let no_input = Value::Object(Map::new());
    match block {
        Block::Text { text } => {
            tx.send_data(wire::content_block_start(index, Block::Text { text: "" }))
                .await?;
            ping_after_first(tx, index).await?;
            for piece in reply::delta_pieces(text) {
                pacer.pause().await;
                tx.send_data(wire::text_delta(index, piece)).await?;
            }
        }
        Block::ToolUse { id, name, input } => {
            let start = Block::ToolUse {
                id,
                name,
                input: &no_input,
            };
            tx.send_data(wire::content_block_start(index, start))
                .await?;
            ping_after_first(tx, index).await?;
            let json = input.to_string();
            for piece in reply::json_pieces(&json) {
                pacer.pause().await;
                tx.send_data(wire::input_json_delta(index, piece)).await?;
            }
        }
    }
    tx.send_data(wire::content_block_stop(index)).await
}

/// The API sends one `ping` right after the first block starts.
async fn ping_after_first(tx: &mut Sender<Bytes>, index: usize) -> Result<(), SendError> {
    if index == 0 {
        tx.send_data(wire::ping()).await?;
    }
    Ok(())
}
