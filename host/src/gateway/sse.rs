//! An incremental Server-Sent Events parser, fed the upstream's chunks as
//! they are forwarded. Chunk boundaries fall anywhere (mid-line, between
//! `\r` and `\n`), so it keeps the partial line between calls.
//!
//! It exists only to read usage out of the stream, so it bounds what it
//! keeps: an event whose lines or data grow past [`MAX_EVENT_BYTES`] is
//! skipped rather than buffered (the usage-bearing events are small; big
//! ones are long text deltas, which the gateway does not need to read).

/// Larger than any `message_start`/`message_delta`/`error` event.
pub(crate) const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// A complete event: its `event:` name (`message` if none) and its data
/// lines joined with `\n`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub name: String,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`, so a leading `\n` belongs to it.
    skip_lf: bool,
    name: String,
    data: Vec<u8>,
    /// Some line or the data of the current event outgrew the bound.
    oversized: bool,
}

impl SseParser {
    /// Consumes a chunk, handing each event it completes to `on_event`.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent)) {
        let mut rest = chunk;
        if self.skip_lf && !rest.is_empty() {
            self.skip_lf = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                self.push(rest);
                return;
            };
            self.push(&rest[..end]);
            let was_cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if was_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            self.end_line(&mut on_event);
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            self.oversized = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(SseEvent)) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &[][..]),
        };
        match field {
            b"event" => self.name = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    self.oversized = true;
                } else {
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent)) {
        let name = std::mem::take(&mut self.name);
        let mut data = std::mem::take(&mut self.data);
        let oversized = std::mem::take(&mut self.oversized);
        // Per the SSE spec an event without data is not dispatched.
        if oversized || data.is_empty() {
            return;
        }
        data.pop();
        on_event(SseEvent {
            name: if name.is_empty() {
                "message".to_owned()
            } else {
                name
            },
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in input.chunks(piece) {
            parser.feed(chunk, |e| events.push(e));
        }
        events
    }

    fn event(name: &str, data: &str) -> SseEvent {
        SseEvent {
            name: name.into(),
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn events_survive_any_chunking() {
        let input = b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive comment\n\nevent: ping\ndata: {}\n\ndata: line1\ndata: line2\n\n";
        let expected = vec![
            event("message_start", "{\"a\":1}"),
            event("ping", "{}"),
            event("message", "line1\nline2"),
        ];
        for piece in 1..input.len() {
            assert_eq!(
                parse_in_pieces(input, piece),
                expected,
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn crlf_and_cr_line_endings_even_split_between_chunks() {
        let input = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\r";
        let expected = vec![event("a", "1"), event("b", "2")];
        for piece in 1..input.len() {
            assert_eq!(
                parse_in_pieces(input, piece),
                expected,
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        assert!(parse_in_pieces(b"event: a\ndata: 1\n", 4).is_empty());
    }

    #[test]
    fn oversized_event_is_skipped_and_parsing_recovers() {
        let mut input = b"event: content_block_delta\ndata: ".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_EVENT_BYTES + 10));
        input.extend_from_slice(b"\n\nevent: message_delta\ndata: {}\n\n");
        assert_eq!(
            parse_in_pieces(&input, 4096),
            vec![event("message_delta", "{}")]
        );
    }
}
