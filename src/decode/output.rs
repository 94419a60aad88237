//! Where a request's output ends: LLaDA2's `generate` cuts the generated tokens at
//! max_new_tokens and just after the first stop token.

/// Cut generated tokens at max_new, then just after the first stop token (kept).
pub fn cut_output(generated: &[u32], max_new: usize, stops: &[u32]) -> (Vec<u32>, Option<u32>) {
    cut_output_min(generated, max_new, stops, 0)
}

/// [`cut_output`], where stop tokens among the first `min_new` are ordinary tokens.
pub fn cut_output_min(generated: &[u32], max_new: usize, stops: &[u32], min_new: usize) -> (Vec<u32>, Option<u32>) {
    let g = &generated[..generated.len().min(max_new)];
    match g.iter().enumerate().skip(min_new).find(|(_, t)| stops.contains(t)) {
        Some((i, _)) => (g[..=i].to_vec(), Some(g[i])),
        None => (g.to_vec(), None),
    }
}

/// After a block: the output so far ([`cut_output_min`]), its stop token, and whether
/// generation ends here: max_new_tokens reached, or a stop token with no mask before it (a mask
/// before it could still become anything, so decoding goes on).
pub fn after_block(generated: &[u32], max_new: usize, stops: &[u32], min_new: usize, mask_id: u32) -> (Vec<u32>, Option<u32>, bool) {
    let (cut, matched) = cut_output_min(generated, max_new, stops, min_new);
    let stop_final = matched.is_some() && !generated[..cut.len()].contains(&mask_id);
    let done = stop_final || generated.len() >= max_new;
    (cut, matched, done)
}

/// The tokens that end a request: its own stop ids, plus the model's EOS unless replaced or ignored.
pub fn stop_ids(stop_token_ids: &[u32], eos: u32, replace_eos: bool, ignore_eos: bool) -> Vec<u32> {
    let mut s = stop_token_ids.to_vec();
    if !replace_eos && !ignore_eos {
        s.push(eos);
    }
    s
}
