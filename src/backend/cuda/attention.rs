//! The step's per-token layout on the device, and the launches that read or write the paged
//! KV cache: qk_norm_rope_store (csrc/rope.cu) and block_attention / attention_combine
//! (csrc/attention.cu).

use super::act::{ActData, CudaAct};
use super::kernels::{params::*, Kernel};
use super::CudaBackend;
use crate::backend::{SeqRun, StepBatch};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

/// The per-token layout of the last step batch on the device (shared by all layers).
pub(super) struct StepLayout {
    runs: Vec<SeqRun>,
    positions: Vec<u32>,
    tok_pos: CudaSlice<i32>,
    tok_pt: CudaSlice<i32>,
    tok_limit: CudaSlice<i32>,
    page_table: CudaSlice<i32>,
    /// Attention query tiles (first token, tokens), none spanning two runs.
    tiles: CudaSlice<i32>,
    num_tiles: usize,
    /// The largest key limit of the batch.
    max_limit: usize,
}

/// The block_attention instance that serves head_dim `d` (csrc/attention.cu zero-fills the
/// columns past `d` up to the compiled head dim): its keys a chunk (params.h att_kc), dynamic
/// shared memory (att_smem_layout) and kernel.
fn att_kernel(d: usize) -> (usize, u32, Kernel) {
    match d {
        0..=64 => (ATT_KC, ATT_SMEM_D64, Kernel::BlockAttentionD64),
        65..=128 => (ATT_KC, ATT_SMEM_D128, Kernel::BlockAttention),
        _ => (ATT_KC_WIDE, ATT_SMEM_D256, Kernel::BlockAttentionD256),
    }
}

/// The fixed cost of a CTA (Q load, first stage's latency, partial write) in chunk times, and
/// the fewest chunks a split covers (a split's partial O costs about what a chunk of K and V
/// does, once written and once read by the combine).
const ATT_CTA_COST_CHUNKS: usize = 2;
const ATT_MIN_SPLIT_CHUNKS: usize = 2;

/// How many key splits: the count minimising waves x (chunks a split + fixed cost), where a
/// wave is `slots` CTAs (SMs x ATT_CTAS_PER_SM), at least ATT_MIN_SPLIT_CHUNKS chunks a split
/// (ties: fewer splits). Batch 1 at 1056 keys (8 CTAs a split, 17 chunks): 9 splits of 2
/// chunks; batch 16 (128 CTAs): 2; batch 64 (512): 1, no combine.
fn att_splits(ctas: usize, chunks: usize, slots: usize) -> usize {
    let most = chunks.div_ceil(ATT_MIN_SPLIT_CHUNKS).max(1);
    let cost = |s: usize| (ctas * s).div_ceil(slots) * (chunks.div_ceil(s) + ATT_CTA_COST_CHUNKS);
    (1..=most).min_by_key(|&s| (cost(s), s)).unwrap_or(1)
}

impl CudaBackend {
    /// Layer `layer` of the KV pool, addressed through the step's page tables.
    fn paged_kv(&self, s: &StepLayout, layer: usize) -> PagedKv {
        PagedKv {
            pool: self.p(&self.kv),
            page_table: self.p(&s.page_table),
            tok_pt: self.p(&s.tok_pt),
            page_size: self.pool.page_size as i32,
            layer: layer as i32,
            num_layers: self.cfg.num_hidden_layers as i32,
        }
    }

    /// The step's per-token layout on the device; rebuilt only when the batch changes.
    fn layout(&mut self, batch: &StepBatch) -> Result<()> {
        if let Some(s) = &self.step {
            if s.runs == batch.runs && s.positions == batch.positions {
                return Ok(());
            }
        }
        let mut page_table: Vec<i32> = vec![];
        let (mut tok_pos, mut tok_pt, mut tok_limit) = (vec![], vec![], vec![]);
        let limits = batch.key_limits();
        let mut row = 0;
        let mut tiles: Vec<i32> = vec![];
        let tile_tokens = (ATT_ROWS / (self.cfg.num_attention_heads / self.cfg.num_key_value_heads)).max(1);
        for r in &batch.runs {
            for t0 in (0..r.len).step_by(tile_tokens) {
                tiles.push((row + t0) as i32);
                tiles.push(tile_tokens.min(r.len - t0) as i32);
            }
            let table = self.pool.table(r.slot)?;
            let cap = table.len() * self.pool.page_size;
            if r.start + r.len > cap {
                bail!("positions up to {} are beyond the sequence's KV reservation ({cap})", r.start + r.len);
            }
            let off = page_table.len() as i32;
            page_table.extend(table.iter().map(|&p| p as i32));
            for _ in 0..r.len {
                tok_pos.push(batch.positions[row] as i32);
                tok_pt.push(off);
                tok_limit.push(limits[row].1 as i32);
                row += 1;
            }
        }
        let num_tiles = tiles.len() / 2;
        let tiles = self.upload(&tiles, "attention tiles")?;
        self.step = Some(StepLayout {
            tiles,
            num_tiles,
            max_limit: tok_limit.iter().copied().max().unwrap_or(0) as usize,
            runs: batch.runs.clone(),
            positions: batch.positions.clone(),
            tok_pos: self.upload(&tok_pos, "token positions")?,
            tok_pt: self.upload(&tok_pt, "page-table offsets")?,
            tok_limit: self.upload(&tok_limit, "key limits")?,
            page_table: self.upload(&page_table, "page tables")?,
        });
        Ok(())
    }

    /// qk_norm_rope_store: per-head QK norm + RoPE, K and V into the step's pages (csrc/rope.cu).
    pub(super) fn rope_store(&mut self, qkv: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        self.layout(batch)?;
        let c = &self.cfg;
        let (nh, nkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let src = self.f32_of(qkv, "qk_norm_rope_store")?;
        let q = self.alloc_bf16(qkv.rows * nh * d, "q")?;
        let s = self.step.as_ref().unwrap();
        let l = &self.w.layers[layer];
        let p = RopeParams {
            qkv: self.p(src),
            q_norm: self.p(&l.q_norm),
            k_norm: self.p(&l.k_norm),
            q_out: self.p(&q),
            tok_pos: self.p(&s.tok_pos),
            kv: self.paged_kv(s, layer),
            tokens: qkv.rows as i32,
            nh: nh as i32,
            nkv: nkv as i32,
            d: d as i32,
            rot: c.rotary_dim() as i32,
            eps: c.rms_norm_eps,
            theta: c.rope_theta,
        };
        let head_groups = (nh + 2 * c.num_key_value_heads).div_ceil(ROPE_WARPS) as u32;
        self.k.launch(Kernel::QkNormRopeStore, (qkv.rows as u32, head_groups, 1), ROPE_THREADS as u32, &p)?;
        Ok(CudaAct { rows: qkv.rows, cols: nh * d, data: ActData::Bf16(q) })
    }

    /// Attention of the step's queries over their sequences' pages.
    pub(super) fn attend(&mut self, q: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        self.layout(batch)?;
        let c = &self.cfg;
        let (nh, d) = (c.num_attention_heads, c.head_dim());
        let qb = self.bf16_of(q, "attention")?;
        let out = self.alloc_bf16(q.rows * nh * d, "attention output")?;
        self.attention_kernels(qb, &out, q.rows, layer)?;
        Ok(CudaAct { rows: q.rows, cols: nh * d, data: ActData::Bf16(out) })
    }

    /// block_attention (+ attention_combine when the keys are split): see csrc/attention.cu.
    fn attention_kernels(&self, q: &CudaSlice<u16>, out: &CudaSlice<u16>, rows: usize, layer: usize) -> Result<()> {
        let c = &self.cfg;
        let (nh, nkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let s = self.step.as_ref().unwrap();
        let tiles = &s.tiles;
        let (kc, smem, kernel) = att_kernel(d);
        let slots = self.sm_count * ATT_CTAS_PER_SM;
        let chunks = s.max_limit.div_ceil(kc).max(1);
        let splits = att_splits(s.num_tiles * nkv, chunks, slots);
        let split_keys = chunks.div_ceil(splits) * kc;
        let num_splits = s.max_limit.div_ceil(split_keys).max(1);
        let (part_acc, part_ml) = if num_splits > 1 {
            (
                Some(self.k.alloc::<f32>(num_splits * rows * nh * d, "attention partials")?),
                Some(self.k.alloc::<f32>(num_splits * rows * nh * 2, "attention partial stats")?),
            )
        } else {
            (None, None)
        };
        let p = AttnParams {
            q: self.p(q),
            out: self.p(out),
            tok_limit: self.p(&s.tok_limit),
            tiles: self.p(tiles),
            part_acc: part_acc.as_ref().map_or(0, |b| self.p(b)),
            part_ml: part_ml.as_ref().map_or(0, |b| self.p(b)),
            kv: self.paged_kv(s, layer),
            tokens: rows as i32,
            nh: nh as i32,
            nkv: nkv as i32,
            d: d as i32,
            split_keys: split_keys as i32,
            num_splits: num_splits as i32,
            scale: 1.0 / (d as f32).sqrt(),
        };
        let grid = (s.num_tiles as u32, nkv as u32, num_splits as u32);
        self.k.launch_smem(kernel, grid, ATT_THREADS as u32, smem, &p)?;
        if num_splits > 1 {
            self.k.launch(Kernel::AttentionCombine, (rows as u32, nh as u32, 1), 128, &p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_counts() {
        // H100/H200: 132 SMs, 2 CTAs an SM at head dim 128; mini's 4 KV heads, 2 tiles a block.
        let kc = att_kernel(128).0;
        let slots = 132 * ATT_CTAS_PER_SM;
        let chunks = 1056usize.div_ceil(kc);
        assert_eq!(att_splits(8, chunks, slots), 9); // batch 1: 72 CTAs of 2 chunks
        assert_eq!(att_splits(128, chunks, slots), 2); // batch 16: one wave of 256
        assert_eq!(att_splits(512, chunks, slots), 1); // batch 64: no combine
        assert_eq!(att_splits(8, 32800usize.div_ceil(kc), slots), 33); // batch 1, 32k keys: one full wave
        assert_eq!(att_splits(8, 1, slots), 1);
        assert_eq!(att_kernel(16).2, Kernel::BlockAttentionD64);
        assert_eq!(att_kernel(128).2, Kernel::BlockAttention);
        assert_eq!(att_kernel(144).2, Kernel::BlockAttentionD256);
    }
}
