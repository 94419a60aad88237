//! LowConfidence (LLaDA2.0's official `generate`, SGLang's `LowConfidence` algorithm).

use super::{masked_positions, most_confident, Pick};

/// The threshold LLaDA2.0's `generate` and SGLang's LowConfidence use when none is given.
pub const DEFAULT_THRESHOLD: f32 = 0.95;

/// Every masked position with p > threshold when at least `quota` of them pass; otherwise the
/// `quota` most confident (ties: lower position). `quota` is capped at the number of masked
/// positions. Returns positions (indices into `picks`) in ascending order.
pub fn select(picks: &[Pick], masked: &[bool], quota: usize, threshold: f32) -> Vec<usize> {
    let cand = masked_positions(picks, masked);
    let quota = quota.min(cand.len());
    let high: Vec<usize> = cand.iter().copied().filter(|&i| picks[i].prob > threshold).collect();
    if high.len() >= quota {
        return high;
    }
    most_confident(picks, cand, quota)
}

#[cfg(test)]
mod tests {
    use super::super::picks_with_probs as p;
    use super::*;
    #[test]
    fn threshold_branch_takes_all_above() {
        let picks = p(&[0.99, 0.2, 0.97, 0.96]);
        assert_eq!(select(&picks, &[true, true, true, false], 1, 0.95), vec![0, 2]);
    }
    #[test]
    fn quota_branch_takes_most_confident_masked() {
        let picks = p(&[0.5, 0.9, 0.3, 0.99]);
        assert_eq!(select(&picks, &[true, true, true, false], 2, 0.95), vec![0, 1]);
        // quota larger than the masked count is capped
        assert_eq!(select(&picks, &[false, false, true, false], 4, 0.95), vec![2]);
    }
}
