//! Tree-ensemble evaluation by QuickScorer (Lucchese et al., SIGIR 2015):
//! instead of walking each tree from the root (one unpredictable branch per
//! level, per tree), every split of every tree is listed per feature in
//! threshold order, and a row's value of that feature eliminates, tree by
//! tree, the leaves the splits it fails cannot reach (a bitmask AND). A
//! tree's exit leaf is then the leftmost leaf left, in left-to-right order.
//! The work is a sequential scan with one hard-to-predict branch per
//! feature, which is what makes a few hundred trees over ~200 candidates
//! per customer fit a full submission's time budget. No maintained crate
//! evaluates LightGBM's text models this way without the C++ library, so
//! it is written here.
//!
//! Results are bit for bit those of the root-to-leaf walk: each split's
//! direction is decided by the same comparison (see [`at_most_f32`]), the
//! exit leaf is the same one, and the trees' values are summed in the same
//! order.

/// Per feature, its splits in ascending threshold order.
#[derive(Debug, Clone, Default)]
struct FeatureSplits {
    /// Each split's threshold, as the largest f32 not above LightGBM's f64
    /// threshold: for an f32 value `x`, `x <= t` exactly when
    /// `x <= at_most_f32(t)`.
    thresholds: Vec<f32>,
    tree: Vec<u32>,
    /// The leaves still reachable when the split sends the row right
    /// (its left subtree's leaves cleared).
    mask: Vec<u64>,
    /// The splits a missing (NaN) value sends right, with their masks.
    nan_tree: Vec<u32>,
    nan_mask: Vec<u64>,
}

/// An ensemble ready for QuickScorer.
#[derive(Debug, Clone)]
pub(crate) struct Quick {
    features: Vec<FeatureSplits>,
    /// Each tree's leaf values, left to right, from `leaf_start[t]`.
    leaves: Vec<f64>,
    leaf_start: Vec<u32>,
}

/// One split as the walk reads it.
pub(crate) struct Split {
    pub feature: u32,
    pub threshold: f64,
    /// `[right, left]` children (negative: leaf `!c`).
    pub children: [i32; 2],
    /// Where a NaN goes: `Some(left?)` for a split with a default
    /// direction for it, None for one that reads NaN as zero.
    pub nan_left: Option<bool>,
}

/// The largest f32 `y` with `y <= t` (for finite or infinite `t`).
fn at_most_f32(t: f64) -> f32 {
    let y = t as f32;
    if f64::from(y) > t { y.next_down() } else { y }
}

impl Quick {
    /// The ensemble of `trees` (each: splits, leaf values) over
    /// `n_features`; None when QuickScorer cannot serve it: a tree of more
    /// than 64 leaves, a NaN threshold, or splits that do not form a tree.
    pub(crate) fn new(n_features: usize, trees: &[(Vec<Split>, &[f64])]) -> Option<Self> {
        let mut features = vec![FeatureSplits::default(); n_features];
        let mut splits: Vec<Vec<(f32, u32, u64)>> = vec![Vec::new(); n_features];
        let (mut leaves, mut leaf_start) = (Vec::new(), Vec::with_capacity(trees.len()));
        for (t, (nodes, values)) in trees.iter().enumerate() {
            leaf_start.push(u32::try_from(leaves.len()).ok()?);
            if nodes.is_empty() {
                leaves.push(*values.first()?);
                continue;
            }
            if values.len() > 64 {
                return None;
            }
            let order = in_order(nodes, values.len())?;
            leaves.extend(order.leaves.iter().map(|&l| values[l]));
            for (n, split) in nodes.iter().enumerate() {
                let (lo, hi) = order.left_span[n];
                let width = hi - lo;
                let span = if width >= 64 {
                    u64::MAX
                } else {
                    ((1u64 << width) - 1) << lo
                };
                let mask = !span;
                let f = split.feature as usize;
                // A NaN threshold (a damaged file) has no place in a
                // threshold order; the walk reads it as "always right".
                if f >= n_features || split.threshold.is_nan() {
                    return None;
                }
                splits[f].push((at_most_f32(split.threshold), t as u32, mask));
                let nan_goes_right = match split.nan_left {
                    Some(left) => !left,
                    // Read as zero: right when zero is above the threshold.
                    None => split.threshold < 0.0,
                };
                if nan_goes_right {
                    features[f].nan_tree.push(t as u32);
                    features[f].nan_mask.push(mask);
                }
            }
        }
        for (fs, mut s) in features.iter_mut().zip(splits) {
            // Ties keep tree order: the ANDs commute, so any order of equal
            // thresholds gives the same masks.
            s.sort_by(|a, b| a.0.total_cmp(&b.0));
            fs.thresholds = s.iter().map(|x| x.0).collect();
            fs.tree = s.iter().map(|x| x.1).collect();
            fs.mask = s.iter().map(|x| x.2).collect();
        }
        Some(Quick {
            features,
            leaves,
            leaf_start,
        })
    }

    fn n_trees(&self) -> usize {
        self.leaf_start.len()
    }

    /// The raw score of `row` (its length is the model's feature count),
    /// with `live` as scratch (one word per tree).
    pub(crate) fn raw(&self, row: &[f32], live: &mut Vec<u64>) -> f64 {
        live.clear();
        live.resize(self.n_trees(), u64::MAX);
        for (fs, &x) in self.features.iter().zip(row) {
            if x.is_nan() {
                for (&t, &m) in fs.nan_tree.iter().zip(&fs.nan_mask) {
                    live[t as usize] &= m;
                }
                continue;
            }
            // Splits with a threshold below x send it right; the first one
            // at or above x ends the scan (one mispredicted branch, where a
            // binary search would take several).
            for ((&th, &t), &m) in fs.thresholds.iter().zip(&fs.tree).zip(&fs.mask) {
                if th >= x {
                    break;
                }
                live[t as usize] &= m;
            }
        }
        let mut sum = 0.0;
        for (&start, &l) in self.leaf_start.iter().zip(live.iter()) {
            sum += self.leaves[start as usize + l.trailing_zeros() as usize];
        }
        sum
    }
}

struct InOrder {
    /// Leaf indices (LightGBM's numbering) from left to right.
    leaves: Vec<usize>,
    /// Per split: the in-order positions `[lo, hi)` of its left subtree's
    /// leaves.
    left_span: Vec<(usize, usize)>,
}

/// The left-to-right order of a tree's leaves; None unless every leaf is
/// reached exactly once from the root.
fn in_order(nodes: &[Split], n_leaves: usize) -> Option<InOrder> {
    let mut out = InOrder {
        leaves: Vec::with_capacity(n_leaves),
        left_span: vec![(0, 0); nodes.len()],
    };
    // An explicit stack (a malformed file must not overflow the real one):
    // Enter(child) visits a subtree, LeftDone(n, lo) records where node n's
    // left subtree ended.
    enum Step {
        Enter(i32),
        LeftDone(usize, usize),
    }
    let mut stack = vec![Step::Enter(0)];
    let mut visits = 0usize;
    while let Some(step) = stack.pop() {
        match step {
            Step::Enter(c) if c < 0 => {
                let leaf = !c as usize;
                if leaf >= n_leaves || out.leaves.len() >= n_leaves {
                    return None;
                }
                out.leaves.push(leaf);
            }
            Step::Enter(c) => {
                let n = c as usize;
                visits += 1;
                if n >= nodes.len() || visits > nodes.len() {
                    return None;
                }
                let [right, left] = nodes[n].children;
                stack.push(Step::Enter(right));
                stack.push(Step::LeftDone(n, out.leaves.len()));
                stack.push(Step::Enter(left));
            }
            Step::LeftDone(n, lo) => out.left_span[n] = (lo, out.leaves.len()),
        }
    }
    let mut seen = vec![false; n_leaves];
    for &l in &out.leaves {
        if std::mem::replace(&mut seen[l], true) {
            return None;
        }
    }
    (out.leaves.len() == n_leaves && visits == nodes.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_thresholds_down_to_f32_keeps_every_comparison() {
        let ts = [
            0.1f64,
            -0.1,
            0.5,
            1e-40,
            -1e-40,
            1e300,
            -1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            3.4028235677973366e38,
        ];
        for &t in &ts {
            let y = at_most_f32(t);
            for x in [
                y,
                y.next_up(),
                y.next_down(),
                0.0,
                -0.0,
                f32::MAX,
                f32::MIN,
                f32::INFINITY,
                f32::NEG_INFINITY,
            ] {
                assert_eq!(f64::from(x) <= t, x <= y, "x {x:e}, t {t:e}");
            }
        }
    }
}
