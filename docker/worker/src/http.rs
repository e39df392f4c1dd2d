//! A minimal HTTP/1.1 client: enough to send one request over the gateway's
//! Unix socket and read the response back incrementally.
//!
//! The container has no network and the image has no libraries, so a full
//! HTTP stack would be dead weight; the gateway is our own host and speaks
//! plain HTTP/1.1 with `Connection: close`. The body is exposed as a `Read`
//! that yields bytes as soon as they arrive, because a streamed answer must
//! reach the user while it is still being generated.

use std::io::{self, BufRead, BufReader, Read, Write};

/// Upper bound on the status line plus headers: the gateway's are tiny, and a
/// bound keeps a confused peer from making the worker buffer without limit.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Sends a POST with a fixed-length body. `Connection: close` lets the
/// response be delimited by EOF if the server chooses to, and means the
/// worker never has to manage a connection beyond this one exchange.
pub fn write_post(
    mut out: impl Write,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut request = format!("POST {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    out.write_all(&bytes)?;
    out.flush()
}

pub struct Response<R> {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Body<R>,
}

impl<R> Response<R> {
    /// The first value of a header; names are matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the status line and headers, leaving the body unread. Interim 1xx
/// responses are skipped. Malformed input is reported as `InvalidData`, a
/// connection that closes early as `UnexpectedEof`.
pub fn read_response<R: Read>(inner: R) -> io::Result<Response<R>> {
    let mut reader = BufReader::new(inner);
    let mut budget = MAX_HEAD_BYTES;
    loop {
        let (status, headers) = read_head(&mut reader, &mut budget)?;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let framing = framing(status, &headers)?;
        return Ok(Response {
            status,
            headers,
            body: Body {
                reader,
                framing,
                decoded: Vec::new(),
                decoded_pos: 0,
            },
        });
    }
}

type Head = (u16, Vec<(String, String)>);

fn read_head<R: Read>(reader: &mut BufReader<R>, budget: &mut usize) -> io::Result<Head> {
    let status_line = read_line(reader, budget)?;
    let status = parse_status_line(&status_line)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, budget)?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line {line:?}")));
        };
        // A name with surrounding whitespace (or an obsolete folded line) is
        // how request-smuggling tricks start; nothing legitimate sends it.
        if name.is_empty() || name.trim() != name {
            return Err(invalid(format!("bad header line {line:?}")));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
}

fn parse_status_line(line: &str) -> io::Result<u16> {
    let bad = || invalid(format!("bad status line {line:?}"));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    let code = parts.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(bad());
    }
    match code.parse::<u16>() {
        Ok(status) if (100..600).contains(&status) => Ok(status),
        _ => Err(bad()),
    }
}

/// One head line without its line ending (CRLF, or a bare LF, which
/// HTTP/1.1 recipients may accept).
fn read_line<R: Read>(reader: &mut BufReader<R>, budget: &mut usize) -> io::Result<String> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(*budget as u64)
        .read_until(b'\n', &mut line)?;
    *budget -= line.len();
    if line.last() != Some(&b'\n') {
        return Err(if *budget == 0 {
            invalid("response head is too large".into())
        } else {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head was complete",
            )
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// How the end of the body is found, per RFC 9112 section 6.3.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilEof,
}

fn framing(status: u16, headers: &[(String, String)]) -> io::Result<Framing> {
    if status == 204 || status == 304 {
        return Ok(Framing::Length(0));
    }
    if let Some(last) = header_values(headers, "transfer-encoding").last() {
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked(ChunkedDecoder::default())
        } else {
            Framing::UntilEof
        });
    }
    let mut length = None;
    for value in header_values(headers, "content-length") {
        let n: u64 = value
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
        if length.is_some_and(|l| l != n) {
            return Err(invalid("conflicting Content-Length headers".into()));
        }
        length = Some(n);
    }
    Ok(length.map_or(Framing::UntilEof, Framing::Length))
}

/// Every comma-separated value of a header that may be repeated.
fn header_values<'a>(
    headers: &'a [(String, String)],
    wanted: &'a str,
) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(wanted))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The response body, de-framed. Each `read` returns whatever has arrived so
/// far (at least one byte) rather than waiting to fill the caller's buffer.
pub struct Body<R> {
    reader: BufReader<R>,
    framing: Framing,
    decoded: Vec<u8>,
    decoded_pos: usize,
}

impl<R> Body<R> {
    /// The underlying connection, e.g. to set a read timeout on it.
    pub fn get_ref(&self) -> &R {
        self.reader.get_ref()
    }
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.framing {
            Framing::UntilEof => self.reader.read(buf),
            Framing::Length(0) => Ok(0),
            Framing::Length(remaining) => {
                let max = buf
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut buf[..max])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "response body ended {remaining} bytes short of its Content-Length"
                        ),
                    ));
                }
                *remaining -= n as u64;
                Ok(n)
            }
            Framing::Chunked(decoder) => loop {
                if self.decoded_pos < self.decoded.len() {
                    let pending = &self.decoded[self.decoded_pos..];
                    let n = pending.len().min(buf.len());
                    buf[..n].copy_from_slice(&pending[..n]);
                    self.decoded_pos += n;
                    return Ok(n);
                }
                if decoder.is_done() {
                    return Ok(0);
                }
                let raw = self.reader.fill_buf()?;
                if raw.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "chunked response body ended before its last chunk",
                    ));
                }
                self.decoded.clear();
                self.decoded_pos = 0;
                let used = decoder.decode(raw, &mut self.decoded)?;
                self.reader.consume(used);
            },
        }
    }
}

/// Incremental decoder for `Transfer-Encoding: chunked`. It keeps its place
/// in the framing between calls, so input may be split anywhere: inside a
/// size line, inside data, between CR and LF.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size { size: 0, digits: 0 },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ChunkState {
    /// Reading the hex digits of a chunk-size line.
    Size {
        size: u64,
        digits: u32,
    },
    /// After the digits: whitespace and chunk extensions, skipped up to LF.
    SizeRest {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    /// Chunk data is complete; its CRLF comes next.
    DataEnd,
    DataEndLf,
    /// At the start of a trailer field line, or of the final empty line.
    TrailerStart,
    Trailer,
    TrailerEndLf,
    Done,
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes as much of `input` as belongs to the body, appending chunk
    /// data to `out`. Returns how many input bytes were used: all of them,
    /// unless the terminating chunk ended partway through.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() && self.state != Done {
            if let Data { remaining } = self.state {
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    DataEnd
                } else {
                    Data { remaining }
                };
                continue;
            }
            let b = input[i];
            i += 1;
            if let (Size { size, digits }, Some(digit)) = (self.state, (b as char).to_digit(16)) {
                let size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(digit)))
                    .ok_or_else(|| invalid("chunk size is too large".into()))?;
                self.state = Size {
                    size,
                    digits: digits + 1,
                };
                continue;
            }
            self.state = match (self.state, b) {
                (Size { digits: 0, .. }, _) => {
                    return Err(invalid("chunk size line has no size".into()));
                }
                (Size { size, .. }, b'\n') => after_size_line(size),
                (Size { size, .. }, b';' | b' ' | b'\t' | b'\r') => SizeRest { size },
                (Size { .. }, _) => {
                    return Err(invalid(format!("bad byte {b:#04x} in chunk size")));
                }
                (SizeRest { size }, b'\n') => after_size_line(size),
                (SizeRest { size }, _) => SizeRest { size },
                (DataEnd, b'\r') => DataEndLf,
                (DataEnd | DataEndLf, b'\n') => Size { size: 0, digits: 0 },
                (DataEnd | DataEndLf, _) => {
                    return Err(invalid("chunk data is not followed by CRLF".into()));
                }
                (TrailerStart, b'\r') => TrailerEndLf,
                (TrailerStart | TrailerEndLf, b'\n') => Done,
                (TrailerEndLf, _) => {
                    return Err(invalid("chunked body does not end with CRLF".into()));
                }
                (Trailer, b'\n') => TrailerStart,
                (TrailerStart | Trailer, _) => Trailer,
                (Data { .. } | Done, _) => unreachable!("handled before the match"),
            };
        }
        Ok(i)
    }
}

fn after_size_line(size: u64) -> ChunkState {
    if size == 0 {
        ChunkState::TrailerStart
    } else {
        ChunkState::Data { remaining: size }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its input a few bytes at a time, like a socket
    /// under a slow writer.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(self.data.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn decode_in_pieces(input: &[u8], splits: &[usize]) -> io::Result<(Vec<u8>, usize, bool)> {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut used = 0;
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&input.len())) {
            used += decoder.decode(&input[start..end], &mut out)?;
            start = end;
        }
        Ok((out, used, decoder.is_done()))
    }

    const CHUNKED: &[u8] =
        b"5\r\nhello\r\n7;name=\"x\"\r\n, world\r\nB \r\n\r\n0123456\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n";
    const DECODED: &[u8] = b"hello, world\r\n0123456\r\n";

    #[test]
    fn chunked_decodes_in_one_piece() {
        let (out, used, done) = decode_in_pieces(CHUNKED, &[]).unwrap();
        assert_eq!(out, DECODED);
        assert_eq!(used, CHUNKED.len());
        assert!(done);
    }

    #[test]
    fn chunked_decodes_across_every_single_split_point() {
        for split in 0..=CHUNKED.len() {
            let (out, used, done) = decode_in_pieces(CHUNKED, &[split]).unwrap();
            assert_eq!(out, DECODED, "split at {split}");
            assert_eq!(used, CHUNKED.len());
            assert!(done);
        }
    }

    #[test]
    fn chunked_decodes_across_every_pair_of_split_points() {
        for a in 0..=CHUNKED.len() {
            for b in a..=CHUNKED.len() {
                let (out, _, done) = decode_in_pieces(CHUNKED, &[a, b]).unwrap();
                assert_eq!(out, DECODED, "splits at {a} and {b}");
                assert!(done);
            }
        }
    }

    #[test]
    fn chunked_decodes_byte_by_byte() {
        let splits: Vec<usize> = (1..CHUNKED.len()).collect();
        let (out, _, done) = decode_in_pieces(CHUNKED, &splits).unwrap();
        assert_eq!(out, DECODED);
        assert!(done);
    }

    #[test]
    fn chunked_stops_at_the_end_of_the_body() {
        let mut input = b"3\r\nabc\r\n0\r\n\r\n".to_vec();
        let body_len = input.len();
        input.extend_from_slice(b"garbage");
        let (out, used, done) = decode_in_pieces(&input, &[]).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(used, body_len);
        assert!(done);
    }

    #[test]
    fn chunked_accepts_bare_lf_and_hex_case() {
        let (out, _, done) =
            decode_in_pieces(b"a\n0123456789\nB\nabcdefghijk\n0\n\n", &[]).unwrap();
        assert_eq!(out, b"0123456789abcdefghijk");
        assert!(done);
    }

    #[test]
    fn chunked_rejects_bad_framing() {
        for bad in [
            &b"\r\n"[..],
            b"zz\r\n",
            b"3\r\nabcd\r\n",
            b"3\r\nabc\rX",
            b"0\r\n\rX",
            b"fffffffffffffffff\r\n",
        ] {
            let err = decode_in_pieces(bad, &[]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
    }

    fn response(raw: &[u8], step: usize) -> io::Result<(u16, Vec<u8>)> {
        let mut response = read_response(Trickle { data: raw, step })?;
        let mut body = Vec::new();
        response.body.read_to_end(&mut body)?;
        Ok((response.status, body))
    }

    #[test]
    fn chunked_response_reads_through_a_trickling_socket() {
        let mut raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        raw.extend_from_slice(CHUNKED);
        for step in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(response(&raw, step).unwrap(), (200, DECODED.to_vec()));
        }
    }

    #[test]
    fn chunked_body_yields_data_before_the_last_chunk_arrives() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
        let mut response = read_response(&raw[..]).unwrap();
        let mut buf = [0; 64];
        let n = response.body.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let err = response.body.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn content_length_response() {
        let raw = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\n\r\nhello, ignored";
        assert_eq!(response(raw, 3).unwrap(), (403, b"hello".to_vec()));
    }

    #[test]
    fn short_content_length_body_is_an_error() {
        let err = response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn unframed_response_reads_to_eof_and_lf_heads_are_accepted() {
        let raw = b"HTTP/1.0 500 Internal Server Error\nX-A: b\n\nall of it";
        assert_eq!(response(raw, 5).unwrap(), (500, b"all of it".to_vec()));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(response(raw, 4).unwrap(), (200, b"ok".to_vec()));
    }

    #[test]
    fn headers_are_found_case_insensitively() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\nContent-Length: 0\r\n\r\n";
        let response = read_response(&raw[..]).unwrap();
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.header("x-missing"), None);
    }

    #[test]
    fn bad_heads_are_rejected() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        ] {
            let err = response(raw, 100).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{raw:?}");
        }
        let err = response(b"HTTP/1.1 200 OK\r\nX-A", 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let huge = format!(
            "HTTP/1.1 200 OK\r\nX-A: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let err = response(huge.as_bytes(), 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn post_request_is_well_formed() {
        let mut out = Vec::new();
        write_post(&mut out, "/v1/messages", &[("Host", "gateway")], b"{}").unwrap();
        assert_eq!(
            out,
            b"POST /v1/messages HTTP/1.1\r\nHost: gateway\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }
}
