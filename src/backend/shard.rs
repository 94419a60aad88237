//! Tensor-parallel sharding rules, SGLang's defaults, in one place: which slice of each
//! checkpoint tensor a rank holds, and the per-rank view of the config its backend computes
//! with. Both backends load through here (the CPU twin with ranks as threads checks every rule
//! in CI), so a rule is written once.
//!
//! - Attention by heads: rank r holds query heads `r*NH/N ..`; KV heads are split while
//!   N <= NKV and replicated beyond (each rank then holds the one KV head its query heads use).
//!   The fused QKV matrix is column-parallel (its q, k and v row ranges of those heads), the
//!   output projection `dense` row-parallel (the matching input columns).
//! - Gated MLPs (dense layers, every routed expert, the shared expert): gate and up
//!   column-parallel, down row-parallel, each split over its intermediate width (MoE tensor
//!   parallel: flash's 1024 becomes 512 at N = 2).
//! - Router, expert bias, norms and the embedding replicated; `lm_head` vocab-parallel.
//!
//! Row-parallel outputs are partial sums: the forward all-reduces them (after attention and
//! after the MLP/MoE).

use crate::checkpoint::{names, Slice};
use crate::config::ModelConfig;
use anyhow::{bail, Result};
use std::ops::Range;

/// One rank of a tensor-parallel group of `size` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub size: usize,
}

impl Shard {
    /// The whole model on one device.
    pub const WHOLE: Shard = Shard { rank: 0, size: 1 };

    /// Can `cfg` be split over `size` ranks? The error says which width does not divide.
    pub fn check(cfg: &ModelConfig, size: usize) -> Result<()> {
        if size == 0 {
            bail!("--tp-size must be at least 1");
        }
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let widths = [
            ("num_attention_heads", nh),
            ("intermediate_size", cfg.intermediate_size),
            ("moe_intermediate_size", cfg.moe_intermediate_size),
            ("the shared expert's intermediate width", cfg.shared_intermediate()),
        ];
        for (what, w) in widths {
            if !w.is_multiple_of(size) {
                bail!("--tp-size {size} does not divide {what} ({w}): each rank takes an equal slice of it");
            }
        }
        if size > nkv && !size.is_multiple_of(nkv) {
            bail!(
                "--tp-size {size} is above num_key_value_heads ({nkv}) but not a multiple of it: KV heads are replicated beyond \
                 {nkv} ranks, and each rank's query heads must share one KV head"
            );
        }
        if size > cfg.vocab_size {
            bail!("--tp-size {size} exceeds the vocabulary ({}) that lm_head splits", cfg.vocab_size);
        }
        Ok(())
    }

    pub fn is_whole(&self) -> bool {
        self.size == 1
    }

    /// The even split of `n` over the ranks: this rank's part.
    fn even(&self, n: usize) -> Range<usize> {
        let w = n / self.size;
        self.rank * w..(self.rank + 1) * w
    }

    /// Query heads this rank holds.
    pub fn q_heads(&self, cfg: &ModelConfig) -> Range<usize> {
        self.even(cfg.num_attention_heads)
    }

    /// KV heads this rank holds: its share while they split, else the one its query heads use.
    pub fn kv_heads(&self, cfg: &ModelConfig) -> Range<usize> {
        let nkv = cfg.num_key_value_heads;
        if self.size <= nkv {
            self.even(nkv)
        } else {
            let h = self.rank * nkv / self.size;
            h..h + 1
        }
    }

    /// lm_head rows (token ids) this rank scores: `ceil(V/N)` each, the last rank the rest, so
    /// every rank's slice but the last has the same width (the all-gather of logits pads to it).
    pub fn vocab(&self, vocab: usize) -> Range<usize> {
        let w = vocab.div_ceil(self.size);
        (self.rank * w).min(vocab)..((self.rank + 1) * w).min(vocab)
    }

    /// The config this rank's backend computes with: its heads and intermediate widths (the
    /// vocabulary stays whole: the embedding is replicated; lm_head's slice is [`Shard::vocab`]).
    pub fn local_config(&self, cfg: &ModelConfig) -> ModelConfig {
        let mut c = cfg.clone();
        if self.is_whole() {
            return c;
        }
        c.head_dim = Some(cfg.head_dim());
        c.num_attention_heads = self.q_heads(cfg).len();
        c.num_key_value_heads = self.kv_heads(cfg).len();
        c.intermediate_size = cfg.intermediate_size / self.size;
        c.moe_intermediate_size = cfg.moe_intermediate_size / self.size;
        if let Some(w) = cfg.moe_shared_expert_intermediate_size {
            // Each shared expert's width: the split applies to the whole shared MLP.
            c.moe_shared_expert_intermediate_size = Some(w * cfg.num_shared_experts / self.size);
            c.num_shared_experts = cfg.num_shared_experts.min(1);
        } else if cfg.num_shared_experts > 0 {
            c.moe_shared_expert_intermediate_size = Some(cfg.shared_intermediate() / self.size);
            c.num_shared_experts = 1;
        }
        c
    }

    /// Whole logits rows `[rows, vocab]` from every rank's `[rows, its vocab slice]`, in rank order.
    pub fn assemble_vocab(&self, parts: &[Vec<f32>], rows: usize, vocab: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * vocab];
        for (rank, part) in parts.iter().enumerate() {
            let cols = Shard { rank, size: self.size }.vocab(vocab);
            for r in 0..rows {
                out[r * vocab + cols.start..r * vocab + cols.end].copy_from_slice(&part[r * cols.len()..(r + 1) * cols.len()]);
            }
        }
        out
    }

    /// The slice of tensor `name` this rank holds.
    pub fn slice(&self, cfg: &ModelConfig, name: &str) -> Slice {
        if self.is_whole() {
            return Slice::Whole;
        }
        let d = cfg.head_dim();
        if name == names::LM_HEAD {
            return Slice::Rows(vec![self.vocab(cfg.vocab_size)]);
        }
        if name.ends_with(".attention.query_key_value.weight") {
            let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
            let (q, kv) = (self.q_heads(cfg), self.kv_heads(cfg));
            let rows = |heads: &Range<usize>, first_head: usize| (first_head + heads.start) * d..(first_head + heads.end) * d;
            return Slice::Rows(vec![rows(&q, 0), rows(&kv, nh), rows(&kv, nh + nkv)]);
        }
        if name.ends_with(".attention.dense.weight") {
            let q = self.q_heads(cfg);
            return Slice::Cols(q.start * d..q.end * d);
        }
        let inter = if name.contains(".mlp.experts.") {
            cfg.moe_intermediate_size
        } else if name.contains(".mlp.shared_experts.") {
            cfg.shared_intermediate()
        } else {
            cfg.intermediate_size
        };
        let part = self.even(inter);
        let proj = |p: names::Proj| name.ends_with(&format!("{}.weight", p.stem()));
        if proj(names::Proj::Gate) || proj(names::Proj::Up) {
            Slice::Rows(vec![part])
        } else if proj(names::Proj::Down) {
            Slice::Cols(part)
        } else {
            Slice::Whole
        }
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one row range is a Slice::Rows of one
mod tests {
    use super::*;

    fn flash() -> ModelConfig {
        crate::config::preset("flash").unwrap()
    }

    #[test]
    fn flash_at_tp2_and_tp4_splits_as_sglang_does() {
        let c = flash();
        let r1 = Shard { rank: 1, size: 2 };
        let l = r1.local_config(&c);
        assert_eq!((l.num_attention_heads, l.num_key_value_heads, l.moe_intermediate_size), (16, 2, 512));
        assert_eq!(l.shared_intermediate(), 512);
        assert_eq!(l.intermediate_size, 4608);
        // The vocabulary stays whole (the backends read it from their rank's config).
        assert_eq!(l.vocab_size, c.vocab_size);
        let l4 = Shard { rank: 3, size: 4 }.local_config(&c);
        assert_eq!((l4.num_attention_heads, l4.num_key_value_heads, l4.moe_intermediate_size), (8, 1, 256));
        // Above NKV ranks the KV heads replicate: 8 ranks over 4 KV heads, two ranks per head.
        let kv: Vec<_> = (0..8).map(|r| Shard { rank: r, size: 8 }.kv_heads(&c)).collect();
        assert_eq!(kv, vec![0..1, 0..1, 1..2, 1..2, 2..3, 2..3, 3..4, 3..4]);
        // Rank 1 of 2: q heads 16..32, kv heads 2..4 of the fused [q 32 | k 4 | v 4] x 128 rows.
        let qkv = r1.slice(&c, &names::layer(0).qkv());
        assert_eq!(qkv, Slice::Rows(vec![16 * 128..32 * 128, 34 * 128..36 * 128, 38 * 128..40 * 128]));
        assert_eq!(r1.slice(&c, &names::layer(0).dense()), Slice::Cols(16 * 128..32 * 128));
        let l5 = names::layer(5);
        assert_eq!(r1.slice(&c, &l5.expert(7, names::Proj::Up)), Slice::Rows(vec![512..1024]));
        assert_eq!(r1.slice(&c, &l5.expert(7, names::Proj::Down)), Slice::Cols(512..1024));
        assert_eq!(r1.slice(&c, &l5.shared_expert(names::Proj::Gate)), Slice::Rows(vec![512..1024]));
        assert_eq!(r1.slice(&c, &names::layer(0).mlp(names::Proj::Down)), Slice::Cols(4608..9216));
        assert_eq!(r1.slice(&c, &l5.router()), Slice::Whole);
        assert_eq!(r1.slice(&c, &l5.expert_bias()), Slice::Whole);
        assert_eq!(r1.slice(&c, names::EMBED), Slice::Whole);
        assert_eq!(r1.slice(&c, names::LM_HEAD), Slice::Rows(vec![78592..157184]));
    }

    #[test]
    fn vocab_slices_cover_the_vocabulary_once() {
        for (v, n) in [(157184, 4), (515, 4), (7, 2), (5, 4)] {
            let parts: Vec<_> = (0..n).map(|r| Shard { rank: r, size: n }.vocab(v)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[n - 1].end, v);
            assert!(parts.windows(2).all(|w| w[0].end == w[1].start), "{parts:?}");
        }
    }

    #[test]
    fn sizes_that_do_not_divide_are_refused_with_the_reason() {
        let c = flash();
        assert!(Shard::check(&c, 2).is_ok() && Shard::check(&c, 4).is_ok() && Shard::check(&c, 8).is_ok());
        let e = Shard::check(&c, 3).unwrap_err().to_string();
        assert!(e.contains("does not divide num_attention_heads (32)"), "{e}");
        assert!(Shard::check(&c, 0).is_err());
        let mut odd = c.clone();
        odd.num_key_value_heads = 4;
        odd.num_attention_heads = 24;
        odd.moe_intermediate_size = 1536;
        odd.intermediate_size = 9216;
        odd.head_dim = Some(128);
        let e = Shard::check(&odd, 6).unwrap_err().to_string();
        assert!(e.contains("not a multiple of it"), "{e}");
    }
}
