//! Media threads: each owns a set of calls and relays and masks their packets on a fixed
//! tick. Every `media_tick_us` a thread asks the kernel which of its sockets have data (one
//! non-blocking `epoll_wait`), reads and masks what arrived, sends the masked packets, runs
//! due timers, then sleeps until the next tick. A tick that found nothing to read is
//! followed by a blocking `epoll_wait` instead (until a datagram, a nudge from the API or the
//! next deadline), so a quiet thread costs nothing and its first packet is served at once.
//!
//! Why a tick and not a wake-up per packet: on a busy gateway the wake-ups, not the work,
//! were most of what a packet cost (tokio measured about 19 µs per packet at 1,000 calls
//! here, most of it in the scheduler and in cross-thread wake-ups). A tick bounds the wait a
//! packet adds to the tick itself and turns a thousand wake-ups into one. Why threads of
//! their own and not tokio tasks: a call's whole media path is non-blocking system calls and
//! the sans-IO core, so an async runtime adds only hand-offs; the API, the sinks and WebRTC
//! stay on tokio, and ending a call (which awaits its sinks) is handed back to it.
//!
//! Owns: which calls a thread runs, their socket registrations, the tick, per-call panic
//! isolation.
//! Must never: block (every socket is non-blocking, every queue is `try_`), let one call's
//! flood starve the others (a read budget per socket per tick), or take a lock per packet.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

use super::call::{Call, Ending, Port};
use super::sys::set_realtime_priority;

/// Datagrams read from one socket per tick before the others get their turn.
const READ_BUDGET: usize = 32;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// The least a thread sleeps between ticks, even when it is behind: a real-time thread
/// that never sleeps would lock everything else off its core.
const MIN_SLEEP: Duration = Duration::from_micros(20);
/// The token of a thread's waker (call sockets use 4 per slot from 0 up).
const WAKE: Token = Token(usize::MAX);
/// How long a thread without calls waits for one before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// A call handed to a media thread, and where it is handed back when it ends.
struct Assignment {
    call: Box<Call>,
    done: oneshot::Sender<Ended>,
}

/// A call that stopped on its media thread: why, and the call itself so the runtime can
/// flush its sinks. `None` if the call panicked (its state is not trusted to flush).
pub type Ended = Option<(Box<Call>, Ending)>;

/// Tells a media thread that something outside its sockets needs it: a control message
/// for one of its calls, or a new call. Sets the flag that makes the next tick look at
/// the calls' control queues (so a tick never polls thousands of idle queues), and wakes
/// the thread if it is waiting on a quiet line.
pub struct Nudge {
    flag: AtomicBool,
    waker: Waker,
}

impl Nudge {
    /// Raise the flag and wake the thread.
    pub fn raise(&self) {
        self.flag.store(true, Ordering::Release);
        // A failed wake (the eventfd is gone) means the thread is gone too.
        let _ = self.waker.wake();
    }

    fn take(&self) -> bool {
        self.flag.swap(false, Ordering::Acquire)
    }
}

/// One media thread as the API sees it.
struct Thread {
    tx: SyncSender<Assignment>,
    nudge: Arc<Nudge>,
}

/// The media threads of a gateway.
pub struct MediaThreads {
    threads: Vec<Thread>,
    next: AtomicUsize,
}

impl MediaThreads {
    /// Start `n` threads (0: one per core) ticking every `tick`, under `SCHED_FIFO` at
    /// `priority` unless it is 0.
    pub fn start(n: usize, tick: Duration, priority: u8) -> std::io::Result<Self> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = sync_channel(1024);
            let poll = Poll::new()?;
            let nudge = Arc::new(Nudge {
                flag: AtomicBool::new(false),
                waker: Waker::new(poll.registry(), WAKE)?,
            });
            let mut w = Worker::new(poll, rx, nudge.clone(), tick);
            std::thread::Builder::new()
                .name(format!("tonewall-media-{i}"))
                .spawn(move || {
                    if priority > 0 {
                        if let Err(e) = set_realtime_priority(priority.into()) {
                            tracing::warn!(error = %e, priority, "media thread keeps ordinary scheduling");
                        }
                    }
                    w.run()
                })?;
            threads.push(Thread { tx, nudge });
        }
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// The thread the next call goes to (round robin) and the flag that wakes its control
    /// scan, for the call's [`CallControl`](super::call::CallControl).
    pub fn pick(&self) -> (usize, Arc<Nudge>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        (i, self.threads[i].nudge.clone())
    }

    /// Hand `call` to thread `i` (from [`pick`](Self::pick)); the returned receiver yields
    /// the call when it ends. Fails (giving the call back) if the thread is gone or its
    /// queue of new calls is full.
    pub fn run(&self, i: usize, call: Box<Call>) -> Result<oneshot::Receiver<Ended>, Box<Call>> {
        let (done, rx) = oneshot::channel();
        let t = &self.threads[i % self.threads.len()];
        match t.tx.try_send(Assignment { call, done }) {
            Ok(()) => {
                // Without calls the thread waits on the channel itself; with calls on a
                // quiet line it waits in epoll, which only the waker interrupts.
                let _ = t.nudge.waker.wake();
                Ok(rx)
            }
            Err(std::sync::mpsc::TrySendError::Full(a))
            | Err(std::sync::mpsc::TrySendError::Disconnected(a)) => Err(a.call),
        }
    }
}

/// A running call on a thread.
struct Slot {
    call: Box<Call>,
    done: oneshot::Sender<Ended>,
    /// Kept beside the call, not behind its box, so the per-tick scan of every call reads
    /// one dense array instead of missing the cache once per call.
    deadline: Instant,
    ingest: bool,
}

struct Worker {
    rx: Receiver<Assignment>,
    nudge: Arc<Nudge>,
    tick: Duration,
    poll: Poll,
    events: Events,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    live: usize,
    /// Earliest deadline of any call, as of the last tick.
    earliest: Instant,
    /// Does any call take packets from an in-process transport (WHIP)? Those arrive on a
    /// queue epoll cannot see, so the thread keeps ticking instead of waiting in epoll.
    any_ingest: bool,
    /// Sockets whose read budget ran out last tick: edge-triggered readiness will not be
    /// reported again for them, so they are read first next tick.
    backlog: Vec<Token>,
    backlog_next: Vec<Token>,
    /// Tokens of this tick's readable sockets (reused).
    tokens: Vec<Token>,
    buf: Vec<u8>,
}

impl Worker {
    fn new(poll: Poll, rx: Receiver<Assignment>, nudge: Arc<Nudge>, tick: Duration) -> Self {
        Self {
            rx,
            nudge,
            tick,
            poll,
            events: Events::with_capacity(EVENTS),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            earliest: Instant::now(),
            any_ingest: false,
            backlog: Vec::with_capacity(EVENTS),
            backlog_next: Vec::with_capacity(EVENTS),
            tokens: Vec::with_capacity(EVENTS * 2),
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    fn run(&mut self) {
        let mut next = Instant::now();
        loop {
            if !self.take_new_calls() {
                return;
            }
            if self.live == 0 {
                // Nothing to tick for: wait for a call instead.
                match self.rx.recv_timeout(IDLE_WAIT) {
                    Ok(a) => self.add(a),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                next = Instant::now();
            }
            let busy = self.tick_once() > 0 || self.any_ingest;
            let now = Instant::now();
            // A deadline within a tick is served by ticking (epoll's timeout is whole
            // milliseconds).
            if !busy && self.earliest > now + self.tick {
                // A quiet tick: rather than wake 4,000 times a second for nothing (each
                // wake-up costs tens of µs on a VM), wait in epoll for the first datagram, a
                // nudge or the next deadline, and serve it at once.
                let wait = self.earliest.saturating_duration_since(now).min(IDLE_WAIT);
                if self.poll.poll(&mut self.events, Some(wait)).is_ok() {
                    let woken = self.events.iter().map(|e| e.token()).filter(|&t| t != WAKE);
                    self.backlog_next.extend(woken);
                }
                next = Instant::now();
                continue;
            }
            next += self.tick;
            if now > next + self.tick * 4 {
                // Far behind (overload or a stalled machine): do not try to catch up with a
                // burst of back-to-back ticks, just go on from now.
                next = now;
            }
            std::thread::sleep(next.saturating_duration_since(now).max(MIN_SLEEP));
        }
    }

    /// Take calls handed over since the last tick; false when the gateway is gone and this
    /// thread has nothing left to run.
    fn take_new_calls(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(a) => self.add(a),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return self.live > 0,
            }
        }
    }

    fn add(&mut self, a: Assignment) {
        let Assignment { mut call, done } = a;
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let reg = self.poll.registry();
        let mut failed = None;
        for (k, s) in call.sockets_mut().all_mut().into_iter().enumerate() {
            if let Err(e) = reg.register(s, Token(i * 4 + k), Interest::READABLE) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            // A socket that cannot be watched would silently drop the call's media: end
            // the call instead, with a log line that says why.
            tracing::error!(error = %e, "cannot watch a call socket; ending the call");
            for s in call.sockets_mut().all_mut() {
                let _ = reg.deregister(s);
            }
            let _ = done.send(Some((call, (super::events::EndReason::Shutdown, None))));
            self.free.push(i);
            return;
        }
        let deadline = call.deadline();
        let ingest = call.has_ingest();
        self.slots[i] = Some(Slot {
            call,
            done,
            deadline,
            ingest,
        });
        self.live += 1;
    }

    fn remove(&mut self, i: usize, ended: Option<Ending>) {
        let Some(mut slot) = self.slots[i].take() else {
            return;
        };
        let reg = self.poll.registry();
        for s in slot.call.sockets_mut().all_mut() {
            let _ = reg.deregister(s);
        }
        self.live -= 1;
        self.free.push(i);
        let _ = slot.done.send(ended.map(|e| (slot.call, e)));
    }

    /// One tick; returns how many sockets had something to read.
    fn tick_once(&mut self) -> usize {
        // Sockets left unread last tick first, then whatever became readable.
        std::mem::swap(&mut self.backlog, &mut self.backlog_next);
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.clear();
        tokens.append(&mut self.backlog);
        let mut work = tokens.len();
        for &t in &tokens {
            self.read(t);
        }
        loop {
            tokens.clear();
            if self
                .poll
                .poll(&mut self.events, Some(Duration::ZERO))
                .is_err()
            {
                break;
            }
            tokens.extend(self.events.iter().map(|e| e.token()).filter(|&t| t != WAKE));
            work += tokens.len();
            for &t in &tokens {
                self.read(t);
            }
            if self.events.iter().count() < EVENTS {
                break;
            }
        }
        self.tokens = tokens;
        if self.nudge.take() {
            for i in 0..self.slots.len() {
                self.guarded(i, |c| c.take_control());
            }
        }
        let now = Instant::now();
        let mut earliest = now + IDLE_WAIT;
        let mut any_ingest = false;
        for i in 0..self.slots.len() {
            let Some(s) = &self.slots[i] else {
                continue;
            };
            if s.ingest {
                any_ingest = true;
                self.guarded(i, |c| c.take_ingest().map(|r| (r, None)));
            }
            if self.slots[i].as_ref().is_some_and(|s| s.deadline <= now) {
                self.guarded(i, |c| c.on_deadline(now).map(|r| (r, None)));
            }
            if let Some(s) = &self.slots[i] {
                earliest = earliest.min(s.deadline);
            }
        }
        self.earliest = earliest;
        self.any_ingest = any_ingest;
        work
    }

    /// Read what socket `t` holds, within its budget.
    fn read(&mut self, t: Token) {
        if t == WAKE {
            return;
        }
        let (i, port) = (t.0 / 4, Port::from_index(t.0 % 4));
        // The buffer is lent to the call for the read (taking a Vec leaves an empty one in
        // its place: no allocation).
        let mut buf = std::mem::take(&mut self.buf);
        let mut drained = true;
        self.guarded(i, |c| {
            drained = c.on_readable(port, &mut buf, READ_BUDGET);
            None
        });
        self.buf = buf;
        if !drained && self.slots.get(i).is_some_and(|s| s.is_some()) {
            self.backlog_next.push(t);
        }
    }

    /// Run `f` on call `i`, refreshing its deadline; a panic inside ends that call alone
    /// (logged, no flush: its state is not trusted), the others go on.
    fn guarded(&mut self, i: usize, f: impl FnOnce(&mut Call) -> Option<Ending>) {
        let Some(slot) = self.slots[i].as_mut() else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| f(&mut slot.call))) {
            Ok(None) => slot.deadline = slot.call.deadline(),
            Ok(Some(end)) => self.remove(i, Some(end)),
            Err(_) => {
                tracing::error!("a call's media handling panicked; the call is ended");
                self.remove(i, None);
            }
        }
    }
}
