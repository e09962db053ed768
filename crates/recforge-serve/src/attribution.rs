//! The business metric, online: which A/B arm's recommendations turn into
//! purchases, and for how much.
//!
//! Every article a response shows an identified customer is an impression
//! of the arm (variant) that answered. A purchase event is attributed to
//! the latest impression of that article to that customer within the
//! window, and its value (the event's price, else the tenant's price of
//! the article) is added to that impression. Conversion value per
//! impression of an arm is then the mean of its impressions' values, with a
//! normal-approximation 95% interval over impressions; the difference
//! between arms gets Welch's interval.
//!
//! Requests without a customer id cannot be attributed (they always go to
//! arm "a"), so they are not impressions here. What is kept is bounded:
//! per customer the latest [`PER_CUSTOMER`] impressions, and per tenant
//! [`Attribution::new`]'s `max_tracked` entries (impressions plus one per
//! response), the oldest going first once expired or when room is needed.
//! Impressions dropped before their window ended are counted as
//! `evicted`, so an undercount is visible, never silent. The state lives
//! in memory: it restarts with the server, as Prometheus counters do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Impressions remembered per customer (about twenty 12-article lists).
pub const PER_CUSTOMER: usize = 240;

struct Shown {
    article: String,
    at: f64,
    variant: &'static str,
    value: f64,
}

/// One arm's running totals.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Arm {
    pub responses: u64,
    pub impressions: u64,
    /// Impressions dropped before their window ended (memory bounds).
    pub evicted: u64,
    pub purchases: u64,
    pub revenue: f64,
    /// Sum over impressions of their value squared (for the interval).
    #[serde(skip)]
    revenue_sq: f64,
}

impl Arm {
    /// Mean attributed value per impression and its 95% half-width.
    pub fn value_per_impression(&self) -> (f64, f64) {
        let n = self.impressions as f64;
        if self.impressions == 0 {
            return (0.0, f64::NAN);
        }
        let mean = self.revenue / n;
        (mean, 1.96 * (self.variance() / n).sqrt())
    }

    fn variance(&self) -> f64 {
        let n = self.impressions as f64;
        if self.impressions < 2 {
            return f64::NAN;
        }
        let mean = self.revenue / n;
        ((self.revenue_sq - n * mean * mean) / (n - 1.0)).max(0.0)
    }
}

struct State {
    shown: HashMap<String, VecDeque<Shown>>,
    /// Every tracked response, oldest first: (when, customer).
    order: VecDeque<(f64, String)>,
    /// Impressions held in `shown`.
    tracked: usize,
    arms: BTreeMap<&'static str, Arm>,
    /// Purchase events seen, attributed or not.
    events: u64,
}

pub struct Attribution {
    window_s: f64,
    max_tracked: usize,
    state: Mutex<State>,
}

/// What the report route answers: each arm's figures, and arm b against
/// arm a when both have impressions.
#[derive(Debug, Serialize)]
pub struct Report {
    pub window_s: f64,
    pub purchase_events: u64,
    pub arms: BTreeMap<&'static str, ArmReport>,
    pub b_minus_a: Option<Difference>,
}

#[derive(Debug, Serialize)]
pub struct ArmReport {
    #[serde(flatten)]
    pub totals: Arm,
    pub value_per_impression: f64,
    /// 95% interval of the value per impression.
    pub ci95: [f64; 2],
}

#[derive(Debug, Serialize)]
pub struct Difference {
    pub value_per_impression: f64,
    pub ci95: [f64; 2],
}

impl Attribution {
    pub fn new(window_s: f64, max_tracked: usize) -> Self {
        Attribution {
            window_s,
            max_tracked,
            state: Mutex::new(State {
                shown: HashMap::new(),
                order: VecDeque::new(),
                tracked: 0,
                arms: BTreeMap::new(),
                events: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `articles` were shown to `customer` by arm `variant` at `now` (unix
    /// seconds).
    pub fn shown<'a>(
        &self,
        customer: &str,
        variant: &'static str,
        articles: impl ExactSizeIterator<Item = &'a str>,
        now: f64,
    ) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let n = articles.len();
        let arm = s.arms.entry(variant).or_default();
        arm.responses += 1;
        arm.impressions += n as u64;
        if n == 0 {
            return;
        }
        self.evict(s, now, n + 1);
        let list = s.shown.entry(customer.to_string()).or_default();
        for a in articles {
            if list.len() == PER_CUSTOMER
                && let Some(old) = list.pop_front()
            {
                s.tracked -= 1;
                if now - old.at <= self.window_s {
                    s.arms.entry(old.variant).or_default().evicted += 1;
                }
            }
            list.push_back(Shown {
                article: a.to_string(),
                at: now,
                variant,
                value: 0.0,
            });
            s.tracked += 1;
        }
        s.order.push_back((now, customer.to_string()));
    }

    /// Drops the oldest responses' impressions while they are expired, or
    /// while `room` more entries would not fit.
    fn evict(&self, s: &mut State, now: f64, room: usize) {
        while let Some((at, _)) = s.order.front() {
            let expired = now - at > self.window_s;
            let full = s.tracked + s.order.len() + room > self.max_tracked;
            if !expired && !full {
                break;
            }
            let Some((at, customer)) = s.order.pop_front() else {
                break;
            };
            let Some(list) = s.shown.get_mut(&customer) else {
                continue;
            };
            while list.front().is_some_and(|x| x.at <= at) {
                if let Some(old) = list.pop_front() {
                    s.tracked -= 1;
                    if !expired {
                        s.arms.entry(old.variant).or_default().evicted += 1;
                    }
                }
            }
            if list.is_empty() {
                s.shown.remove(&customer);
            }
        }
    }

    /// A purchase of `article` by `customer` at `now` for `value`: added to
    /// the latest impression that showed it within the window. Returns the
    /// arm it was attributed to.
    pub fn purchased(
        &self,
        customer: &str,
        article: &str,
        value: f64,
        now: f64,
    ) -> Option<&'static str> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let list = s.shown.get_mut(customer)?;
        let shown = list
            .iter_mut()
            .rev()
            .take_while(|x| now - x.at <= self.window_s)
            .find(|x| x.article == article && x.at <= now)?;
        let arm = s.arms.entry(shown.variant).or_default();
        arm.purchases += 1;
        arm.revenue += value;
        let before = shown.value;
        shown.value += value;
        arm.revenue_sq += shown.value * shown.value - before * before;
        Some(shown.variant)
    }

    /// Every arm's totals, by variant.
    pub fn arms(&self) -> BTreeMap<&'static str, Arm> {
        self.lock().arms.clone()
    }

    /// `n` purchase events arrived (attributed or not).
    pub fn received(&self, n: usize) {
        self.lock().events += n as u64;
    }

    pub fn purchase_events(&self) -> u64 {
        self.lock().events
    }

    pub fn report(&self) -> Report {
        let s = self.lock();
        let arms: BTreeMap<&'static str, ArmReport> = s
            .arms
            .iter()
            .map(|(&v, arm)| {
                let (mean, half) = arm.value_per_impression();
                (
                    v,
                    ArmReport {
                        totals: arm.clone(),
                        value_per_impression: mean,
                        ci95: [mean - half, mean + half],
                    },
                )
            })
            .collect();
        let b_minus_a = match (s.arms.get("a"), s.arms.get("b")) {
            (Some(a), Some(b)) if a.impressions > 1 && b.impressions > 1 => {
                let d = b.value_per_impression().0 - a.value_per_impression().0;
                let se = (a.variance() / a.impressions as f64
                    + b.variance() / b.impressions as f64)
                    .sqrt();
                Some(Difference {
                    value_per_impression: d,
                    ci95: [d - 1.96 * se, d + 1.96 * se],
                })
            }
            _ => None,
        };
        Report {
            window_s: self.window_s,
            purchase_events: s.events,
            arms,
            b_minus_a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchases_go_to_the_latest_impression_within_the_window() {
        let at = Attribution::new(100.0, 1_000);
        at.shown("c1", "a", ["x", "y"].into_iter(), 0.0);
        at.shown("c1", "b", ["y", "z"].into_iter(), 10.0);
        at.shown("c2", "a", ["x"].into_iter(), 10.0);
        // y: both arms showed it; the later (b) gets it.
        assert_eq!(at.purchased("c1", "y", 2.0, 20.0), Some("b"));
        assert_eq!(at.purchased("c1", "x", 1.0, 50.0), Some("a"));
        // Past the window (shown at 0, bought at 101).
        assert_eq!(at.purchased("c1", "x", 1.0, 101.0), None);
        // Never shown, or an unknown customer.
        assert_eq!(at.purchased("c1", "w", 1.0, 20.0), None);
        assert_eq!(at.purchased("c9", "x", 1.0, 20.0), None);
        at.received(5);
        let r = at.report();
        assert_eq!(r.purchase_events, 5);
        let a = &r.arms["a"];
        assert_eq!((a.totals.impressions, a.totals.purchases), (3, 1));
        assert!((a.value_per_impression - 1.0 / 3.0).abs() < 1e-12);
        let b = &r.arms["b"];
        assert_eq!((b.totals.impressions, b.totals.purchases), (2, 1));
        assert!((b.value_per_impression - 1.0).abs() < 1e-12);
        // Values per impression: a = [1, 0, 0], b = [2, 0]; sample
        // variances 1/3 and 2.
        let half_a = 1.96 * (1.0f64 / 3.0 / 3.0).sqrt();
        assert!((a.ci95[1] - (1.0 / 3.0 + half_a)).abs() < 1e-12);
        let d = r.b_minus_a.unwrap();
        let se = (1.0f64 / 3.0 / 3.0 + 2.0 / 2.0).sqrt();
        assert!((d.value_per_impression - 2.0 / 3.0).abs() < 1e-12);
        assert!((d.ci95[0] - (2.0 / 3.0 - 1.96 * se)).abs() < 1e-12);
    }

    #[test]
    fn memory_is_bounded_and_the_overflow_counted() {
        let at = Attribution::new(1e9, 300);
        let many: Vec<String> = (0..PER_CUSTOMER + 10).map(|i| format!("i{i}")).collect();
        at.shown("c1", "a", many.iter().map(String::as_str), 0.0);
        // The oldest ten fell out of the customer's list.
        assert_eq!(at.purchased("c1", "i0", 1.0, 1.0), None);
        assert_eq!(at.purchased("c1", "i10", 1.0, 1.0), Some("a"));
        assert_eq!(at.arms()["a"].evicted, 10);
        // A second customer's list needs room: c1's response goes whole.
        at.shown("c2", "a", many.iter().map(String::as_str), 1.0);
        assert_eq!(at.purchased("c1", "i20", 1.0, 2.0), None);
        assert_eq!(at.purchased("c2", "i20", 1.0, 2.0), Some("a"));
        let s = at.lock();
        assert_eq!(s.shown.len(), 1, "an emptied customer is forgotten");
        assert!(s.tracked + s.order.len() <= 300);
        drop(s);
        let arm = &at.arms()["a"];
        assert_eq!(arm.impressions, 2 * many.len() as u64);
        assert_eq!(arm.evicted, (10 + PER_CUSTOMER + 10) as u64);
    }

    #[test]
    fn expired_responses_leave_the_table() {
        let at = Attribution::new(10.0, 1_000);
        for c in 0..50 {
            at.shown(
                &format!("c{c}"),
                "a",
                ["x", "y"].into_iter(),
                c as f64 * 0.1,
            );
        }
        // Much later, one more response: everything before it expired.
        at.shown("late", "b", ["x"].into_iter(), 100.0);
        let s = at.lock();
        assert_eq!((s.shown.len(), s.tracked, s.order.len()), (1, 1, 1));
        drop(s);
        assert_eq!(at.arms()["a"].evicted, 0, "expiry is not eviction");
    }
}
