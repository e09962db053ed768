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

use crate::{Error, Result};

pub const QUERY_BLOCK: usize = 512;
pub const ITEM_CHUNK: usize = 512;

/// Item embeddings (row-major, one row per item) with their item ids and
/// availability.
#[derive(Debug, Clone)]
pub struct ItemIndex {
    dim: usize,
    ids: Vec<u32>,
    vecs: Vec<f32>,
    available: Vec<bool>,
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
        Ok(ItemIndex {
            dim,
            ids,
            vecs,
            available,
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
        Ok(())
    }

    /// Removes row `row` (later rows move up by one).
    pub fn remove_row(&mut self, row: usize) {
        self.ids.remove(row);
        self.available.remove(row);
        self.vecs.drain(row * self.dim..(row + 1) * self.dim);
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
        if queries.len() % self.dim != 0 {
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
                    // threshold; its maximum (a vectorised fold) says so.
                    let top = group.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if top < run.threshold {
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
            }
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
