//! The step's per-token layout on the device, and the launches that read or write the paged
//! KV cache: qk_norm_rope_store (csrc/rope.cu) and block_attention / attention_combine
//! (csrc/attention.cu).

use super::act::{ActData, CudaAct};
use super::kernels::{params::*, Kernel, Kernels};
use super::CudaBackend;
use crate::backend::{SeqRun, StepBatch};
use crate::config::ModelConfig;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

/// A forward's inputs on the device, in one buffer written by one copy: per token its id,
/// position, page-table offset and key limit; the lm_head's rows; the attention's query tiles
/// and keys per split; the sequences' page tables. The kernels read them through pointers into
/// it, so a CUDA graph of the forward (graph.rs) replays on new inputs after that one copy.
pub(super) struct StepLayout {
    /// What it was built from: a later call for the same batch and rows reuses it.
    runs: Vec<SeqRun>,
    positions: Vec<u32>,
    pub(super) tokens: Vec<u32>,
    pub(super) out_rows: Vec<usize>,
    pub(super) shape: StepShape,
    pub(super) pack: CudaSlice<i32>,
}

/// What fixes a forward's launches (grids, buffer sizes, pointers into the pack): two forwards
/// of one shape run the same launches on different inputs, so one CUDA graph serves both.
/// Sequence slots, positions and prefix lengths are not in it: they are data in the pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct StepShape {
    pub tokens: usize,
    pub out_rows: usize,
    /// Attention query tiles (first token, tokens), none spanning two runs.
    pub tiles: usize,
    /// Key splits of block_attention (grid z; see [`att_splits`]).
    pub splits: usize,
    /// Room for the page tables (a power of two, so slowly growing contexts share a shape).
    pub page_room: usize,
}

/// The pack's sections, in order: i32 offsets of each (see [`StepLayout`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct PackOffsets {
    pub ids: usize,
    pub tok_pos: usize,
    pub tok_pt: usize,
    pub tok_limit: usize,
    pub out_rows: usize,
    pub tiles: usize,
    pub split_keys: usize,
    pub page_table: usize,
    pub len: usize,
}

impl StepShape {
    pub(super) fn offsets(&self) -> PackOffsets {
        let t = self.tokens;
        let tiles = 4 * t + self.out_rows;
        let split_keys = tiles + 2 * self.tiles;
        let page_table = split_keys + 1;
        PackOffsets {
            ids: 0,
            tok_pos: t,
            tok_pt: 2 * t,
            tok_limit: 3 * t,
            out_rows: 4 * t,
            tiles,
            split_keys,
            page_table,
            len: page_table + self.page_room,
        }
    }
}

impl StepLayout {
    /// The device address of the pack's i32 at `offset`.
    pub(super) fn at(&self, base: u64, offset: usize) -> u64 {
        base + 4 * offset as u64
    }

    /// Whether this layout was built for `batch` (its tokens aside).
    fn serves(&self, batch: &StepBatch) -> bool {
        self.runs == batch.runs && self.positions == batch.positions
    }
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
/// From this many chunks a split (at one CTA an SM), the split rule counts every resident CTA of
/// an SM as a slot (see [`split_rule`]).
const ATT_SHARED_SM_MIN_CHUNKS: usize = 64;

/// How many key splits: the count minimising waves x (chunks a split + fixed cost), where a
/// wave is `slots` CTAs (SMs x ATT_CTAS_PER_SM), at least ATT_MIN_SPLIT_CHUNKS chunks a split
/// (ties: fewer splits). Batch 1 at 1056 keys (4 CTAs a split, 17 chunks): 9 splits of 2
/// chunks; batch 16 (64 CTAs): 2; batch 64 (256): 1, no combine. The forward asks it for the
/// chunk count rounded up to a power of two (see [`split_rule`]).
fn att_splits(ctas: usize, chunks: usize, slots: usize) -> usize {
    let most = chunks.div_ceil(ATT_MIN_SPLIT_CHUNKS).max(1);
    let cost = |s: usize| (ctas * s).div_ceil(slots) * (chunks.div_ceil(s) + ATT_CTA_COST_CHUNKS);
    (1..=most).min_by_key(|&s| (cost(s), s)).unwrap_or(1)
}

/// The step's key split: (splits, keys a split). The split count comes from [`att_splits`] at
/// the chunk count rounded up to a power of two, so it changes only when the context doubles
/// and a CUDA graph of the step replays while the prefix grows; the keys a split covers then
/// follow the context exactly (a data value: splits past the longest context have no keys and
/// exit). Eager forwards use the same rule, so a replay computes what they compute.
///
/// A wave counts an SM once (`sm_count` slots) even where it holds `resident` CTAs (the wgmma
/// path holds two): at short splits the second CTA's fixed cost and the extra partial rows the
/// combine reads cost what sharing the SM saves. When a split would still walk
/// ATT_SHARED_SM_MIN_CHUNKS chunks or more (long contexts), the CTA is bound by its per-chunk
/// chain (S, softmax, P V), which a second CTA an SM overlaps, so the rule then counts every
/// resident CTA. Measured on the H200 (docs/PERF.md, session 12): batch 8 at a 32,736-token
/// prefix 11.03 -> 10.03 ms a step, batch 16 at 8,192 9.93 -> 9.49; counting both at short splits
/// was slower or level (batch 1 at 8,192 4.38 -> 4.50 ms, batch 16 at 1,024 7.64 -> 7.75).
fn split_rule(ctas: usize, max_limit: usize, kc: usize, sm_count: usize, resident: usize) -> (usize, usize) {
    let chunks = max_limit.div_ceil(kc).max(1).next_power_of_two();
    let mut splits = att_splits(ctas, chunks, sm_count);
    if resident > 1 && chunks / splits >= ATT_SHARED_SM_MIN_CHUNKS {
        splits = att_splits(ctas, chunks, sm_count * resident);
    }
    let split_keys = max_limit.div_ceil(splits).div_ceil(kc).max(1) * kc;
    (splits, split_keys)
}

/// What a layer's attention writes (its output; where the keys are split, the splits' partial
/// O and (m, l)), allocated before qk_norm_rope_store is launched: block_attention_deep is that
/// kernel's programmatic dependent, and a dependent's edge is to the stream's node before it (in
/// a recorded step an allocation is a node, and with the allocations between the two the deep
/// kernel's CTAs started only once the rope had ended: the kernel trace, docs/PERF.md session 31).
pub(super) struct AttnBuffers {
    layer: usize,
    rows: usize,
    splits: usize,
    out: CudaSlice<u16>,
    part_acc: Option<CudaSlice<f32>>,
    part_ml: Option<CudaSlice<f32>>,
}

impl CudaBackend {
    /// Layer `layer` of the KV pool, addressed through the step's page tables.
    fn paged_kv(&self, s: &StepLayout, layer: usize) -> PagedKv {
        let (base, o) = (self.p(&s.pack), s.shape.offsets());
        PagedKv {
            pool: self.p(&self.kv),
            page_table: s.at(base, o.page_table),
            tok_pt: s.at(base, o.tok_pt),
            page_size: self.pool.page_size as i32,
            layer: layer as i32,
            num_layers: self.cfg.num_hidden_layers as i32,
        }
    }

    /// Stage `batch`'s inputs (and the lm_head's `out_rows`) on the device, one copy; kept
    /// while later calls name the same batch and rows (the layers of one forward).
    pub(super) fn stage(&mut self, batch: &StepBatch, out_rows: &[usize]) -> Result<()> {
        if let Some(s) = &self.step {
            if s.serves(batch) && s.tokens == batch.tokens && s.out_rows == out_rows {
                return Ok(());
            }
        }
        let (shape, host) = self.layout_image(batch, out_rows)?;
        self.step = Some(self.upload_layout(batch, out_rows, shape, &host)?);
        Ok(())
    }

    /// A new device pack holding `host`.
    pub(super) fn upload_layout(&self, batch: &StepBatch, out_rows: &[usize], shape: StepShape, host: &[i32]) -> Result<StepLayout> {
        Ok(StepLayout {
            runs: batch.runs.clone(),
            positions: batch.positions.clone(),
            tokens: batch.tokens.clone(),
            out_rows: out_rows.to_vec(),
            shape,
            pack: self.upload(host, "the step's inputs")?,
        })
    }

    /// Ops given only the batch (the K/V store, attention) use the staged layout when it is this
    /// batch's; otherwise (a prefill forward, a test's single op) they stage the batch alone.
    pub(super) fn layout(&mut self, batch: &StepBatch) -> Result<()> {
        match &self.step {
            Some(s) if s.serves(batch) => Ok(()),
            _ => self.stage(batch, &[]),
        }
    }

    /// The pack's host image for `batch` and `out_rows`, and its shape.
    pub(super) fn layout_image(&self, batch: &StepBatch, out_rows: &[usize]) -> Result<(StepShape, Vec<i32>)> {
        let c = &self.cfg;
        let t = batch.num_tokens();
        if let Some(&r) = out_rows.iter().find(|&&r| r >= t) {
            bail!("output row {r} is out of range ({t} rows)");
        }
        let mut page_table: Vec<i32> = vec![];
        let (mut tok_pt, mut tok_limit) = (Vec::with_capacity(t), Vec::with_capacity(t));
        let limits = batch.key_limits();
        let mut row = 0;
        let mut tiles: Vec<i32> = vec![];
        let tile_tokens = (ATT_ROWS / (c.num_attention_heads / c.num_key_value_heads)).max(1);
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
                tok_pt.push(off);
                tok_limit.push(limits[row].1 as i32);
                row += 1;
            }
        }
        let max_limit = tok_limit.iter().copied().max().unwrap_or(0) as usize;
        let tiles = longest_first(&tiles, &tok_limit);
        let num_tiles = tiles.len() / 2;
        let (kc, _, kernel) = att_kernel(c.head_dim());
        // CTAs an SM holds (att_resident). A measuring override (`dllm bench --att-ctas-per-sm`)
        // counts that many in every wave.
        let resident = self.att_resident(kernel);
        let ctas = num_tiles * c.num_key_value_heads;
        let (splits, split_keys) = match self.opts.att_ctas_per_sm {
            Some(n) => split_rule(ctas, max_limit, kc, self.sm_count * n, 1),
            None => split_rule(ctas, max_limit, kc, self.sm_count, resident),
        };
        let shape =
            StepShape { tokens: t, out_rows: out_rows.len(), tiles: num_tiles, splits, page_room: page_table.len().next_power_of_two() };
        let o = shape.offsets();
        let mut host = vec![0i32; o.len];
        for (i, &id) in batch.tokens.iter().enumerate() {
            host[o.ids + i] = id as i32;
            host[o.tok_pos + i] = batch.positions[i] as i32;
        }
        host[o.tok_pt..o.tok_pt + t].copy_from_slice(&tok_pt);
        host[o.tok_limit..o.tok_limit + t].copy_from_slice(&tok_limit);
        for (i, &r) in out_rows.iter().enumerate() {
            host[o.out_rows + i] = r as i32;
        }
        host[o.tiles..o.tiles + tiles.len()].copy_from_slice(&tiles);
        host[o.split_keys] = split_keys as i32;
        host[o.page_table..o.page_table + page_table.len()].copy_from_slice(&page_table);
        Ok((shape, host))
    }

    /// qk_norm_rope_store: per-head QK norm + RoPE, K and V into the step's pages (csrc/rope.cu).
    pub(super) fn rope_store(&mut self, qkv: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        self.layout(batch)?;
        let (nh, nkv, d) = (self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim());
        // f32 rows, or bf16 (CudaOptions::qkv_bf16) for the _bf16 kernels.
        let (src, bf16_in) = match &qkv.data {
            ActData::F32(s) => (self.p(s), false),
            ActData::Bf16(s) => (self.p(s), true),
            ActData::MoeSlots(_) => bail!("qk_norm_rope_store: expected the QKV rows, got uncombined MoE slots"),
        };
        let (q, p) = self.rope_outputs(layer, qkv.rows, src)?;
        // A CTA per token and group of ROPE_WARPS heads; from the rows where that is more CTAs
        // than the GPU holds at once, fewer groups, each warp walking more heads: at batch 64
        // (2048 rows x 6 groups) six waves of CTAs, each a few memory latencies long, took ~26 us
        // a layer.
        let head_groups = (nh + 2 * nkv).div_ceil(ROPE_WARPS);
        let resident = self.sm_count * ROPE_CTAS_PER_SM;
        let groups = (resident / qkv.rows.max(1)).clamp(1, head_groups) as u32;
        let kernel = match (self.rope_vector_kernel(p.qkv), bf16_in) {
            (Some(Kernel::QkNormRopeStoreV4), true) => Kernel::QkNormRopeStoreV4Bf16,
            (Some(Kernel::QkNormRopeStoreV8), true) => Kernel::QkNormRopeStoreV8Bf16,
            (Some(k), _) => k,
            (None, true) => Kernel::QkNormRopeStoreBf16,
            (None, false) => Kernel::QkNormRopeStore,
        };
        self.k.launch(kernel, (qkv.rows as u32, groups, 1), ROPE_THREADS as u32, &p)?;
        Ok(CudaAct { rows: qkv.rows, cols: nh * d, data: ActData::Bf16(q) })
    }

    /// The rope store's q (allocated here) and parameters for layer `layer`'s `rows` rows of the
    /// staged step (its layout uploaded: [`CudaBackend::layout`]), the QKV rows at `qkv` (0 where
    /// the QKV projection's epilogue does the work: qkv_rope.rs). The attention's outputs are
    /// allocated here too, before the rope store's kernel (see AttnBuffers).
    pub(super) fn rope_outputs(&mut self, layer: usize, rows: usize, qkv: u64) -> Result<(CudaSlice<u16>, RopeParams)> {
        let q = self.alloc_bf16(rows * self.cfg.num_attention_heads * self.cfg.head_dim(), "q")?;
        self.attn_prepared = Some(self.attn_buffers(layer, rows)?);
        let c = &self.cfg;
        let Some(s) = self.step.as_ref() else { bail!("the rope store ran before its step's layout was staged") };
        let (base, o) = (self.p(&s.pack), s.shape.offsets());
        let l = &self.w.layers[layer];
        let p = RopeParams {
            qkv,
            q_norm: self.p(&l.q_norm),
            k_norm: self.p(&l.k_norm),
            q_out: self.p(&q),
            tok_pos: s.at(base, o.tok_pos),
            kv: self.paged_kv(s, layer),
            tokens: rows as i32,
            nh: c.num_attention_heads as i32,
            nkv: c.num_key_value_heads as i32,
            d: c.head_dim() as i32,
            rot: c.rotary_dim() as i32,
            eps: c.rms_norm_eps,
            theta: c.rope_theta,
            cos_sin: self.p(&self.rope_table),
            table_positions: rope_table_positions(c) as i32,
        };
        Ok((q, p))
    }

    /// The vector form of qk_norm_rope_store (csrc/rope.cu) for this model, where it applies:
    /// head dim 128 or 256 (4 or 8 elements a lane), lanes whose elements all fall on one side
    /// of the rotation's halves, and a 16-byte aligned input (its vector loads).
    fn rope_vector_kernel(&self, qkv: u64) -> Option<Kernel> {
        let d = self.cfg.head_dim();
        let kernel = match d {
            128 => Kernel::QkNormRopeStoreV4,
            256 => Kernel::QkNormRopeStoreV8,
            _ => return None,
        };
        let per_lane = d / WARP;
        let fits = (self.cfg.rotary_dim() / 2).is_multiple_of(per_lane) && qkv.is_multiple_of(16);
        (self.opts.rope_vectors && fits).then_some(kernel)
    }

    /// Attention of the step's queries over their sequences' pages.
    pub(super) fn attend(&mut self, q: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        self.layout(batch)?;
        let c = &self.cfg;
        let (nh, d) = (c.num_attention_heads, c.head_dim());
        let qb = self.bf16_of(q, "attention")?;
        let splits = self.step.as_ref().map_or(1, |s| s.shape.splits);
        let b = match self.attn_prepared.take().filter(|b| b.layer == layer && b.rows == q.rows && b.splits == splits) {
            Some(b) => b,
            None => self.attn_buffers(layer, q.rows)?,
        };
        self.attention_kernels(qb, &b, q.rows, layer)?;
        Ok(CudaAct { rows: q.rows, cols: nh * d, data: ActData::Bf16(b.out) })
    }

    /// What layer `layer`'s attention writes at `rows` query rows under the staged layout: its
    /// output and, where the keys are split, the splits' partials.
    fn attn_buffers(&self, layer: usize, rows: usize) -> Result<AttnBuffers> {
        let c = &self.cfg;
        let (nh, d) = (c.num_attention_heads, c.head_dim());
        let splits = self.step.as_ref().map_or(1, |s| s.shape.splits);
        let (part_acc, part_ml) = if splits > 1 {
            (
                Some(self.k.alloc::<f32>(splits * rows * nh * d, "attention partials")?),
                Some(self.k.alloc::<f32>(splits * rows * nh * 2, "attention partial stats")?),
            )
        } else {
            (None, None)
        };
        Ok(AttnBuffers { layer, rows, splits, out: self.alloc_bf16(rows * nh * d, "attention output")?, part_acc, part_ml })
    }

    /// Whether `ctas` CTAs of `kernel` run as block_attention_deep (sm_90a, head dim 128): one
    /// CTA an SM, warp-specialized (a producer warpgroup bringing K and V into ATT_DEEP_STAGES
    /// stages, two consumer warpgroups each overlapping a chunk's P V with the next one's
    /// softmax). With the pool's tensor map (TMA loads) it takes every launch: measured against
    /// the two-CTA kernel (docs/PERF.md, session 19) it was level or faster at every batch and
    /// context, most where splits are long (batch 8 at a 32k prefix 9.17 against 9.92 ms a step,
    /// a 32k prefill 328 against 382 ms). Copying by cp.async, it takes a launch only where every
    /// CTA has an SM to itself (batch 1 at any context, batch 16 at 1k). `CudaOptions::att_deep`
    /// forces it either way.
    fn att_deep(&self, kernel: Kernel, ctas: usize) -> bool {
        self.att_wgmma_path(kernel) && self.att_deep_everywhere().unwrap_or(ctas <= self.sm_count)
    }

    /// CTAs of the attention an SM holds, as the key-split rule counts them: two on the two-CTA
    /// wgmma path unless the deep kernel takes every launch there (see [`Self::att_deep`]), one
    /// elsewhere.
    fn att_resident(&self, kernel: Kernel) -> usize {
        if self.att_wgmma_path(kernel) && !self.att_deep_everywhere().unwrap_or(false) {
            ATT_WGMMA_CTAS_PER_SM
        } else {
            ATT_CTAS_PER_SM
        }
    }

    /// Whether `kernel`'s launches take the wgmma path (head dim 128 on sm_90a), the two-CTA
    /// kernel's or the deep one's.
    fn att_wgmma_path(&self, kernel: Kernel) -> bool {
        self.wgmma && kernel == Kernel::BlockAttention
    }

    /// Whether the deep kernel takes every launch of the wgmma path (forced either way, or its
    /// TMA form), `None` where it depends on the launch (cp.async: where every CTA has an SM).
    fn att_deep_everywhere(&self) -> Option<bool> {
        self.opts.att_deep.or(self.kv_map.is_some().then_some(true))
    }

    /// The pool as block_attention_deep's TMA reads it: a 3-D map of `[page x layer x k|v][page
    /// size][nkv * d]` bf16 (the pool's layout, kv_cache.rs) in boxes of 64 columns (one swizzled
    /// panel of a head) x min(page size, ATT_KC) positions, so a chunk of keys is whole boxes
    /// (pages). `None` where the deep kernel cannot run (head dim 128 on sm_90a), where
    /// `CudaOptions::att_tma` turns it off, or where the page size is not a power of two of at
    /// least ATT_TMA_MIN_BOX_ROWS: the producer copies by cp.async there.
    pub(super) fn kv_tensor_map(&self) -> Result<Option<(CudaSlice<u8>, usize)>> {
        let c = &self.cfg;
        let ps = self.pool.page_size;
        // The deep kernel's shape (head dim 128 on sm_90a), TMA not turned off; then pages that box.
        let usable = self.wgmma && c.head_dim() == 128 && self.opts.att_tma.unwrap_or(true);
        if !usable || !ps.is_power_of_two() || ps < ATT_TMA_MIN_BOX_ROWS {
            return Ok(None);
        }
        let row = c.num_key_value_heads * c.head_dim();
        let planes = self.pool.num_pages * c.num_hidden_layers * 2;
        let box_rows = ps.min(ATT_KC);
        let map = Kernels::tensor_map_bf16_3d(self.p(&self.kv), [row as u64, ps as u64, planes as u64], [64, box_rows as u32, 1])?;
        Ok(Some((self.k.upload(&map, "the KV pool's tensor map")?, box_rows)))
    }

    /// block_attention (+ attention_combine when the keys are split): see csrc/attention.cu.
    fn attention_kernels(&self, q: &CudaSlice<u16>, b: &AttnBuffers, rows: usize, layer: usize) -> Result<()> {
        let c = &self.cfg;
        let (nh, nkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let s = self.step.as_ref().unwrap();
        let (base, o) = (self.p(&s.pack), s.shape.offsets());
        let (_, smem, kernel) = att_kernel(d);
        let num_splits = s.shape.splits;
        let (smem, kernel, threads) = if self.att_deep(kernel, s.shape.tiles * nkv * num_splits) {
            (ATT_SMEM_DEEP, Kernel::BlockAttentionDeep, ATT_DEEP_THREADS)
        } else {
            (smem, kernel, ATT_THREADS)
        };
        let (out, part_acc, part_ml) = (&b.out, &b.part_acc, &b.part_ml);
        let p = AttnParams {
            q: self.p(q),
            out: self.p(out),
            tok_limit: s.at(base, o.tok_limit),
            tiles: s.at(base, o.tiles),
            part_acc: part_acc.as_ref().map_or(0, |b| self.p(b)),
            part_ml: part_ml.as_ref().map_or(0, |b| self.p(b)),
            kv: self.paged_kv(s, layer),
            tokens: rows as i32,
            nh: nh as i32,
            nkv: nkv as i32,
            d: d as i32,
            split_keys: s.at(base, o.split_keys),
            num_splits: num_splits as i32,
            scale: 1.0 / (d as f32).sqrt(),
            kv_map: match &self.kv_map {
                Some((map, _)) if kernel == Kernel::BlockAttentionDeep => self.p(map),
                _ => 0,
            },
            kv_box_rows: self.kv_map.as_ref().map_or(0, |m| m.1 as i32),
            combine_warps: combine_warps(num_splits, d) as i32,
        };
        let grid = (s.shape.tiles as u32, nkv as u32, num_splits as u32);
        // The deep kernel starts its CTAs (barriers, tile, page lookups) while
        // qk_norm_rope_store, which just ran on this stream, finishes; the combine its while the
        // deep kernel's last CTAs finish (programmatic dependents: each waits before reading).
        let deep = kernel == Kernel::BlockAttentionDeep;
        let launch = |kernel, grid, block, smem| {
            if deep {
                self.k.launch_dependent(kernel, grid, block, smem, &p)
            } else {
                self.k.launch_smem(kernel, grid, block, smem, &p)
            }
        };
        launch(kernel, grid, threads as u32, smem)?;
        if num_splits > 1 {
            let ctas = (rows * nh).div_ceil(ATT_COMBINE_WARPS / p.combine_warps as usize) as u32;
            launch(Kernel::AttentionCombine, (ctas, 1, 1), (ATT_COMBINE_WARPS * WARP) as u32, 0)?;
        }
        Ok(())
    }
}

/// The query tiles `[first token, tokens]*` ordered by the keys they walk, most first (stable):
/// the GPU starts CTAs in grid order, tiles fastest, so a prefill's long tiles (a causal prompt's
/// last blocks see 32 times the keys of its first) start in the first waves and its short ones
/// fill the last, instead of its longest ending the kernel alone (longest processing time
/// first). A tile's keys are its last token's limit (limits do not fall within a run).
fn longest_first(tiles: &[i32], tok_limit: &[i32]) -> Vec<i32> {
    let mut order: Vec<&[i32]> = tiles.chunks_exact(2).collect();
    order.sort_by_key(|t| std::cmp::Reverse(tok_limit[(t[0] + t[1] - 1) as usize]));
    order.concat()
}

/// attention_combine's warps an output row: about 8 splits a warp, so a row's loads are in flight
/// at once (a power of two up to ATT_COMBINE_WARPS; one where the head dim is not a multiple of
/// 4, which the kernel's column-a-lane path needs).
fn combine_warps(splits: usize, d: usize) -> usize {
    if !d.is_multiple_of(4) {
        return 1;
    }
    (splits / 8).max(1).next_power_of_two().min(ATT_COMBINE_WARPS)
}

/// Positions the rope table covers: the model's context, up to ROPE_TABLE_MAX_POSITIONS.
pub(super) fn rope_table_positions(c: &ModelConfig) -> usize {
    c.max_position_embeddings.min(ROPE_TABLE_MAX_POSITIONS)
}

/// The rope's (cos, sin) per position and rotated pair, `[positions][rot / 2][2]`, as the CPU
/// twin computes them (qk_norm_rope_store reads it instead of f64 math per CTA).
pub(super) fn rope_table(c: &ModelConfig) -> Vec<f32> {
    let (rot, positions) = (c.rotary_dim(), rope_table_positions(c));
    let mut t = Vec::with_capacity(positions * rot);
    for pos in 0..positions {
        for i in 0..rot / 2 {
            let (cos, sin) = crate::backend::cpu::rope_cos_sin(pos, i, rot, c.rope_theta);
            t.extend([cos, sin]);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_counts() {
        // H100/H200: 132 SMs, one CTA an SM; mini's 4 KV heads, one 128-row tile a 32-token block.
        let kc = att_kernel(128).0;
        let slots = 132 * ATT_CTAS_PER_SM;
        let chunks = 1056usize.div_ceil(kc);
        assert_eq!(att_splits(4, chunks, slots), 9); // batch 1: 36 CTAs of 2 chunks
        assert_eq!(att_splits(64, chunks, slots), 2); // batch 16: one wave of 128
        assert_eq!(att_splits(256, chunks, slots), 1); // batch 64: no combine
        assert_eq!(att_splits(4, 32800usize.div_ceil(kc), slots), 33); // batch 1, 32k keys: one full wave
        assert_eq!(att_splits(4, 1, slots), 1);
        assert_eq!(att_kernel(16).2, Kernel::BlockAttentionD64);
        assert_eq!(att_kernel(128).2, Kernel::BlockAttention);
        assert_eq!(att_kernel(144).2, Kernel::BlockAttentionD256);
    }

    #[test]
    fn tiles_go_longest_first() {
        // Two runs: tokens 0..4 (limits 2, 2, 4, 4) in tiles of 2, tokens 4..7 (limits 9, 9, 9).
        let tiles = [0, 2, 2, 2, 4, 2, 6, 1];
        let limits = [2, 2, 4, 4, 9, 9, 9];
        assert_eq!(longest_first(&tiles, &limits), vec![4, 2, 6, 1, 2, 2, 0, 2]);
    }

    #[test]
    fn combine_warps_follow_the_splits() {
        assert_eq!(combine_warps(2, 128), 1); // batch 16 at 1k
        assert_eq!(combine_warps(16, 128), 2); // batch 1 at 1k
        assert_eq!(combine_warps(33, 128), 4); // batch 1 at 32k
        assert_eq!(combine_warps(132, 128), ATT_COMBINE_WARPS);
        assert_eq!(combine_warps(33, 126), 1);
        assert!(ATT_COMBINE_WARPS.is_power_of_two());
    }

    #[test]
    fn split_rule_keeps_the_split_count_until_the_context_doubles() {
        let kc = att_kernel(128).0;
        // Batch 1 at 1056 keys: 16 splits of 128 keys (9 of them hold keys), as eager always ran.
        assert_eq!(split_rule(4, 1056, kc, 132, 2), (16, 128));
        // Every context from 1025 to 2048 keys: the same split count, keys a split following it.
        for keys in [1025, 1088, 1500, 2048] {
            let (splits, split_keys) = split_rule(4, keys, kc, 132, 2);
            assert_eq!(splits, 16, "{keys} keys");
            assert!(splits * split_keys >= keys && split_keys - kc < keys.div_ceil(splits), "{keys} keys");
            assert_eq!(split_keys % kc, 0);
        }
        assert_eq!(split_rule(256, 1056, kc, 132, 2).0, 1); // batch 64: no combine
    }

    #[test]
    fn long_splits_count_both_resident_ctas() {
        let kc = att_kernel(128).0;
        // Batch 8 at 32,768 keys (32 CTAs a split): 4 splits of 128+ chunks at one CTA an SM; with
        // two resident, 8 splits fill both slots of every SM in one wave.
        assert_eq!(split_rule(32, 32768, kc, 132, 1).0, 4);
        assert_eq!(split_rule(32, 32768, kc, 132, 2).0, 8);
        // Batch 16 at 8,192 keys: 2 -> 4.
        assert_eq!(split_rule(64, 8224, kc, 132, 2).0, 4);
        // Short splits keep counting an SM once: batch 1 at 32k (32 chunks a split), batch 16 at 1k.
        assert_eq!(split_rule(4, 32768, kc, 132, 2), split_rule(4, 32768, kc, 132, 1));
        assert_eq!(split_rule(64, 1056, kc, 132, 2).0, 2);
        assert_eq!(split_rule(1, 1, kc, 132, 2), (1, kc));
    }
}
