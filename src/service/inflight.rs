//! A bound on the request bytes the gRPC server holds while it receives
//! them, over every connection and RPC at once.
//!
//! tonic gathers each request message whole before it decodes it (up to
//! the decoding limit, about 4 MiB: an oversized payload must still reach
//! the handler for API.md's `INVALID_ARGUMENT`). HTTP/2 flow control does
//! not bound that, since every byte tonic takes is given back to the
//! sender's window. So a client that opens many RPCs and sends large
//! messages slowly (or never finishes them) could make the server hold
//! connections × [`MAX_CONCURRENT_STREAMS`] × 4 MiB: far more memory than
//! any machine has.
//!
//! [`RequestBudget`] is a tower layer around the server's routes. Each
//! request body's bytes take permits from one semaphore as they arrive,
//! and give them back once their message is decoded, or when the body is
//! dropped (the RPC ended or failed). The body follows gRPC's framing (a
//! 5-byte prefix with each message's length) to see where messages end;
//! tonic decodes every message complete in what it holds before it asks
//! the body for more, so at that point those bytes are free again. A
//! streaming call thus holds at most its one unfinished message, however
//! long it lasts. A frame for which the budget has no room fails its RPC at
//! once with `RESOURCE_EXHAUSTED`, which the client may retry; the other
//! RPCs go on, and the bytes it held are free again. (Waiting for room
//! instead could leave every RPC waiting for the others, each holding a
//! part of its message.)
//!
//! Decoded requests are not counted: the handler refuses a payload over
//! `server.max_payload_bytes` at once (`service::grpc`), and hands the
//! others to the manager.
//!
//! [`MAX_CONCURRENT_STREAMS`]: super::MAX_CONCURRENT_STREAMS

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http::Request;
use tonic::Status;

/// Request bytes the server holds at once while receiving them, by default:
/// sixteen messages of the largest size it decodes, or a thousand updates
/// with the largest payload `server.max_payload_bytes` allows.
pub const DEFAULT_REQUEST_BYTES_IN_FLIGHT: usize = 64 << 20;

/// The layer: every request body it sees draws on one budget of `limit`
/// bytes.
#[derive(Debug, Clone)]
pub struct RequestBudget {
    budget: Arc<Budget>,
}

#[derive(Debug)]
struct Budget {
    permits: Semaphore,
    limit: usize,
}

impl RequestBudget {
    /// A budget of `limit` bytes (at least one; at most what a semaphore
    /// counts).
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        RequestBudget {
            budget: Arc::new(Budget {
                permits: Semaphore::new(limit),
                limit,
            }),
        }
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.budget.permits.available_permits()
    }
}

impl<S> tower_layer::Layer<S> for RequestBudget {
    type Service = Budgeted<S>;

    fn layer(&self, inner: S) -> Budgeted<S> {
        Budgeted {
            inner,
            budget: self.budget.clone(),
        }
    }
}

/// The routes behind a [`RequestBudget`].
#[derive(Debug, Clone)]
pub struct Budgeted<S> {
    inner: S,
    budget: Arc<Budget>,
}

impl<S> tower_service::Service<Request<Body>> for Budgeted<S>
where
    S: tower_service::Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let budget = self.budget.clone();
        self.inner.call(request.map(|body| {
            Body::new(Counted {
                body,
                budget,
                held: 0,
                decoded: 0,
                message: Message::default(),
            })
        }))
    }
}

/// A request body whose bytes hold permits of the budget until their
/// message is decoded or the body is dropped.
#[derive(Debug)]
struct Counted {
    body: Body,
    budget: Arc<Budget>,
    /// Permits held (given back on drop).
    held: usize,
    /// Of them, the bytes of messages complete in the frames given so far:
    /// decoded by the time the body is asked for another frame.
    decoded: usize,
    /// Where the frames given so far end inside the gRPC framing.
    message: Message,
}

/// The unfinished message at the end of the bytes seen so far.
#[derive(Debug, Default)]
struct Message {
    /// Its bytes seen, prefix included.
    seen: usize,
    /// Its prefix's bytes seen (up to 5).
    prefix: [u8; 5],
    /// The bytes of its body still to come, once the prefix is whole.
    body_left: usize,
}

impl Message {
    /// Follows `data`, the next bytes of the request; returns how many
    /// bytes of messages it completed, from earlier frames' bytes too.
    fn follow(&mut self, mut data: &[u8]) -> usize {
        let mut completed = 0;
        while !data.is_empty() {
            let take = if self.seen < 5 {
                let take = (5 - self.seen).min(data.len());
                self.prefix[self.seen..self.seen + take].copy_from_slice(&data[..take]);
                if self.seen + take == 5 {
                    let [_, a, b, c, d] = self.prefix;
                    self.body_left = u32::from_be_bytes([a, b, c, d]) as usize;
                }
                take
            } else {
                let take = self.body_left.min(data.len());
                self.body_left -= take;
                take
            };
            self.seen += take;
            data = &data[take..];
            if self.seen >= 5 && self.body_left == 0 {
                completed += self.seen;
                *self = Message::default();
            }
        }
        completed
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        // Asked again: the messages completed so far are decoded.
        if self.decoded > 0 {
            self.budget.permits.add_permits(self.decoded);
            self.held -= self.decoded;
            self.decoded = 0;
        }
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let len = frame.data_ref().map_or(0, Bytes::len);
        if len > 0 {
            let taken = u32::try_from(len).ok().is_some_and(|n| {
                self.budget
                    .permits
                    .try_acquire_many(n)
                    .map(|permits| permits.forget())
                    .is_ok()
            });
            if !taken {
                return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "{len} more bytes of this request do not fit in what the server holds of \
                     requests being received: {} of at most {} bytes ({} of them this \
                     request's); retry once other requests are answered",
                    self.budget.limit - self.budget.permits.available_permits(),
                    self.budget.limit,
                    self.held,
                )))));
            }
            self.held += len;
            let this = &mut *self;
            if let Some(data) = frame.data_ref() {
                this.decoded += this.message.follow(data);
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.held > 0 {
            self.budget.permits.add_permits(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use std::convert::Infallible;
    use std::future::poll_fn;

    /// A body of the given frames.
    fn body(frames: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = frames
            .iter()
            .map(|bytes| Ok(Frame::data(Bytes::from_static(bytes))))
            .collect();
        Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    fn counted(budget: &RequestBudget, frames: &[&'static [u8]]) -> Counted {
        Counted {
            body: body(frames),
            budget: budget.budget.clone(),
            held: 0,
            decoded: 0,
            message: Message::default(),
        }
    }

    async fn next(body: &mut Counted) -> Option<Result<Frame<Bytes>, Status>> {
        poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test]
    async fn bytes_hold_the_budget_until_the_body_is_dropped_and_past_it_the_rpc_fails() {
        let budget = RequestBudget::new(10);
        let mut first = counted(&budget, &[b"abcd", b"efgh"]);
        assert!(next(&mut first).await.unwrap().is_ok());
        assert!(next(&mut first).await.unwrap().is_ok());
        assert!(next(&mut first).await.is_none());
        assert_eq!(budget.available(), 2, "8 bytes held while the body lives");

        let mut second = counted(&budget, &[b"ij", b"k"]);
        assert!(next(&mut second).await.unwrap().is_ok());
        assert_eq!(budget.available(), 0);
        let refused = next(&mut second).await.unwrap().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        for said in [
            "1 more bytes",
            "10 of at most 10 bytes",
            "2 of them",
            "retry",
        ] {
            assert!(
                refused.message().contains(said),
                "{said}: {}",
                refused.message()
            );
        }

        drop(first);
        assert_eq!(budget.available(), 8);
        drop(second);
        assert_eq!(budget.available(), 10, "every byte is given back");
        // Room again: a new body is served.
        let mut third = counted(&budget, &[b"0123456789"]);
        assert!(next(&mut third).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_message_gives_its_bytes_back_once_the_body_is_asked_for_more() {
        let budget = RequestBudget::new(100);
        // Messages of 3 and 0 bytes, then one of 4 split across frames (its
        // prefix too).
        let mut stream = counted(
            &budget,
            &[b"\0\0\0\0\x03abc\0\0\0", b"\0\0\0\0", b"\0\0\x04ab", b"cd"],
        );
        assert!(next(&mut stream).await.unwrap().is_ok());
        assert_eq!(budget.available(), 89, "11 bytes held until asked again");
        assert!(next(&mut stream).await.unwrap().is_ok());
        assert_eq!(
            budget.available(),
            93,
            "the first message's 8 bytes given back; 7 held: the second (5), the third's start"
        );
        assert!(next(&mut stream).await.unwrap().is_ok());
        assert_eq!(
            budget.available(),
            93,
            "the second's 5 given back, the third's 7 held"
        );
        assert!(next(&mut stream).await.unwrap().is_ok());
        assert_eq!(budget.available(), 91, "the third message's 9 bytes held");
        assert!(next(&mut stream).await.is_none());
        assert_eq!(budget.available(), 100, "every message decoded");
        drop(stream);
        assert_eq!(budget.available(), 100);
    }

    #[test]
    fn the_framing_is_followed_byte_by_byte() {
        let mut message = Message::default();
        let bytes = b"\0\0\0\0\x02xy\0\0\0\0\0";
        let completed: usize = bytes.iter().map(|b| message.follow(&[*b])).sum();
        assert_eq!(completed, 12);
        assert_eq!(message.seen, 0);
    }

    #[tokio::test]
    async fn the_layer_wraps_every_request_body() {
        use tower_layer::Layer;
        use tower_service::Service;
        let budget = RequestBudget::new(100);
        let mut service = budget.layer(tower_service_fn(|request: Request<Body>| async move {
            let mut body = request.into_body();
            let mut read = 0;
            while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                read += frame.unwrap().into_data().map_or(0, |d| d.len());
            }
            Ok::<_, Infallible>(read)
        }));
        let read = service
            .call(Request::new(body(&[b"0123456789", b"01234"])))
            .await
            .unwrap();
        assert_eq!(read, 15);
        assert_eq!(
            budget.available(),
            100,
            "given back once the body is dropped"
        );
    }

    /// A tower service from a closure.
    fn tower_service_fn<F>(f: F) -> ServiceFn<F> {
        ServiceFn(f)
    }

    #[derive(Clone)]
    struct ServiceFn<F>(F);

    impl<F, Fut, T> tower_service::Service<Request<Body>> for ServiceFn<F>
    where
        F: FnMut(Request<Body>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Infallible>>,
    {
        type Response = T;
        type Error = Infallible;
        type Future = Fut;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Fut {
            (self.0)(request)
        }
    }
}
