//! Gradient-boosted trees read from LightGBM's text model format and
//! evaluated here, so serving needs no training library: the trainer saves
//! the booster with LightGBM's own `save_file`, and this module reads the
//! plain-text trees back.
//!
//! Written by hand because no crate reads LightGBM's text format without
//! linking LightGBM itself (and its C++ build), which the serving crates must
//! not need. Only what the trainer writes is accepted: one output (binary or
//! lambdarank), numerical splits; anything else (categorical splits, linear
//! trees, multiclass, random-forest averaging) is refused with a clear error
//! rather than evaluated wrongly.

use std::path::Path;

use crate::quickscorer::{Quick, Split};
use crate::{Error, Result};

/// What a model's raw score means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TreeObjective {
    /// Log-odds of a purchase (`binary sigmoid:S`: P = 1 / (1 + e^(-S·raw))).
    Binary { sigmoid: f64 },
    /// A ranking score: larger ranks higher, no probability scale.
    LambdaRank,
}

/// Where a missing value goes at a split (LightGBM's decision type bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// NaN is read as 0 and compared with the threshold.
    None,
    /// Zero (and NaN, read as 0) takes the default branch.
    Zero,
    /// NaN takes the default branch.
    NaN,
}

/// One internal node, its fields side by side: a walk down a tree touches
/// one cache line per node instead of one per field array (the tree walk
/// was the largest share of serving a ranking bundle).
#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f64,
    feature: u32,
    /// The right child, then the left (indexed by "goes left").
    children: [i32; 2],
    /// [`NAN_DEFAULT`], [`ZERO_DEFAULT`], [`DEFAULT_LEFT`].
    flags: u8,
}

/// NaN takes the default branch (LightGBM's missing type NaN).
const NAN_DEFAULT: u8 = 1;
/// Zero (and NaN, read as zero) takes the default branch (missing type Zero).
const ZERO_DEFAULT: u8 = 2;
/// The default branch is the left one.
const DEFAULT_LEFT: u8 = 4;

/// One tree in LightGBM's layout: internal nodes indexed from 0; a child
/// `c < 0` is leaf `!c`.
#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
    /// Leaf outputs, the learning rate already applied (LightGBM scales
    /// them in place before saving).
    leaf: Vec<f64>,
}

impl Tree {
    /// The child of internal node `n` that row `x` goes to. LightGBM's
    /// rule (NaN reads as zero unless NaN is the missing type; a missing
    /// value takes the default branch, any other compares with the
    /// threshold) as bit operations: which way a row goes is data, and
    /// branches on it were mispredicted at most nodes.
    #[inline(always)]
    fn step(&self, n: i32, x: &[f32]) -> i32 {
        let n = &self.nodes[n as usize];
        let mut v = f64::from(x[n.feature as usize]);
        let left = if v.is_nan() && n.flags & NAN_DEFAULT != 0 {
            n.flags & DEFAULT_LEFT != 0
        } else {
            if v.is_nan() {
                v = 0.0;
            }
            if n.flags & ZERO_DEFAULT != 0 && v.abs() <= 1e-35 {
                n.flags & DEFAULT_LEFT != 0
            } else {
                v <= n.threshold
            }
        };
        n.children[usize::from(left)]
    }

    fn eval(&self, x: &[f32]) -> f64 {
        if self.nodes.is_empty() {
            return self.leaf[0];
        }
        let mut node = 0i32;
        while node >= 0 {
            node = self.step(node, x);
        }
        self.leaf[!node as usize]
    }

    /// Adds the leaf of each of `rows` (at most [`LANES`]) to `out`. The
    /// rows walk the tree side by side: each walk is a chain of dependent
    /// loads and compares, and interleaving independent chains lets the
    /// CPU overlap them (one walk at a time left it waiting on each).
    fn eval_lanes(&self, rows: &[&[f32]], out: &mut [f64]) {
        if self.nodes.is_empty() {
            out.iter_mut().for_each(|o| *o += self.leaf[0]);
            return;
        }
        let mut node = [0i32; LANES];
        let lanes = rows.len().min(LANES);
        let mut active = true;
        while active {
            active = false;
            for l in 0..lanes {
                if node[l] >= 0 {
                    node[l] = self.step(node[l], rows[l]);
                    active |= node[l] >= 0;
                }
            }
        }
        for (o, &n) in out.iter_mut().zip(&node[..lanes]) {
            *o += self.leaf[!n as usize];
        }
    }
}

/// Rows walked through a tree side by side.
const LANES: usize = 8;

/// How a row's trees are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeEval {
    /// QuickScorer: every split listed per feature in threshold order.
    Quick,
    /// Each tree walked from its root (eight rows side by side).
    Walk,
}

/// A boosted ensemble: the sum of its trees' leaves is the raw score.
#[derive(Debug, Clone)]
pub struct Trees {
    pub objective: TreeObjective,
    /// The features' names, in column order (what the trainer named them).
    pub feature_names: Vec<String>,
    trees: Vec<Tree>,
    /// The same trees laid out for QuickScorer, which every evaluation
    /// uses when it can serve them (no zero-as-missing split, no tree over
    /// 64 leaves); the walk below is the fallback.
    quick: Option<Quick>,
}

impl Trees {
    /// Reads a model file written by LightGBM's `save_file`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Trees::parse(&text).map_err(|msg| Error::Invalid(format!("{}: {msg}", path.display())))
    }

    /// Parses LightGBM's text format; the error says which line is wrong.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut lines = text.lines().enumerate().peekable();
        let mut header: Vec<(usize, &str, &str)> = Vec::new();
        while let Some(&(n, line)) = lines.peek() {
            if line.starts_with("Tree=") || line == "end of trees" {
                break;
            }
            lines.next();
            if let Some((k, v)) = line.split_once('=') {
                header.push((n + 1, k, v));
            }
        }
        let get = |key: &str| header.iter().find(|h| h.1 == key).map(|h| (h.0, h.2));
        let (_, version) = get("version").ok_or("no `version=` line: not a LightGBM model")?;
        if version != "v4" {
            return Err(format!("model format {version}, this reader knows v4"));
        }
        for (key, want) in [("num_class", "1"), ("num_tree_per_iteration", "1")] {
            if let Some((n, v)) = get(key)
                && v != want
            {
                return Err(format!(
                    "line {n}: {key}={v}; only single-output models are served"
                ));
            }
        }
        if header.iter().any(|h| h.1 == "average_output") {
            return Err(
                "a random-forest (average_output) model; only boosted sums are served".into(),
            );
        }
        let (n_obj, objective) = get("objective").ok_or("no `objective=` line")?;
        let objective = parse_objective(objective).map_err(|e| format!("line {n_obj}: {e}"))?;
        let (n_names, names) = get("feature_names").ok_or("no `feature_names=` line")?;
        let feature_names: Vec<String> = names.split(' ').map(str::to_string).collect();
        let (n_max, max_idx) = get("max_feature_idx").ok_or("no `max_feature_idx=` line")?;
        let max_idx: usize = max_idx
            .parse()
            .map_err(|_| format!("line {n_max}: max_feature_idx `{max_idx}`"))?;
        if feature_names.len() != max_idx + 1 {
            return Err(format!(
                "line {n_names}: {} feature names for max_feature_idx {max_idx}",
                feature_names.len()
            ));
        }
        let mut trees = Vec::new();
        let mut block: Vec<(usize, &str, &str)> = Vec::new();
        let mut start = 0;
        for (n, line) in lines {
            if line.starts_with("Tree=") || line == "end of trees" {
                if !block.is_empty() || start > 0 {
                    trees.push(parse_tree(&block, start, feature_names.len())?);
                }
                block.clear();
                start = n + 1;
                if line == "end of trees" {
                    break;
                }
            } else if let Some((k, v)) = line.split_once('=') {
                block.push((n + 1, k, v));
            }
        }
        if trees.is_empty() {
            return Err("no trees (missing `Tree=` blocks or `end of trees`)".into());
        }
        let quick = quick(&trees, feature_names.len());
        Ok(Trees {
            objective,
            feature_names,
            trees,
            quick,
        })
    }

    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// Leaves over all trees.
    pub fn n_leaves(&self) -> usize {
        self.trees.iter().map(|t| t.leaf.len()).sum()
    }

    /// Whether evaluations use QuickScorer (else the walk).
    pub fn is_quick(&self) -> bool {
        self.quick.is_some()
    }

    /// The raw scores of many rows (`x` holds them one after another, each
    /// `n_features()` wide): by QuickScorer row by row, or (the fallback)
    /// one tree at a time over all rows, so a tree's nodes stay in cache
    /// while every row walks it. Either way each row's trees are summed in
    /// the same order as [`raw`](Self::raw), so the scores are the same
    /// bits.
    pub fn raw_many(&self, x: &[f32]) -> Result<Vec<f64>> {
        let how = if self.quick.is_some() {
            TreeEval::Quick
        } else {
            TreeEval::Walk
        };
        self.raw_many_by(x, how)
    }

    /// [`raw_many`](Self::raw_many) by a chosen evaluation (benchmarks set
    /// them side by side); QuickScorer falls back to the walk for trees it
    /// cannot serve.
    pub fn raw_many_by(&self, x: &[f32], how: TreeEval) -> Result<Vec<f64>> {
        let nf = self.n_features();
        if nf == 0 || !x.len().is_multiple_of(nf) {
            return Err(Error::Shape {
                what: "tree model feature rows".into(),
                expected: x.len().div_ceil(nf.max(1)) * nf,
                got: x.len(),
            });
        }
        if let (TreeEval::Quick, Some(q)) = (how, &self.quick) {
            let mut live = Vec::new();
            return Ok(x.chunks_exact(nf).map(|r| q.raw(r, &mut live)).collect());
        }
        let mut out = vec![0f64; x.len() / nf];
        let rows: Vec<&[f32]> = x.chunks_exact(nf).collect();
        for t in &self.trees {
            for (o, r) in out.chunks_mut(LANES).zip(rows.chunks(LANES)) {
                t.eval_lanes(r, o);
            }
        }
        Ok(out)
    }

    /// The raw score of one row of `n_features()` values (NaN = missing).
    pub fn raw(&self, x: &[f32]) -> Result<f64> {
        if x.len() != self.n_features() {
            return Err(Error::Shape {
                what: "tree model features".into(),
                expected: self.n_features(),
                got: x.len(),
            });
        }
        match &self.quick {
            Some(q) => Ok(q.raw(x, &mut Vec::new())),
            None => Ok(self.walk(x)),
        }
    }

    /// The raw score by walking every tree from its root.
    fn walk(&self, x: &[f32]) -> f64 {
        self.trees.iter().fold(0.0, |s, t| s + t.eval(x))
    }
}

/// The QuickScorer layout of `trees`, when it can serve them.
fn quick(trees: &[Tree], n_features: usize) -> Option<Quick> {
    let mut splits = Vec::with_capacity(trees.len());
    for t in trees {
        let mut nodes = Vec::with_capacity(t.nodes.len());
        for n in &t.nodes {
            // A zero-as-missing split sends values near zero its default
            // way whatever the threshold: not a threshold order.
            if n.flags & ZERO_DEFAULT != 0 {
                return None;
            }
            nodes.push(Split {
                feature: n.feature,
                threshold: n.threshold,
                children: n.children,
                nan_left: (n.flags & NAN_DEFAULT != 0).then_some(n.flags & DEFAULT_LEFT != 0),
            });
        }
        splits.push((nodes, t.leaf.as_slice()));
    }
    Quick::new(n_features, &splits)
}

fn parse_objective(s: &str) -> std::result::Result<TreeObjective, String> {
    let mut parts = s.split(' ');
    match parts.next() {
        Some("binary") => {
            let sigmoid = parts
                .find_map(|p| p.strip_prefix("sigmoid:"))
                .map_or(Ok(1.0), str::parse::<f64>)
                .map_err(|e| format!("objective `{s}`: {e}"))?;
            Ok(TreeObjective::Binary { sigmoid })
        }
        Some("lambdarank") => Ok(TreeObjective::LambdaRank),
        _ => Err(format!(
            "objective `{s}`; the served objectives are binary and lambdarank"
        )),
    }
}

fn parse_tree(
    block: &[(usize, &str, &str)],
    start: usize,
    n_features: usize,
) -> std::result::Result<Tree, String> {
    let field = |key: &str| {
        block
            .iter()
            .find(|b| b.1 == key)
            .map(|b| (b.0, b.2))
            .ok_or_else(|| format!("tree at line {start}: no `{key}=`"))
    };
    fn list<T: std::str::FromStr>(
        (n, v): (usize, &str),
        key: &str,
        len: usize,
    ) -> std::result::Result<Vec<T>, String> {
        let out: Vec<T> = v
            .split(' ')
            .map(|x| x.parse::<T>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| format!("line {n}: {key} is not a list of numbers"))?;
        if out.len() != len {
            return Err(format!(
                "line {n}: {key} has {} values, expected {len}",
                out.len()
            ));
        }
        Ok(out)
    }
    let (n, leaves) = field("num_leaves")?;
    let leaves: usize = leaves
        .parse()
        .map_err(|_| format!("line {n}: num_leaves `{leaves}`"))?;
    if leaves == 0 {
        return Err(format!("line {n}: a tree with no leaves"));
    }
    if let Ok((n, cats)) = field("num_cat")
        && cats != "0"
    {
        return Err(format!(
            "line {n}: categorical splits are not served (num_cat={cats})"
        ));
    }
    if let Ok((n, linear)) = field("is_linear")
        && linear != "0"
    {
        return Err(format!("line {n}: linear trees are not served"));
    }
    let leaf: Vec<f64> = list(field("leaf_value")?, "leaf_value", leaves)?;
    if leaves == 1 {
        return Ok(Tree {
            nodes: Vec::new(),
            leaf,
        });
    }
    let inner = leaves - 1;
    let feature: Vec<u32> = list(field("split_feature")?, "split_feature", inner)?;
    let threshold: Vec<f64> = list(field("threshold")?, "threshold", inner)?;
    let decision: Vec<u8> = list(field("decision_type")?, "decision_type", inner)?;
    let left: Vec<i32> = list(field("left_child")?, "left_child", inner)?;
    let right: Vec<i32> = list(field("right_child")?, "right_child", inner)?;
    let (n_split, _) = field("split_feature")?;
    if let Some(f) = feature.iter().find(|&&f| f as usize >= n_features) {
        return Err(format!(
            "line {n_split}: split on feature {f} of {n_features}"
        ));
    }
    // Children must point inside the tree, or evaluation could loop or
    // index out of bounds.
    let (n_child, _) = field("left_child")?;
    for &c in left.iter().chain(&right) {
        let ok = if c >= 0 {
            (c as usize) < inner && c > 0
        } else {
            (!c as usize) < leaves
        };
        if !ok {
            return Err(format!("line {n_child}: child {c} outside the tree"));
        }
    }
    let mut missing = Vec::with_capacity(inner);
    let mut default_left = Vec::with_capacity(inner);
    let (n_dec, _) = field("decision_type")?;
    for &d in &decision {
        if d & 1 != 0 {
            return Err(format!("line {n_dec}: categorical split"));
        }
        default_left.push(d & 2 != 0);
        missing.push(match (d >> 2) & 3 {
            0 => Missing::None,
            1 => Missing::Zero,
            2 => Missing::NaN,
            other => return Err(format!("line {n_dec}: missing type {other}")),
        });
    }
    // Internal nodes are numbered so that a child's index is larger than
    // its parent's; checked so that evaluation always ends.
    for n in 0..inner {
        for c in [left[n], right[n]] {
            if c >= 0 && (c as usize) <= n {
                return Err(format!("line {n_child}: node {n} points back to node {c}"));
            }
        }
    }
    let nodes = (0..inner)
        .map(|n| Node {
            threshold: threshold[n],
            feature: feature[n],
            children: [right[n], left[n]],
            flags: match missing[n] {
                Missing::NaN => NAN_DEFAULT,
                Missing::Zero => ZERO_DEFAULT,
                Missing::None => 0,
            } | if default_left[n] { DEFAULT_LEFT } else { 0 },
        })
        .collect();
    Ok(Tree { nodes, leaf })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two trees over two features: the first splits f0 at 0.5 (missing
    /// as NaN, default right), then f1 at 2 on the left (zero as missing,
    /// default left); the second is one leaf.
    const MODEL: &str = "tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=1
objective=binary sigmoid:1
feature_names=a b
feature_infos=[0:1] [0:5]
tree_sizes=100 50

Tree=0
num_leaves=3
num_cat=0
split_feature=0 1
split_gain=1 1
threshold=0.5 2
decision_type=8 6
left_child=1 -1
right_child=-3 -2
leaf_value=0.1 0.2 0.3
leaf_weight=1 1 1
leaf_count=1 1 1
internal_value=0 0
internal_weight=0 0
internal_count=3 2
is_linear=0
shrinkage=0.1


Tree=1
num_leaves=1
num_cat=0
split_feature=
split_gain=
threshold=
decision_type=
left_child=
right_child=
leaf_value=-0.05
leaf_weight=
leaf_count=
internal_value=
internal_weight=
internal_count=
is_linear=0
shrinkage=1


end of trees

feature_importances:
a=1
b=1
";

    #[test]
    fn evaluates_splits_missing_values_and_single_leaf_trees() {
        let t = Trees::parse(MODEL).unwrap();
        assert_eq!(t.n_trees(), 2);
        assert_eq!(t.feature_names, ["a", "b"]);
        assert_eq!(t.objective, TreeObjective::Binary { sigmoid: 1.0 });
        let raw = |x: [f32; 2]| t.raw(&x).unwrap() + 0.05;
        assert!((raw([0.2, 1.0]) - 0.1).abs() < 1e-12); // left, f1 <= 2
        assert!((raw([0.2, 3.0]) - 0.2).abs() < 1e-12); // left, f1 > 2
        assert!((raw([0.7, 1.0]) - 0.3).abs() < 1e-12); // right
        assert!((raw([0.5, 1.0]) - 0.1).abs() < 1e-12); // threshold goes left
        // NaN at a NaN-missing split takes the default (right).
        assert!((raw([f32::NAN, 1.0]) - 0.3).abs() < 1e-12);
        // Zero at a zero-missing split takes the default (left), whatever
        // the threshold says; NaN there is read as zero.
        assert!((raw([0.2, 0.0]) - 0.1).abs() < 1e-12);
        assert!((raw([0.2, f32::NAN]) - 0.1).abs() < 1e-12);
        assert!(t.raw(&[1.0]).is_err());
        // Many rows at once: the same bits, row by row.
        let rows = [
            0.2,
            1.0,
            0.2,
            3.0,
            0.7,
            1.0,
            0.5,
            1.0,
            f32::NAN,
            1.0,
            0.2,
            0.0,
            0.2,
            f32::NAN,
        ];
        let many = t.raw_many(&rows).unwrap();
        for (row, got) in rows.chunks(2).zip(&many) {
            assert_eq!(t.raw(row).unwrap().to_bits(), got.to_bits(), "{row:?}");
        }
        assert!(t.raw_many(&rows[..3]).is_err());
    }

    /// A random tree of `leaves` leaves over `nf` features: splits numbered
    /// in preorder (children after parents, as LightGBM writes them), leaf
    /// numbers shuffled, thresholds on values the rows also take (ties) and
    /// on f64 values no f32 equals.
    fn random_tree(seed: &mut u64, leaves: usize, nf: usize) -> Tree {
        let mut next = move || {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 33) as usize
        };
        const THRESHOLDS: [f64; 7] = [-1.0, 0.0, 0.1, 0.5, 1.0, 2.0, 1e-36];
        let mut nodes: Vec<Node> = Vec::new();
        let mut leaf_no: Vec<i32> = (0..leaves as i32).collect();
        for k in (1..leaf_no.len()).rev() {
            leaf_no.swap(k, next() % (k + 1));
        }
        let mut leaf_next = 0;
        fn build(
            nodes: &mut Vec<Node>,
            leaves: usize,
            next: &mut dyn FnMut() -> usize,
            leaf_no: &[i32],
            leaf_next: &mut usize,
            nf: usize,
        ) -> i32 {
            if leaves == 1 {
                *leaf_next += 1;
                return !leaf_no[*leaf_next - 1];
            }
            let me = nodes.len();
            let flags = [0, DEFAULT_LEFT, NAN_DEFAULT, NAN_DEFAULT | DEFAULT_LEFT][next() % 4];
            nodes.push(Node {
                threshold: THRESHOLDS[next() % THRESHOLDS.len()],
                feature: (next() % nf) as u32,
                children: [0, 0],
                flags,
            });
            let left_leaves = 1 + next() % (leaves - 1);
            let left = build(nodes, left_leaves, next, leaf_no, leaf_next, nf);
            let right = build(nodes, leaves - left_leaves, next, leaf_no, leaf_next, nf);
            nodes[me].children = [right, left];
            me as i32
        }
        build(&mut nodes, leaves, &mut next, &leaf_no, &mut leaf_next, nf);
        let leaf = (0..leaves)
            .map(|l| (l as f64 + 1.0) * 0.001 + l as f64 * 1e-9)
            .collect();
        Tree { nodes, leaf }
    }

    #[test]
    fn quickscorer_gives_the_walks_bits_on_random_ensembles() {
        let nf = 5;
        let mut seed = 7u64;
        for round in 0..20 {
            let trees: Vec<Tree> = (0..30)
                .map(|t| random_tree(&mut seed, 1 + (t * 7 + round) % 64, nf))
                .collect();
            let q = quick(&trees, nf).expect("servable by QuickScorer");
            let model = Trees {
                objective: TreeObjective::LambdaRank,
                feature_names: (0..nf).map(|f| format!("f{f}")).collect(),
                trees,
                quick: None,
            };
            const VALUES: [f32; 9] = [f32::NAN, -1.0, 0.0, -0.0, 0.1, 0.5, 1.0, 2.0, 3.0];
            let mut live = Vec::new();
            for r in 0..200u64 {
                let mut h = r.wrapping_mul(0x9E3779B97F4A7C15) ^ seed;
                let row: Vec<f32> = (0..nf)
                    .map(|_| {
                        h = h.rotate_left(9).wrapping_mul(0x2545F4914F6CDD1D);
                        VALUES[(h >> 40) as usize % VALUES.len()]
                    })
                    .collect();
                assert_eq!(
                    q.raw(&row, &mut live).to_bits(),
                    model.walk(&row).to_bits(),
                    "round {round}, row {row:?}"
                );
            }
        }
        // Over 64 leaves, or a zero-as-missing split: the walk serves.
        let big = vec![random_tree(&mut seed, 65, nf)];
        assert!(quick(&big, nf).is_none());
        let mut zero = vec![random_tree(&mut seed, 4, nf)];
        zero[0].nodes[0].flags = ZERO_DEFAULT;
        assert!(quick(&zero, nf).is_none());
        let mut nan = vec![random_tree(&mut seed, 4, nf)];
        nan[0].nodes[0].threshold = f64::NAN;
        assert!(quick(&nan, nf).is_none());
    }

    #[test]
    fn refuses_what_it_cannot_evaluate_naming_the_line() {
        let cat = MODEL.replace(
            "num_cat=0\nsplit_feature=0 1",
            "num_cat=1\nsplit_feature=0 1",
        );
        assert!(Trees::parse(&cat).unwrap_err().contains("categorical"));
        let bad = MODEL.replace("left_child=1 -1", "left_child=1 -7");
        let e = Trees::parse(&bad).unwrap_err();
        assert!(e.contains("line 19") && e.contains("outside"), "{e}");
        let cycle = MODEL.replace("left_child=1 -1", "left_child=1 1");
        assert!(Trees::parse(&cycle).unwrap_err().contains("points back"));
        let multi = MODEL.replace("num_class=1", "num_class=3");
        assert!(Trees::parse(&multi).unwrap_err().contains("single-output"));
        let obj = MODEL.replace("objective=binary sigmoid:1", "objective=regression");
        assert!(Trees::parse(&obj).unwrap_err().contains("line 7"));
        let short = MODEL.replace("leaf_value=0.1 0.2 0.3", "leaf_value=0.1 0.2");
        assert!(
            Trees::parse(&short)
                .unwrap_err()
                .contains("leaf_value has 2")
        );
        assert!(Trees::parse("hello").is_err());
        let lr = MODEL.replace("objective=binary sigmoid:1", "objective=lambdarank");
        assert_eq!(
            Trees::parse(&lr).unwrap().objective,
            TreeObjective::LambdaRank
        );
    }
}
