//! The sending side: one event loop per thread (mio, edge-triggered), each with its share
//! of the connections and of the schedule.
//!
//! Open loop: the thread's requests (every `threads`-th of the schedule) become due at
//! their intended times and wait in a queue until a connection is free; a timerfd wakes the
//! loop at the next due time with microsecond precision (epoll's own timeout is in
//! milliseconds). Latency is recorded twice: from the intended time (corrected: includes
//! the wait for a free connection, i.e. the queueing a stalled server causes) and from the
//! moment the request was written (uncorrected, what closed-loop tools report).
//! Closed loop: every free connection sends at once; both latencies are the same.

use crate::http::{self, Parse};
use crate::scenario::{self, Kind, Scenario};
use crate::schedule::Schedule;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest latency recorded (longer ones saturate): one minute, in nanoseconds.
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;
/// Requests waiting for a connection beyond this many per thread are dropped (counted).
const PENDING_MAX: usize = 1_000_000;
/// Click ids and conversion ids kept for later conversions and reversals, per thread.
const POOL_MAX: usize = 100_000;
const TIMER: Token = Token(usize::MAX);

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("valid histogram bounds")
}

/// What the whole run shares.
#[derive(Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub host: String,
    /// `None`: closed loop.
    pub schedule: Option<Schedule>,
    /// Closed loop: seconds to run (warm-up included).
    pub closed_secs: f64,
    /// Seconds from the start before which nothing is recorded.
    pub warmup: f64,
    pub connections: usize,
    pub threads: usize,
    pub timeout: Duration,
    pub late_after: Duration,
    pub scenario: Scenario,
    pub links: Vec<String>,
    pub seed: u64,
    /// Part of every order and reversal id, so runs with the same seed do not collide
    /// with each other's idempotency keys (default: the start time in milliseconds).
    pub run_id: String,
    /// Keep the ids of acknowledged events for the journal check.
    pub keep_acks: bool,
}

impl Plan {
    pub fn end_secs(&self) -> f64 {
        self.schedule
            .as_ref()
            .map_or(self.closed_secs, Schedule::total_secs)
    }
    fn phases(&self) -> usize {
        self.schedule.as_ref().map_or(1, |s| s.segments().len())
    }
}

/// Counters the progress line reads while the run goes on.
pub struct Live {
    pub sent: AtomicU64,
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub late: AtomicU64,
    pub dropped: AtomicU64,
    /// Corrected latency of every recorded response so far, all kinds.
    pub latency: Mutex<Histogram<u64>>,
    /// The same since the progress line last took it (the current second).
    pub interval: Mutex<Histogram<u64>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            sent: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            late: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            interval: Mutex::new(histogram()),
        }
    }
}

/// Ids of what the server acknowledged, for `--verify`.
#[derive(Debug, Default)]
pub struct Acks {
    pub clicks: Vec<String>,
    pub impressions: u64,
    /// Order ids.
    pub conversions: Vec<String>,
    pub reversals: Vec<String>,
}

/// What one thread measured (merged into the run's result).
pub struct Recorded {
    pub corrected: BTreeMap<Kind, Histogram<u64>>,
    pub uncorrected: BTreeMap<Kind, Histogram<u64>>,
    /// Corrected latency per schedule segment (all kinds).
    pub phases: Vec<Histogram<u64>>,
    pub status: BTreeMap<u16, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub sent: u64,
    pub completed: u64,
    pub late: u64,
    pub dropped: u64,
    /// Responses recorded (after the warm-up).
    pub recorded: u64,
    /// Seconds from the start of the last recorded response.
    pub last_recorded: f64,
    pub acks: Acks,
}

impl Recorded {
    fn new(phases: usize) -> Recorded {
        Recorded {
            corrected: Kind::ALL.iter().map(|k| (*k, histogram())).collect(),
            uncorrected: Kind::ALL.iter().map(|k| (*k, histogram())).collect(),
            phases: (0..phases).map(|_| histogram()).collect(),
            status: BTreeMap::new(),
            errors: BTreeMap::new(),
            sent: 0,
            completed: 0,
            late: 0,
            dropped: 0,
            recorded: 0,
            last_recorded: 0.0,
            acks: Acks::default(),
        }
    }

    pub fn merge(&mut self, o: Recorded) {
        for (k, h) in o.corrected {
            self.corrected
                .get_mut(&k)
                .unwrap()
                .add(h)
                .expect("same bounds");
        }
        for (k, h) in o.uncorrected {
            self.uncorrected
                .get_mut(&k)
                .unwrap()
                .add(h)
                .expect("same bounds");
        }
        for (a, b) in self.phases.iter_mut().zip(o.phases) {
            a.add(b).expect("same bounds");
        }
        for (s, n) in o.status {
            *self.status.entry(s).or_default() += n;
        }
        for (e, n) in o.errors {
            *self.errors.entry(e).or_default() += n;
        }
        self.sent += o.sent;
        self.completed += o.completed;
        self.late += o.late;
        self.dropped += o.dropped;
        self.recorded += o.recorded;
        self.last_recorded = self.last_recorded.max(o.last_recorded);
        self.acks.clicks.extend(o.acks.clicks);
        self.acks.impressions += o.acks.impressions;
        self.acks.conversions.extend(o.acks.conversions);
        self.acks.reversals.extend(o.acks.reversals);
    }

    pub fn empty(plan: &Plan) -> Recorded {
        Recorded::new(plan.phases())
    }
}

struct InFlight {
    kind: Kind,
    /// Seconds from the start.
    intended: f64,
    sent: Instant,
    /// Order id or reversal id (for acks and pools).
    id: String,
}

struct Conn {
    stream: Option<TcpStream>,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    inflight: Option<InFlight>,
    /// Down (connect failed): retry after this.
    retry_at: Option<Instant>,
    /// A non-blocking connect in progress since then.
    connecting: Option<Instant>,
}

struct TimerFd(OwnedFd);

impl TimerFd {
    fn new() -> std::io::Result<TimerFd> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor.
        Ok(TimerFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Fires once after `d` (at least 1 µs).
    fn arm(&self, d: Duration) {
        let d = d.max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid fd and spec.
        unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }
}

struct Thread<'a> {
    plan: &'a Plan,
    index: usize,
    start: Instant,
    live: &'a Live,
    poll: Poll,
    conns: Vec<Conn>,
    /// Connections free to send, oldest-freed first: requests go round the connections as
    /// browsers' clicks arrive on many, rather than back onto the one just answered (which
    /// had open-loop load ride one connection, and so one server worker).
    idle: VecDeque<usize>,
    rng: fastrand::Rng,
    rec: Recorded,
    click_pool: VecDeque<String>,
    conv_pool: VecDeque<String>,
    counter: u64,
    /// Read buffer.
    chunk: Vec<u8>,
}

/// Runs one thread's share of the plan until its schedule is sent and answered.
pub fn run_thread(plan: &Plan, index: usize, start: Instant, live: &Live) -> Recorded {
    // Wake-ups within a microsecond or so of the timer rather than the default 50 µs slack.
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let poll = Poll::new().expect("epoll");
    let timer = TimerFd::new().expect("timerfd");
    poll.registry()
        .register(
            &mut SourceFd(&timer.0.as_raw_fd()),
            TIMER,
            Interest::READABLE,
        )
        .expect("register timerfd");
    let n_conns =
        plan.connections / plan.threads + usize::from(index < plan.connections % plan.threads);
    let mut t = Thread {
        plan,
        index,
        start,
        live,
        poll,
        conns: Vec::new(),
        idle: VecDeque::new(),
        rng: fastrand::Rng::with_seed(
            plan.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ),
        rec: Recorded::new(plan.phases()),
        click_pool: VecDeque::new(),
        conv_pool: VecDeque::new(),
        counter: 0,
        chunk: vec![0; 16384],
    };
    for c in 0..n_conns {
        t.conns.push(Conn {
            stream: None,
            wbuf: Vec::with_capacity(4096),
            wpos: 0,
            rbuf: Vec::with_capacity(16384),
            inflight: None,
            retry_at: None,
            connecting: None,
        });
        t.connect(c);
    }
    t.run(&timer);
    t.rec
}

impl Thread<'_> {
    fn secs(&self, at: Instant) -> f64 {
        at.duration_since(self.start).as_secs_f64()
    }

    fn error(&mut self, what: &'static str) {
        *self.rec.errors.entry(what).or_default() += 1;
        self.live.errors.fetch_add(1, Relaxed);
    }

    fn connect(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if let Some(mut s) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        conn.wbuf.clear();
        conn.wpos = 0;
        conn.rbuf.clear();
        self.idle.retain(|&i| i != c);
        // Non-blocking: a server that is down or whose accept queue is full must not stall
        // this thread's other connections (that would be charged as server latency).
        conn.retry_at = None;
        match TcpStream::connect(self.plan.addr) {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                self.poll
                    .registry()
                    .register(&mut s, Token(c), Interest::READABLE | Interest::WRITABLE)
                    .expect("register socket");
                conn.stream = Some(s);
                conn.connecting = Some(Instant::now());
            }
            Err(_) => {
                conn.retry_at = Some(Instant::now() + Duration::from_millis(100));
                self.error("connect");
            }
        }
    }

    /// A connect in progress has an answer (writable or error): up, or down for a while.
    fn connected(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        let Some(s) = conn.stream.as_ref() else {
            return;
        };
        let failed = matches!(s.take_error(), Ok(Some(_)) | Err(_));
        if !failed && s.peer_addr().is_ok() {
            conn.connecting = None;
            self.idle.push_back(c);
        } else if failed {
            self.connect_failed(c);
        }
        // Otherwise still in progress (spurious wake-up): wait for the next event.
    }

    fn connect_failed(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if let Some(mut s) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        conn.connecting = None;
        conn.retry_at = Some(Instant::now() + Duration::from_millis(100));
        self.error("connect");
    }

    /// The request failed on this connection: count it, start afresh.
    fn fail(&mut self, c: usize, what: &'static str) {
        if self.conns[c].inflight.take().is_some() {
            self.error(what);
            self.rec.completed += 1;
            self.live.completed.fetch_add(1, Relaxed);
        }
        self.connect(c);
    }

    fn run(&mut self, timer: &TimerFd) {
        let plan = self.plan;
        let stride = plan.threads as u64;
        let mut next_n = self.index as u64;
        let mut next_due = plan.schedule.as_ref().and_then(|s| s.time_of(next_n));
        let mut pending: VecDeque<f64> = VecDeque::new();
        let end = plan.end_secs();
        let drain_until = end + plan.timeout.as_secs_f64();
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            let now = Instant::now();
            let now_s = self.secs(now);
            if let Some(s) = &plan.schedule {
                while let Some(t) = next_due.filter(|&t| t <= now_s) {
                    pending.push_back(t);
                    if pending.len() > PENDING_MAX {
                        pending.pop_front();
                        self.rec.dropped += 1;
                        self.live.dropped.fetch_add(1, Relaxed);
                    }
                    next_n += stride;
                    next_due = s.time_of(next_n);
                }
                while !pending.is_empty() && now_s < drain_until {
                    let Some(c) = self.idle.pop_front() else {
                        break;
                    };
                    let intended = pending.pop_front().unwrap();
                    self.send(c, intended, now);
                }
            } else if now_s < end {
                while let Some(c) = self.idle.pop_front() {
                    self.send(c, now_s, now);
                }
            }
            let busy = self.conns.iter().any(|c| c.inflight.is_some());
            let scheduled_all = plan.schedule.is_none() || next_due.is_none();
            if now_s >= end
                && scheduled_all
                && (pending.is_empty() || now_s >= drain_until)
                && (!busy || now_s >= drain_until)
            {
                break;
            }
            // Sleep until the next due request if a connection could take it, else until
            // something happens on a socket; never longer than the timeout sweep period.
            let mut wait = Duration::from_millis(50);
            if let Some(t) = next_due {
                if !self.idle.is_empty() || pending.is_empty() {
                    let d = Duration::from_secs_f64((t - self.secs(Instant::now())).max(0.0));
                    if d.is_zero() {
                        continue;
                    }
                    if d < wait {
                        timer.arm(d);
                        wait = Duration::from_millis(60);
                    }
                }
            }
            if self.poll.poll(&mut events, Some(wait)).is_err() {
                continue;
            }
            for ev in events.iter() {
                if ev.token() == TIMER {
                    // Edge-triggered, and re-arming resets the expiry count: no read needed.
                    continue;
                }
                let c = ev.token().0;
                if self.conns[c].connecting.is_some() {
                    self.connected(c);
                    continue;
                }
                if ev.is_writable() {
                    self.flush(c);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read(c);
                }
            }
            if last_sweep.elapsed() >= Duration::from_millis(50) {
                last_sweep = Instant::now();
                self.sweep();
            }
        }
        for c in 0..self.conns.len() {
            if self.conns[c].inflight.is_some() {
                self.conns[c].inflight = None;
                self.error("timeout");
            }
        }
        self.rec.dropped += pending.len() as u64;
        self.live.dropped.fetch_add(pending.len() as u64, Relaxed);
    }

    /// Timeouts and reconnects.
    fn sweep(&mut self) {
        let now = Instant::now();
        for c in 0..self.conns.len() {
            let conn = &self.conns[c];
            if conn.retry_at.is_some_and(|t| t <= now) {
                self.connect(c);
            } else if conn
                .connecting
                .is_some_and(|t| now.duration_since(t) > self.plan.timeout)
            {
                self.connect_failed(c);
            } else if conn
                .inflight
                .as_ref()
                .is_some_and(|f| now.duration_since(f.sent) > self.plan.timeout)
            {
                self.fail(c, "timeout");
            }
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!(
            "lt{}-{}-{}-t{}-{}",
            prefix, self.plan.run_id, self.plan.seed, self.index, self.counter
        )
    }

    fn send(&mut self, c: usize, intended: f64, now: Instant) {
        let plan = self.plan;
        let sc = &plan.scenario;
        let mut kind = sc.pick(&mut self.rng);
        if kind == Kind::Reversal && self.conv_pool.is_empty() {
            kind = if plan.links.is_empty() {
                Kind::Conversion
            } else {
                Kind::Click
            };
        }
        let mut buf = std::mem::take(&mut self.conns[c].wbuf);
        buf.clear();
        let id = match kind {
            Kind::Click | Kind::Impression => {
                let link = self
                    .rng
                    .choice(&plan.links)
                    .expect("links checked at start");
                scenario::write_tracking(
                    &mut buf,
                    sc,
                    &plan.host,
                    link,
                    kind == Kind::Click,
                    &mut self.rng,
                );
                String::new()
            }
            Kind::Conversion => {
                let order = self.next_id("o");
                let click = self.click_pool.pop_front();
                scenario::write_conversion(
                    &mut buf,
                    sc,
                    &plan.host,
                    &order,
                    click.as_deref(),
                    &mut self.rng,
                );
                order
            }
            Kind::Reversal => {
                let conv = self.conv_pool.pop_front().expect("checked above");
                let rid = self.next_id("r");
                scenario::write_reversal(&mut buf, sc, &plan.host, &conv, &rid, &mut self.rng);
                rid
            }
        };
        let conn = &mut self.conns[c];
        conn.wbuf = buf;
        conn.wpos = 0;
        conn.inflight = Some(InFlight {
            kind,
            intended,
            sent: now,
            id,
        });
        self.rec.sent += 1;
        self.live.sent.fetch_add(1, Relaxed);
        if now.duration_since(self.start).as_secs_f64() - intended > plan.late_after.as_secs_f64() {
            self.rec.late += 1;
            self.live.late.fetch_add(1, Relaxed);
        }
        self.flush(c);
    }

    fn flush(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        let Some(s) = conn.stream.as_mut() else {
            return;
        };
        while conn.wpos < conn.wbuf.len() {
            match s.write(&conn.wbuf[conn.wpos..]) {
                Ok(0) => return self.fail(c, "closed"),
                Ok(n) => conn.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(c, "io"),
            }
        }
    }

    fn read(&mut self, c: usize) {
        // Taken out for the loop (it is reused across reads, not zeroed per call).
        let mut chunk = std::mem::take(&mut self.chunk);
        self.read_with(c, &mut chunk);
        self.chunk = chunk;
    }

    fn read_with(&mut self, c: usize, chunk: &mut [u8]) {
        loop {
            let conn = &mut self.conns[c];
            let Some(s) = conn.stream.as_mut() else {
                return;
            };
            match s.read(chunk) {
                Ok(0) => {
                    // Closed by the server: a response may already be complete.
                    if self.parse(c) {
                        self.fail(c, "closed");
                    }
                    return;
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&chunk[..n]);
                    if conn.rbuf.len() > http::RESPONSE_MAX + 65536 {
                        return self.fail(c, "bad response");
                    }
                    if !self.parse(c) {
                        return;
                    }
                    // Answered and idle: nothing more is due on this connection (no
                    // pipelining), so skip the read that would only say EAGAIN. Anything
                    // the server sends unasked arrives as a new edge and is an error then.
                    if self.conns[c].inflight.is_none() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(c, "io"),
            }
        }
    }

    /// Handles a complete response if there is one; false when the connection was reset.
    fn parse(&mut self, c: usize) -> bool {
        let resp = match http::parse(&self.conns[c].rbuf) {
            Parse::Partial => return true,
            Parse::Bad(_) => {
                self.fail(c, "bad response");
                return false;
            }
            Parse::Done(r) => r,
        };
        let now = Instant::now();
        let Some(f) = self.conns[c].inflight.take() else {
            self.fail(c, "unasked response");
            return false;
        };
        let ok = f.kind.expected(resp.status);
        let rbuf = std::mem::take(&mut self.conns[c].rbuf);
        self.rec.completed += 1;
        self.live.completed.fetch_add(1, Relaxed);
        *self.rec.status.entry(resp.status).or_default() += 1;
        if ok {
            let record = f.intended >= self.plan.warmup;
            self.learn(&f, &rbuf, &resp);
            if record {
                let corrected =
                    (now.duration_since(self.start).as_secs_f64() - f.intended).max(0.0);
                let corrected = ((corrected * 1e9) as u64).clamp(1, LATENCY_MAX_NS);
                let uncorrected =
                    (now.duration_since(f.sent).as_nanos() as u64).clamp(1, LATENCY_MAX_NS);
                self.rec
                    .corrected
                    .get_mut(&f.kind)
                    .unwrap()
                    .saturating_record(corrected);
                self.rec
                    .uncorrected
                    .get_mut(&f.kind)
                    .unwrap()
                    .saturating_record(uncorrected);
                let phase = self
                    .plan
                    .schedule
                    .as_ref()
                    .map_or(0, |s| s.segment_at(f.intended));
                self.rec.phases[phase].saturating_record(corrected);
                self.rec.recorded += 1;
                self.rec.last_recorded = now.duration_since(self.start).as_secs_f64();
                if let Ok(mut h) = self.live.latency.lock() {
                    h.saturating_record(corrected);
                }
                if let Ok(mut h) = self.live.interval.lock() {
                    h.saturating_record(corrected);
                }
            }
        } else {
            self.error(if resp.status >= 500 {
                "http 5xx"
            } else {
                "http unexpected status"
            });
        }
        let conn = &mut self.conns[c];
        conn.rbuf = rbuf;
        conn.rbuf.drain(..resp.len);
        if resp.close {
            self.connect(c);
            return false;
        }
        if !self.conns[c].rbuf.is_empty() {
            self.fail(c, "unasked response");
            return false;
        }
        self.idle.push_back(c);
        true
    }

    /// Keeps what later requests need (click ids, conversion ids) and what `--verify` checks.
    fn learn(&mut self, f: &InFlight, buf: &[u8], resp: &http::Response) {
        let keep = self.plan.keep_acks;
        match f.kind {
            Kind::Click => {
                let id = resp.location.and_then(|(a, b)| {
                    http::query_param(
                        &buf[a..b],
                        self.plan.scenario.clicks.click_id_param.as_bytes(),
                    )
                });
                match id.and_then(|id| std::str::from_utf8(id).ok()) {
                    Some(id) => {
                        if self.plan.scenario.mix.conversion > 0.0 {
                            if self.click_pool.len() >= POOL_MAX {
                                self.click_pool.pop_front();
                            }
                            self.click_pool.push_back(id.to_string());
                        }
                        if keep {
                            self.rec.acks.clicks.push(id.to_string());
                        }
                    }
                    None => self.error("redirect without click id"),
                }
            }
            Kind::Impression => self.rec.acks.impressions += 1,
            Kind::Conversion => {
                let body = &buf[resp.body.0..resp.body.1];
                let duplicate = body.windows(16).any(|w| w == b"\"duplicate\":true");
                match http::json_str(body, "conversion_id") {
                    Some(id) if !duplicate => {
                        if self.plan.scenario.mix.reversal > 0.0 {
                            if self.conv_pool.len() >= POOL_MAX {
                                self.conv_pool.pop_front();
                            }
                            self.conv_pool.push_back(id.to_string());
                        }
                        if keep {
                            self.rec.acks.conversions.push(f.id.clone());
                        }
                    }
                    Some(_) => self.error("new order id answered as a duplicate"),
                    None => self.error("conversion answer without conversion_id"),
                }
            }
            Kind::Reversal => {
                if keep {
                    self.rec.acks.reversals.push(f.id.clone());
                }
            }
        }
    }
}
