//! The CPU twin's collectives: tensor-parallel ranks as threads of one process meet here, in
//! host memory. Sums run in rank order on every rank, so all ranks hold the same bits after an
//! all-reduce (as NCCL's do), and routing stays identical across them.

use std::sync::{Arc, Barrier, Mutex};

pub struct MemGroup {
    size: usize,
    barrier: Barrier,
    parts: Mutex<Vec<Vec<f32>>>,
}

impl MemGroup {
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(MemGroup { size, barrier: Barrier::new(size), parts: Mutex::new(vec![Vec::new(); size]) })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Every rank calls this with its part; each gets all parts, in rank order.
    pub fn all_gather(&self, rank: usize, part: &[f32]) -> Vec<Vec<f32>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())[rank] = part.to_vec();
        self.barrier.wait();
        let all = self.parts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Nobody writes the next call's part before every rank has read this one's.
        self.barrier.wait();
        all
    }

    /// `x` = the sum over the ranks of their `x` (same length on every rank).
    pub fn all_reduce_sum(&self, rank: usize, x: &mut [f32]) {
        let all = self.all_gather(rank, x);
        for (i, v) in x.iter_mut().enumerate() {
            *v = all.iter().map(|p| p[i]).sum();
        }
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
                        let mut x = vec![r as f32, 1.0];
                        g.all_reduce_sum(r, &mut x);
                        let parts = g.all_gather(r, &[r as f32 * 10.0]);
                        (x, parts)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (x, parts) in out {
            assert_eq!(x, vec![3.0, 3.0]);
            assert_eq!(parts, vec![vec![0.0], vec![10.0], vec![20.0]]);
        }
    }
}
