//! The body deadline: a request whose body has not fully arrived `server.body-timeout-ms`
//! after its head was read gets 408 and its connection closes.
//!
//! actix-http bounds the head (`client_request_timeout`) and idle keep-alive, but not the
//! body: a client sending one byte every 2 s kept its connection, its file descriptor and
//! a handler waiting forever. The payload stream is wrapped so that it fails once the
//! deadline passes; the handler's extractor turns that failure into some error answer,
//! which the guard replaces with the 408 (extractors map stream I/O errors to 400).

use super::closing;
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use actix_web::{HttpMessage as _, HttpResponse};
use std::cell::Cell;
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Whether a request's body deadline passed (shared by its payload and the guard).
#[derive(Debug, Clone, Default)]
pub struct Deadline(Rc<Cell<bool>>);

impl Deadline {
    pub fn passed(&self) -> bool {
        self.0.get()
    }
}

/// Wraps the request's payload in the deadline, if it has one (requests without a body
/// are left alone: nothing to wait for).
pub fn arm(req: &mut ServiceRequest, timeout: Duration) -> Option<Deadline> {
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        return None;
    }
    let deadline = Deadline::default();
    let stream = WithDeadline {
        inner: payload,
        sleep: Box::pin(actix_web::rt::time::sleep(timeout)),
        passed: deadline.clone(),
    };
    req.set_payload(Payload::Stream {
        payload: Box::pin(stream),
    });
    Some(deadline)
}

/// The answer to a body that came too slowly.
pub fn timed_out() -> HttpResponse {
    closing(
        HttpResponse::RequestTimeout()
            .insert_header(("Cache-Control", "no-store"))
            .json(serde_json::json!({
                "error": "request body not received in time (server.body-timeout-ms)"
            })),
    )
}

/// A payload that fails with `TimedOut` once its deadline passes.
struct WithDeadline {
    inner: Payload,
    sleep: Pin<Box<actix_web::rt::time::Sleep>>,
    passed: Deadline,
}

impl futures_core::Stream for WithDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.passed.passed() {
            return Poll::Ready(None);
        }
        // The timer first: a client trickling bytes just fast enough to keep the inner
        // stream ready must not outrun the deadline.
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.passed.0.set(true);
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body deadline");
            return Poll::Ready(Some(Err(PayloadError::Io(e))));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
