//! One error type for the whole crate. Every message is one line that names the file, op or
//! setting at fault and what is wrong with it; the CLI prints it and exits non-zero.

use std::fmt;
use std::path::Path;

#[derive(Debug)]
pub enum Error {
    /// A user's file could not be read, parsed or written: names the file.
    File { path: String, msg: String },
    /// A GPU op was called with shapes or arguments it cannot take: names the op.
    Op { op: String, msg: String },
    /// The adapter, device, a shader or a wgpu validation error.
    Gpu(String),
    /// A configuration value, CLI argument or dataset description is wrong.
    Config(String),
    /// Anything else worth one line (a non-finite loss, a checkpoint mismatch, ...).
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn file(path: impl AsRef<Path>, msg: impl fmt::Display) -> Self {
        Error::File {
            path: path.as_ref().display().to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn op(op: impl Into<String>, msg: impl fmt::Display) -> Self {
        Error::Op {
            op: op.into(),
            msg: msg.to_string(),
        }
    }
    pub fn gpu(msg: impl fmt::Display) -> Self {
        Error::Gpu(msg.to_string())
    }
    pub fn config(msg: impl fmt::Display) -> Self {
        Error::Config(msg.to_string())
    }
    pub fn msg(msg: impl fmt::Display) -> Self {
        Error::Msg(msg.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep it to one line: collapse any newline a lower layer put in its message.
        let one = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        match self {
            Error::File { path, msg } => write!(f, "{path}: {}", one(msg)),
            Error::Op { op, msg } => write!(f, "{op}: {}", one(msg)),
            Error::Gpu(m) => write!(f, "gpu: {}", one(m)),
            Error::Config(m) => write!(f, "config: {}", one(m)),
            Error::Msg(m) => write!(f, "{}", one(m)),
        }
    }
}

impl std::error::Error for Error {}

/// Attach a file name to any error-like value: `read(p).map_err(at(p))?`.
pub fn at<E: fmt::Display>(path: impl AsRef<Path>) -> impl FnOnce(E) -> Error {
    let p = path.as_ref().to_path_buf();
    move |e| Error::file(p, e)
}
