//! LowConfidence (LLaDA2.0's official `generate`, SGLang's `LowConfidence` algorithm).

use super::{masked_positions, most_confident, Pick, Setting};

/// Its name in SGLang's `--dllm-algorithm`.
pub const NAME: &str = "LowConfidence";

/// The threshold LLaDA2.0's `generate` and SGLang's LowConfidence use when none is given.
pub const DEFAULT_THRESHOLD: f32 = 0.95;

/// A threshold must be a probability; the server's flags and every request are held to this.
pub fn check_threshold(t: f32) -> Result<(), String> {
    if (0.0..=1.0).contains(&t) {
        Ok(())
    } else {
        Err(format!("threshold must be in [0, 1], got {t}"))
    }
}

/// The settings SGLang's LowConfidence reads from `--dllm-algorithm-config`: `threshold`.
/// Returns the threshold (the default when absent) and the keys it does not know.
pub fn from_settings(settings: &[(String, Setting)]) -> Result<(f32, Vec<String>), String> {
    let mut threshold = DEFAULT_THRESHOLD;
    let mut unknown = vec![];
    for (key, value) in settings {
        match (key.as_str(), value) {
            ("threshold", Setting::Number(t)) => threshold = *t as f32,
            ("threshold", Setting::Other(v)) => return Err(format!("threshold must be a number, got {v}")),
            _ => unknown.push(key.clone()),
        }
    }
    Ok((threshold, unknown))
}

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
    #[test]
    fn settings_keys() {
        let num = |k: &str, v| (k.to_string(), Setting::Number(v));
        assert_eq!(from_settings(&[]), Ok((DEFAULT_THRESHOLD, vec![])));
        assert_eq!(from_settings(&[num("threshold", 0.5), num("steps", 3.0)]), Ok((0.5, vec!["steps".to_string()])));
        let bad = from_settings(&[("threshold".into(), Setting::Other("\"high\"".into()))]).unwrap_err();
        assert!(bad.contains("threshold must be a number"), "{bad}");
    }
}
