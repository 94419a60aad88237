//! The ranks' host meeting point: the CPU twin's collectives (ranks as threads of one process,
//! meeting in host memory) and every backend's vocab-parallel pick. Sums run in rank order on
//! every rank, so all ranks hold the same bits after an all-reduce (as NCCL's do), and routing
//! stays identical across them.
//!
//! A rank that fails mid-forward never arrives; [`MemGroup::abort`] then wakes the ranks that
//! wait for it with an error instead of leaving them blocked, and the group stays aborted.

use anyhow::{bail, Result};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub struct MemGroup {
    size: usize,
    state: Mutex<State>,
    arrived_all: Condvar,
}

#[derive(Default)]
struct State {
    /// This round's parts, by rank.
    parts: Vec<Vec<f32>>,
    arrived: usize,
    /// Rounds completed; a waiting rank leaves when it moves on.
    round: u64,
    /// The last completed round's parts (read by its ranks before any can finish the next).
    done: Arc<Vec<Vec<f32>>>,
    aborted: bool,
}

impl MemGroup {
    pub fn new(size: usize) -> Arc<Self> {
        let state = State { parts: vec![Vec::new(); size], ..State::default() };
        Arc::new(MemGroup { size, state: Mutex::new(state), arrived_all: Condvar::new() })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every rank calls this with its part; each gets all parts, in rank order. An error when
    /// the group was aborted (a rank failed) before or while waiting.
    pub fn all_gather(&self, rank: usize, part: &[f32]) -> Result<Vec<Vec<f32>>> {
        let mut s = self.lock();
        if s.aborted {
            bail!("another tensor-parallel rank failed");
        }
        s.parts[rank] = part.to_vec();
        s.arrived += 1;
        let round = s.round;
        if s.arrived == self.size {
            s.done = Arc::new(std::mem::replace(&mut s.parts, vec![Vec::new(); self.size]));
            s.arrived = 0;
            s.round += 1;
            self.arrived_all.notify_all();
        } else {
            while s.round == round && !s.aborted {
                s = self.arrived_all.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.round == round {
                bail!("another tensor-parallel rank failed");
            }
        }
        Ok((*s.done).clone())
    }

    /// `x` = the sum over the ranks of their `x` (same length on every rank).
    pub fn all_reduce_sum(&self, rank: usize, x: &mut [f32]) -> Result<()> {
        let all = self.all_gather(rank, x)?;
        for (i, v) in x.iter_mut().enumerate() {
            *v = all.iter().map(|p| p[i]).sum();
        }
        Ok(())
    }

    /// Wake every waiting rank with an error, now and for every later call.
    pub fn abort(&self) {
        self.lock().aborted = true;
        self.arrived_all.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_gets_the_same_sum_and_the_parts_in_rank_order() {
        let g = MemGroup::new(3);
        let out: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|r| {
                    let g = &g;
                    s.spawn(move || {
                        let mut results = vec![];
                        for round in 0..50 {
                            let mut x = vec![r as f32, round as f32];
                            g.all_reduce_sum(r, &mut x).unwrap();
                            let parts = g.all_gather(r, &[(r * 10 + round) as f32]).unwrap();
                            results.push((x, parts));
                        }
                        results
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for results in out {
            for (round, (x, parts)) in results.into_iter().enumerate() {
                assert_eq!(x, vec![3.0, 3.0 * round as f32]);
                let want: Vec<Vec<f32>> = (0..3).map(|r| vec![(r * 10 + round) as f32]).collect();
                assert_eq!(parts, want);
            }
        }
    }

    #[test]
    fn an_abort_wakes_the_waiting_ranks_with_an_error() {
        let g = MemGroup::new(2);
        std::thread::scope(|s| {
            let waiting = s.spawn(|| g.all_gather(0, &[1.0]));
            std::thread::sleep(std::time::Duration::from_millis(50));
            g.abort(); // rank 1 failed and will never arrive
            assert!(waiting.join().unwrap().is_err());
        });
        assert!(g.all_gather(1, &[2.0]).is_err(), "an aborted group stays aborted");
    }
}
