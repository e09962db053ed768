//! Result tables: printed, and written as JSON + Markdown for `experiments/results/`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::eval::Metrics;
use crate::util::fsutil::write_atomic;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub metrics: Vec<Metrics>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub title: String,
    pub dataset: String,
    /// Free-form description of the protocol (split, target period, masking).
    pub protocol: String,
    pub rows: Vec<Row>,
    /// Whether the data has prices; without them revenue is shown as n/a.
    pub has_price: bool,
    /// Markdown appended after the tables (e.g. a run's per-epoch curve).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// Structured form of further results shown in `notes`.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
}

fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

impl Table {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# {}\n\nDataset: `{}`. {}\n",
            self.title, self.dataset, self.protocol
        );
        let Some(first) = self.rows.first() else {
            return s + &self.notes;
        };
        for (ki, m0) in first.metrics.iter().enumerate() {
            let cols = m0.columns();
            s.push_str(&format!(
                "\n| model | users | {} |\n",
                cols.iter()
                    .map(|c| c.0.as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
            s.push_str(&format!("|---|---:|{}\n", "---:|".repeat(cols.len())));
            for r in &self.rows {
                let m = &r.metrics[ki];
                let vals: Vec<String> = m
                    .columns()
                    .iter()
                    .map(|(name, v)| {
                        if !self.has_price && name.starts_with("RevPerImp") {
                            "n/a".to_string()
                        } else {
                            fmt(*v)
                        }
                    })
                    .collect();
                s.push_str(&format!(
                    "| {} | {} | {} |\n",
                    r.name,
                    m.users,
                    vals.join(" | ")
                ));
            }
        }
        if !self.notes.is_empty() {
            s.push('\n');
            s.push_str(&self.notes);
        }
        s
    }

    /// Writes `<dir>/<stem>.json` and `<dir>/<stem>.md`; returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        let json = dir.join(format!("{stem}.json"));
        let md = dir.join(format!("{stem}.md"));
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| Error::invalid(&json, e.to_string()))?;
        write_atomic(&json, &bytes)?;
        write_atomic(&md, self.markdown().as_bytes())?;
        Ok((json, md))
    }
}
