//! A minimal blocking HTTP/1.1 client over std sockets, so the tests see the
//! raw wire: chunk boundaries, their arrival times, and connection reuse.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use mock_anthropic::MockServer;
use serde_json::{Value, json};

pub const KEY: &str = "sk-ant-api03-test";

/// Long enough for a slow CI machine, short enough that a hung test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// One connection, reused for as many requests as the server keeps it open.
pub struct Conn {
    reader: BufReader<Stream>,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For chunked bodies, each chunk with the time it was read.
    pub chunks: Vec<(Instant, Vec<u8>)>,
}

impl Conn {
    /// Connects to a TCP mock given its `http://HOST:PORT` URL.
    pub fn tcp(url: &str) -> Conn {
        let addr = url.strip_prefix("http://").expect("an http:// URL");
        let stream = TcpStream::connect(addr).expect("connect to mock");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Conn {
            reader: BufReader::new(Stream::Tcp(stream)),
        }
    }

    pub fn unix(path: &Path) -> Conn {
        let stream = UnixStream::connect(path).expect("connect to mock socket");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Conn {
            reader: BufReader::new(Stream::Unix(stream)),
        }
    }

    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nhost: mock\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        self.read_response()
    }

    fn read_response(&mut self) -> io::Result<Response> {
        let status_line = self.line()?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
            chunks: Vec::new(),
        };
        if response.header("transfer-encoding") == Some("chunked") {
            loop {
                let size_line = self.line()?;
                let size = usize::from_str_radix(size_line.trim(), 16)
                    .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    // No trailers are expected; skip to the blank line.
                    while !self.line()?.is_empty() {}
                    break;
                }
                let mut chunk = vec![0; size];
                self.reader.read_exact(&mut chunk)?;
                if !self.line()?.is_empty() {
                    return Err(bad("chunk not followed by CRLF".to_owned()));
                }
                response.body.extend_from_slice(&chunk);
                response.chunks.push((Instant::now(), chunk));
            }
        } else {
            let len = response
                .header("content-length")
                .map_or(Ok(0), str::parse)
                .map_err(|_| bad("bad content-length".to_owned()))?;
            response.body = vec![0; len];
            self.reader.read_exact(&mut response.body)?;
        }
        Ok(response)
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Whether the server has closed the connection (a read returns EOF).
    pub fn closed_by_server(&mut self) -> bool {
        matches!(self.reader.fill_buf(), Ok([]))
    }
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body parsed as SSE: `(event line, parsed data line)` per event.
    pub fn events(&self) -> Vec<(String, Value)> {
        parse_events(&self.body)
    }

    /// `(type, message)` of an error body, after checking its envelope.
    pub fn error(&self) -> (String, String) {
        let body = self.json();
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(
            body["request_id"].as_str(),
            self.header("request-id"),
            "request_id in body and header differ"
        );
        (
            body["error"]["type"].as_str().unwrap().to_owned(),
            body["error"]["message"].as_str().unwrap().to_owned(),
        )
    }
}

pub fn parse_events(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(bytes).expect("SSE is UTF-8");
    assert!(text.ends_with("\n\n"), "stream ends mid-event: {text:?}");
    text.split_terminator("\n\n")
        .map(|block| {
            let mut lines = block.lines();
            let event = lines.next().and_then(|l| l.strip_prefix("event: "));
            let data = lines.next().and_then(|l| l.strip_prefix("data: "));
            assert!(lines.next().is_none(), "extra lines in {block:?}");
            let (Some(event), Some(data)) = (event, data) else {
                panic!("malformed event {block:?}");
            };
            (event.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

/// The headers every valid request carries.
pub fn valid_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-api-key", KEY),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ]
}

/// A minimal valid request body.
pub fn body(text: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
    })
}

pub fn streaming(text: &str) -> Value {
    let mut b = body(text);
    b["stream"] = json!(true);
    b
}

/// POSTs `body` to `/v1/messages` on a fresh connection with valid headers.
pub fn post(server: &MockServer, body: &Value) -> Response {
    post_with(server, &valid_headers(), body.to_string().as_bytes())
}

pub fn post_with(server: &MockServer, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Conn::tcp(&server.url())
        .send("POST", "/v1/messages", headers, body)
        .expect("request to mock")
}
