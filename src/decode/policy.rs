//! Unmasking policies: given each masked position's pick and confidence, which become final.
//! One function per policy.

use crate::backend::Pick;

/// LowConfidence: every masked position with p > threshold when at least `quota` of them
/// pass; otherwise the `quota` most confident (ties: lower position). `quota` is capped at
/// the number of masked positions. Returns positions (indices into `picks`) in ascending order.
pub fn low_confidence(picks: &[Pick], masked: &[bool], quota: usize, threshold: f32) -> Vec<usize> {
    let cand: Vec<usize> = (0..picks.len()).filter(|&i| masked[i]).collect();
    let quota = quota.min(cand.len());
    let high: Vec<usize> = cand.iter().copied().filter(|&i| picks[i].prob > threshold).collect();
    if high.len() >= quota {
        return high;
    }
    top_confident(picks, cand, quota)
}

/// Fixed count: exactly `k` masked positions per step, the most confident (benchmarks, where
/// random weights make thresholds meaningless).
pub fn fixed_count(picks: &[Pick], masked: &[bool], k: usize) -> Vec<usize> {
    let cand: Vec<usize> = (0..picks.len()).filter(|&i| masked[i]).collect();
    let k = k.min(cand.len());
    top_confident(picks, cand, k)
}

fn top_confident(picks: &[Pick], mut cand: Vec<usize>, k: usize) -> Vec<usize> {
    cand.sort_by(|&a, &b| picks[b].prob.total_cmp(&picks[a].prob).then(a.cmp(&b)));
    cand.truncate(k);
    cand.sort_unstable();
    cand
}

#[cfg(test)]
mod tests {
    use super::*;
    fn p(v: &[f32]) -> Vec<Pick> {
        v.iter().enumerate().map(|(i, &prob)| Pick { token: i as u32, prob }).collect()
    }
    #[test]
    fn threshold_branch_takes_all_above() {
        let picks = p(&[0.99, 0.2, 0.97, 0.96]);
        assert_eq!(low_confidence(&picks, &[true, true, true, false], 1, 0.95), vec![0, 2]);
    }
    #[test]
    fn quota_branch_takes_most_confident_masked() {
        let picks = p(&[0.5, 0.9, 0.3, 0.99]);
        assert_eq!(low_confidence(&picks, &[true, true, true, false], 2, 0.95), vec![0, 1]);
        // quota larger than the masked count is capped
        assert_eq!(low_confidence(&picks, &[false, false, true, false], 4, 0.95), vec![2]);
        assert_eq!(fixed_count(&picks, &[true, true, true, true], 3), vec![0, 1, 3]);
    }
}
