//! Reads what a client is still sending after its request was answered
//! without its body: a refusal by the auth layer, a bad query parameter, an
//! upload rejected on its first bytes. Answered over an unread body, the
//! connection is closed under a client still writing it, which then sees a
//! broken connection (a reset, a TLS EOF) instead of the answer. This layer
//! only reads and discards, bounded in bytes and time; it never changes an
//! answer and never holds a body a handler still streams.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// How long an unread body is read before the answer goes out.
pub const DRAIN_FOR_AT_MOST: Duration = Duration::from_secs(2);

/// How many unread bytes are read before the answer goes out.
pub const DRAIN_AT_MOST_BYTES: usize = 64 << 20;

/// Middleware: runs the route with a body that, dropped unfinished, is
/// handed back here and read (bounded) before the route's answer is sent.
pub async fn drain_unread_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let returned = Arc::new(Mutex::new(None));
    let body = Body::new(ReturnedIfUnread {
        inner: Some(body),
        returned: returned.clone(),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    let unread = returned.lock().map(|mut slot| slot.take()).unwrap_or(None);
    if let Some(unread) = unread {
        let _ = tokio::time::timeout(
            DRAIN_FOR_AT_MOST,
            axum::body::to_bytes(unread, DRAIN_AT_MOST_BYTES),
        )
        .await;
    }
    response
}

/// A request body that puts itself back in `returned` when dropped before
/// its end.
struct ReturnedIfUnread {
    inner: Option<Body>,
    returned: Arc<Mutex<Option<Body>>>,
}

impl HttpBody for ReturnedIfUnread {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for ReturnedIfUnread {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if inner.is_end_stream() {
            return;
        }
        if let Ok(mut slot) = self.returned.lock() {
            *slot = Some(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use tower_service::Service;

    /// A route that answers without reading, and one that reads.
    fn app(read: Arc<Mutex<usize>>) -> Router {
        Router::new()
            .route("/ignore", post(|| async { "no" }))
            .route(
                "/read",
                post(|body: Bytes| async move {
                    *read.lock().unwrap() = body.len();
                    "yes"
                }),
            )
            .layer(axum::middleware::from_fn(drain_unread_body))
    }

    /// A body that counts what was taken from it.
    fn counted(chunks: usize, taken: Arc<Mutex<usize>>) -> Body {
        let stream = futures::stream::iter((0..chunks).map(move |_| {
            *taken.lock().unwrap() += 1;
            Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 1024]))
        }));
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn an_unread_body_is_read_before_the_answer_goes_out() {
        let taken = Arc::new(Mutex::new(0));
        let request = Request::post("/ignore")
            .body(counted(100, taken.clone()))
            .unwrap();
        let response = app(Arc::default()).call(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(*taken.lock().unwrap(), 100, "every chunk was read");
    }

    #[tokio::test]
    async fn a_read_body_reaches_its_route_whole() {
        let taken = Arc::new(Mutex::new(0));
        let read = Arc::new(Mutex::new(0));
        let request = Request::post("/read")
            .body(counted(10, taken.clone()))
            .unwrap();
        let response = app(read.clone()).call(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(*read.lock().unwrap(), 10 * 1024);
        assert_eq!(*taken.lock().unwrap(), 10);
    }
}
