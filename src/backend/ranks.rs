//! A tensor-parallel group: one thread per rank, each owning its backend (its device, weight
//! shard and KV pages) for the group's whole life. The caller hands every rank the same job
//! (a forward over the same batch); the ranks meet only inside the backends' collectives
//! (`Backend::all_reduce`, the vocab-parallel pick). A backend never leaves its thread, so it
//! need not be `Send` (a CUDA context is bound to the thread that made it current).

use super::Measure;
use anyhow::{anyhow, Result};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

type Job<B> = Box<dyn FnOnce(&mut B) + Send>;

struct Rank<B> {
    jobs: mpsc::Sender<Job<B>>,
    thread: JoinHandle<()>,
}

pub struct Ranks<B> {
    ranks: Vec<Rank<B>>,
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
        let group = Ranks { ranks };
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

    /// Run `f` on every rank at once; the results in rank order.
    pub fn all<R: Send + 'static>(&self, f: impl Fn(&mut B) -> R + Send + Sync + 'static) -> Result<Vec<R>> {
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
        drop(tx);
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
        let mut results = self.all(f)?.into_iter();
        let first = results.next().ok_or_else(|| anyhow!("an empty tensor-parallel group"))??;
        for (rank, r) in results.enumerate() {
            let r = r?;
            if cfg!(debug_assertions) && r != first {
                return Err(anyhow!("tensor-parallel rank {} disagrees with rank 0: {r:?} vs {first:?}", rank + 1));
            }
        }
        Ok(first)
    }
}

impl<B> Drop for Ranks<B> {
    fn drop(&mut self) {
        for r in std::mem::take(&mut self.ranks) {
            drop(r.jobs); // the rank's loop ends, its backend drops on its own thread
            let _ = r.thread.join();
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
}
