//! `sum_grpc_requests_total{method,code}` and
//! `sum_grpc_request_seconds{method}`: a tower service around the API
//! service (`StatusUpdateManager`, behind its bearer token if there is one),
//! so that every request to it is counted with the status it got, however
//! that status was made: by the handler, the token check, the request
//! budget ([`super::inflight`]) or tonic's codec.
//!
//! **Bounded labels.** `method` is the RPC's name as the protos declare it
//! (`Update`, `Acknowledge`, …, read once from the descriptor set the
//! build embeds), or `unknown` for a path that names no method of the
//! service; `code` is the gRPC status code's name (`OK`,
//! `INVALID_ARGUMENT`, …; [`CODE_NAMES`]). Every method's series exist
//! from the start, every code at 0, and its histogram with no sample
//! ([`register`]); `unknown` appears only once such a request came.
//!
//! **When a request ends.** Its status is read where gRPC puts it: in the
//! response's headers for an error answered at once (a "trailers-only"
//! response), else in the trailers at the end of its body. The time is
//! taken from the request's arrival until then, so a `Subscribe` counts
//! for as long as its subscriber stayed. A request whose response was
//! dropped before its status (the client cancelled, the connection closed)
//! counts as `CANCELLED`.
//!
//! **Cost.** Per request: two reads of the clock, a look-up of the method
//! among the service's (a few string comparisons), one counter and one
//! histogram through handles taken at the start. The response body is
//! wrapped in place (no allocation of its own). Without `metrics.listen`
//! the service is passed through untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use metrics::{counter, histogram, Counter, Histogram};
use prost::Message;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::server::NamedService;
use tonic::Code;

use crate::metrics::{GRPC_REQUESTS, GRPC_REQUEST_SECONDS};

/// The API service's package and name, as in request paths.
const PACKAGE: &str = "status_update_manager.v1";
const SERVICE: &str = "StatusUpdateManager";

/// The names of the gRPC status codes, by number: the `code` label.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The `method` label of a path that names no method of the service.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The name of `code`, as in the `code` label.
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES
        .get(code as usize)
        .copied()
        .unwrap_or(CODE_NAMES[Code::Unknown as usize])
}

/// The methods of the API service, as the protos declare them (read once
/// from the embedded descriptor set).
pub fn method_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        set.file
            .iter()
            .filter(|file| file.package() == PACKAGE)
            .flat_map(|file| &file.service)
            .filter(|service| service.name() == SERVICE)
            .flat_map(|service| &service.method)
            .map(|method| method.name().to_string())
            .collect()
    })
}

/// One method's handles.
#[derive(Debug)]
struct Method {
    name: &'static str,
    seconds: Histogram,
    /// By code number.
    codes: [Counter; 17],
}

/// The handles of every method of the API service, taken from the recorder
/// installed when they were taken.
#[derive(Debug)]
pub struct RpcMetrics {
    methods: Vec<Method>,
}

impl RpcMetrics {
    /// Takes (and so registers) every method's handles, each code's counter
    /// at 0 and the histogram with no sample.
    fn take() -> Self {
        let methods = method_names()
            .iter()
            .map(|name| {
                let name = name.as_str();
                Method {
                    name,
                    seconds: histogram!(GRPC_REQUEST_SECONDS, "method" => name),
                    codes: CODE_NAMES
                        .map(|code| counter!(GRPC_REQUESTS, "method" => name, "code" => code)),
                }
            })
            .collect();
        RpcMetrics { methods }
    }

    /// The method a request path names (`None`: none of the service's).
    fn method(&'static self, path: &str) -> Option<&'static Method> {
        let name = path
            .strip_prefix('/')?
            .strip_prefix(PACKAGE)?
            .strip_prefix('.')?
            .strip_prefix(SERVICE)?
            .strip_prefix('/')?;
        self.methods.iter().find(|m| m.name == name)
    }
}

/// The handles taken by [`register`], if it ran.
static REGISTERED: OnceLock<RpcMetrics> = OnceLock::new();

/// Registers every method's series with the recorder installed now (the
/// service's, from [`super::recorder::install`]); [`Metered`] records
/// through them from then on. Later calls change nothing.
pub fn register() {
    REGISTERED.get_or_init(RpcMetrics::take);
}

/// The API service with its requests counted and timed; see the module docs.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Option<&'static RpcMetrics>,
}

impl<S> Metered<S> {
    /// `inner`, metered through the handles [`register`] took; passed
    /// through untouched if it did not run (no `metrics.listen`).
    pub fn new(inner: S) -> Self {
        Metered {
            inner,
            metrics: REGISTERED.get(),
        }
    }
}

impl<S: NamedService> NamedService for Metered<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for Metered<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Unpin,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = self.metrics.map(|metrics| Call {
            method: metrics.method(request.uri().path()),
            started: Instant::now(),
        });
        MeteredFuture {
            inner: self.inner.call(request),
            call,
        }
    }
}

/// A request being served, until its status is known.
#[derive(Debug)]
struct Call {
    /// `None`: a path that names no method of the service.
    method: Option<&'static Method>,
    started: Instant,
}

impl Call {
    fn finish(self, code: Code) {
        let took = self.started.elapsed();
        match self.method {
            Some(method) => {
                method.seconds.record(took);
                if let Some(counter) = method.codes.get(code as usize) {
                    counter.increment(1);
                }
            }
            None => {
                histogram!(GRPC_REQUEST_SECONDS, "method" => UNKNOWN_METHOD).record(took);
                counter!(GRPC_REQUESTS, "method" => UNKNOWN_METHOD, "code" => code_name(code))
                    .increment(1);
            }
        }
    }
}

/// The status a header map carries (`grpc-status`), if it carries one.
fn status_in(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The response of a [`Metered`] request, to come.
#[derive(Debug)]
pub struct MeteredFuture<F> {
    inner: F,
    call: Option<Call>,
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>> + Unpin,
{
    type Output = Result<Response<MeteredBody<ResBody>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let answered = ready!(Pin::new(&mut this.inner).poll(cx));
        let mut call = this.call.take();
        Poll::Ready(answered.map(|response| {
            // An error answered at once carries its status in the headers.
            if let Some(code) = status_in(response.headers()) {
                if let Some(call) = call.take() {
                    call.finish(code);
                }
            }
            response.map(|body| MeteredBody { body, call })
        }))
    }
}

impl<F> Drop for MeteredFuture<F> {
    fn drop(&mut self) {
        // Dropped before its response: the client went away.
        if let Some(call) = self.call.take() {
            call.finish(Code::Cancelled);
        }
    }
}

/// A response body whose trailers tell its request's status.
#[derive(Debug)]
pub struct MeteredBody<B> {
    body: B,
    /// `None` once recorded (or not metered).
    call: Option<Call>,
}

impl<B> http_body::Body for MeteredBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if this.call.is_some() {
            let code = match &polled {
                Poll::Pending => None,
                Poll::Ready(Some(Ok(frame))) => frame
                    .trailers_ref()
                    .map(|trailers| status_in(trailers).unwrap_or(Code::Unknown)),
                // The body failed, or ended without a status.
                Poll::Ready(Some(Err(_)) | None) => Some(Code::Unknown),
            };
            if let Some(code) = code {
                if let Some(call) = this.call.take() {
                    call.finish(code);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // Dropped before its status was sent: the client went away.
        if let Some(call) = self.call.take() {
            call.finish(Code::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower_service::Service as _;

    #[test]
    fn the_methods_are_the_services_as_the_protos_declare_them() {
        let names = method_names();
        for expected in [
            "Update",
            "Acknowledge",
            "Subscribe",
            "Cleanup",
            "Pause",
            "Resume",
            "ListStreams",
            "GetStream",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
        }
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }

    /// A service that answers what `answer` makes of the request's path.
    #[derive(Clone)]
    struct Fake(fn(&str) -> Response<tonic::body::Body>);

    impl tower_service::Service<Request<()>> for Fake {
        type Response = Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<()>) -> Self::Future {
            std::future::ready(Ok((self.0)(request.uri().path())))
        }
    }

    fn request(method: &str) -> Request<()> {
        Request::builder()
            .uri(format!("/{PACKAGE}.{SERVICE}/{method}"))
            .body(())
            .unwrap()
    }

    /// A unary answer: a message, then `grpc-status` in the trailers.
    fn with_trailers(path: &str) -> Response<tonic::body::Body> {
        let code = if path.ends_with("/Cleanup") { "5" } else { "0" };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", code.parse().unwrap());
        let frames = vec![
            Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        Response::new(tonic::body::Body::new(body))
    }

    /// An error answered at once: `grpc-status` in the headers.
    fn trailers_only(_: &str) -> Response<tonic::body::Body> {
        let mut response = Response::new(tonic::body::Body::empty());
        response
            .headers_mut()
            .insert("grpc-status", "3".parse().unwrap());
        response
    }

    /// Polls `body` to its end; `Ok` frames only.
    fn drain(mut body: MeteredBody<tonic::body::Body>) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            frame.unwrap();
        }
    }

    fn call(service: &mut Metered<Fake>, method: &str) -> Response<MeteredBody<tonic::body::Body>> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut answer = service.call(request(method));
        match Pin::new(&mut answer).poll(&mut cx) {
            Poll::Ready(Ok(response)) => response,
            _ => unreachable!("the fake answers at once"),
        }
    }

    #[test]
    fn each_request_counts_once_with_the_status_it_got() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let served = recorder.handle();
        let metrics: &'static RpcMetrics = Box::leak(Box::new(metrics::with_local_recorder(
            &recorder,
            RpcMetrics::take,
        )));
        let body = served.render();
        // Every method and code from the start.
        for expected in [
            "sum_grpc_requests_total{method=\"Update\",code=\"OK\"} 0",
            "sum_grpc_requests_total{method=\"GetStream\",code=\"UNAUTHENTICATED\"} 0",
            "sum_grpc_request_seconds_count{method=\"Acknowledge\"} 0",
        ] {
            assert!(body.contains(expected), "lacks {expected}:\n{body}");
        }

        let mut unary = Metered {
            inner: Fake(with_trailers),
            metrics: Some(metrics),
        };
        drain(call(&mut unary, "Update").into_body());
        drain(call(&mut unary, "Cleanup").into_body());
        // Dropped before its trailers: the client went away.
        drop(call(&mut unary, "Update"));
        let mut refusing = Metered {
            inner: Fake(trailers_only),
            metrics: Some(metrics),
        };
        let response = call(&mut refusing, "Acknowledge");
        assert!(response.body().is_end_stream());
        drop(response);
        // A path that names no method of the service: `unknown`, looked up
        // by name in the recorder in use then.
        metrics::with_local_recorder(&recorder, || {
            drain(call(&mut refusing, "NoSuchMethod").into_body());
        });

        let body = served.render();
        for expected in [
            "sum_grpc_requests_total{method=\"Update\",code=\"OK\"} 1",
            "sum_grpc_requests_total{method=\"Update\",code=\"CANCELLED\"} 1",
            "sum_grpc_requests_total{method=\"Cleanup\",code=\"NOT_FOUND\"} 1",
            "sum_grpc_requests_total{method=\"Acknowledge\",code=\"INVALID_ARGUMENT\"} 1",
            "sum_grpc_requests_total{method=\"Acknowledge\",code=\"OK\"} 0",
            "sum_grpc_requests_total{method=\"unknown\",code=\"INVALID_ARGUMENT\"} 1",
            "sum_grpc_request_seconds_count{method=\"Update\"} 2",
            "sum_grpc_request_seconds_count{method=\"Acknowledge\"} 1",
        ] {
            assert!(body.contains(expected), "lacks {expected}:\n{body}");
        }

        // Not registered: passed through, nothing recorded.
        let mut plain = Metered {
            inner: Fake(with_trailers),
            metrics: None,
        };
        drain(call(&mut plain, "Update").into_body());
        assert!(served
            .render()
            .contains("sum_grpc_requests_total{method=\"Update\",code=\"OK\"} 1"));
    }
}
