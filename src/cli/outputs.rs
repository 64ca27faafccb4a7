//! The one rule every command follows before it writes: never write over one of its inputs.
//!
//! A command lists the files it reads and the files (or folders of files with names not known
//! in advance) it will write; [`refuse_overwriting_inputs`] compares them through links
//! (`same-file`: the same file under two names, a hard link, a symbolic link) and refuses with
//! one line before anything is written. Writing into a folder that also holds inputs is
//! allowed when no written name is an input, and [`shared_folder_note`] says so.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What a command reads and writes.
#[derive(Debug, Default)]
pub struct Plan {
    /// Files read (missing ones are ignored).
    pub inputs: Vec<PathBuf>,
    /// Files that will be written.
    pub writes: Vec<PathBuf>,
    /// Folders whose files are written under names not known in advance: no input may sit
    /// directly in one.
    pub write_dirs: Vec<PathBuf>,
    /// The flag(s) that chose the outputs, for the message (`--output`, `--save-pred`, ...).
    pub flag: &'static str,
}

fn same(a: &Path, b: &Path) -> bool {
    same_file::is_same_file(a, b).unwrap_or(false)
}

/// One line, before anything is written, when a planned write is one of the inputs or a
/// written folder holds an input.
pub fn refuse_overwriting_inputs(plan: &Plan) -> Result<()> {
    let inputs: Vec<&PathBuf> = plan.inputs.iter().filter(|p| p.is_file()).collect();
    for w in plan.writes.iter().filter(|w| w.exists()) {
        if let Some(i) = inputs.iter().find(|i| same(w, i)) {
            return Err(Error::file(
                w,
                format!(
                    "would be written over an input ({}): choose another {} (no command writes over its inputs)",
                    i.display(),
                    plan.flag
                ),
            ));
        }
    }
    for d in plan.write_dirs.iter().filter(|d| d.is_dir()) {
        if let Some(i) = inputs
            .iter()
            .find(|i| i.parent().is_some_and(|p| same(p, d)))
        {
            return Err(Error::file(
                d,
                format!(
                    "holds an input ({}) and would receive outputs: choose another {} (no command writes over its inputs)",
                    i.display(),
                    plan.flag
                ),
            ));
        }
    }
    Ok(())
}

/// A note when the outputs go into a folder that also holds inputs (allowed: no written name
/// is an input, [`refuse_overwriting_inputs`] checked it).
pub fn shared_folder_note(plan: &Plan) -> Option<String> {
    let dirs: Vec<&Path> = plan.writes.iter().filter_map(|w| w.parent()).collect();
    plan.inputs.iter().find_map(|i| {
        let p = i.parent()?;
        dirs.iter().any(|d| same(d, p)).then(|| {
            format!(
                "note: writing into {}, which also holds inputs; no written file has an input's name",
                p.display()
            )
        })
    })
}

/// `path` made absolute and free of `.`/`..` and links as far as it exists (the rest of it
/// appended as written): how a folder that is not created yet is compared with one that is.
fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // `..` folded lexically first (the part that does not exist yet cannot be resolved).
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            std::path::Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    let abs = lexical;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

/// One line when an output folder is a dataset folder or lies inside one: a run's checkpoints,
/// logs and NIfTI predictions there would sit among the scans, and the next listing of that
/// dataset could read them as scans. `outputs` are (folder, the flag that chose it).
pub fn refuse_outputs_inside(data: &Path, outputs: &[(&Path, &str)]) -> Result<()> {
    let root = resolved(data);
    for (dir, flag) in outputs {
        if resolved(dir).starts_with(&root) {
            return Err(Error::file(
                dir,
                format!(
                    "is inside the data folder {}: choose a {flag} outside it (a run writes checkpoints and NIfTI predictions that the next read of the dataset would take for scans)",
                    data.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The volume files (`.nii`, `.nii.gz`, `.h5`) below `root`, to `depth` levels: what a
/// command that reads a folder of volumes actually reads (a `metrics.csv` an earlier run left
/// there is not an input).
pub fn volumes_below(root: &Path, depth: usize) -> Vec<PathBuf> {
    files_below(root, depth)
        .into_iter()
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            n.ends_with(".nii") || n.ends_with(".nii.gz") || n.ends_with(".h5")
        })
        .collect()
}

/// Every file below `root` (the inputs of a dataset folder), to `depth` levels.
pub fn files_below(root: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if depth > 0 {
                out.extend(files_below(&p, depth - 1));
            }
        } else {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_inside_the_data_folder_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("ds");
        std::fs::create_dir_all(data.join("images")).unwrap();
        let inside = data.join("images").join("run");
        let spelled = d.path().join("x").join("..").join("ds");
        for o in [&data, &inside, &spelled] {
            let e = refuse_outputs_inside(&data, &[(o.as_path(), "--out")])
                .unwrap_err()
                .to_string();
            assert!(e.contains("inside the data folder"), "{e}");
        }
        let beside = d.path().join("ds_run");
        refuse_outputs_inside(&data, &[(beside.as_path(), "--out")]).unwrap();
    }

    #[test]
    fn an_output_that_is_an_input_is_refused_through_links() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("a.nii.gz");
        std::fs::write(&input, b"x").unwrap();
        let other = d.path().join("sub");
        std::fs::create_dir(&other).unwrap();
        // The same file under another spelling.
        let spelled = other.join("..").join("a.nii.gz");
        let plan = Plan {
            inputs: vec![input.clone()],
            writes: vec![spelled],
            write_dirs: vec![],
            flag: "--output",
        };
        let e = refuse_overwriting_inputs(&plan).unwrap_err().to_string();
        assert!(e.contains("would be written over an input"), "{e}");
        let plan = Plan {
            inputs: vec![input.clone()],
            writes: vec![d.path().join("b.nii.gz")],
            write_dirs: vec![],
            flag: "--output",
        };
        refuse_overwriting_inputs(&plan).unwrap();
        assert!(shared_folder_note(&plan).is_some());
        let plan = Plan {
            inputs: vec![input],
            writes: vec![],
            write_dirs: vec![d.path().to_path_buf()],
            flag: "--out",
        };
        assert!(refuse_overwriting_inputs(&plan).is_err());
    }
}
