//! Block layout of one request: which blocks are prompt context, which are generated,
//! and how many tokens each step of a block must unmask.

/// Tokens each step must unmask: B split evenly over `steps`, the remainder to the first steps.
pub fn quota_schedule(block_size: usize, steps: usize) -> Vec<usize> {
    let steps = steps.max(1); // steps > B: the extra steps have quota 0 (threshold only), as in LLaDA2's generate
    let (base, rem) = (block_size / steps, block_size % steps);
    (0..steps).map(|s| base + usize::from(s < rem)).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    pub prompt_len: usize,
    pub block_size: usize,
    pub max_new_tokens: usize,
}

impl BlockLayout {
    /// Index of the block holding position `prompt_len` (the first generated block).
    pub fn first_gen_block(&self) -> usize {
        self.prompt_len / self.block_size
    }
    /// One past the last block that may be generated.
    pub fn end_block(&self) -> usize {
        (self.prompt_len + self.max_new_tokens).div_ceil(self.block_size)
    }
    /// Positions the sequence may occupy (what its KV reservation must hold).
    pub fn total_len(&self) -> usize {
        self.end_block() * self.block_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn quotas_sum_to_block() {
        for (b, s) in [(32, 32), (32, 5), (8, 3), (4, 2), (7, 100)] {
            let q = quota_schedule(b, s);
            assert_eq!(q.iter().sum::<usize>(), b);
            assert!(q.windows(2).all(|w| w[0] >= w[1]));
        }
        assert_eq!(quota_schedule(8, 3), vec![3, 3, 2]);
    }
    #[test]
    fn layout() {
        let l = BlockLayout { prompt_len: 10, block_size: 8, max_new_tokens: 24 };
        assert_eq!((l.first_gen_block(), l.end_block(), l.total_len()), (1, 5, 40));
        let l = BlockLayout { prompt_len: 16, block_size: 8, max_new_tokens: 1 };
        assert_eq!((l.first_gen_block(), l.end_block()), (2, 3));
    }
}
