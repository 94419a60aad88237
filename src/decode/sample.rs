//! The pick of one position from its logits row: the argmax (greedy), or a draw under
//! temperature, top-k, top-p and min-p; before either, [`apply_penalties`] shifts the row by
//! the request's logit bias and repetition / presence / frequency penalties. The CPU backend's
//! `lm_head_pick` and the engine's host-logits rows both come here; the CUDA backend's fused
//! pick is checked against [`pick_row`].

use super::Pick;
use crate::rng::Rng;
use std::collections::HashMap;

/// The sampling knobs of a request (a view of its `GenParams`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// > 0 (0 means greedy: use [`pick_row`]).
    pub temperature: f32,
    /// In (0, 1]; 1 keeps every token.
    pub top_p: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    /// In [0, 1]: tokens less likely than `min_p` times the most likely one (after temperature)
    /// are dropped; 0 keeps every token.
    pub min_p: f32,
}

/// One output row's draw, as a backend samples it on the device: its request's knobs and the
/// uniform the host drew for it from the request's generator (the draw `sample_row` makes),
/// so the device and the host pick alike. `None`: the row is greedy ([`pick_row`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowDraw {
    pub sampling: Option<Sampling>,
    pub u: f64,
    /// Nobody reads this row's pick (a position its step cannot write): it is not made, and
    /// the row's pick is [`SKIPPED`]. The uniform is still drawn, so the generator's order,
    /// and every other row's draw, are those of a step that picks every row.
    pub skip: bool,
}

/// The pick of a skipped row ([`RowDraw::skip`]): no token id (csrc/params.h's SAMPLE_SKIPPED,
/// which backend::cuda::sampler asserts equal).
pub const SKIPPED: Pick = Pick { token: u32::MAX, prob: 0.0 };

impl RowDraw {
    pub const GREEDY: RowDraw = RowDraw { sampling: None, u: 0.0, skip: false };

    /// The row's pick from its logits on the host (the CPU backend; the twin of the kernel).
    pub fn pick(&self, logits: &[f32]) -> Pick {
        if self.skip {
            return SKIPPED;
        }
        match &self.sampling {
            Some(s) => sample_row_u(logits, s, self.u),
            None => pick_row(logits),
        }
    }
}

/// What shifts a request's logits before the pick (a view of its `GenParams`). Neutral values
/// (no bias, penalties 1, 0, 0) leave the row untouched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties<'a> {
    /// Added to the token's logit.
    pub logit_bias: &'a [(u32, f32)],
    /// Above 0 (1 is off). A token already in the sequence (prompt or unmasked output) has its
    /// logit divided by it when positive, multiplied when negative (Hugging Face's rule).
    pub repetition: f32,
    /// Subtracted once from the logit of every token the output already holds.
    pub presence: f32,
    /// Subtracted from a token's logit once per time the output already holds it.
    pub frequency: f32,
}

impl Penalties<'_> {
    pub fn is_neutral(&self) -> bool {
        self.logit_bias.is_empty() && !self.reads_history()
    }

    /// Whether any penalty needs the sequence's [`History`] (a bias alone does not).
    pub fn reads_history(&self) -> bool {
        self.repetition != 1.0 || self.presence != 0.0 || self.frequency != 0.0
    }
}

/// What the penalties read of a sequence at one step, counted once for all its rows: every
/// distinct token of the prompt and the output, and how often each occurs in the output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Distinct tokens of prompt + output (repetition penalty).
    seen: Vec<u32>,
    /// Output token -> occurrences (presence and frequency penalties).
    counts: Vec<(u32, u32)>,
}

impl History {
    /// `output` holds the tokens decoded so far; `mask` marks positions not decoded yet.
    pub fn new(prompt: &[u32], output: &[u32], mask: u32) -> History {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in output.iter().filter(|&&t| t != mask) {
            *counts.entry(t).or_default() += 1;
        }
        let mut seen: Vec<u32> = prompt.iter().copied().chain(counts.keys().copied()).collect();
        seen.sort_unstable();
        seen.dedup();
        let mut counts: Vec<(u32, u32)> = counts.into_iter().collect();
        counts.sort_unstable();
        History { seen, counts }
    }
}

/// Shift one logits row: repetition penalty over `h.seen`, then presence and frequency over
/// `h.counts`, then the bias (SGLang's order). O(distinct tokens), not O(vocab).
pub fn apply_penalties(logits: &mut [f32], p: &Penalties, h: &History) {
    if p.repetition != 1.0 {
        for &t in &h.seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 { *l / p.repetition } else { *l * p.repetition };
            }
        }
    }
    if p.presence != 0.0 || p.frequency != 0.0 {
        for &(t, n) in &h.counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= p.presence + p.frequency * n as f32;
            }
        }
    }
    for &(t, b) in p.logit_bias {
        if let Some(l) = logits.get_mut(t as usize) {
            *l += b;
        }
    }
}

/// Argmax of a logits row and its softmax probability (ties: lowest id).
pub fn pick_row(logits: &[f32]) -> Pick {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    let m = logits[best];
    let z: f32 = logits.iter().map(|&l| (l - m).exp()).sum();
    Pick { token: best as u32, prob: 1.0 / z }
}

/// One vocabulary slice's share of a greedy pick (tensor parallel: each rank scores its slice of
/// the vocabulary and the ranks combine these few floats instead of gathering the logits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartialPick {
    /// The slice's largest logit and its token id (in the whole vocabulary).
    pub max: f32,
    pub token: u32,
    /// Sum over the slice of exp(logit - max).
    pub sum_exp: f32,
}

impl PartialPick {
    /// The three floats a rank shares, `[max, token, sum_exp]` (the token id as f32, exact below
    /// 2^24): the layout lm_head.cu's `share` output writes too.
    pub fn to_share(self) -> [f32; 3] {
        [self.max, self.token as f32, self.sum_exp]
    }

    pub fn from_share(s: &[f32]) -> Self {
        PartialPick { max: s[0], token: s[1] as u32, sum_exp: s[2] }
    }
}

/// The picks of `rows` rows from every slice's shares, each `[rows]` of [`PartialPick::to_share`],
/// in vocabulary order.
pub fn combine_pick_shares(shares: &[Vec<f32>], rows: usize) -> Vec<Pick> {
    (0..rows).map(|r| combine_picks(&shares.iter().map(|s| PartialPick::from_share(&s[3 * r..3 * r + 3])).collect::<Vec<_>>())).collect()
}

/// [`pick_row`]'s share of a slice whose first token id is `first`.
pub fn partial_pick(logits: &[f32], first: u32) -> PartialPick {
    let p = pick_row(logits);
    PartialPick { max: logits[p.token as usize], token: first + p.token, sum_exp: 1.0 / p.prob }
}

/// The pick over the whole vocabulary from its slices' shares, in vocabulary order: the first
/// largest logit wins, as in [`pick_row`].
pub fn combine_picks(parts: &[PartialPick]) -> Pick {
    let best = parts.iter().fold(parts[0], |b, p| if p.max > b.max { *p } else { b });
    let z: f32 = parts.iter().map(|p| p.sum_exp * (p.max - best.max).exp()).sum();
    Pick { token: best.token, prob: 1.0 / z }
}

/// Temperature, top-k, top-p and min-p, then a draw: [`sample_row_u`] with `u` from `rng`.
pub fn sample_row(logits: &[f32], p: &Sampling, rng: &mut Rng) -> Pick {
    sample_row_u(logits, p, rng.uniform())
}

/// The whole sampling rule given its uniform draw `u` in (0, 1); the CUDA sampler
/// (csrc/sampler.cu) follows it, so that the two can be compared draw for draw.
///
/// The kept set is a prefix of the tokens in logit order (larger first, ties: lower id first):
/// top-k keeps the first `top_k`; the nucleus is the shortest prefix of those whose mass reaches
/// `top_p` of theirs; min-p drops tokens whose weight (relative to the best, after temperature)
/// is below `min_p`. The draw is the inverse CDF over the kept tokens in token-id order (the
/// order a GPU can take with one pass of prefix sums, where logit order would need a sort);
/// the confidence is the drawn token's probability under the kept, renormalised distribution.
/// O(vocab) unless top-p needs the kept tokens in order (a full sort of a 157k vocabulary per
/// position would cost milliseconds per step).
pub fn sample_row_u(logits: &[f32], p: &Sampling, u: f64) -> Pick {
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if p.top_k > 0 && p.top_k < idx.len() {
        idx.select_nth_unstable_by(p.top_k - 1, by_logit);
        idx.truncate(p.top_k);
    }
    let inv_t = 1.0 / p.temperature;
    let m = idx.iter().map(|&i| logits[i]).fold(f32::NEG_INFINITY, f32::max);
    // One exp per candidate, indexed by token id.
    let mut w = vec![0f32; logits.len()];
    let mut z = 0f64;
    for &i in &idx {
        w[i] = ((logits[i] - m) * inv_t).exp();
        z += w[i] as f64;
    }
    if p.top_p < 1.0 {
        // The nucleus is a prefix of the tokens in logit order. Sort only the best few
        // (select first); a flat distribution whose nucleus is wider falls back to a full sort.
        let need = p.top_p as f64 * z;
        let mut head = 1024.min(idx.len());
        loop {
            if head < idx.len() {
                idx.select_nth_unstable_by(head - 1, by_logit);
            }
            idx[..head].sort_by(by_logit);
            let mut acc = 0.0;
            if let Some(k) = idx[..head].iter().position(|&i| {
                acc += w[i] as f64;
                acc >= need
            }) {
                idx.truncate(k + 1);
                break;
            }
            if head == idx.len() {
                break;
            }
            head = idx.len();
        }
    }
    if p.min_p > 0.0 {
        // The most likely candidate has weight exp(0) = 1, so the bar is min_p itself (a bar
        // above 1 would drop everything: it is capped there). Measured, as the nucleus is,
        // before either filter renormalizes.
        let bar = p.min_p.min(1.0);
        idx.retain(|&i| w[i] >= bar);
    }
    idx.sort_unstable();
    let z: f64 = idx.iter().map(|&i| w[i] as f64).sum();
    let target = u * z;
    let pick = |i: usize| Pick { token: i as u32, prob: (w[i] as f64 / z) as f32 };
    // A weight that underflowed to 0 is never drawn, not even when rounding leaves the target
    // past the last sum: that takes the last token of positive weight.
    let (mut acc, mut last) = (0.0, None);
    for &i in idx.iter().filter(|&&i| w[i] > 0.0) {
        acc += w[i] as f64;
        if target < acc {
            return pick(i);
        }
        last = Some(i);
    }
    // The most likely token weighs exp(0) = 1 and is always kept; only a row without a finite
    // logit has no positive weight (its first kept token, as the GPU sampler's argmax).
    match last.or(idx.first().copied()) {
        Some(i) => pick(i),
        None => Pick { token: 0, prob: 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> Sampling {
        Sampling { temperature, top_k, top_p, min_p: 0.0 }
    }

    #[test]
    fn sampling_follows_the_softmax() {
        let logits = [1.0f32, 0.0, 2.0, -1.0];
        let p = params(1.0, 0, 1.0);
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let mut rng = Rng::new(3);
        let mut counts = [0usize; 4];
        let n = 40_000;
        for _ in 0..n {
            let pick = sample_row(&logits, &p, &mut rng);
            counts[pick.token as usize] += 1;
            let want = (logits[pick.token as usize] as f64).exp() / z;
            assert!((pick.prob as f64 - want).abs() < 1e-6);
        }
        for (t, &c) in counts.iter().enumerate() {
            let want = (logits[t] as f64).exp() / z;
            assert!((c as f64 / n as f64 - want).abs() < 0.01, "token {t}: {} vs {want}", c as f64 / n as f64);
        }
    }

    #[test]
    fn top_k_and_top_p_filter() {
        let logits = [0.5f32, 3.0, 2.9, -2.0, 1.0];
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            let k1 = sample_row(&logits, &params(0.7, 1, 1.0), &mut rng);
            assert_eq!((k1.token, k1.prob), (1, 1.0));
            let k2 = sample_row(&logits, &params(1.0, 2, 1.0), &mut rng);
            assert!(k2.token == 1 || k2.token == 2);
            // Token 1 alone holds 0.47 of the mass: top_p 0.3 keeps only it.
            let p = sample_row(&logits, &params(1.0, 0, 0.3), &mut rng);
            assert_eq!((p.token, p.prob), (1, 1.0));
        }
    }

    #[test]
    fn min_p_drops_tokens_below_its_share_of_the_best() {
        // Softmax at temperature 1: token 1 is the best; token 0 has e^-1 = 0.37 of its
        // probability, token 2 e^-3 = 0.05. min_p 0.2 keeps 0 and 1 only.
        let logits = [2.0f32, 3.0, 0.0];
        let p = Sampling { min_p: 0.2, ..params(1.0, 0, 1.0) };
        let z = 1.0 + (-1.0f64).exp();
        let mut rng = Rng::new(7);
        let mut seen = [0usize; 3];
        for _ in 0..2000 {
            let pick = sample_row(&logits, &p, &mut rng);
            seen[pick.token as usize] += 1;
            let want = if pick.token == 1 { 1.0 / z } else { (-1.0f64).exp() / z };
            assert!((pick.prob as f64 - want).abs() < 1e-6, "{pick:?}");
        }
        assert!(seen[0] > 0 && seen[1] > 0 && seen[2] == 0, "{seen:?}");
        // At a lower temperature token 0 falls below the bar too (e^-2 = 0.14 < 0.2).
        let cold = Sampling { temperature: 0.5, ..p };
        assert_eq!(sample_row(&logits, &cold, &mut rng), Pick { token: 1, prob: 1.0 });
    }

    /// The filtered distribution by the book: sort every token (logit order, ties: lower id),
    /// keep the shortest of the three prefixes, renormalise. Indexed by token id.
    fn reference_probs(logits: &[f32], p: &Sampling) -> Vec<f64> {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b)));
        let m = logits[order[0]];
        let w: Vec<f64> = logits.iter().map(|&l| ((l - m) * (1.0 / p.temperature)).exp() as f64).collect();
        let mut keep = if p.top_k > 0 { p.top_k.min(order.len()) } else { order.len() };
        let z_k: f64 = order[..keep].iter().map(|&i| w[i]).sum();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            keep = order[..keep]
                .iter()
                .position(|&i| {
                    acc += w[i];
                    acc >= p.top_p as f64 * z_k
                })
                .map_or(keep, |n| n + 1);
        }
        keep = keep.min(order.iter().take_while(|&&i| w[i] >= p.min_p as f64).count());
        let z: f64 = order[..keep].iter().map(|&i| w[i]).sum();
        let mut probs = vec![0.0; logits.len()];
        for &i in &order[..keep] {
            probs[i] = w[i] / z;
        }
        probs
    }

    #[test]
    fn the_draw_is_the_inverse_cdf_of_the_filtered_distribution_in_token_order() {
        let mut rng = Rng::new(11);
        let mut rows: Vec<Vec<f32>> = vec![
            // Ties at the top-k bar and inside the nucleus: the lower ids go first.
            vec![0.0, 2.0, 1.0, 2.0, -1.0, 2.0, 1.0],
            vec![3.0; 9],
        ];
        for (n, spread) in [(50, 4.0), (300, 0.5), (64, 12.0)] {
            // Coarse values, so that ties happen.
            rows.push((0..n).map(|_| (rng.normal() * spread * 4.0).round() as f32 / 4.0).collect());
        }
        let combos = [
            (1.0, 0, 1.0, 0.0),
            (0.7, 2, 1.0, 0.0),
            (1.0, 1, 1.0, 0.0),
            (1.3, 0, 0.5, 0.0),
            (1.0, 0, 0.01, 0.0),
            (1.0, 5, 0.8, 0.0),
            (0.5, 0, 1.0, 0.05),
            (2.0, 20, 0.9, 0.1),
            (1.0, 0, 0.95, 0.5),
        ];
        const GRID: usize = 20_000;
        for (r, row) in rows.iter().enumerate() {
            for &(temperature, top_k, top_p, min_p) in &combos {
                let p = Sampling { temperature, top_k, top_p, min_p };
                let want = reference_probs(row, &p);
                let mut hits = vec![0usize; row.len()];
                let mut last = 0;
                for g in 0..GRID {
                    let pick = sample_row_u(row, &p, (g as f64 + 0.5) / GRID as f64);
                    let t = pick.token as usize;
                    assert!(want[t] > 0.0, "row {r} {p:?}: token {t} is not in the kept set");
                    assert!((pick.prob as f64 - want[t]).abs() <= 1e-6 * want[t].max(1e-3), "row {r} {p:?}: {pick:?} vs {}", want[t]);
                    assert!(t >= last, "row {r} {p:?}: the draw must walk the kept tokens in id order");
                    last = t;
                    hits[t] += 1;
                }
                for (t, &h) in hits.iter().enumerate() {
                    let got = h as f64 / GRID as f64;
                    assert!((got - want[t]).abs() <= 1.5 / GRID as f64, "row {r} {p:?} token {t}: mass {got} vs {}", want[t]);
                }
            }
        }
    }

    #[test]
    fn penalties_follow_hugging_face_and_openai() {
        let none = Penalties { logit_bias: &[], repetition: 1.0, presence: 0.0, frequency: 0.0 };
        assert!(none.is_neutral());
        // Prompt [1], output [2, 2, mask]: 1 and 2 are in the sequence, 2 is in the output twice.
        let h = History::new(&[1], &[2, 2, 9], 9);
        let row = || vec![1.0f32, 2.0, -2.0, 4.0, 0.5];
        let mut l = row();
        apply_penalties(&mut l, &none, &h);
        assert_eq!(l, row());
        let mut l = row();
        apply_penalties(&mut l, &Penalties { repetition: 2.0, ..none }, &h);
        assert_eq!(l, vec![1.0, 1.0, -4.0, 4.0, 0.5], "positive divided, negative multiplied, unseen untouched");
        let mut l = row();
        apply_penalties(&mut l, &Penalties { presence: 0.5, frequency: 0.25, ..none }, &h);
        assert_eq!(l, vec![1.0, 2.0, -2.0 - 0.5 - 0.5, 4.0, 0.5], "prompt tokens are not output");
        let bias = [(4u32, 10.0f32), (0, -1.0), (99, 5.0)];
        let mut l = row();
        apply_penalties(&mut l, &Penalties { logit_bias: &bias, ..none }, &h);
        assert_eq!(l, vec![0.0, 2.0, -2.0, 4.0, 10.5], "ids outside the row are skipped");
        assert_eq!(pick_row(&l).token, 4);
    }

    #[test]
    fn combined_slice_picks_equal_the_whole_row_pick() {
        let mut rng = Rng::new(7);
        for n in [1, 2, 3, 4] {
            let row: Vec<f32> = (0..515).map(|_| (rng.next_u64() % 2000) as f32 / 100.0 - 10.0).collect();
            let w = row.len().div_ceil(n);
            let parts: Vec<PartialPick> = row.chunks(w).enumerate().map(|(r, c)| partial_pick(c, (r * w) as u32)).collect();
            let (whole, combined) = (pick_row(&row), combine_picks(&parts));
            assert_eq!(whole.token, combined.token);
            assert!((whole.prob - combined.prob).abs() <= 1e-6 * whole.prob, "{whole:?} {combined:?}");
        }
        // Ties go to the first slice, as the whole row's argmax takes the first index.
        let tie = combine_picks(&[partial_pick(&[1.0, 3.0], 0), partial_pick(&[3.0, 0.0], 2)]);
        assert_eq!(tie.token, 1);
    }
}
