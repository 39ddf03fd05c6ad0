//! Ingest shards: the only writers of the `ingest-<n>` partitions. The HTTP edge hands each
//! click, impression or conversion to a shard through a bounded mailbox; when it is full
//! the edge gets [`AppendError::Full`] at once (and answers 503 with `Retry-After`) instead
//! of queueing without bound. A record is acknowledged only once it is in the journal
//! (page cache), or, with `durable`, once a group-commit sync covers it.

use crate::supervisor::{ChildCtx, Stop};
use actix::prelude::*;
use clicktrail_storage::{Appended, Writer, DURABLE_WAIT_DEFAULT};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Why an append was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The shard's queue is full: back off and retry.
    #[error("ingest queue full")]
    Full,
    /// The shard is not running (restarting, or stopped by shutdown).
    #[error("ingest shard unavailable")]
    Unavailable,
    /// The journal refused or failed (disk full, I/O error, record too large).
    #[error("journal: {0}")]
    Journal(String),
}

/// One record for the journal.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Append {
    pub kind: u16,
    pub version: u16,
    pub payload: rkyv::util::AlignedVec,
    /// Acknowledge only after a sync (money events); otherwise once in the page cache.
    pub durable: bool,
    reply: tokio::sync::oneshot::Sender<Result<Appended, AppendError>>,
}

/// The shards' current addresses (a restart replaces one). Cheap to clone.
///
/// The bound is ours, not the actix mailbox's: an actix mailbox gives every sender handle
/// a slot of its own beyond its capacity, so with many callers it would grow without
/// limit. Each shard counts the records handed to it and not yet answered.
#[derive(Debug, Clone)]
pub struct IngestShards {
    addrs: Arc<RwLock<Vec<Option<Addr<IngestShard>>>>>,
    in_flight: Arc<Vec<AtomicUsize>>,
    queue_max: usize,
}

/// Gives a shard's in-flight slot back however the append ends (answered, failed, or the
/// caller gone).
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl IngestShards {
    pub fn new(count: usize, queue_max: usize) -> Self {
        assert!(count > 0 && queue_max > 0);
        IngestShards {
            addrs: Arc::new(RwLock::new(vec![None; count])),
            in_flight: Arc::new((0..count).map(|_| AtomicUsize::new(0)).collect()),
            queue_max,
        }
    }

    pub fn count(&self) -> usize {
        self.addrs.read().unwrap().len()
    }

    /// Hands a record to shard `shard` (modulo the count) and waits for its acknowledgement.
    pub async fn append(
        &self,
        shard: usize,
        kind: u16,
        version: u16,
        payload: rkyv::util::AlignedVec,
        durable: bool,
    ) -> Result<Appended, AppendError> {
        let shard = shard % self.in_flight.len();
        let counter = &self.in_flight[shard];
        if counter.fetch_add(1, Ordering::AcqRel) >= self.queue_max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(AppendError::Full);
        }
        let _slot = Slot(counter);
        let addr = self.addrs.read().unwrap()[shard].clone();
        let addr = addr.ok_or(AppendError::Unavailable)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        let msg = Append {
            kind,
            version,
            payload,
            durable,
            reply,
        };
        // Bounded by the in-flight count above; the mailbox never holds more than that.
        addr.try_send(msg).map_err(|e| match e {
            SendError::Full(_) => AppendError::Full,
            SendError::Closed(_) => AppendError::Unavailable,
        })?;
        rx.await.unwrap_or(Err(AppendError::Unavailable))
    }
}

/// See the module docs.
pub struct IngestShard {
    writer: Option<Writer>,
    index: usize,
    queue_max: usize,
    shards: IngestShards,
    ctx: ChildCtx,
}

impl std::fmt::Debug for IngestShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestShard")
            .field("index", &self.index)
            .finish()
    }
}

impl IngestShard {
    /// Starts shard `index` on `arbiter` and publishes its address.
    pub fn start(
        arbiter: &ArbiterHandle,
        ctx: ChildCtx,
        shards: &IngestShards,
        index: usize,
        queue_max: usize,
    ) -> Recipient<Stop> {
        let shards = shards.clone();
        let addr = IngestShard::start_in_arbiter(arbiter, {
            let shards = shards.clone();
            move |_| IngestShard {
                writer: None,
                index,
                queue_max,
                shards,
                ctx,
            }
        });
        shards.addrs.write().unwrap()[index] = Some(addr.clone());
        addr.recipient()
    }

    fn retire(&mut self) {
        self.writer = None;
        self.shards.addrs.write().unwrap()[self.index] = None;
    }
}

impl Actor for IngestShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Room for every in-flight record (see `IngestShards`); never the binding limit.
        ctx.set_mailbox_capacity(self.queue_max + 1);
        let name = crate::system::ingest_partition(self.index);
        match self.ctx.journal.partition(&name).and_then(|p| p.writer()) {
            Ok(w) => {
                self.writer = Some(w);
                self.ctx.running();
            }
            Err(e) => {
                self.retire();
                self.ctx.fail(e.to_string());
                ctx.stop();
            }
        }
    }
}

impl Handler<Append> for IngestShard {
    type Result = ();

    fn handle(&mut self, msg: Append, ctx: &mut Context<Self>) {
        let Some(w) = self.writer.as_mut() else {
            let _ = msg.reply.send(Err(AppendError::Unavailable));
            return;
        };
        let appended = match w.append(msg.kind, msg.version, None, &msg.payload) {
            Ok(a) => a,
            Err(e) => {
                let _ = msg.reply.send(Err(AppendError::Journal(e.to_string())));
                return;
            }
        };
        if !msg.durable {
            let _ = msg.reply.send(Ok(appended));
            return;
        }
        // Durable: the reply waits for the group commit, the shard does not.
        let wait = w.partition().wait_durable(appended.end);
        ctx.spawn(
            async move {
                let r = match tokio::time::timeout(DURABLE_WAIT_DEFAULT, wait).await {
                    Ok(Ok(())) => Ok(appended),
                    Ok(Err(e)) => Err(AppendError::Journal(e.to_string())),
                    Err(_) => Err(AppendError::Journal("durable sync timed out".into())),
                };
                let _ = msg.reply.send(r);
            }
            .into_actor(self),
        );
    }
}

impl Handler<Stop> for IngestShard {
    type Result = MessageResult<Stop>;

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) -> Self::Result {
        let end = self.writer.as_ref().map_or(0, |w| w.end());
        self.retire();
        ctx.stop();
        MessageResult(vec![(crate::system::ingest_partition(self.index), end)])
    }
}
