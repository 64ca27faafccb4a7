//! The pipeline registry: every (shader, entry point, override constants) a device of this
//! process has created a pipeline for, recorded where pipelines are created. `cargo test`
//! compares the set a 3D and a 2D training iteration, inference and the tuning candidates
//! create with the committed `tests/pipelines.list` (tests/pipelines.rs), and translates
//! every entry of that list for Vulkan, Metal and DX12 without a GPU.
//!
//! One line per pipeline: `<Shader> <entry> [NAME=value ...]`, constants sorted by name,
//! values as integers when they are whole (every constant of the engine is).

use super::Shader;
use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex;

/// One specialisation of a compute pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSpec {
    pub shader: Shader,
    pub entry: String,
    /// Override constants, sorted by name.
    pub constants: Vec<(String, f64)>,
}

impl PipelineSpec {
    pub fn new(shader: Shader, entry: &str, constants: &[(&str, f64)]) -> PipelineSpec {
        let mut constants: Vec<(String, f64)> =
            constants.iter().map(|&(k, v)| (k.to_string(), v)).collect();
        constants.sort_by(|a, b| a.0.cmp(&b.0));
        PipelineSpec {
            shader,
            entry: entry.to_string(),
            constants,
        }
    }

    /// Parses one line of the list (the [`fmt::Display`] form).
    pub fn parse(line: &str) -> Result<PipelineSpec> {
        let bad = |why: String| Error::msg(format!("pipeline list line '{line}': {why}"));
        let mut words = line.split_whitespace();
        let (Some(shader), Some(entry)) = (words.next(), words.next()) else {
            return Err(bad("expected '<Shader> <entry> [NAME=value ...]'".into()));
        };
        let shader = Shader::ALL
            .iter()
            .copied()
            .find(|s| format!("{s:?}") == shader)
            .ok_or_else(|| bad(format!("unknown shader '{shader}'")))?;
        let mut constants = vec![];
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| bad(format!("'{w}' is not NAME=value")))?;
            let v: f64 = v
                .parse()
                .map_err(|_| bad(format!("'{v}' is not a number")))?;
            constants.push((k, v));
        }
        Ok(PipelineSpec::new(shader, entry, &constants))
    }
}

impl fmt::Display for PipelineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.shader, self.entry)?;
        for (k, v) in &self.constants {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                write!(f, " {k}={}", *v as i64)?;
            } else {
                write!(f, " {k}={v}")?;
            }
        }
        Ok(())
    }
}

/// Lines of every pipeline created so far in this process (any device), sorted.
static CREATED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Records a pipeline being created.
pub(super) fn record(shader: Shader, entry: &str, constants: &[(&str, f64)]) {
    let line = PipelineSpec::new(shader, entry, constants).to_string();
    CREATED.lock().unwrap().insert(line);
}

/// Every pipeline created so far in this process, in list order.
pub fn created() -> Vec<PipelineSpec> {
    CREATED
        .lock()
        .unwrap()
        .iter()
        .map(|l| PipelineSpec::parse(l).expect("a recorded line parses"))
        .collect()
}

/// Reads a pipeline list: one [`PipelineSpec`] per line; blank lines and `#` comments skipped.
pub fn parse_list(text: &str) -> Result<Vec<PipelineSpec>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PipelineSpec::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_prints_and_parses_back() {
        let s = PipelineSpec::new(Shader::Conv, "conv_gemm", &[("BN", 64.0), ("BM", 32.0)]);
        assert_eq!(s.to_string(), "Conv conv_gemm BM=32 BN=64");
        assert_eq!(PipelineSpec::parse(&s.to_string()).unwrap(), s);
        let e = PipelineSpec::parse("Nope main").unwrap_err().to_string();
        assert!(
            e.contains("unknown shader 'Nope'") && !e.contains('\n'),
            "{e}"
        );
        let e = PipelineSpec::parse("Conv conv_gemm BM")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'BM' is not NAME=value"), "{e}");
    }
}
