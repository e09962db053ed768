//! Purchase sequences: the training windows cut from customers'
//! histories ([`History`]), and padded batches.
//!
//! Batches are right-aligned (padding on the left) so a sequence's most
//! recent item always sits at the last position and gets the same position
//! embedding, whatever its length; a batch is only as long as its longest
//! member, which matters for H&M where most customers bought a handful of
//! articles.

use crate::data::history::History;

/// The windows that make every item after a customer's first one a
/// target exactly once per epoch, cut from the end, each at most
/// `max_len` long. With `stride < max_len` windows overlap: each one
/// trains only its last `stride` positions and uses the ones before as
/// context, so no target sees fewer than `max_len - stride` earlier
/// items (where the customer has them). `stride = max_len` cuts
/// disjoint windows.
pub fn windows(history: &History, max_len: usize, stride: usize) -> Vec<Window> {
    let stride = stride.clamp(1, max_len);
    let mut out = Vec::new();
    for u in 0..history.n_users() as u32 {
        let n = history.items(u).len();
        if n < 2 {
            continue;
        }
        // A window ending at input index `end` (exclusive) feeds items
        // [end - len, end) and predicts [end - len + 1, end + 1).
        let mut end = n - 1;
        loop {
            let len = end.min(max_len);
            // The earliest window takes every target left.
            let first = end == len;
            let skip = if first { 0 } else { len - stride.min(len) };
            out.push(Window {
                user: u,
                end: end as u32,
                len: len as u32,
                skip: skip as u32,
            });
            if first {
                break;
            }
            end -= stride.min(len);
        }
    }
    out
}

/// One training window: inputs `items[end - len .. end]`, targets shifted
/// by one; the first `skip` positions are context only (no loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub user: u32,
    pub end: u32,
    pub len: u32,
    pub skip: u32,
}

/// A padded batch, row-major `[rows, len]`; item 0 is padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub len: usize,
    pub inputs: Vec<i64>,
    /// Next item at each position (0 where there is none).
    pub targets: Vec<i64>,
    /// Loss weight of each target (0 at padding).
    pub weights: Vec<f32>,
}

impl Batch {
    /// Position index of the first column: batches shorter than `max_len`
    /// use the last positions, matching right alignment.
    pub fn pos_offset(&self, max_len: usize) -> usize {
        max_len - self.len
    }

    /// Flat indices of positions that have a target, and those targets.
    pub fn targeted(&self) -> (Vec<i64>, Vec<i64>, Vec<f32>) {
        let mut idx = Vec::new();
        let mut tgt = Vec::new();
        let mut w = Vec::new();
        for (i, &t) in self.targets.iter().enumerate() {
            if t != 0 {
                idx.push(i as i64);
                tgt.push(t);
                w.push(self.weights[i]);
            }
        }
        (idx, tgt, w)
    }
}

/// Builds the batch for `windows`; with `revenue`, targets are weighted by
/// price / `mean_price` (items without a price weigh 1).
pub fn train_batch(seqs: &History, windows: &[Window], revenue: Option<f64>) -> Batch {
    let len = windows.iter().map(|w| w.len as usize).max().unwrap_or(1);
    let rows = windows.len();
    let mut b = Batch {
        rows,
        len,
        inputs: vec![0; rows * len],
        targets: vec![0; rows * len],
        weights: vec![0.0; rows * len],
    };
    for (r, w) in windows.iter().enumerate() {
        let items = seqs.items(w.user);
        let prices = seqs.prices(w.user);
        let (end, wl) = (w.end as usize, w.len as usize);
        let pad = len - wl;
        for j in 0..wl {
            let src = end - wl + j;
            let at = r * len + pad + j;
            b.inputs[at] = items[src] as i64;
            if j < w.skip as usize {
                continue;
            }
            b.targets[at] = items[src + 1] as i64;
            b.weights[at] = match revenue {
                Some(mean) if prices[src + 1] > 0.0 => (prices[src + 1] as f64 / mean) as f32,
                _ => 1.0,
            };
        }
    }
    b
}

/// Right-aligned last `max_len` items of each history, for scoring.
pub fn history_batch(histories: &[&[u32]], max_len: usize) -> (usize, Vec<i64>) {
    let len = histories
        .iter()
        .map(|h| h.len().min(max_len))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut inputs = vec![0i64; histories.len() * len];
    for (r, h) in histories.iter().enumerate() {
        let tail = &h[h.len().saturating_sub(max_len)..];
        let pad = len - tail.len();
        for (j, &i) in tail.iter().enumerate() {
            inputs[r * len + pad + j] = i as i64;
        }
    }
    (len, inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TimeUnit;
    use crate::data::split::tests::toy;

    #[test]
    fn windows_make_every_later_item_a_target_once() {
        // One user with 7 items, max_len 3: targets 1..=6 in windows of <= 3.
        let ds = toy(
            &[1; 7],
            &[1, 2, 3, 4, 5, 6, 7],
            &[1, 2, 3, 4, 5, 6, 7],
            TimeUnit::Day,
        );
        let rows: Vec<usize> = (0..7).collect();
        let s = History::build(&ds, &rows);
        let w = windows(&s, 3, 3);
        let mut targets: Vec<i64> = Vec::new();
        for win in &w {
            let b = train_batch(&s, std::slice::from_ref(win), None);
            assert!(b.len <= 3);
            targets.extend(b.targets.iter().copied().filter(|&t| t != 0));
        }
        targets.sort();
        assert_eq!(targets, vec![2, 3, 4, 5, 6, 7]);
        // The last window ends at the last input and is full length.
        assert_eq!(
            w[0],
            Window {
                user: 1,
                end: 6,
                len: 3,
                skip: 0
            }
        );
        // Overlapping windows: still each target once, and a trained
        // position of a later window has at least max_len - stride = 1 item
        // of context before it.
        let w = windows(&s, 3, 2);
        let mut targets: Vec<i64> = Vec::new();
        for win in &w {
            let b = train_batch(&s, std::slice::from_ref(win), None);
            for (j, &t) in b.targets.iter().enumerate() {
                if t != 0 {
                    targets.push(t);
                    if win.skip > 0 {
                        assert!(j >= 1, "a trained position lacks context");
                    }
                }
            }
        }
        targets.sort();
        assert_eq!(targets, vec![2, 3, 4, 5, 6, 7]);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].skip, 1);
    }

    #[test]
    fn batches_are_right_aligned_and_inputs_precede_targets() {
        let ds = toy(
            &[1, 1, 1, 2, 2],
            &[5, 6, 7, 8, 9],
            &[1, 2, 3, 1, 2],
            TimeUnit::Day,
        );
        let rows: Vec<usize> = (0..5).collect();
        let s = History::build(&ds, &rows);
        let w = windows(&s, 50, 50);
        let b = train_batch(&s, &w, None);
        assert_eq!(b.len, 2);
        assert_eq!(b.inputs, vec![5, 6, 0, 8]);
        assert_eq!(b.targets, vec![6, 7, 0, 9]);
        assert_eq!(b.weights, vec![1.0, 1.0, 0.0, 1.0]);
        assert_eq!(b.pos_offset(50), 48);
        let (idx, tgt, _) = b.targeted();
        assert_eq!(idx, vec![0, 1, 3]);
        assert_eq!(tgt, vec![6, 7, 9]);
        let (len, h) = history_batch(&[s.items(1), s.items(2)], 2);
        assert_eq!(len, 2);
        assert_eq!(h, vec![6, 7, 8, 9]);
    }
}
