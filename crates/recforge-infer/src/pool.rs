//! The live item pool: what can be recommended right now.
//!
//! Readers take an `Arc` of the current snapshot (a pointer copy under a
//! read lock held for nanoseconds) and search it for as long as they like;
//! an update builds a new snapshot aside and swaps the pointer, so a read
//! never waits for an update, and every search sees one consistent pool.
//! A sold-out article stays in the pool, marked unavailable (and can come
//! back in stock); searches never return it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::retrieve::ItemIndex;
use crate::{Error, Result};

/// One consistent state of the pool.
#[derive(Debug, Clone)]
pub struct PoolSnapshot {
    pub index: ItemIndex,
    /// Article id of each pool id (the ids `index` returns).
    names: HashMap<u32, String>,
    /// Pool id of each article id.
    by_name: HashMap<String, u32>,
    /// Index row of each pool id: updates and availability checks are
    /// lookups, not scans of a 10^5-row index.
    rows: HashMap<u32, usize>,
    next_id: u32,
    /// Incremented by every update.
    pub version: u64,
}

impl PoolSnapshot {
    pub fn article(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    pub fn id_of(&self, article: &str) -> Option<u32> {
        self.by_name.get(article).copied()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn row_of(&self, article: &str) -> Result<usize> {
        self.id_of(article)
            .and_then(|id| self.rows.get(&id).copied())
            .ok_or_else(|| Error::Invalid(format!("article `{article}` is not in the item pool")))
    }

    /// The vector of pool id `id`, if it is in the pool.
    pub fn vector_of(&self, id: u32) -> Option<&[f32]> {
        self.rows.get(&id).map(|&row| self.index.vector(row))
    }

    /// How many articles can be recommended now.
    pub fn available_len(&self) -> usize {
        self.index.available().iter().filter(|&&a| a).count()
    }

    /// Whether pool id `id` is in the pool and available.
    pub fn is_available(&self, id: u32) -> bool {
        self.rows
            .get(&id)
            .is_some_and(|&row| self.index.available()[row])
    }

    /// Adds an article (or replaces its vector) and makes it available.
    /// Returns its pool id.
    pub fn add(&mut self, article: &str, vector: &[f32]) -> Result<u32> {
        if let Some(id) = self.id_of(article) {
            let row = self.row_of(article)?;
            self.index.set_vector(row, vector)?;
            self.index.set_available(row, true);
            return Ok(id);
        }
        let id = self.next_id;
        self.index.push(id, vector)?;
        self.rows.insert(id, self.index.len() - 1);
        self.next_id += 1;
        self.names.insert(id, article.to_string());
        self.by_name.insert(article.to_string(), id);
        Ok(id)
    }

    pub fn set_available(&mut self, article: &str, available: bool) -> Result<()> {
        let row = self.row_of(article)?;
        self.index.set_available(row, available);
        Ok(())
    }

    pub fn remove(&mut self, article: &str) -> Result<()> {
        let row = self.row_of(article)?;
        let id = self.index.ids()[row];
        self.index.remove_row(row);
        // Later rows moved up by one.
        self.rows.remove(&id);
        for r in self.rows.values_mut() {
            if *r > row {
                *r -= 1;
            }
        }
        self.names.remove(&id);
        self.by_name.remove(article);
        Ok(())
    }

    /// The best `k` available articles for each query vector, with their
    /// scores, never any pool id in that query's `exclude` list (sorted).
    pub fn recommend(
        &self,
        queries: &[f32],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        self.index.search_excluding(queries, k, true, exclude)
    }
}

pub struct ItemPool {
    current: RwLock<Arc<PoolSnapshot>>,
    /// Serialises writers, so no update is lost between copy and swap.
    writer: Mutex<()>,
}

impl ItemPool {
    /// A pool of `articles` with pool ids `ids` (e.g. the model's item
    /// indices) and their vectors (rows of `dim`), all available.
    pub fn new(
        dim: usize,
        ids: Vec<u32>,
        articles: Vec<String>,
        vectors: Vec<f32>,
    ) -> Result<Self> {
        if ids.len() != articles.len() {
            return Err(Error::Shape {
                what: "article ids of the pool".into(),
                expected: ids.len(),
                got: articles.len(),
            });
        }
        let next_id = ids.iter().copied().max().map_or(0, |m| m + 1);
        let names: HashMap<u32, String> =
            ids.iter().copied().zip(articles.iter().cloned()).collect();
        let by_name: HashMap<String, u32> = articles.into_iter().zip(ids.iter().copied()).collect();
        if names.len() != ids.len() || by_name.len() != ids.len() {
            return Err(Error::Invalid(
                "the pool's ids and article ids must be distinct".into(),
            ));
        }
        let rows = ids.iter().enumerate().map(|(r, &id)| (id, r)).collect();
        let index = ItemIndex::new(dim, ids, vectors)?;
        Ok(ItemPool {
            current: RwLock::new(Arc::new(PoolSnapshot {
                index,
                names,
                by_name,
                rows,
                next_id,
                version: 0,
            })),
            writer: Mutex::new(()),
        })
    }

    /// The current pool; keep it for as long as a request needs one view.
    pub fn snapshot(&self) -> Arc<PoolSnapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies `change` to a copy of the pool and publishes the copy if
    /// `change` succeeds (all or nothing).
    pub fn update<T>(&self, change: impl FnOnce(&mut PoolSnapshot) -> Result<T>) -> Result<T> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (*self.snapshot()).clone();
        let out = change(&mut next)?;
        next.version += 1;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(out)
    }

    pub fn add(&self, article: &str, vector: &[f32]) -> Result<u32> {
        self.update(|s| s.add(article, vector))
    }

    pub fn set_available(&self, article: &str, available: bool) -> Result<()> {
        self.update(|s| s.set_available(article, available))
    }

    pub fn remove(&self, article: &str) -> Result<()> {
        self.update(|s| s.remove(article))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> ItemPool {
        // Three articles on a line: the query [1, 0] prefers a, then b, then c.
        ItemPool::new(
            2,
            vec![1, 2, 3],
            vec!["a".into(), "b".into(), "c".into()],
            vec![1.0, 0.0, 0.8, 0.2, 0.5, 0.5],
        )
        .unwrap()
    }

    #[test]
    fn new_sold_out_and_removed_articles() {
        let p = pool();
        let names = |s: &PoolSnapshot, l: &[(u32, f32)]| -> Vec<String> {
            l.iter()
                .map(|x| s.article(x.0).unwrap().to_string())
                .collect()
        };
        let new_id = p.add("new", &[2.0, 0.0]).unwrap();
        assert_eq!(new_id, 4);
        let s = p.snapshot();
        assert_eq!(
            names(&s, &s.recommend(&[1.0, 0.0], 2, &[]).unwrap()[0]),
            ["new", "a"]
        );
        p.set_available("a", false).unwrap();
        let s2 = p.snapshot();
        assert_eq!(
            names(&s2, &s2.recommend(&[1.0, 0.0], 2, &[]).unwrap()[0]),
            ["new", "b"]
        );
        // The old snapshot is unchanged: a reader keeps one consistent view.
        assert_eq!(
            names(&s, &s.recommend(&[1.0, 0.0], 2, &[]).unwrap()[0]),
            ["new", "a"]
        );
        p.set_available("a", true).unwrap();
        p.remove("new").unwrap();
        let s3 = p.snapshot();
        assert_eq!(
            names(&s3, &s3.recommend(&[1.0, 0.0], 1, &[]).unwrap()[0]),
            ["a"]
        );
        assert!(p.remove("nope").is_err());
        assert!(p.add("bad", &[1.0]).is_err());
        // A failed update publishes nothing.
        assert_eq!(p.snapshot().version, s3.version);
    }

    #[test]
    fn readers_never_see_sold_out_articles_while_a_writer_updates() {
        let p = pool();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    let mut reads = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < 100 {
                        let s = p.snapshot();
                        let got = s.recommend(&[1.0, 0.1], 3, &[]).unwrap();
                        for (id, _) in &got[0] {
                            assert!(s.is_available(*id), "sold-out article {id} served");
                        }
                        reads += 1;
                    }
                });
            }
            for round in 0..300 {
                p.set_available("a", round % 2 == 1).unwrap();
                if round % 50 == 0 {
                    p.add(&format!("new{round}"), &[0.1, 0.9]).unwrap();
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        // 300 toggles (the last one leaves "a" available) and 6 additions.
        let s = p.snapshot();
        assert_eq!(s.version, 306);
        assert_eq!(s.len(), 9);
        p.set_available("a", false).unwrap();
        let s = p.snapshot();
        let got = s.recommend(&[1.0, 0.0], 9, &[]).unwrap();
        assert_eq!(got[0].len(), 8);
        assert!(got[0].iter().all(|(id, _)| s.article(*id) != Some("a")));
    }
}
