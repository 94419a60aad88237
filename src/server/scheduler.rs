//! The engine thread. It alone owns the engine (the GPU): HTTP handlers send it requests
//! through a channel; it admits up to `max_running` at once (the rest wait in a queue of at
//! most `max_queue`), calls `step` while any request is active (one step carries the current
//! blocks of all of them), and routes each request's events back through its own channel.
//! A request whose receiver is gone (the client left) is cancelled and its cache freed.
//!
//! Every prompt is a request of its own, but the queue is served in turns across the HTTP
//! requests the prompts came in (their *group*), not first come first served: a request
//! holding a thousand prompts takes one turn in each round, so a client arriving after it
//! waits for one running slot to free, not for the thousand.

use super::metrics::Metrics;
use crate::engine::{DynEngine, Event, GenParams, Generated, Output};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::{mpsc as tmpsc, oneshot};

/// What a request hears from the engine thread.
#[derive(Debug)]
pub enum ReqEvent {
    /// A block finished; everything generated so far (cut as the output would be).
    Block {
        generated: Generated,
    },
    Done(Output),
    Failed(String),
    /// `/abort_request` ended it; its cache is freed.
    Aborted(String),
    /// The server is shutting down: the request ends unfinished (a 503, not a failure).
    ShuttingDown,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubmitError {
    /// The engine's `validate` refused it: the caller's fault (400).
    Invalid(String),
    /// Running slots and queue are full (503).
    QueueFull { running: usize, queued: usize },
    /// The engine thread is gone (503).
    Stopped,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Invalid(m) => write!(f, "{m}"),
            SubmitError::QueueFull { running, queued } => {
                write!(f, "the server is at capacity ({running} requests running, {queued} queued); retry later")
            }
            SubmitError::Stopped => write!(f, "the engine has stopped"),
        }
    }
}

tokio::task_local! {
    /// The HTTP request the current handler serves (`route` sets it for the request's lifetime):
    /// the prompts it submits share one turn of the queue. A submission made outside one is a
    /// group of its own.
    pub static REQUEST_GROUP: u64;
}

struct Submit {
    key: u64,
    /// Whose turn it waits for: see [`REQUEST_GROUP`].
    group: u64,
    /// The client's request id (`/abort_request` names requests by it).
    rid: String,
    prompt: Vec<u32>,
    params: GenParams,
    events: tmpsc::UnboundedSender<ReqEvent>,
    reply: oneshot::Sender<Result<(), SubmitError>>,
}

/// Which requests `/abort_request` ends.
#[derive(Debug, Clone, PartialEq)]
pub enum AbortTarget {
    Rid(String),
    All,
}

enum Cmd {
    /// Boxed: a request's parameters are most of a command's size, and the other commands are
    /// small.
    Submit(Box<Submit>),
    Cancel(u64),
    Abort(AbortTarget, oneshot::Sender<usize>),
    Shutdown,
}

/// Handle to the engine thread; cheap to share (wrap in `Arc`).
pub struct Scheduler {
    tx: std::sync::Mutex<mpsc::Sender<Cmd>>,
    next_key: AtomicU64,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A submitted request: its events, and a guard that cancels it when dropped unfinished.
pub struct Ticket {
    pub events: tmpsc::UnboundedReceiver<ReqEvent>,
    key: u64,
    tx: mpsc::Sender<Cmd>,
    done: bool,
}

impl Ticket {
    /// The request ended (Done or Failed arrived): dropping the ticket needs no cancel.
    pub fn mark_done(&mut self) {
        self.done = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.tx.send(Cmd::Cancel(self.key));
        }
    }
}

/// A request sent to the engine thread, its verdict not yet read; dropped, it cancels the request.
pub struct PendingSubmit {
    ticket: Ticket,
    reply: oneshot::Receiver<Result<(), SubmitError>>,
}

impl PendingSubmit {
    /// The engine thread's verdict: the request's ticket, or why it was refused.
    pub async fn accepted(mut self) -> Result<Ticket, SubmitError> {
        let verdict = (&mut self.reply).await;
        match verdict {
            Ok(Ok(())) => Ok(self.ticket),
            Ok(Err(e)) => {
                // Refused: nothing to cancel.
                self.ticket.mark_done();
                Err(e)
            }
            Err(_) => {
                self.ticket.mark_done();
                Err(SubmitError::Stopped)
            }
        }
    }
}

impl Scheduler {
    pub fn start(engine: Box<dyn DynEngine>, max_running: usize, max_queue: usize, metrics: Arc<Metrics>) -> Scheduler {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dllm-engine".into())
            .spawn(move || EngineLoop::new(engine, max_running.max(1), max_queue, metrics).run(rx))
            .expect("spawning the engine thread");
        Scheduler { tx: std::sync::Mutex::new(tx), next_key: AtomicU64::new(1), thread: std::sync::Mutex::new(Some(thread)) }
    }

    fn sender(&self) -> mpsc::Sender<Cmd> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A fresh group id for [`REQUEST_GROUP`] (drawn from the same counter as request keys, so
    /// that a group of its own never meets another's).
    pub fn new_group(&self) -> u64 {
        self.next_key.fetch_add(1, Relaxed)
    }

    /// Send a request to the engine thread to be validated and queued; its verdict comes through
    /// [`PendingSubmit::accepted`]. Not waiting here lets a request's many prompts reach the
    /// engine thread together instead of one per engine step.
    pub fn send(&self, rid: String, prompt: Vec<u32>, params: GenParams) -> Result<PendingSubmit, SubmitError> {
        let key = self.next_key.fetch_add(1, Relaxed);
        let group = REQUEST_GROUP.try_with(|g| *g).unwrap_or(key);
        let (etx, erx) = tmpsc::unbounded_channel();
        let (rtx, rrx) = oneshot::channel();
        let tx = self.sender();
        tx.send(Cmd::Submit(Box::new(Submit { key, group, rid, prompt, params, events: etx, reply: rtx })))
            .map_err(|_| SubmitError::Stopped)?;
        Ok(PendingSubmit { ticket: Ticket { events: erx, key, tx, done: false }, reply: rrx })
    }

    /// End the queued and running requests `target` names: each hears `Aborted`, its cache is
    /// freed. Returns how many there were (0 when the engine thread is gone).
    pub async fn abort(&self, target: AbortTarget) -> usize {
        let (rtx, rrx) = oneshot::channel();
        if self.sender().send(Cmd::Abort(target, rtx)).is_err() {
            return 0;
        }
        rrx.await.unwrap_or(0)
    }

    /// Stop the engine thread (requests still running get `Failed`) and wait for it.
    pub fn shutdown(&self) {
        let _ = self.sender().send(Cmd::Shutdown);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

struct Pending {
    key: u64,
    group: u64,
    rid: String,
    prompt: Vec<u32>,
    params: GenParams,
    events: tmpsc::UnboundedSender<ReqEvent>,
    queued_at: Instant,
}

/// The requests waiting for a running slot, served in turns: one request of each group per
/// round, groups in the order they first queued; within a group, first come first served.
#[derive(Default)]
struct FairQueue {
    /// Groups in turn order, each with its waiting requests (never empty).
    groups: VecDeque<(u64, VecDeque<Pending>)>,
    len: usize,
}

impl FairQueue {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, p: Pending) {
        match self.groups.iter_mut().find(|(g, _)| *g == p.group) {
            Some((_, q)) => q.push_back(p),
            None => self.groups.push_back((p.group, VecDeque::from([p]))),
        }
        self.len += 1;
    }

    /// The request whose turn it is; its group goes to the back of the round.
    fn pop(&mut self) -> Option<Pending> {
        let (g, mut q) = self.groups.pop_front()?;
        let p = q.pop_front();
        if !q.is_empty() {
            self.groups.push_back((g, q));
        }
        self.len -= usize::from(p.is_some());
        p
    }

    /// Undo `pop` (the request must wait for cache): it is again the first in line.
    fn unpop(&mut self, p: Pending) {
        let mut q = match self.groups.iter().position(|(g, _)| *g == p.group) {
            Some(i) => self.groups.remove(i).map(|(_, q)| q).unwrap_or_default(),
            None => VecDeque::new(),
        };
        let group = p.group;
        q.push_front(p);
        self.groups.push_front((group, q));
        self.len += 1;
    }

    /// Take out every waiting request `hit` selects, in queue order within each group.
    fn take_where(&mut self, mut hit: impl FnMut(&Pending) -> bool) -> Vec<Pending> {
        let mut taken = vec![];
        for (_, q) in self.groups.iter_mut() {
            let (t, kept): (VecDeque<Pending>, VecDeque<Pending>) = q.drain(..).partition(|p| hit(p));
            *q = kept;
            taken.extend(t);
        }
        self.groups.retain(|(_, q)| !q.is_empty());
        self.len -= taken.len();
        taken
    }
}

struct Active {
    key: u64,
    rid: String,
    prompt_tokens: usize,
    events: tmpsc::UnboundedSender<ReqEvent>,
}

struct EngineLoop {
    engine: Box<dyn DynEngine>,
    max_running: usize,
    max_queue: usize,
    metrics: Arc<Metrics>,
    queue: FairQueue,
    /// Engine request id -> the request.
    active: HashMap<u64, Active>,
    /// Request key -> engine request id.
    ids: HashMap<u64, u64>,
    stopping: bool,
}

impl EngineLoop {
    fn new(engine: Box<dyn DynEngine>, max_running: usize, max_queue: usize, metrics: Arc<Metrics>) -> Self {
        EngineLoop {
            engine,
            max_running,
            max_queue,
            metrics,
            queue: FairQueue::default(),
            active: HashMap::new(),
            ids: HashMap::new(),
            stopping: false,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        loop {
            if self.active.is_empty() && self.queue.is_empty() {
                // Idle: sleep until a command comes (or every handle is gone).
                match rx.recv() {
                    Ok(c) => self.handle(c),
                    Err(_) => break,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(c) => self.handle(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.stopping = true;
                        break;
                    }
                }
            }
            if self.stopping {
                break;
            }
            self.admit();
            if !self.active.is_empty() {
                self.step();
            }
            self.publish();
        }
        for (_, a) in self.active.drain() {
            let _ = a.events.send(ReqEvent::ShuttingDown);
        }
        for p in self.queue.take_where(|_| true) {
            let _ = p.events.send(ReqEvent::ShuttingDown);
        }
        self.publish();
    }

    fn publish(&self) {
        self.metrics.running.store(self.active.len() as u64, Relaxed);
        self.metrics.queued.store(self.queue.len() as u64, Relaxed);
        let running: usize = self.active.values().map(|a| a.prompt_tokens).sum();
        let queued: usize = self.queue.groups.iter().flat_map(|(_, q)| q).map(|p| p.prompt.len()).sum();
        self.metrics.held_prompt_tokens.store((running + queued) as u64, Relaxed);
    }

    fn handle(&mut self, c: Cmd) {
        match c {
            Cmd::Submit(s) => {
                let s = *s;
                let verdict = match self.engine.validate(&s.prompt, &s.params) {
                    Err(e) => Err(SubmitError::Invalid(format!("{e:#}"))),
                    Ok(()) if self.active.len() + self.queue.len() >= self.max_running + self.max_queue => {
                        Err(SubmitError::QueueFull { running: self.active.len(), queued: self.queue.len() })
                    }
                    Ok(()) => Ok(()),
                };
                if verdict.is_ok() {
                    self.queue.push(Pending {
                        key: s.key,
                        group: s.group,
                        rid: s.rid,
                        prompt: s.prompt,
                        params: s.params,
                        events: s.events,
                        queued_at: Instant::now(),
                    });
                }
                self.publish();
                // If the handler has gone meanwhile, its ticket's cancel follows in the channel.
                let _ = s.reply.send(verdict);
            }
            Cmd::Cancel(key) => {
                if !self.queue.take_where(|p| p.key == key).is_empty() {
                    self.metrics.requests_cancelled.fetch_add(1, Relaxed);
                } else if let Some(id) = self.ids.remove(&key) {
                    self.active.remove(&id);
                    self.engine.cancel(id);
                    self.metrics.requests_cancelled.fetch_add(1, Relaxed);
                }
                self.publish();
            }
            Cmd::Abort(target, reply) => {
                let _ = reply.send(self.abort(&target));
                self.publish();
            }
            Cmd::Shutdown => self.stopping = true,
        }
    }

    fn abort(&mut self, target: &AbortTarget) -> usize {
        let hit = |rid: &str| match target {
            AbortTarget::All => true,
            AbortTarget::Rid(r) => r == rid,
        };
        const WHY: &str = "aborted by /abort_request";
        let mut n = 0;
        for p in self.queue.take_where(|p| hit(&p.rid)) {
            let _ = p.events.send(ReqEvent::Aborted(WHY.into()));
            n += 1;
        }
        let ids: Vec<u64> = self.active.iter().filter(|(_, a)| hit(&a.rid)).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some(a) = self.active.remove(&id) {
                self.ids.remove(&a.key);
                self.engine.cancel(id);
                let _ = a.events.send(ReqEvent::Aborted(WHY.into()));
                n += 1;
            }
        }
        self.metrics.requests_cancelled.fetch_add(n as u64, Relaxed);
        n
    }

    fn admit(&mut self) {
        while self.active.len() < self.max_running {
            let Some(p) = self.queue.pop() else { break };
            if p.events.is_closed() {
                self.metrics.requests_cancelled.fetch_add(1, Relaxed);
                continue;
            }
            let n = p.prompt.len() as u64;
            // A copy, so that the request can go back to the queue if it must wait for cache.
            match self.engine.add(p.prompt.clone(), p.params.clone()) {
                Ok(id) => {
                    self.metrics.queue_time.observe(p.queued_at.elapsed().as_secs_f64());
                    self.metrics.prompt_tokens.fetch_add(n, Relaxed);
                    self.ids.insert(p.key, id);
                    self.active.insert(id, Active { key: p.key, rid: p.rid, prompt_tokens: p.prompt.len(), events: p.events });
                }
                Err(e) if !self.active.is_empty() => {
                    // Most likely the KV cache is full: wait until a running request ends.
                    super::log(super::Level::Debug, &format!("request waits for cache: {e:#}"));
                    self.queue.unpop(p);
                    break;
                }
                Err(e) => {
                    self.metrics.requests_failed.fetch_add(1, Relaxed);
                    let _ = p.events.send(ReqEvent::Failed(format!("{e:#}")));
                }
            }
        }
    }

    fn step(&mut self) {
        let n = self.active.len() as u64;
        let t0 = Instant::now();
        let events = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.engine.step())) {
            Ok(ev) => ev,
            Err(p) => {
                // Never take the server down with one bad step: fail what was running.
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                super::log(super::Level::Error, &format!("engine step panicked: {msg}"));
                let ids: Vec<u64> = self.active.keys().copied().collect();
                ids.into_iter()
                    .map(|id| {
                        self.engine.cancel(id);
                        Event::Failed { id, error: format!("internal error in the engine: {msg}") }
                    })
                    .collect()
            }
        };
        self.metrics.step_time.observe(t0.elapsed().as_secs_f64());
        self.metrics.engine_steps.fetch_add(1, Relaxed);
        self.metrics.request_steps.fetch_add(n, Relaxed);
        self.metrics.batch_size.observe(n as f64);
        if let Some(g) = self.engine.graph_steps() {
            self.metrics.graph_recordings.store(g.recorded, Relaxed);
            self.metrics.graph_replays.store(g.replayed, Relaxed);
        }
        let done: Vec<u64> = events.iter().filter_map(|e| if let Event::Done { id, .. } = e { Some(*id) } else { None }).collect();
        let mut gone = vec![];
        for ev in events {
            match ev {
                Event::Block { id, generated } => {
                    self.metrics.blocks.fetch_add(1, Relaxed);
                    // The last block arrives with its Done; one message is enough.
                    if done.contains(&id) {
                        continue;
                    }
                    if let Some(a) = self.active.get(&id) {
                        if a.events.send(ReqEvent::Block { generated }).is_err() {
                            gone.push(id);
                        }
                    }
                }
                Event::Done { id, output } => {
                    if let Some(a) = self.active.remove(&id) {
                        self.ids.remove(&a.key);
                        let toks = output.output_ids.len() as u64;
                        self.metrics.generation_tokens.fetch_add(toks, Relaxed);
                        self.metrics.requests_ok.fetch_add(1, Relaxed);
                        if output.steps > 0 {
                            self.metrics.tokens_per_step.observe(toks as f64 / output.steps as f64);
                        }
                        let _ = a.events.send(ReqEvent::Done(output));
                    }
                }
                Event::Failed { id, error } => {
                    if let Some(a) = self.active.remove(&id) {
                        self.ids.remove(&a.key);
                        self.metrics.requests_failed.fetch_add(1, Relaxed);
                        let _ = a.events.send(ReqEvent::Failed(error));
                    }
                }
            }
        }
        // Requests nobody listens to any more: free their cache now.
        gone.extend(self.active.iter().filter(|(_, a)| a.events.is_closed()).map(|(id, _)| *id));
        gone.sort_unstable();
        gone.dedup();
        for id in gone {
            if let Some(a) = self.active.remove(&id) {
                self.ids.remove(&a.key);
                self.engine.cancel(id);
                self.metrics.requests_cancelled.fetch_add(1, Relaxed);
            }
        }
    }
}
