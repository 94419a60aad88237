//! Fixed count: exactly `k` masked positions per step, the most confident. Benchmarks use it,
//! where random weights make thresholds meaningless and a step count must be predictable.

use super::{masked_positions, most_confident, Pick};

/// The `k` most confident masked positions (fewer when fewer are masked), ascending.
pub fn select(picks: &[Pick], masked: &[bool], k: usize) -> Vec<usize> {
    let cand = masked_positions(picks, masked);
    let k = k.min(cand.len());
    most_confident(picks, cand, k)
}

#[cfg(test)]
mod tests {
    use super::super::picks_with_probs as p;
    use super::*;
    #[test]
    fn takes_the_k_most_confident() {
        let picks = p(&[0.5, 0.9, 0.3, 0.99]);
        assert_eq!(select(&picks, &[true, true, true, true], 3), vec![0, 1, 3]);
    }
}
