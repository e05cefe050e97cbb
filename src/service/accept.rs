//! The service's connections, the agents' to the gRPC server and the
//! scrapers' to `/metrics` ([`Peers`]): how many it holds, how it accepts
//! them and how each is set up.
//!
//! The stream files and the agents' connections share the process's
//! descriptor limit (`ulimit -n`). `serve` splits it between them
//! ([`fit_to_descriptor_limit`]): the files get their bound, and the
//! connections what is left. [`incoming`] then holds one permit per open
//! connection ([`Held`]), so that connections never take a descriptor a
//! stream file needs (a stream file that cannot be opened is a stream
//! fault). Past its share, a new connection waits in the listen queue
//! until one closes, and the log says so.
//!
//! An accept that fails because of the connection itself (reset, aborted,
//! or a network error it met in the queue) is skipped. Any other failure
//! is the process's or the system's, such as `EMFILE` or `ENFILE` (another
//! part of the process, or the system, is out of descriptors): the next
//! accept waits [`ACCEPT_PAUSE`]. Tried again at once, it would keep
//! failing, a core busy and nothing in the log.
//!
//! Each accepted connection has `TCP_NODELAY` and TCP keepalive on
//! ([`KEEPALIVE_IDLE`]); the gRPC server also pings its HTTP/2 side
//! ([`Http2Keepalive`]).
//!
//! [`fit_to_descriptor_limit`]: crate::store::files::fit_to_descriptor_limit

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tracing::{debug, info, warn};

/// How long a connection (an agent's or a scraper's) may be idle before
/// the kernel asks whether its peer is still there (TCP keepalive). With
/// [`KEEPALIVE_INTERVAL`] and [`KEEPALIVE_PROBES`], a connection from a
/// host that vanished without closing it (power loss, a partition) is
/// closed within about two minutes, instead of holding a descriptor and a
/// connection's permit until the process restarts. (Linux's defaults would
/// wait two hours and a quarter.)
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// How often an idle connection's peer is asked once it was idle [`KEEPALIVE_IDLE`].
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keepalive probes that end a connection.
pub const KEEPALIVE_PROBES: u32 = 6;

/// How long the server waits before it accepts again after an accept
/// failed for a reason other than the connection itself. The connection
/// waits in the listen queue meanwhile.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How often at most the log says that accepts fail, or that the server
/// holds as many connections as it may (either can happen many times a
/// second).
pub const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// HTTP/2 keepalive on the agents' connections: a connection on which
/// nothing arrived for `interval` is sent a PING, and closed if the PING is
/// not answered within `timeout`.
///
/// TCP keepalive ([`KEEPALIVE_IDLE`]) finds a peer host that is
/// gone, but the kernel of a live host answers its probes even when the
/// agent process is stopped, hung, or no longer reads its connection. Such
/// a connection would hold its descriptor, its permit, and what its RPCs
/// hold (a subscriber's stream of forwards, say) until the process
/// restarts. A PING is answered by the peer's HTTP/2 side itself, so an
/// agent that merely has nothing to say is never closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Keepalive {
    /// Idle time before a PING.
    pub interval: Duration,
    /// How long the PING's answer may take.
    pub timeout: Duration,
}

impl Default for Http2Keepalive {
    /// A PING after a minute of silence, closed 20 s later if unanswered:
    /// rare enough for any client (gRPC's ping limits police the PINGs
    /// clients send, not those they receive).
    fn default() -> Self {
        Http2Keepalive {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(20),
        }
    }
}

/// What the gRPC server accepts: TCP connections, each with its permit.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Held<TcpStream>>> + Send>>;

/// Whose connections a listener accepts: what the log names, and why
/// their number is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    /// The agents', on `server.listen`: their share of the descriptors.
    Agents,
    /// Prometheus scrapers', on `metrics.listen`
    /// ([`SCRAPE_CONNECTIONS`](super::scrape::SCRAPE_CONNECTIONS)).
    Scrapers,
}

impl Peers {
    /// The listener, as the log names it (`listener = …`).
    fn listener(self) -> &'static str {
        match self {
            Peers::Agents => "server.listen",
            Peers::Scrapers => "metrics.listen",
        }
    }

    /// Why a new connection waits, said when all permits are held.
    fn full(self) -> &'static str {
        match self {
            Peers::Agents => {
                "holding as many agents' connections as the descriptor limit leaves room for \
                 beside the stream files; new ones wait in the listen queue until one closes"
            }
            Peers::Scrapers => {
                "holding as many /metrics connections as the server keeps open; new ones wait \
                 in the listen queue until one closes"
            }
        }
    }
}

/// The connections `listener` accepts from `peers`, at most `connections`
/// open at once, each set up as the module docs say.
pub fn incoming(listener: TcpListener, connections: usize, peers: Peers) -> Incoming {
    let permits = Arc::new(Semaphore::new(connections.clamp(1, Semaphore::MAX_PERMITS)));
    Box::pin(accepting(
        TcpListenerStream::new(listener).map(|accepted| accepted.map(tune)),
        permits,
        peers,
    ))
}

/// An accepted connection and its permit, which goes back when the
/// connection is dropped (closed).
#[derive(Debug)]
pub struct Held<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T> Held<T> {
    /// The connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // HTTP/2 writes each frame's header and body together with it.
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for Held<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Nagle's algorithm off (a response is sent when it is written, not held
/// back until the peer acknowledges the previous one; gRPC clients and
/// servers conventionally set `TCP_NODELAY`), TCP keepalive on.
fn tune(connection: TcpStream) -> TcpStream {
    if let Err(e) = connection.set_nodelay(true) {
        warn!(cause = %e, "cannot set TCP_NODELAY on an accepted connection");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(&connection).set_tcp_keepalive(&keepalive) {
        warn!(cause = %e, "cannot turn TCP keepalive on for an accepted connection");
    }
    connection
}

/// A warning said at most once every [`ACCEPT_WARN_EVERY`], and whether
/// the log has said since that it is over.
#[derive(Default)]
struct Throttled {
    /// When it was last said, and whether its end was.
    said: Option<(Instant, bool)>,
    /// Times it happened since it was last said.
    count: u64,
}

impl Throttled {
    /// Counts one more time; whether to say it now (and how many times it
    /// happened since it last was).
    fn happened(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .said
            .is_some_and(|(at, _)| now.duration_since(at) < ACCEPT_WARN_EVERY)
        {
            return None;
        }
        self.said = Some((now, false));
        Some(std::mem::take(&mut self.count))
    }

    /// Whether to say now that it is over (once per time it was said).
    fn ended(&mut self) -> bool {
        match &mut self.said {
            Some((_, told @ false)) => {
                *told = true;
                true
            }
            _ => false,
        }
    }
}

/// The connections `accepts` yields, each with one of `permits`, taken
/// before the accept: with none left, the next connection waits in the
/// listen queue. Past failures as the module docs say.
fn accepting<C>(
    accepts: impl Stream<Item = io::Result<C>> + Unpin,
    permits: Arc<Semaphore>,
    peers: Peers,
) -> impl Stream<Item = io::Result<Held<C>>> {
    struct State<S> {
        accepts: S,
        permits: Arc<Semaphore>,
        failing: Throttled,
        full: Throttled,
    }
    let state = State {
        accepts,
        permits,
        failing: Throttled::default(),
        full: Throttled::default(),
    };
    futures_util::stream::unfold(state, move |mut state| async move {
        loop {
            let permit = match state.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::NoPermits) => {
                    if let Some(times) = state.full.happened() {
                        warn!(times, listener = peers.listener(), "{}", peers.full());
                    }
                    state.permits.clone().acquire_owned().await.ok()?
                }
                Err(TryAcquireError::Closed) => return None,
            };
            match state.accepts.next().await? {
                Ok(io) => {
                    if state.failing.ended() {
                        info!(listener = peers.listener(), "accepting connections again");
                    }
                    return Some((
                        Ok(Held {
                            io,
                            _permit: permit,
                        }),
                        state,
                    ));
                }
                Err(e) if ended_before_accepted(&e) => {
                    debug!(cause = %e, "a connection ended before it was accepted");
                }
                Err(e) => {
                    if let Some(failed) = state.failing.happened() {
                        let why = if out_of_descriptors(&e) {
                            "cannot accept connections: out of descriptors (ulimit -n)"
                        } else {
                            "cannot accept connections"
                        };
                        warn!(
                            cause = %e,
                            failed,
                            retry_every = ?ACCEPT_PAUSE,
                            listener = peers.listener(),
                            "{why}"
                        );
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            }
        }
    })
}

/// Whether an accept failed because of the connection itself, not because
/// of the process: the peer reset or gave up on it, or (Linux, accept(2))
/// the network error it met while it waited in the queue.
fn ended_before_accepted(e: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return true;
    }
    #[cfg(target_os = "linux")]
    if let Some(code) = e.raw_os_error() {
        return matches!(
            code,
            libc::ENETDOWN
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        );
    }
    false
}

/// Whether an accept failed because the process (`EMFILE`) or the system
/// (`ENFILE`) has no descriptor left.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::io::{Error, ErrorKind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `items` as accepts, counting how many were taken.
    fn counted<C>(
        items: Vec<io::Result<C>>,
    ) -> (impl Stream<Item = io::Result<C>> + Unpin, Arc<AtomicUsize>) {
        let taken = Arc::new(AtomicUsize::new(0));
        let seen = taken.clone();
        let accepts = futures_util::stream::iter(items).map(move |accept| {
            seen.fetch_add(1, Ordering::Relaxed);
            accept
        });
        (accepts, taken)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_accept_is_retried_after_a_pause_and_a_connection_that_ended_is_skipped() {
        let too_many = || Error::from_raw_os_error(libc::EMFILE);
        let (accepts, taken) = counted(vec![
            Err(too_many()),
            Err(too_many()),
            Err(Error::from(ErrorKind::ConnectionAborted)),
            Ok(7),
            Err(Error::from(ErrorKind::ConnectionReset)),
            Err(Error::from_raw_os_error(libc::EPROTO)),
            Ok(8),
        ]);
        let started = Instant::now();
        let mut accepted = Box::pin(accepting(
            accepts,
            Arc::new(Semaphore::new(8)),
            Peers::Agents,
        ));
        assert_eq!(*accepted.next().await.unwrap().unwrap().get_ref(), 7);
        assert_eq!(taken.load(Ordering::Relaxed), 4);
        // One pause after each failure of the process, none for the connection.
        assert_eq!(started.elapsed(), ACCEPT_PAUSE * 2);
        assert_eq!(*accepted.next().await.unwrap().unwrap().get_ref(), 8);
        assert_eq!(started.elapsed(), ACCEPT_PAUSE * 2);
        assert!(accepted.next().await.is_none(), "ends with the listener");
    }

    #[tokio::test]
    async fn no_more_connections_are_accepted_than_there_are_permits() {
        let (accepts, taken) = counted(vec![Ok(1), Ok(2), Ok(3)]);
        let permits = Arc::new(Semaphore::new(2));
        let mut accepted = Box::pin(accepting(accepts, permits.clone(), Peers::Agents));
        let first = accepted.next().await.unwrap().unwrap();
        let second = accepted.next().await.unwrap().unwrap();
        assert_eq!((*first.get_ref(), *second.get_ref()), (1, 2));
        assert_eq!(permits.available_permits(), 0);
        // The third waits, not accepted (still in the listen queue).
        assert!(accepted.next().now_or_never().is_none());
        assert_eq!(taken.load(Ordering::Relaxed), 2);
        drop(first);
        let third = accepted.next().await.unwrap().unwrap();
        assert_eq!(*third.get_ref(), 3);
        drop((second, third));
        assert_eq!(
            permits.available_permits(),
            2,
            "each closed one gave its permit back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_is_said_at_most_once_every_while_and_its_end_once() {
        let mut failing = Throttled::default();
        assert_eq!(failing.happened(), Some(1));
        assert_eq!(failing.happened(), None);
        assert!(failing.ended());
        assert!(!failing.ended(), "the end is said once");
        tokio::time::advance(ACCEPT_WARN_EVERY).await;
        assert_eq!(failing.happened(), Some(2), "with the times unsaid");
        assert!(failing.ended());
    }

    #[tokio::test]
    async fn accepted_connections_have_nagles_algorithm_off_and_keepalive_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let mut accepted = incoming(listener, 1, Peers::Agents);
        let held = accepted.next().await.unwrap().unwrap();
        let server_side = held.get_ref();
        assert!(server_side.nodelay().unwrap());
        let socket = socket2::SockRef::from(server_side);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        assert_eq!(
            server_side.peer_addr().unwrap(),
            client.local_addr().unwrap()
        );
        assert_eq!(held.connect_info().local_addr(), Some(addr));
    }
}
