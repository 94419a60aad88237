//! The pick of one position from its logits row: the argmax (greedy), or a draw under
//! temperature, top-k and top-p. The CPU backend's `lm_head_pick` and the engine's sampled rows
//! both come here; the CUDA backend's fused pick is checked against [`pick_row`].

use super::Pick;
use crate::rng::Rng;

/// The sampling knobs of a request (a view of its `GenParams`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// > 0 (0 means greedy: use [`pick_row`]).
    pub temperature: f32,
    /// In (0, 1]; 1 keeps every token.
    pub top_p: f32,
    /// 0 keeps every token.
    pub top_k: usize,
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

/// Temperature, top-k and top-p, then a draw; the confidence is the drawn token's probability
/// under the filtered distribution. O(vocab) unless top-p needs the kept tokens in order
/// (a full sort of a 157k vocabulary per position would cost milliseconds per step).
pub fn sample_row(logits: &[f32], p: &Sampling, rng: &mut Rng) -> Pick {
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
        z = idx.iter().map(|&i| w[i] as f64).sum();
    }
    let probs: Vec<f64> = idx.iter().map(|&i| w[i] as f64 / z).collect();
    let u = rng.uniform();
    let mut acc = 0.0;
    for (k, &pr) in probs.iter().enumerate() {
        acc += pr;
        if u < acc || k + 1 == probs.len() {
            return Pick { token: idx[k] as u32, prob: pr as f32 };
        }
    }
    unreachable!("probabilities are non-empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> Sampling {
        Sampling { temperature, top_k, top_p }
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
}
