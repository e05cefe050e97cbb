//! `metrics.listen`: Prometheus's `/metrics`, served over HTTP/1.1 on the
//! gRPC thread's runtime.
//!
//! The recorder ([`super::recorder::install`]) keeps the figures;
//! this module answers scrapes with its text and runs its upkeep
//! ([`UPKEEP_EVERY`]). It is served here, and not by the exporter crate's
//! own listener, for three reasons:
//!
//! - **Off the actors' thread.** The exporter's listener would run on the
//!   runtime that installs it, the actix thread that carries every update.
//! - **Bounded connections.** Scrapers' connections come out of the
//!   descriptors `serve` keeps for everything but the stream files and the
//!   agents ([`RESERVED_DESCRIPTORS`]), so at most [`SCRAPE_CONNECTIONS`]
//!   are open at once ([`accept::incoming`]); a further one waits in the
//!   listen queue. A scrape flood cannot take a stream file's descriptor.
//! - **Failed accepts pause** ([`accept::ACCEPT_PAUSE`]) instead of
//!   spinning.
//!
//! A connection that sends no complete request head for
//! [`SCRAPE_HEADER_TIMEOUT`], whether its first or the next on a kept-alive
//! connection, is closed, and so is one whose response could not be written
//! for [`SCRAPE_WRITE_TIMEOUT`] (a client that sends requests but does not
//! read the answers), so that idle, slow or stuck clients give their permit
//! back.
//!
//! `GET` (or `HEAD`) `/metrics` is answered with the Prometheus text format
//! (`text/plain; version=0.0.4`); any other path gets `404`, any other
//! method `405` with `Allow: GET, HEAD`. The process's own figures
//! (`process_*`: descriptors, memory, CPU, start time; `metrics-process`)
//! are read from `/proc` right before each answer is rendered.
//!
//! [`RESERVED_DESCRIPTORS`]: crate::store::files::RESERVED_DESCRIPTORS

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use metrics_process::Collector;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tracing::debug;

use super::accept;

/// Scrapers' connections open at once. Prometheus keeps one per target;
/// a few more leave room for a person's `curl`.
pub const SCRAPE_CONNECTIONS: usize = 8;

/// How long a connection may take to send a request head, counted from
/// when it was accepted or its last response was sent. Longer than
/// Prometheus's usual scrape intervals would be needed to keep an idle
/// connection; a scraper reconnects when it finds one closed.
pub const SCRAPE_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long writing a response may make no progress (the client reads
/// none of it) before the connection is closed.
pub const SCRAPE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the recorder's upkeep runs (drains the histograms' recent
/// samples into their buckets), as the exporter crate's listener does it.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

/// Serves `/metrics` from `handle` on `listener` until the future is
/// dropped (with the runtime it runs on), and runs the recorder's upkeep
/// meanwhile.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let upkeep = handle.clone();
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    // The upkeep ends with the server (when this future is dropped).
    let _upkeep = AbortOnDrop(upkeep);
    let process = Collector::default();
    let mut connections = accept::incoming(listener, SCRAPE_CONNECTIONS, accept::Peers::Scrapers);
    while let Some(accepted) = connections.next().await {
        let Ok(connection) = accepted else { continue };
        let handle = handle.clone();
        let process = process.clone();
        let mut connection = tokio_io_timeout::TimeoutStream::new(connection);
        connection.set_write_timeout(Some(SCRAPE_WRITE_TIMEOUT));
        tokio::spawn(async move {
            let respond = hyper::service::service_fn(move |request| {
                std::future::ready(respond(&handle, &process, &request))
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(SCRAPE_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(Box::pin(connection)), respond)
                .await;
            if let Err(err) = served {
                debug!(cause = %err, "a /metrics connection ended with an error");
            }
        });
    }
}

/// The answer to one request.
fn respond(
    handle: &PrometheusHandle,
    process: &Collector,
    request: &Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method();
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            format!(
                "not found: {}; metrics are served at /metrics\n",
                request.uri().path()
            ),
        ));
    }
    if method != Method::GET && method != Method::HEAD {
        let mut refused = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not served: /metrics takes GET or HEAD\n"),
        );
        refused
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(refused);
    }
    // Into the process's recorder (the one `handle` renders, once installed).
    process.collect();
    let mut served = Response::new(Full::new(Bytes::from(handle.render())));
    served
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    Ok(served)
}

/// A short text answer.
fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A server on a free port with a recorder of its own (not the global
    /// one), in which `sum_test_total` was counted 3 times.
    async fn server() -> std::net::SocketAddr {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("sum_test_total").increment(3);
        });
        // The handle keeps what the recorder holds: the recorder itself can go.
        drop(recorder);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, handle));
        addr
    }

    /// Sends `request` and reads one response: its head and body, up to
    /// the body's `content-length`.
    async fn exchange(conn: &mut TcpStream, request: &str) -> (String, String) {
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut read = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed mid-response: {read:?}");
            read.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&read).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("a content-length");
                let wanted = if request.starts_with("HEAD") {
                    0
                } else {
                    length
                };
                if body.len() >= wanted {
                    return (head.to_owned(), body.to_owned());
                }
            }
        }
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text_again_on_a_kept_alive_connection() {
        let addr = server().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            let (head, body) = exchange(&mut conn, &get("/metrics")).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: text/plain; version=0.0.4"),
                "{head}"
            );
            assert!(body.contains("sum_test_total 3"), "{body}");
        }
        let (head, body) = exchange(
            &mut conn,
            "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "");
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused_with_what_is_served() {
        let addr = server().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let (head, body) = exchange(&mut conn, &get("/")).await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        assert!(
            body.contains("not found: /") && body.contains("/metrics"),
            "{body}"
        );
        let (head, body) = exchange(
            &mut conn,
            "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 405"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("allow: get, head"),
            "{head}"
        );
        assert!(
            body.contains("POST") && body.contains("GET or HEAD"),
            "{body}"
        );
    }

    /// With every permit held by `kind` connections, a further scraper
    /// waits in the listen queue (its connect completes in the kernel) and
    /// is served once one of them is closed by `timeout`, counted from
    /// `started`, and not before.
    async fn served_once_one_times_out(
        addr: std::net::SocketAddr,
        started: tokio::time::Instant,
        timeout: Duration,
        kind: &str,
    ) {
        let mut waiting = TcpStream::connect(addr).await.unwrap();
        let (head, body) =
            tokio::time::timeout(4 * timeout, exchange(&mut waiting, &get("/metrics")))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the scraper past the limit is served once a {kind} connection is closed"
                    )
                });
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("sum_test_total 3"), "{body}");
        assert!(
            started.elapsed() >= timeout,
            "served before any {kind} connection timed out: {:?}",
            started.elapsed()
        );
    }

    /// Paused time: the clock moves only when every task waits, straight to
    /// the next timer, so the idle connections' header timeout passes
    /// without a real wait.
    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_after_the_header_timeout_and_the_next_scraper_then_served()
    {
        let addr = server().await;
        let started = tokio::time::Instant::now();
        let mut idle = Vec::new();
        for _ in 0..SCRAPE_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        served_once_one_times_out(addr, started, SCRAPE_HEADER_TIMEOUT, "idle").await;
        for mut conn in idle {
            let mut rest = Vec::new();
            // Closed by the server: the read ends (hyper may first answer 408).
            conn.read_to_end(&mut rest).await.unwrap();
        }
    }

    /// A connection whose client sends requests and reads none of the
    /// answers: once the socket buffers are full, the server's write
    /// waits. Its receive buffer is made small so that this comes soon.
    async fn stuck(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut conn = socket.connect(addr).await.unwrap();
        // Far more answers than the buffers hold; the client's own write
        // waits too once the server stops reading, hence the task.
        let requests = get("/metrics").repeat(20_000);
        tokio::spawn(async move {
            let _ = conn.write_all(requests.as_bytes()).await;
            std::future::pending::<()>().await;
        })
    }

    /// Paused time, as above. Every permit is held by a connection whose
    /// response cannot be written: the header timeout does not apply to
    /// them (they are not waiting for a request), the write timeout does.
    #[tokio::test(start_paused = true)]
    async fn connections_that_read_no_answers_are_closed_after_the_write_timeout() {
        let addr = server().await;
        let started = tokio::time::Instant::now();
        let mut clients = Vec::new();
        for _ in 0..SCRAPE_CONNECTIONS {
            clients.push(stuck(addr).await);
        }
        served_once_one_times_out(addr, started, SCRAPE_WRITE_TIMEOUT, "stuck").await;
        for client in clients {
            client.abort();
        }
    }
}
