//! The body deadline: a request whose body has not fully arrived `server.body-timeout-ms`
//! after its head was read gets 408 and its connection closes.
//!
//! actix-http bounds the head (`client_request_timeout`) and idle keep-alive, but not the
//! body: a client sending one byte every 2 s kept its connection, its file descriptor and
//! a handler waiting forever. The payload stream is wrapped so that it fails once the
//! deadline passes; the handler's extractor turns that failure into some error answer,
//! which the guard replaces with the 408 (extractors map stream I/O errors to 400).
//!
//! The payload is kept alive until the answer has been sent ([`Deadline::keep_payload`]).
//! actix-http 3.20 decides what to do with a body the handler left unread when the answer
//! is done: if the payload is still held it closes the connection (after lingering for
//! `server.disconnect-timeout-ms`); if it was dropped and the body is chunked, it reads
//! and discards the rest with no deadline at all, so a client trickling a chunked body at
//! a route that answered early (a 413, a 401, or the 408 here) kept its connection.

use super::closing;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use actix_web::{HttpMessage as _, HttpResponse};
use std::cell::{Cell, RefCell};
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A request's body deadline, shared by its payload and the guard.
#[derive(Clone)]
pub struct Deadline {
    passed: Rc<Cell<bool>>,
    payload: Rc<RefCell<Payload>>,
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("passed", &self.passed.get())
            .finish_non_exhaustive()
    }
}

impl Deadline {
    /// Whether the body came too late.
    pub fn passed(&self) -> bool {
        self.passed.get()
    }

    /// The response body, holding the request payload until it has been sent (see the
    /// module docs for why).
    pub fn keep_payload(self, body: BoxBody) -> BoxBody {
        BoxBody::new(KeepPayload {
            body,
            _payload: self.payload,
        })
    }
}

/// Wraps the request's payload in the deadline, if it has one (requests without a body
/// are left alone: nothing to wait for).
pub fn arm(req: &mut ServiceRequest, timeout: Duration) -> Option<Deadline> {
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        return None;
    }
    let deadline = Deadline {
        passed: Rc::default(),
        payload: Rc::new(RefCell::new(payload)),
    };
    let stream = WithDeadline {
        sleep: Box::pin(actix_web::rt::time::sleep(timeout)),
        deadline: deadline.clone(),
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
    sleep: Pin<Box<actix_web::rt::time::Sleep>>,
    deadline: Deadline,
}

impl futures_core::Stream for WithDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.deadline.passed() {
            return Poll::Ready(None);
        }
        // The timer first: a client trickling bytes just fast enough to keep the inner
        // stream ready must not outrun the deadline.
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.deadline.passed.set(true);
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body deadline");
            return Poll::Ready(Some(Err(PayloadError::Io(e))));
        }
        Pin::new(&mut *self.deadline.payload.borrow_mut()).poll_next(cx)
    }
}

/// A response body that holds the request's payload while it is sent.
struct KeepPayload {
    body: BoxBody,
    _payload: Rc<RefCell<Payload>>,
}

impl MessageBody for KeepPayload {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
