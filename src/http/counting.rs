//! A body that counts the bytes of its data frames into a counter and is otherwise the body
//! it wraps: size hint and end of stream included (Content-Length and empty-body detection
//! depend on them).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

pub struct Counting {
    inner: Body,
    counter: &'static Counter,
}

impl Counting {
    pub fn wrap(inner: Body, counter: &'static Counter) -> Body {
        Body::new(Counting { inner, counter })
    }
}

impl http_body::Body for Counting {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn counts_and_keeps_the_size_hint() {
        static C: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
        let c = C.get_or_init(Counter::default);
        let empty = Counting::wrap(Body::empty(), c);
        assert_eq!(http_body::Body::size_hint(&empty).exact(), Some(0));
        assert!(http_body::Body::is_end_stream(&empty));
        let full = Counting::wrap(Body::from("hello"), c);
        assert_eq!(http_body::Body::size_hint(&full).exact(), Some(5));
        assert_eq!(full.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(c.get(), 5);
    }
}
