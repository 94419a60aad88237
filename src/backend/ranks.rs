//! A tensor-parallel group: one thread per rank, each owning its backend (its device, weight
//! shard and KV pages) for the group's whole life. The caller hands every rank the same job
//! (a forward over the same batch); the ranks meet only inside the backends' collectives
//! (`Backend::all_reduce`, the vocab-parallel pick). A backend never leaves its thread, so it
//! need not be `Send` (a CUDA context is bound to the thread that made it current).
//!
//! A rank that fails where the others fail too (a bad request: every rank checks the same
//! inputs) is an ordinary error. A rank that fails alone leaves the others waiting in a
//! collective it never joins: after [`STUCK_AFTER`] (by default) the group's abort hook wakes them (NCCL's
//! communicator abort, the host group's abort), and the group refuses every later job with
//! the first failure, rather than hang the engine.

use super::{ExpertMath, GraphSteps, LayerRouting, Measure};
use anyhow::{anyhow, bail, Result};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the other ranks may take to finish a job after one rank failed it before they are
/// taken to be stuck in a collective the failed rank never joined.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

type Job<B> = Box<dyn FnOnce(&mut B) + Send>;

struct Rank<B> {
    jobs: mpsc::Sender<Job<B>>,
    thread: JoinHandle<()>,
}

pub struct Ranks<B> {
    ranks: Vec<Rank<B>>,
    /// Wakes ranks blocked in a collective (set by the group's maker; none: nothing to wake).
    abort: Option<Box<dyn Fn() + Send + Sync>>,
    /// Why the group stopped, once a lone rank failure aborted it.
    stopped: Mutex<Option<String>>,
    stuck_after: Duration,
    /// Rank 0's CUDA graph counts as the last forward left them, returned with its results
    /// (engine/runner.rs), so that reading them after each step (the server's metrics) asks no
    /// rank; None until a forward finishes, or after one fails (then the ranks are asked).
    graphs_after_forward: Option<Option<GraphSteps>>,
}

impl<B: 'static> Ranks<B> {
    /// Start `size` rank threads, each building its backend with `make(rank)`; they build at
    /// the same time (each loads its own shard). The first rank's error fails the group.
    pub fn spawn(size: usize, make: impl Fn(usize) -> Result<B> + Send + Sync + 'static) -> Result<Self> {
        let make = Arc::new(make);
        let mut ranks = Vec::with_capacity(size);
        let mut ready = Vec::with_capacity(size);
        for rank in 0..size {
            let (jobs, rx) = mpsc::channel::<Job<B>>();
            let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
            let make = make.clone();
            let thread = std::thread::Builder::new()
                .name(format!("dllm-rank-{rank}"))
                .spawn(move || {
                    let mut b = match make(rank) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Ok(job) = rx.recv() {
                        job(&mut b);
                    }
                })
                .map_err(|e| anyhow!("starting the thread of rank {rank}: {e}"))?;
            ranks.push(Rank { jobs, thread });
            ready.push(ready_rx);
        }
        let group = Ranks { ranks, abort: None, stopped: Mutex::new(None), stuck_after: STUCK_AFTER, graphs_after_forward: None };
        for (rank, r) in ready.into_iter().enumerate() {
            match r.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.context(format!("tensor-parallel rank {rank} of {size}"))),
                Err(_) => return Err(anyhow!("tensor-parallel rank {rank} of {size} stopped while loading")),
            }
        }
        Ok(group)
    }

    pub fn size(&self) -> usize {
        self.ranks.len()
    }

    /// What wakes ranks blocked in a collective when one rank failed alone.
    pub fn with_abort(mut self, abort: impl Fn() + Send + Sync + 'static) -> Self {
        self.abort = Some(Box::new(abort));
        self
    }

    /// How long the others may take to finish after one rank failed (default [`STUCK_AFTER`]).
    pub fn with_stuck_after(mut self, d: Duration) -> Self {
        self.stuck_after = d;
        self
    }

    /// Keep the graph counts a forward's job returned (`Some`), or forget them (`None`: the
    /// forward failed, so what it recorded is unknown); [`Measure::graph_steps`] reads them.
    pub fn set_graphs_after_forward(&mut self, graphs: Option<Option<GraphSteps>>) {
        self.graphs_after_forward = graphs;
    }

    /// Run `f` on every rank at once: all results in rank order, or the first rank's error. See
    /// the module comment for a rank that fails alone.
    pub fn try_all<R: Send + 'static>(&self, f: impl Fn(&mut B) -> Result<R> + Send + Sync + 'static) -> Result<Vec<R>> {
        if let Some(why) = self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            bail!("{why}");
        }
        let rx = self.send_all(f)?;
        let n = self.size();
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        let mut failed: Option<(usize, anyhow::Error)> = None;
        for _ in 0..n {
            let got = match &failed {
                None => rx.recv().map_err(|_| None),
                Some(_) => rx.recv_timeout(self.stuck_after).map_err(|e| Some(e == mpsc::RecvTimeoutError::Timeout)),
            };
            match got {
                Ok((rank, Ok(v))) => out[rank] = Some(v),
                Ok((rank, Err(e))) => {
                    failed.get_or_insert((rank, e));
                }
                Err(Some(true)) => {
                    let (rank, e) = failed.take().expect("a timeout is only awaited after a failure");
                    let why = format!(
                        "tensor-parallel rank {rank} failed alone ({e:#}) while the other ranks waited for it in a collective; \
                         the group is stopped: restart the process"
                    );
                    *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
                    if let Some(abort) = &self.abort {
                        abort();
                    }
                    bail!("{why}");
                }
                Err(_) => break, // a rank thread is gone: reported below
            }
        }
        if let Some((rank, e)) = failed {
            return Err(e.context(format!("tensor-parallel rank {rank}")));
        }
        out.into_iter().enumerate().map(|(rank, r)| r.ok_or_else(|| anyhow!("tensor-parallel rank {rank} stopped mid-job"))).collect()
    }

    /// Queue `f` on every rank; results arrive on the returned channel as (rank, result).
    fn send_all<R: Send + 'static>(&self, f: impl Fn(&mut B) -> R + Send + Sync + 'static) -> Result<mpsc::Receiver<(usize, R)>> {
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        for (rank, r) in self.ranks.iter().enumerate() {
            let (f, tx) = (f.clone(), tx.clone());
            r.jobs
                .send(Box::new(move |b: &mut B| {
                    let _ = tx.send((rank, f(b)));
                }))
                .map_err(|_| anyhow!("tensor-parallel rank {rank} has stopped"))?;
        }
        Ok(rx)
    }

    /// Run `f` on every rank at once; the results in rank order (jobs that cannot fail alone:
    /// no collective inside, or every rank takes part in it).
    pub fn all<R: Send + 'static>(&self, f: impl Fn(&mut B) -> R + Send + Sync + 'static) -> Result<Vec<R>> {
        let rx = self.send_all(f)?;
        let mut out: Vec<Option<R>> = (0..self.size()).map(|_| None).collect();
        for (rank, r) in rx {
            out[rank] = Some(r);
        }
        out.into_iter().enumerate().map(|(rank, r)| r.ok_or_else(|| anyhow!("tensor-parallel rank {rank} stopped mid-job"))).collect()
    }

    /// Run `f` on every rank; rank 0's result, or the first rank's error. The ranks ran the same
    /// job on replicated inputs, so their results agree (checked in debug builds).
    pub fn agreed<R: Send + PartialEq + std::fmt::Debug + 'static>(
        &self,
        f: impl Fn(&mut B) -> Result<R> + Send + Sync + 'static,
    ) -> Result<R> {
        let mut results = self.try_all(f)?.into_iter();
        let first = results.next().ok_or_else(|| anyhow!("an empty tensor-parallel group"))?;
        for (rank, r) in results.enumerate() {
            if cfg!(debug_assertions) && r != first {
                return Err(anyhow!("tensor-parallel rank {} disagrees with rank 0: {r:?} vs {first:?}", rank + 1));
            }
        }
        Ok(first)
    }
}

impl<B> Drop for Ranks<B> {
    fn drop(&mut self) {
        // A stopped group may hold a rank that never woke: leave its thread to the process exit.
        let stopped = self.stopped.lock().map(|s| s.is_some()).unwrap_or(true);
        // Every rank's loop ends first, then the joins: the ranks' backends drop on their own
        // threads at the same time (tearing down a collective communicator may wait for its
        // peers, so one rank at a time could hang).
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut self.ranks)
            .into_iter()
            .map(|r| {
                drop(r.jobs);
                r.thread
            })
            .collect();
        if !stopped {
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

/// Benchmarks ask rank 0 (every rank reads the same number of bytes from the same kind of
/// device), except where all ranks must take part.
impl<B: Measure + 'static> Measure for Ranks<B> {
    fn count_experts(&mut self, on: bool) {
        let _ = self.all(move |b| b.count_experts(on));
    }
    fn experts_touched(&self) -> Vec<usize> {
        self.all(|b| b.experts_touched()).ok().and_then(|v| v.into_iter().next()).unwrap_or_default()
    }
    fn record_routing(&mut self, on: bool) {
        let _ = self.all(move |b| b.record_routing(on));
    }
    fn routing(&self) -> Vec<LayerRouting> {
        self.all(|b| b.routing()).ok().and_then(|v| v.into_iter().next()).unwrap_or_default()
    }
    // The router runs replicated: every rank holds the same bias.
    fn expert_bias(&self, layer: usize) -> Result<Vec<f32>> {
        self.agreed(move |b| b.expert_bias(layer))
    }
    fn set_expert_bias(&mut self, layer: usize, bias: &[f32]) -> Result<()> {
        let bias = bias.to_vec();
        self.try_all(move |b| b.set_expert_bias(layer, &bias)).map(drop)
    }
    fn measure_copy_bandwidth(&mut self) -> Result<f64> {
        self.all(|b| b.measure_copy_bandwidth())?.into_iter().next().ok_or_else(|| anyhow!("no ranks"))?
    }
    fn matmul_ceiling(&mut self) -> Result<Option<f64>> {
        self.all(|b| b.matmul_ceiling())?.into_iter().next().ok_or_else(|| anyhow!("no ranks"))?
    }
    fn time_all_reduce(&mut self, floats: usize) -> Result<Option<f64>> {
        // A collective: every rank must run it.
        self.all(move |b| b.time_all_reduce(floats))?.into_iter().next().ok_or_else(|| anyhow!("no ranks"))?
    }
    // Every rank records the same step shapes: rank 0's counts, kept from the last forward
    // (only forwards move them), else asked of every rank and checked in debug builds.
    fn graph_steps(&self) -> Option<GraphSteps> {
        match self.graphs_after_forward {
            Some(graphs) => graphs,
            None => self.agreed(|b| Ok(b.graph_steps())).ok().flatten(),
        }
    }
    // Every rank holds the same kind of experts and picks by the same rows: rank 0's answer, the
    // others' checked against it in debug builds.
    fn expert_math(&self, rows: usize) -> ExpertMath {
        self.agreed(move |b| Ok(b.expert_math(rows))).unwrap_or(ExpertMath::Bf16)
    }
}
