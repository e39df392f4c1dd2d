//! An incremental Server-Sent Events parser, following the WHATWG
//! "event stream interpretation" rules.
//!
//! Bytes arrive in whatever pieces the socket and the chunked framing
//! produce, so a line (or a CRLF pair, or a multi-byte UTF-8 character) can be
//! split between two `feed` calls; the parser keeps the partial line until its
//! end arrives.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, or `message` when the event had none.
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The last byte seen was a CR, so an LF that follows belongs to it
    /// rather than ending a second (empty) line.
    after_cr: bool,
    name: String,
    data: String,
}

impl Parser {
    /// Parses `bytes`, appending every event they complete to `events`.
    /// Fails only if a line is not UTF-8.
    pub fn feed(&mut self, mut bytes: &[u8], events: &mut Vec<Event>) -> Result<(), String> {
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        while let Some(end) = bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.line.extend_from_slice(&bytes[..end]);
            let line = String::from_utf8(std::mem::take(&mut self.line))
                .map_err(|_| "event stream line is not UTF-8".to_string())?;
            self.process_line(&line, events);
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            if bytes[end] == b'\r' && end + 1 == bytes.len() {
                self.after_cr = true;
            }
            bytes = &bytes[end + if crlf { 2 } else { 1 }..];
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, line: &str, events: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.name = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // `id` and `retry` only matter for reconnecting, which a one-shot
            // request never does; unknown fields are ignored by the spec.
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        let name = std::mem::take(&mut self.name);
        let mut data = std::mem::take(&mut self.data);
        // An event with no data lines is discarded, per the spec.
        if data.is_empty() {
            return;
        }
        data.pop();
        events.push(Event {
            name: if name.is_empty() {
                "message".to_string()
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

    fn event(name: &str, data: &str) -> Event {
        Event {
            name: name.into(),
            data: data.into(),
        }
    }

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<Event> {
        let mut parser = Parser::default();
        let mut events = Vec::new();
        for chunk in input.chunks(piece) {
            parser.feed(chunk, &mut events).unwrap();
        }
        events
    }

    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\"}\n",
        "\n",
        ": a comment\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"text\":\"h\u{e9}llo \u{1f600}\"}\n",
        "\n",
    );

    fn expected() -> Vec<Event> {
        vec![
            event("message_start", "{\"type\":\"message_start\"}"),
            event("ping", "{\"type\": \"ping\"}"),
            event("content_block_delta", "{\"text\":\"h\u{e9}llo \u{1f600}\"}"),
        ]
    }

    #[test]
    fn parses_whole_and_byte_by_byte() {
        for piece in [1, 2, 3, 5, 8, 13, STREAM.len()] {
            assert_eq!(
                parse_in_pieces(STREAM.as_bytes(), piece),
                expected(),
                "{piece}"
            );
        }
    }

    #[test]
    fn crlf_and_bare_cr_line_endings() {
        for ending in ["\r\n", "\r"] {
            let input = STREAM.replace('\n', ending);
            for piece in [1, 2, 3, 7, input.len()] {
                assert_eq!(
                    parse_in_pieces(input.as_bytes(), piece),
                    expected(),
                    "{ending:?} {piece}"
                );
            }
        }
    }

    #[test]
    fn crlf_split_between_feeds_is_one_line_ending() {
        let mut parser = Parser::default();
        let mut events = Vec::new();
        parser.feed(b"data: a\r", &mut events).unwrap();
        parser.feed(b"\ndata: b\r", &mut events).unwrap();
        parser.feed(b"\n\r", &mut events).unwrap();
        parser.feed(b"\n", &mut events).unwrap();
        assert_eq!(events, vec![event("message", "a\nb")]);
    }

    #[test]
    fn data_without_a_leading_space_and_multiple_data_lines() {
        let input = b"event:x\ndata:one\ndata:  two\ndata\n\n";
        assert_eq!(parse_in_pieces(input, 1), vec![event("x", "one\n two\n")]);
    }

    #[test]
    fn events_without_data_are_dropped_and_unfinished_events_wait() {
        let input = b"event: lonely\n\nid: 7\nretry: 10\n\nevent: late\ndata: x\n";
        assert_eq!(parse_in_pieces(input, 4), vec![]);
        let mut parser = Parser::default();
        let mut events = Vec::new();
        parser.feed(input, &mut events).unwrap();
        parser.feed(b"\n", &mut events).unwrap();
        assert_eq!(events, vec![event("late", "x")]);
    }

    #[test]
    fn error_event_is_an_ordinary_event() {
        let input = "event: error\r\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\r\n\r\n";
        assert_eq!(
            parse_in_pieces(input.as_bytes(), 1),
            vec![event(
                "error",
                "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"
            )]
        );
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut parser = Parser::default();
        let mut events = Vec::new();
        assert!(parser.feed(b"data: \xff\n\n", &mut events).is_err());
    }
}
