//! Exact maximum-inner-product retrieval: every customer is scored against
//! every item, and the best K are kept.
//!
//! The catalogue is small enough (~10^5 items) that exact search is cheap
//! with a blocked matrix product, and exactness keeps evaluation honest: a
//! recall number never depends on an approximate index's settings.
//!
//! Queries are processed in blocks of [`QUERY_BLOCK`] rows (in parallel) and
//! items in chunks of [`ITEM_CHUNK`] columns: each item chunk is read once
//! per block of queries, and the score buffer stays bounded whatever the
//! catalogue size (the sizes were chosen by `recforge bench serve`; see
//! `benches/README.md`). Each query keeps a running candidate list with a
//! threshold (the k-th best score so far); almost every group of 16 scores
//! lies wholly below it and is skipped after one vectorised maximum.

use rayon::prelude::*;

use crate::quant::{Quantized, Query, dots};
use crate::{Error, Result};

pub const QUERY_BLOCK: usize = 512;
pub const ITEM_CHUNK: usize = 512;
/// Up to this many queries are searched one by one on the int8 copy of the
/// table (memory-bound, see `quant`); larger batches share each f32 chunk
/// between many queries in a matrix product instead (compute-bound).
pub const SINGLE_BELOW: usize = 8;
/// Items whose int8 bounds are computed together in a single-query scan.
const SCAN_BLOCK: usize = 64;

/// Item embeddings (row-major, one row per item) with their item ids and
/// availability.
#[derive(Debug, Clone)]
pub struct ItemIndex {
    dim: usize,
    ids: Vec<u32>,
    vecs: Vec<f32>,
    available: Vec<bool>,
    quant: Quantized,
}

impl ItemIndex {
    /// `vecs` holds `ids.len()` rows of `dim` values. All items start available.
    pub fn new(dim: usize, ids: Vec<u32>, vecs: Vec<f32>) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Invalid(
                "embedding dimension must be positive".into(),
            ));
        }
        if vecs.len() != ids.len() * dim {
            return Err(Error::Shape {
                what: format!("{} item embeddings of dimension {dim}", ids.len()),
                expected: ids.len() * dim,
                got: vecs.len(),
            });
        }
        let available = vec![true; ids.len()];
        let quant = Quantized::new(dim, &vecs);
        Ok(ItemIndex {
            dim,
            ids,
            vecs,
            available,
            quant,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Marks rows (by position, not id) available or not; unavailable items
    /// are skipped when a search asks for it.
    pub fn set_available(&mut self, row: usize, available: bool) {
        self.available[row] = available;
    }

    pub fn available(&self) -> &[bool] {
        &self.available
    }

    /// The vector of row `row`.
    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vecs[row * self.dim..(row + 1) * self.dim]
    }

    /// Appends an available item.
    pub fn push(&mut self, id: u32, vec: &[f32]) -> Result<()> {
        if vec.len() != self.dim {
            return Err(Error::Shape {
                what: format!("the vector of item {id}"),
                expected: self.dim,
                got: vec.len(),
            });
        }
        self.ids.push(id);
        self.vecs.extend_from_slice(vec);
        self.available.push(true);
        self.quant.push(vec);
        Ok(())
    }

    /// Replaces row `row`'s vector.
    pub fn set_vector(&mut self, row: usize, vec: &[f32]) -> Result<()> {
        if vec.len() != self.dim {
            return Err(Error::Shape {
                what: format!("the vector of item {}", self.ids[row]),
                expected: self.dim,
                got: vec.len(),
            });
        }
        self.vecs[row * self.dim..(row + 1) * self.dim].copy_from_slice(vec);
        self.quant.set(row, vec);
        Ok(())
    }

    /// Removes row `row` (later rows move up by one).
    pub fn remove_row(&mut self, row: usize) {
        self.ids.remove(row);
        self.available.remove(row);
        self.vecs.drain(row * self.dim..(row + 1) * self.dim);
        self.quant.remove(row);
    }

    /// The `k` best items for each query (`queries` holds rows of `dim`
    /// values), best first, as (item id, score). Ties go to the lower item
    /// id; NaN scores never rank. With `skip_unavailable`, items marked
    /// unavailable are never returned.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        skip_unavailable: bool,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        self.search_excluding(queries, k, skip_unavailable, &[])
    }

    /// As `search`, and never returning, for query q, the item ids in
    /// `exclude[q]` (sorted; e.g. what the customer already bought). An
    /// empty `exclude` excludes nothing.
    pub fn search_excluding(
        &self,
        queries: &[f32],
        k: usize,
        skip_unavailable: bool,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        if !queries.len().is_multiple_of(self.dim) {
            return Err(Error::Shape {
                what: format!("queries of dimension {}", self.dim),
                expected: queries.len().div_ceil(self.dim) * self.dim,
                got: queries.len(),
            });
        }
        let n_q = queries.len() / self.dim;
        if !exclude.is_empty() && exclude.len() != n_q {
            return Err(Error::Shape {
                what: "exclusion lists (one per query)".into(),
                expected: n_q,
                got: exclude.len(),
            });
        }
        if n_q < SINGLE_BELOW {
            return Ok(queries
                .chunks(self.dim)
                .enumerate()
                .map(|(qi, q)| {
                    let ex = exclude.get(qi).copied().unwrap_or(&[]);
                    self.search_one(q, k, skip_unavailable, ex)
                })
                .collect());
        }
        let blocks: Vec<Vec<Vec<(u32, f32)>>> = queries
            .par_chunks(QUERY_BLOCK * self.dim)
            .enumerate()
            .map(|(bi, block)| {
                let ex = if exclude.is_empty() {
                    &[][..]
                } else {
                    let start = bi * QUERY_BLOCK;
                    &exclude[start..(start + QUERY_BLOCK).min(n_q)]
                };
                self.search_block(block, k, skip_unavailable, ex)
            })
            .collect();
        let out: Vec<Vec<(u32, f32)>> = blocks.into_iter().flatten().collect();
        debug_assert_eq!(out.len(), n_q);
        Ok(out)
    }

    fn search_block(
        &self,
        block: &[f32],
        k: usize,
        skip: bool,
        exclude: &[&[u32]],
    ) -> Vec<Vec<(u32, f32)>> {
        let d = self.dim;
        let rows = block.len() / d;
        let mut keep: Vec<Running> = (0..rows).map(|_| Running::new(k)).collect();
        if k == 0 {
            return keep.into_iter().map(Running::finish).collect();
        }
        let mut scores = vec![0f32; rows * ITEM_CHUNK];
        for start in (0..self.ids.len()).step_by(ITEM_CHUNK) {
            let cols = ITEM_CHUNK.min(self.ids.len() - start);
            let items = &self.vecs[start * d..(start + cols) * d];
            // scores[r][c] = <query r, item start + c>.
            crate::nn::matmul_t(block, items, &mut scores, rows, d, cols);
            for (r, run) in keep.iter_mut().enumerate() {
                let row = &scores[r * cols..(r + 1) * cols];
                let ex = exclude.get(r).copied().unwrap_or(&[]);
                for (g, group) in row.chunks(16).enumerate() {
                    // Almost every group of scores lies wholly below the
                    // threshold; one vectorised OR of comparisons says so
                    // (an f32 max reduction does not vectorise).
                    let t = run.threshold;
                    if !group.iter().fold(false, |any, &s| any | (s >= t)) {
                        continue;
                    }
                    for (j, &s) in group.iter().enumerate() {
                        let c = start + g * 16 + j;
                        if s >= run.threshold
                            && !s.is_nan()
                            && (!skip || self.available[c])
                            && (ex.is_empty() || ex.binary_search(&self.ids[c]).is_err())
                        {
                            run.push(self.ids[c], s);
                        }
                    }
                }
            }
        }
        keep.into_iter().map(Running::finish).collect()
    }
}

impl ItemIndex {
    /// One query: a scan of the int8 table keeps every item whose upper
    /// bound reaches the K-th best lower bound so far, and only those are
    /// scored exactly (see `quant` for why this is exact).
    fn search_one(&self, q: &[f32], k: usize, skip: bool, exclude: &[u32]) -> Vec<(u32, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let qu = Query::new(q);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.search_one_avx2(q, &qu, k, skip, exclude) };
        }
        self.search_one_with(q, &qu, k, skip, exclude, false)
    }

    /// The same code compiled for AVX2, where the int8 dot product becomes
    /// 16-lane multiply-adds (the default x86-64 target only has SSE2).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn search_one_avx2(
        &self,
        q: &[f32],
        qu: &Query,
        k: usize,
        skip: bool,
        exclude: &[u32],
    ) -> Vec<(u32, f32)> {
        self.search_one_with(q, qu, k, skip, exclude, true)
    }

    /// `avx2`: the caller has checked that the CPU has AVX2.
    // The hot loop of single-customer search: the int8 pass, the bound, the
    // exact re-scoring; kept together so the compiler sees one loop nest.
    #[inline(always)]
    fn search_one_with(
        &self,
        q: &[f32],
        qu: &Query,
        k: usize,
        skip: bool,
        exclude: &[u32],
        avx2: bool,
    ) -> Vec<(u32, f32)> {
        let d = self.dim;
        let n = self.ids.len();
        let quant = &self.quant;
        // (row, lower bound, upper bound) of the items still in the race.
        let mut cand: Vec<(u32, f32, f32)> = Vec::with_capacity(8 * k);
        let mut floor = f32::NEG_INFINITY;
        let mut cap = 4 * k.max(4);
        let mut dot = [0i32; SCAN_BLOCK];
        let wide64 = avx2 && d == 64;
        let mut upper = [0f32; SCAN_BLOCK];
        for start in (0..n).step_by(SCAN_BLOCK) {
            let m = SCAN_BLOCK.min(n - start);
            let codes = &quant.codes[start * d..(start + m) * d];
            if wide64 {
                // SAFETY: `wide64` holds only where AVX2 was detected and d = 64.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    crate::quant::dots64_avx2(
                        &qu.codes,
                        codes,
                        &quant.code_sum[start..start + m],
                        &mut dot[..m],
                    )
                };
            } else {
                dots(&qu.codes, codes, &mut dot[..m]);
            }
            // Upper bounds of the whole block in SIMD lanes; almost every
            // block lies wholly below the floor and ends here.
            let scale = &quant.scale[start..start + m];
            let (eu, eq) = (
                &quant.err_u[start..start + m],
                &quant.err_q[start..start + m],
            );
            // (A boolean OR vectorises; an f32 max reduction does not,
            // because of its NaN rules.)
            let mut reaches = false;
            for j in 0..m {
                upper[j] = qu.scale * scale[j] * dot[j] as f32 + qu.norm * eu[j] + qu.resid * eq[j];
                reaches |= upper[j] >= floor;
            }
            if !reaches {
                continue;
            }
            for j in 0..m {
                let row = start + j;
                // NaN bounds fail the first test: such items never rank.
                if upper[j] >= floor
                    && (!skip || self.available[row])
                    && (exclude.is_empty() || exclude.binary_search(&self.ids[row]).is_err())
                {
                    let (a, e) = qu.approx(quant, row, dot[j]);
                    cand.push((row as u32, a - e, upper[j]));
                    if cand.len() > cap {
                        floor = raise_floor(&mut cand, k, floor);
                        cap = (2 * cand.len()).max(4 * k);
                    }
                }
            }
        }
        let floor = raise_floor(&mut cand, k, floor);
        let mut out: Vec<(u32, f32)> = cand
            .iter()
            .filter(|c| c.2 >= floor)
            .map(|c| {
                let row = c.0 as usize;
                (self.ids[row], exact_dot(q, self.vector(row)))
            })
            .filter(|c| !c.1.is_nan())
            .collect();
        out.sort_unstable_by(better);
        out.truncate(k);
        out
    }
}

/// A query's f32 score of one item, summed as the batch path's `gemm`
/// kernels sum each element (one fused multiply-add after another, from
/// the first dimension), so a query searched alone gets the bits it gets
/// in a batch and near-ties order alike on every serving path.
fn exact_dot(q: &[f32], v: &[f32]) -> f32 {
    q.iter().zip(v).fold(0f32, |acc, (a, b)| a.mul_add(*b, acc))
}

/// Lifts `floor` to the K-th best lower bound among `cand` and drops the
/// candidates whose upper bound falls below it: none of those can beat the
/// K items whose lower bounds are at least the floor.
fn raise_floor(cand: &mut Vec<(u32, f32, f32)>, k: usize, floor: f32) -> f32 {
    if cand.len() < k {
        return floor;
    }
    let mut lows: Vec<f32> = cand.iter().map(|c| c.1).collect();
    lows.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let floor = lows[k - 1].max(floor);
    cand.retain(|c| c.2 >= floor);
    floor
}

/// Orders (id, score) pairs best first: higher score, then lower id.
fn better(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// A query's candidates so far. Everything scoring at least `threshold` is
/// kept; the buffer is cut back to the best `k` when it grows past `4k`,
/// which raises the threshold.
struct Running {
    k: usize,
    threshold: f32,
    cand: Vec<(u32, f32)>,
}

impl Running {
    fn new(k: usize) -> Self {
        Running {
            k,
            threshold: f32::NEG_INFINITY,
            cand: Vec::with_capacity(4 * k + 1),
        }
    }

    fn push(&mut self, id: u32, s: f32) {
        self.cand.push((id, s));
        if self.cand.len() > 4 * self.k {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.cand.len() > self.k {
            self.cand.select_nth_unstable_by(self.k - 1, better);
            self.cand.truncate(self.k);
            // Equal scores must still enter (a lower id may beat a kept one).
            self.threshold = self.cand.iter().map(|c| c.1).fold(f32::INFINITY, f32::min);
        }
    }

    fn finish(mut self) -> Vec<(u32, f32)> {
        if self.k > 0 {
            self.cut();
        } else {
            self.cand.clear();
        }
        self.cand.sort_unstable_by(better);
        self.cand
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topk::top_k;

    /// A small deterministic generator so the test needs no dependency.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Coarse values so that ties occur.
                ((x >> 40) % 17) as f32 / 8.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_with_ties_and_unavailable_items() {
        let (d, n, q) = (5, ITEM_CHUNK + 777, QUERY_BLOCK + 9);
        let ids: Vec<u32> = (0..n as u32).map(|i| i + 1).collect();
        let items = values(n * d, 1);
        let queries = values(q * d, 2);
        let mut index = ItemIndex::new(d, ids, items.clone()).unwrap();
        for row in (0..n).step_by(3) {
            index.set_available(row, false);
        }
        for skip in [false, true] {
            let got = index.search(&queries, 50, skip).unwrap();
            assert_eq!(got.len(), q);
            let excluded: Vec<u32> = if skip {
                (0..n).step_by(3).map(|r| r as u32 + 1).collect()
            } else {
                vec![]
            };
            for (qi, res) in got.iter().enumerate() {
                let qv = &queries[qi * d..(qi + 1) * d];
                let scores: Vec<f32> = (0..n)
                    .map(|j| {
                        let iv = &items[j * d..(j + 1) * d];
                        qv.iter().zip(iv).map(|(a, b)| a * b).sum()
                    })
                    .collect();
                let mut want = Vec::new();
                top_k(&scores, 1, 50, &excluded, &mut want);
                let ids: Vec<u32> = res.iter().map(|r| r.0).collect();
                assert_eq!(ids, want, "query {qi}, skip {skip}");
                for (id, s) in res {
                    assert!((s - scores[*id as usize - 1]).abs() < 1e-5);
                }
                // The int8 path for single queries gives the same list.
                if qi % 7 == 0 {
                    let one = index.search(qv, 50, skip).unwrap();
                    let ids: Vec<u32> = one[0].iter().map(|r| r.0).collect();
                    assert_eq!(ids, want, "single query {qi}, skip {skip}");
                }
            }
        }
    }

    /// Continuous values in [-0.5, 0.5) from an xorshift stream of `seed`.
    fn continuous(mut x: u64) -> impl FnMut() -> f32 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        }
    }

    #[test]
    fn a_query_alone_gets_the_bits_it_gets_in_a_batch() {
        let (d, n, nq) = (64, 3000, 3 * SINGLE_BELOW);
        let mut next = continuous(0x51ed_2701u64);
        let items: Vec<f32> = (0..n * d).map(|_| next()).collect();
        let queries: Vec<f32> = (0..nq * d).map(|_| next()).collect();
        let index = ItemIndex::new(d, (0..n as u32).collect(), items).unwrap();
        let batch = index.search(&queries, 50, false).unwrap();
        for (qi, want) in batch.iter().enumerate() {
            let one = index
                .search(&queries[qi * d..(qi + 1) * d], 50, false)
                .unwrap();
            let bits = |l: &[(u32, f32)]| -> Vec<(u32, u32)> {
                l.iter().map(|&(i, s)| (i, s.to_bits())).collect()
            };
            assert_eq!(bits(&one[0]), bits(want), "query {qi}");
        }
    }

    #[test]
    fn single_queries_are_exact_on_wide_tables() {
        // Continuous values at d = 64 (where int8 bounds are tight, so the
        // pruning really prunes), k from 1 to 100, with exclusions.
        let (d, n) = (64, 3000);
        let mut next = continuous(0x9e37_79b9u64);
        let items: Vec<f32> = (0..n * d).map(|_| next()).collect();
        let index = ItemIndex::new(d, (0..n as u32).collect(), items.clone()).unwrap();
        for (t, k) in [1, 12, 100].into_iter().enumerate() {
            let q: Vec<f32> = (0..d).map(|_| next()).collect();
            let exclude: Vec<u32> = (0..n as u32).filter(|i| i % 5 == t as u32).collect();
            let got = index.search_excluding(&q, k, false, &[&exclude]).unwrap();
            let scores: Vec<f32> = items
                .chunks(d)
                .map(|v| q.iter().zip(v).map(|(a, b)| a * b).sum())
                .collect();
            let mut want = Vec::new();
            top_k(&scores, 0, k, &exclude, &mut want);
            let ids: Vec<u32> = got[0].iter().map(|r| r.0).collect();
            assert_eq!(ids, want, "k = {k}");
        }
    }

    #[test]
    fn exclusions_are_per_query() {
        let index = ItemIndex::new(1, vec![1, 2, 3], vec![3.0, 2.0, 1.0]).unwrap();
        let got = index
            .search_excluding(&[1.0, 1.0], 2, false, &[&[1], &[2, 3]])
            .unwrap();
        assert_eq!(got[0], vec![(2, 2.0), (3, 1.0)]);
        assert_eq!(got[1], vec![(1, 3.0)]);
        assert!(
            index
                .search_excluding(&[1.0], 2, false, &[&[], &[]])
                .is_err()
        );
    }

    #[test]
    fn small_catalogues_and_bad_shapes() {
        let index = ItemIndex::new(2, vec![7, 9], vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let got = index.search(&[0.2, 0.9], 5, false).unwrap();
        assert_eq!(got, vec![vec![(9, 0.9), (7, 0.2)]]);
        assert!(index.search(&[0.2, 0.9, 1.0], 5, false).is_err());
        assert!(ItemIndex::new(2, vec![1], vec![1.0]).is_err());
        assert!(index.search(&[0.2, 0.9], 0, false).unwrap()[0].is_empty());
    }
}
