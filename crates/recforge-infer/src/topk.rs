//! Exact top-K selection over a score row, with exclusions.
//!
//! Ties go to the lower item id, so rankings never depend on thread timing.

/// The `k` best columns of `scores` (column j = item j + `id_base`) that are
/// not in `exclude` (sorted item ids), best first.
pub fn top_k(scores: &[f32], id_base: u32, k: usize, exclude: &[u32], out: &mut Vec<u32>) {
    out.clear();
    if k == 0 {
        return;
    }
    let better = |a: u32, b: u32| {
        let (sa, sb) = (scores[a as usize], scores[b as usize]);
        sb.total_cmp(&sa).then(a.cmp(&b))
    };
    let mut cand: Vec<u32> = (0..scores.len() as u32)
        .filter(|&j| !scores[j as usize].is_nan() && exclude.binary_search(&(j + id_base)).is_err())
        .collect();
    if cand.len() > k {
        cand.select_nth_unstable_by(k - 1, |&a, &b| better(a, b));
        cand.truncate(k);
    }
    cand.sort_unstable_by(|&a, &b| better(a, b));
    out.extend(cand.into_iter().map(|j| j + id_base));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_best_excludes_and_breaks_ties_by_id() {
        let s = [0.5, 0.9, 0.9, 0.1, f32::NAN, 0.7];
        let mut out = Vec::new();
        top_k(&s, 1, 3, &[], &mut out);
        assert_eq!(out, vec![2, 3, 6]);
        top_k(&s, 1, 3, &[3, 6], &mut out);
        assert_eq!(out, vec![2, 1, 4]);
        top_k(&s, 1, 10, &[], &mut out);
        assert_eq!(out, vec![2, 3, 6, 1, 4]);
    }
}
