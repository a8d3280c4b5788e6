//! `--max-message-bytes`: a request body larger than that is refused with RESOURCE_EXHAUSTED (the
//! gRPC convention for an oversized message) as soon as the excess arrives, before anything of
//! it is decoded or buffered further. One limit for every service a process serves.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tower::Layer;

/// gRPC prefixes each message with a 5-byte header (compression flag, length).
const FRAME_HEADER: u64 = 5;

#[derive(Clone, Copy)]
pub struct SizeLimitLayer {
    limit: u64,
}

impl SizeLimitLayer {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
        }
    }
}

impl<S> Layer<S> for SizeLimitLayer {
    type Service = SizeLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SizeLimit {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Clone)]
pub struct SizeLimit<S> {
    inner: S,
    limit: u64,
}

impl<S> Service<http::Request<Body>> for SizeLimit<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let limit = self.limit;
        self.inner.call(request.map(|inner| {
            Body::new(LimitedBody {
                inner,
                seen: 0,
                limit,
            })
        }))
    }
}

struct LimitedBody {
    inner: Body,
    seen: u64,
    limit: u64,
}

impl HttpBody for LimitedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += u64::try_from(data.remaining()).unwrap_or(u64::MAX);
                    if this.seen > this.limit + FRAME_HEADER {
                        return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(format!(
                            "request message larger than {} bytes (--max-message-bytes)",
                            this.limit
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
