//! The library's one error type. Every variant that comes from user data names
//! the file and, where it can, the column and line, so the message alone says
//! what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the file is empty (expected a header line and at least one data row)", file.display())]
    EmptyFile { file: PathBuf },
    #[error("{}: missing column `{column}` (the header has: {found})", file.display())]
    MissingColumn {
        file: PathBuf,
        column: String,
        found: String,
    },
    #[error("{}: line {line}, column `{column}`: {msg}", file.display())]
    BadValue {
        file: PathBuf,
        line: u64,
        column: String,
        msg: String,
    },
    /// A bad value in a Parquet file (rows counted from 1).
    #[error("{}: row {row}, column `{column}`: {msg}", file.display())]
    BadRow {
        file: PathBuf,
        row: u64,
        column: String,
        msg: String,
    },
    #[error("{}: could not parse the CSV{}: {source}", file.display(), lines.map(|(a, b)| format!(" in lines {a}..={b}")).unwrap_or_default())]
    Csv {
        file: PathBuf,
        lines: Option<(u64, u64)>,
        #[source]
        source: polars::error::PolarsError,
    },
    #[error("{}: {source}", file.display())]
    Parquet {
        file: PathBuf,
        #[source]
        source: polars::error::PolarsError,
    },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    /// A config value, flag or argument that cannot be used as given.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Data that cannot support what was asked, though every value is
    /// well-formed (a split part left empty, too few purchases to learn from,
    /// two files that do not pair up).
    #[error("unusable data: {0}")]
    Data(String),
    /// The run could not start or go on for a reason outside the config and
    /// the data (a device missing, a run directory already in use, a run
    /// with nothing to export).
    #[error("cannot run: {0}")]
    Runtime(String),
    /// Training could not go on (a non-finite loss, a device failure); the
    /// message says what was kept.
    #[error("training stopped: {0}")]
    Training(String),
    /// From the inference crate: a bundle that does not check out, a shape
    /// mismatch in serving.
    #[error(transparent)]
    Infer(#[from] recforge_infer::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub fn bad_value(
        file: impl Into<PathBuf>,
        line: u64,
        column: &str,
        msg: impl Into<String>,
    ) -> Self {
        Error::BadValue {
            file: file.into(),
            line,
            column: column.to_string(),
            msg: msg.into(),
        }
    }
}
