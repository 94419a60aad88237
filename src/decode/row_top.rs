//! A logits row in a few numbers, for the decoder that reads more of a row than its argmax
//! (JointThresholdInDel): its [`ROW_TOP_K`] best entries, its largest logit and its sum of
//! exp, computed where the logits are (csrc/row_top_k.cu on the GPU, [`row_top`] for the CPU
//! backend), so a step copies `2K + 2` numbers a row instead of the row (157,184 floats on
//! LLaDA2's vocabulary). `joint_threshold_indel::TopRows` answers a step's questions from it
//! exactly as the whole row would.

/// Entries a summary keeps: csrc/params.h's `ROW_TOP_K` (build.rs reads it from there).
pub const ROW_TOP_K: usize = include!(concat!(env!("OUT_DIR"), "/row_top_k.rs"));

/// Floats a summary takes on the wire (params.h's `ROW_TOP_SUMMARY`): `[m, z, K logits, K ids]`.
pub const ROW_TOP_SUMMARY: usize = 2 * ROW_TOP_K + 2;

/// One logits row's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct RowTop {
    /// The row's largest logit m (NaNs aside).
    pub max: f32,
    /// The sum over the row of exp(l - m): NaN where the row holds a NaN or an infinite m.
    pub sum_exp: f32,
    /// The row's best min(ROW_TOP_K, vocab) entries (token id, logit): logit descending, then
    /// token id ascending, so the first of equal maxima comes first as an argmax keeps it.
    /// NaN logits are never among them.
    pub top: Vec<(u32, f32)>,
}

impl RowTop {
    /// Whether the summary speaks for the row: a NaN or an infinity in it makes its z NaN, and
    /// such a row is read whole so every answer stays the whole row's.
    pub fn usable(&self) -> bool {
        self.sum_exp.is_finite() && !self.top.is_empty()
    }

    /// Whether `top` is the whole row (a vocabulary, or the union of slices, under ROW_TOP_K).
    pub fn complete(&self) -> bool {
        self.top.len() < ROW_TOP_K
    }

    /// The row's softmax probability of `t` when `t` is among the entries: exp(l_t - m) / z.
    pub fn prob_of(&self, t: u32) -> Option<f32> {
        self.top.iter().find(|e| e.0 == t).map(|&(_, l)| (l - self.max).exp() / self.sum_exp)
    }

    /// The summary on the wire, as row_top_k.cu writes it: ids as floats (exact below 2^24),
    /// slots past the entries with id -1 and logit -inf.
    pub fn to_wire(&self) -> [f32; ROW_TOP_SUMMARY] {
        let mut w = [0f32; ROW_TOP_SUMMARY];
        w[0] = self.max;
        w[1] = self.sum_exp;
        for k in 0..ROW_TOP_K {
            let (id, l) = self.top.get(k).map_or((-1.0, f32::NEG_INFINITY), |&(id, l)| (id as f32, l));
            w[2 + k] = l;
            w[2 + ROW_TOP_K + k] = id;
        }
        w
    }

    /// [`RowTop::to_wire`]'s inverse over one row's `ROW_TOP_SUMMARY` floats (a shorter slice
    /// reads as a summary that is never usable).
    pub fn from_wire(w: &[f32]) -> RowTop {
        if w.len() < ROW_TOP_SUMMARY {
            return RowTop { max: f32::NAN, sum_exp: f32::NAN, top: vec![] };
        }
        let top = (0..ROW_TOP_K)
            .map(|k| (w[2 + ROW_TOP_K + k], w[2 + k]))
            .take_while(|&(id, _)| id >= 0.0)
            .map(|(id, l)| (id as u32, l))
            .collect();
        RowTop { max: w[0], sum_exp: w[1], top }
    }
}

/// The summary of `row`, whose first token id is `first` (a tensor-parallel rank's slice starts
/// past 0). m and z are folded and summed in the order the decoder's whole-row `prob_of` uses,
/// so a probability read from the summary has the same bits as one read from the row.
pub fn row_top(row: &[f32], first: u32) -> RowTop {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f32 = row.iter().map(|&l| (l - max).exp()).sum();
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(ROW_TOP_K + 1);
    for (i, &l) in row.iter().enumerate() {
        // In id order an entry ranks below every kept one of an equal logit (no NaN is kept).
        if l.is_nan() || (top.len() == ROW_TOP_K && l <= top[ROW_TOP_K - 1].1) {
            continue;
        }
        let at = top.partition_point(|&(_, t)| t >= l);
        top.insert(at, (first + i as u32, l));
        top.truncate(ROW_TOP_K);
    }
    RowTop { max, sum_exp, top }
}

/// The summary of a row from its vocabulary slices' summaries (tensor parallel): the best
/// ROW_TOP_K of their entries, m the largest m, z = sum of z_r exp(m_r - m). The entries and m
/// are the whole row's; z is the whole row's up to f32 rounding.
pub fn merge_tops(parts: &[RowTop]) -> RowTop {
    let max = parts.iter().map(|p| p.max).fold(f32::NEG_INFINITY, f32::max);
    let sum_exp = parts.iter().map(|p| p.sum_exp * (p.max - max).exp()).sum();
    let mut top: Vec<(u32, f32)> = parts.iter().flat_map(|p| p.top.iter().copied()).collect();
    // No NaN among the entries; -0.0 and 0.0 tie, as they do in a row's scan.
    top.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal).then(a.0.cmp(&b.0)));
    top.truncate(ROW_TOP_K);
    RowTop { max, sum_exp, top }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The best entries by sorting the whole row (the rule row_top keeps while scanning).
    fn sorted_top(row: &[f32]) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = row.iter().enumerate().filter(|e| !e.1.is_nan()).map(|(i, &l)| (i as u32, l)).collect();
        all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        all.truncate(ROW_TOP_K);
        all
    }

    fn rows() -> Vec<Vec<f32>> {
        let mut rng = crate::rng::Rng::new(7);
        let mut out = vec![];
        for v in [1, 5, ROW_TOP_K, ROW_TOP_K + 1, 1000, 4099] {
            out.push((0..v).map(|_| rng.normal() as f32).collect::<Vec<f32>>());
            // Few distinct values: ties everywhere; -inf and -0.0 / 0.0 among them.
            out.push((0..v).map(|_| [1.0, 0.0, -0.0, f32::NEG_INFINITY, 2.5][(rng.next_u64() % 5) as usize]).collect());
            out.push(vec![f32::NEG_INFINITY; v]);
        }
        out
    }

    #[test]
    fn row_top_keeps_the_best_entries_with_the_argmax_tie_rule() {
        for row in rows() {
            let t = row_top(&row, 0);
            assert_eq!(t.top, sorted_top(&row), "{row:?}");
            assert_eq!(t.top.len(), row.len().min(ROW_TOP_K));
            let first_max = row.iter().enumerate().fold(0, |b, (i, &l)| if l > row[b] { i } else { b });
            assert_eq!(t.top[0].0 as usize, first_max);
            let back = RowTop::from_wire(&t.to_wire());
            assert_eq!((back.top, back.max.to_bits(), back.sum_exp.to_bits()), (t.top.clone(), t.max.to_bits(), t.sum_exp.to_bits()));
            // With a NaN in it the row is read whole.
            let mut nan = row.clone();
            nan[row.len() / 2] = f32::NAN;
            assert!(!row_top(&nan, 0).usable());
        }
    }

    #[test]
    fn merged_slices_give_the_whole_rows_entries() {
        for row in rows().into_iter().filter(|r| r.len() > 3 && r.iter().any(|l| l.is_finite())) {
            let whole = row_top(&row, 0);
            for ranks in [2, 3] {
                let w = row.len().div_ceil(ranks);
                let parts: Vec<RowTop> = row.chunks(w).enumerate().map(|(r, s)| row_top(s, (r * w) as u32)).collect();
                let m = merge_tops(&parts);
                assert_eq!(m.top, whole.top);
                assert_eq!(m.max, whole.max);
                if m.usable() {
                    assert!((m.sum_exp - whole.sum_exp).abs() <= 1e-5 * whole.sum_exp, "{} vs {}", m.sum_exp, whole.sum_exp);
                }
            }
        }
    }
}
