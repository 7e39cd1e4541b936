//! Request bodies: the framing checks, buffering a judged body up to the
//! cap, and a response body that counts what it carried.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

use crate::framing::Framing;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the gateway sends, to the engine or to the client.
pub type GatewayBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> GatewayBody {
    full(Bytes::new())
}

pub fn incoming(body: Incoming) -> GatewayBody {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

/// Why a request body cannot be judged.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Both framings at once: which one a server believes decides what it
    /// reads, so moat believes neither (request smuggling).
    #[error("the request has both Content-Length and Transfer-Encoding")]
    AmbiguousFraming,
    #[error("the request's framing could not be followed, so it is not judged")]
    UnknownFraming,
    #[error("the request body is larger than the gateway's limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    Read(String),
}

/// Refuses a request whose framing two HTTP parsers could read
/// differently, as the raw bytes showed it ([`Framing`]; hyper drops the
/// Content-Length of such a request before the gateway sees the headers).
/// hyper itself refuses an invalid or repeated Content-Length and any
/// transfer coding but chunked.
pub fn check_framing(headers: &HeaderMap, framing: Framing) -> Result<(), BodyError> {
    match framing {
        Framing::Ambiguous => Err(BodyError::AmbiguousFraming),
        Framing::Unknown => Err(BodyError::UnknownFraming),
        Framing::Clear
            if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) =>
        {
            Err(BodyError::AmbiguousFraming)
        }
        Framing::Clear => Ok(()),
    }
}

/// Reads the whole body, whatever its framing, refusing more than `limit`
/// bytes. A Content-Length above the limit is refused before reading.
pub async fn buffer(headers: &HeaderMap, body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(BodyError::TooLarge { limit })
        }
        Err(err) => Err(BodyError::Read(err.to_string())),
    }
}

/// Counts the bytes of a body as they pass and calls `done` once with the
/// total when the body ends, fails, or is dropped by a client that went
/// away.
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    done: Option<Box<dyn FnOnce(u64, bool) + Send + Sync>>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, done: impl FnOnce(u64, bool) + Send + Sync + 'static) -> Counted<B> {
        Counted {
            inner,
            count: Arc::default(),
            done: Some(Box::new(done)),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            done(self.count.load(Ordering::Relaxed), complete);
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                self.finish(false);
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                self.finish(true);
                Poll::Ready(None)
            }
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
