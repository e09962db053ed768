//! The server's TOML configuration: where to listen, where the bundles
//! live, and one section per tenant (client).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen address; loopback unless an operator opens it on purpose.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// 0 picks a free port (tests).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Directory holding one bundle directory per model (relative paths
    /// are resolved against the config file's directory).
    pub models_dir: PathBuf,
    /// Bearer token of the admin routes (items, availability, reload).
    /// Either this or `admin_token_env` (the name of an environment
    /// variable holding it), so the secret need not sit in the file.
    #[serde(default)]
    pub admin_token: Option<String>,
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest `k` a client may ask for.
    #[serde(default = "default_max_k")]
    pub max_k: usize,
    /// Worker threads of the HTTP runtime (default: one per core).
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long a client may take to send a request's headers, in ms; a
    /// slower (or idle keep-alive) connection is closed.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's body, in ms (408).
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Deadline of a whole request once its headers are in, body and work
    /// included, in ms (503).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// On shutdown, how long readiness says 503 while connections are
    /// still accepted, before the listener closes, in ms (0: close at
    /// once). Give load balancers time to stop sending.
    #[serde(default)]
    pub drain_delay_ms: u64,
    /// On shutdown, how long requests in flight get to finish, in ms.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Where each tenant's journal of live changes and events lives
    /// (`STATE_DIR/TENANT.journal`), replayed at start. Without it, item
    /// changes and events last until the server stops.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Entries each tenant keeps for attributing purchases (impressions,
    /// plus one per response; an estimated 100 bytes each, not measured); the oldest go first
    /// when room is needed, counted as evicted.
    #[serde(default = "default_max_tracked")]
    pub max_tracked_impressions: usize,
    /// One JSON line per request on stderr (request id, route, status,
    /// time): `"off"` (default), `"all"`, or a share such as `0.01`.
    #[serde(default)]
    pub access_log: AccessLog,
    /// Missing reads as empty, so that `check` can say what to add.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
}

pub use recforge_infer::Objective;

/// Which requests get an access-log line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum AccessLog {
    #[default]
    Off,
    All,
    /// This share of requests, picked by a hash of the request id (so a
    /// sampled request is logged whole, wherever it is looked at).
    Sample(f64),
}

impl AccessLog {
    pub fn logs(self, request_id: &str) -> bool {
        match self {
            AccessLog::Off => false,
            AccessLog::All => true,
            AccessLog::Sample(p) => {
                // Mixed: the server's own ids (r1, r2, ...) differ only in
                // their last characters.
                let h = crate::tenant::mix(recforge_infer::bundle::fnv1a(request_id));
                ((h >> 11) as f64 / (1u64 << 53) as f64) < p
            }
        }
    }
}

impl<'de> Deserialize<'de> for AccessLog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Share(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "off" => Ok(AccessLog::Off),
            Raw::Word(w) if w == "all" => Ok(AccessLog::All),
            Raw::Share(p) if (0.0..=1.0).contains(&p) => Ok(AccessLog::Sample(p)),
            _ => Err(serde::de::Error::custom(
                "access_log: use \"off\", \"all\" or a share between 0 and 1",
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Bundle directory name under `models_dir` (variant "a").
    pub bundle: String,
    #[serde(default)]
    pub objective: Objective,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Never recommend what the customer already bought.
    #[serde(default)]
    pub exclude_purchased: bool,
    /// Customers' purchase histories and attributes (JSON lines, written
    /// by `recforge serving-data`), so a request can name a customer id.
    #[serde(default)]
    pub customers: Option<PathBuf>,
    /// Article prices (`article_id,price` CSV, also written by
    /// `recforge serving-data`), for the revenue objective.
    #[serde(default)]
    pub prices: Option<PathBuf>,
    /// A second bundle served to a share of the customers.
    #[serde(default)]
    pub ab: Option<AbConfig>,
    /// The day histories' ages are counted from (`YYYY-MM-DD`), to serve
    /// data as of its served day; without it, the server's clock (UTC).
    #[serde(default)]
    pub today: Option<String>,
    /// Purchases kept per customer history (the latest; events extend it).
    #[serde(default = "default_max_history")]
    pub max_history: usize,
    /// How long after an impression a purchase of that article by that
    /// customer is attributed to it, in seconds (default 7 days).
    #[serde(default = "default_attribution_window_s")]
    pub attribution_window_s: u64,
    /// A ranking bundle's candidate sizes for this client (keys as in a
    /// pipeline's `[candidates]`; each at most the bundle's, missing keys
    /// keep the bundle's).
    #[serde(default)]
    pub candidates: Option<CandidateSizes>,
}

/// Per-source candidate sizes a tenant sets (None: the bundle's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateSizes {
    pub repurchase: Option<usize>,
    pub popular: Option<usize>,
    pub age_popular: Option<usize>,
    pub copurchase: Option<usize>,
    pub same_product: Option<usize>,
    pub two_tower: Option<usize>,
    pub sasrec: Option<usize>,
    pub seeds: Option<usize>,
}

impl CandidateSizes {
    /// The bundle's sizes with these set over them.
    pub fn over(
        &self,
        b: &recforge_infer::rank::sources::CandidateConfig,
    ) -> recforge_infer::rank::sources::CandidateConfig {
        let mut c = b.clone();
        let set = |slot: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut c.repurchase, self.repurchase);
        set(&mut c.popular, self.popular);
        set(&mut c.age_popular, self.age_popular);
        set(&mut c.copurchase, self.copurchase);
        set(&mut c.same_product, self.same_product);
        set(&mut c.two_tower, self.two_tower);
        set(&mut c.sasrec, self.sasrec);
        set(&mut c.seeds, self.seeds);
        c
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbConfig {
    /// Bundle directory name of variant "b".
    pub bundle: String,
    /// Share of customers (by a stable hash of their id) sent to "b".
    pub share: f64,
}

fn default_bind() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    8080
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_max_k() -> usize {
    1000
}
fn default_alpha() -> f64 {
    1.0
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_shutdown_grace_ms() -> u64 {
    30_000
}
fn default_max_tracked() -> usize {
    5_000_000
}
fn default_max_history() -> usize {
    200
}
fn default_attribution_window_s() -> u64 {
    7 * 86_400
}

impl Config {
    /// Reads and checks `path`; relative paths inside become relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::read_text(path)?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve(base);
        cfg.check().map_err(|msg| Error::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.models_dir);
        if let Some(p) = self.state_dir.as_mut() {
            fix(p);
        }
        for t in self.tenants.values_mut() {
            if let Some(p) = t.customers.as_mut() {
                fix(p);
            }
            if let Some(p) = t.prices.as_mut() {
                fix(p);
            }
        }
    }

    /// Everything that can be wrong without reading a bundle.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.tenants.is_empty() {
            return Err("no tenants: add a [tenants.NAME] section".into());
        }
        if self.max_k == 0 || self.max_body_bytes == 0 {
            return Err("`max_k` and `max_body_bytes` must be positive".into());
        }
        if self.header_timeout_ms == 0 || self.body_timeout_ms == 0 || self.request_timeout_ms == 0
        {
            return Err(
                "`header_timeout_ms`, `body_timeout_ms` and `request_timeout_ms` must be positive"
                    .into(),
            );
        }
        match (&self.admin_token, &self.admin_token_env) {
            (Some(_), Some(_)) => {
                return Err("give `admin_token` or `admin_token_env`, not both".into());
            }
            (None, None) => {
                return Err("`admin_token` (or `admin_token_env`) is required: the admin routes change what is served".into());
            }
            _ => {}
        }
        for (name, t) in &self.tenants {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "tenant name `{name}`: use letters, digits, `_` or `-`"
                ));
            }
            if !t.alpha.is_finite() || t.alpha < 0.0 {
                return Err(format!(
                    "tenants.{name}.alpha must be a non-negative number"
                ));
            }
            if let Some(d) = &t.today
                && recforge_infer::dates::parse_ymd(d).is_none()
            {
                return Err(format!("tenants.{name}.today = `{d}`: use YYYY-MM-DD"));
            }
            if t.max_history == 0 {
                return Err(format!("tenants.{name}.max_history must be positive"));
            }
            if t.attribution_window_s == 0 {
                return Err(format!(
                    "tenants.{name}.attribution_window_s must be a positive number of seconds"
                ));
            }
            if let Some(ab) = &t.ab
                && !(ab.share > 0.0 && ab.share < 1.0)
            {
                return Err(format!(
                    "tenants.{name}.ab.share must lie strictly between 0 and 1"
                ));
            }
        }
        Ok(())
    }

    /// The admin token, read from the environment if configured so.
    pub fn token(&self) -> Result<String> {
        let token = match (&self.admin_token, &self.admin_token_env) {
            (Some(t), _) => t.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                Error::Invalid(format!(
                    "environment variable `{var}` (admin_token_env) is not set"
                ))
            })?,
            (None, None) => return Err(Error::Invalid("no admin token configured".into())),
        };
        if token.len() < 16 {
            return Err(Error::Invalid(
                "the admin token must be at least 16 characters".into(),
            ));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> std::result::Result<Config, String> {
        let text = format!("models_dir = \"m\"\n{extra}");
        let cfg: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
        cfg.check()?;
        Ok(cfg)
    }

    #[test]
    fn access_log_settings_and_sampling() {
        let base = "admin_token = \"0123456789abcdef\"\n[tenants.hm]\nbundle = \"x\"\n";
        let with = |v: &str| parse(&format!("access_log = {v}\n{base}"));
        assert_eq!(parse(base).unwrap().access_log, AccessLog::Off);
        assert_eq!(with("\"all\"").unwrap().access_log, AccessLog::All);
        assert_eq!(with("0.25").unwrap().access_log, AccessLog::Sample(0.25));
        for bad in ["\"some\"", "1.5", "-0.1"] {
            assert!(with(bad).unwrap_err().contains("access_log"), "{bad}");
        }
        // The server's own ids (r1, r2, ...): about the share asked for,
        // and the same id always the same way.
        let logged = (1..=10_000)
            .filter(|i| AccessLog::Sample(0.25).logs(&format!("r{i}")))
            .count();
        assert!((2_200..=2_800).contains(&logged), "{logged} of 10000");
        // Not in runs: every block of 100 consecutive ids gets its share.
        for block in 0..100 {
            let n = (1..=100)
                .filter(|i| AccessLog::Sample(0.25).logs(&format!("r{}", block * 100 + i)))
                .count();
            assert!(
                (8..=45).contains(&n),
                "ids {}..: {n} of 100 logged",
                block * 100
            );
        }
        assert_eq!(
            AccessLog::Sample(0.25).logs("r7"),
            AccessLog::Sample(0.25).logs("r7")
        );
        assert!(!AccessLog::Off.logs("r1") && AccessLog::All.logs("r1"));
    }

    #[test]
    fn defaults_and_refusals() {
        let ok =
            parse("admin_token = \"0123456789abcdef\"\n[tenants.hm]\nbundle = \"x\"\n").unwrap();
        assert_eq!(
            (ok.bind.as_str(), ok.port, ok.max_k),
            ("127.0.0.1", 8080, 1000)
        );
        assert_eq!(ok.tenants["hm"].objective, Objective::Purchase);
        assert_eq!(ok.token().unwrap(), "0123456789abcdef");
        let cases = [
            ("[tenants.hm]\nbundle = \"x\"\n", "admin_token"),
            ("admin_token = \"0123456789abcdef\"\n", "no tenants"),
            (
                "admin_token = \"0123456789abcdef\"\n[tenants.hm]\nbundle = \"x\"\n[tenants.hm.ab]\nbundle = \"y\"\nshare = 1.0\n",
                "share",
            ),
            (
                "admin_token = \"0123456789abcdef\"\n[tenants.\"a b\"]\nbundle = \"x\"\n",
                "tenant name",
            ),
            (
                "admin_token = \"0123456789abcdef\"\n[tenants.hm]\nbundle = \"x\"\nobjective = \"clicks\"\n",
                "clicks",
            ),
            (
                "admin_token = \"0123456789abcdef\"\n[tenants.hm]\nbundle = \"x\"\nbundel = \"y\"\n",
                "bundel",
            ),
            (
                "admin_token = \"0123456789abcdef\"\n[tenants.hm]\nbundle = \"x\"\ntoday = \"2020-9-23\"\n",
                "today",
            ),
            (
                "admin_token = \"0123456789abcdef\"\n[tenants.hm]\nbundle = \"x\"\nattribution_window_s = 0\n",
                "attribution_window_s",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let short = parse("admin_token = \"short\"\n[tenants.hm]\nbundle = \"x\"\n").unwrap();
        assert!(short.token().is_err());
    }
}
