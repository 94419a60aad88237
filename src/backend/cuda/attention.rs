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

/// Dynamic shared memory of block_attention for head_dim `d`: params.h's affine form of
/// `att_smem_layout(d).total` (held to the layout there by a static_assert).
fn att_smem_bytes(d: usize) -> u32 {
    ATT_SMEM_FIXED + d as u32 * ATT_SMEM_PER_D
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
        self.k.launch(Kernel::QkNormRopeStore, (qkv.rows as u32, 1, 1), ROPE_THREADS as u32, &p)?;
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
        // Split the keys so that ~6 CTAs per SM (two waves at 3 an SM) are launched; no split when the tiles alone fill
        // the GPU (prefill), which also skips the combine.
        let chunks = s.max_limit.div_ceil(ATT_KC).max(1);
        let per_split = s.num_tiles * nkv;
        let want_splits = (6 * self.sm_count).div_ceil(per_split.max(1)).clamp(1, chunks);
        let split_keys = chunks.div_ceil(want_splits) * ATT_KC;
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
        let kernel = if d <= 128 { Kernel::BlockAttention } else { Kernel::BlockAttentionD256 };
        self.k.launch_smem(kernel, grid, ATT_THREADS as u32, att_smem_bytes(d), &p)?;
        if num_splits > 1 {
            self.k.launch(Kernel::AttentionCombine, (rows as u32, nh as u32, 1), 128, &p)?;
        }
        Ok(())
    }
}
