//! Serves the registry at `GET /metrics` for Prometheus to scrape.
//!
//! The exporter runs on its own thread with its own small runtime, so a
//! command whose runtime is busy (or blocked in a synchronous step between
//! jobs) still answers scrapes, and stopping it is dropping it.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::oneshot;

use super::global;

/// The content type of the OpenMetrics text format, which Prometheus asks
/// for first and parses by this header.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error(
        "cannot serve metrics on {addr}: {source}; pick a free address, e.g. --metrics 127.0.0.1:9464"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the metrics server: {0}")]
    Start(std::io::Error),
}

/// The running endpoint; dropping it stops the server.
pub struct Exporter {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Binds `addr` now (so a taken port fails the command before it does
    /// any work) and serves on a thread of its own.
    pub fn start(addr: SocketAddr) -> Result<Exporter, ExporterError> {
        let bind = |source| ExporterError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let bound = listener.local_addr().map_err(bind)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ExporterError::Start)?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("metrics".to_owned())
            .spawn(move || runtime.block_on(serve(listener, stopped)))
            .map_err(ExporterError::Start)?;
        tracing::info!(%bound, "serving metrics");
        Ok(Exporter {
            addr: bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port the system picked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the metrics server panicked");
        }
    }
}

async fn serve(listener: TcpListener, mut stopped: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(error = %e, "the metrics server could not start");
            return;
        }
    };
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(async move {
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), service_fn(answer))
                            .await;
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "metrics connection ended");
                        }
                    });
                }
                Err(e) => tracing::debug!(error = %e, "metrics accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

async fn answer<B>(request: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, global().encode()),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET /metrics\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if status == StatusCode::OK {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn serves_the_registry_and_frees_the_port_when_dropped() {
        let exporter = Exporter::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = exporter.addr();
        global().refusal(429);
        let reply = get(addr, "/metrics");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("application/openmetrics-text"), "{reply}");
        assert!(reply.contains("cmm_gateway_refusals_total{status=\"429\"}"));
        assert!(get(addr, "/").starts_with("HTTP/1.1 404"));
        let taken = Exporter::start(addr).err().expect("the port is taken");
        assert!(taken.to_string().contains("--metrics"), "{taken}");
        drop(exporter);
        drop(Exporter::start(addr).expect("the port is free again"));
    }
}
