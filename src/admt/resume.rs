//! Exact resume of an AD-MT run: one safetensors file holding the student, both teachers
//! (parameters and BatchNorm buffers) and the SGD momentum under the prefixes `student.`,
//! `teacher1.`, `teacher2.`, `momentum.`, and a small JSON ([`AdmtResume`]: model and run
//! configuration, step counter, next LR, the alternation, the RNG) in its metadata under
//! [`META_ADMT`]. One file, written atomically: the tensors and the counters cannot come from
//! two different moments. The bytes depend on the state only (sorted names and keys), so two
//! runs with one seed save identical files.

use super::schedule::TeacherSchedule;
use super::step::{AdmtConfig, AdmtTrainer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::checkpoint::{self, META_MODEL, META_VARIANT};
use crate::nn::{spec, Model, ModelConfig, Variant};
use crate::tensor::Tensor;
use rand_pcg::Pcg32;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Metadata key of the JSON state.
pub const META_ADMT: &str = "admt.state";

const MODELS: [&str; 3] = ["student.", "teacher1.", "teacher2."];
const MOMENTUM: &str = "momentum.";

/// Everything of an AD-MT trainer that is not a tensor.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdmtResume {
    pub model: ModelConfig,
    pub cfg: AdmtConfig,
    /// Completed iterations.
    pub iter: u64,
    /// The next step's learning rate.
    pub lr: f32,
    pub schedule: TeacherSchedule,
    pub rng: Pcg32,
}

impl AdmtTrainer {
    /// The trainer's non-tensor state.
    pub fn resume_state(&self) -> AdmtResume {
        AdmtResume {
            model: self.student.cfg,
            cfg: self.cfg.clone(),
            iter: self.iter,
            lr: self.lr,
            schedule: self.schedule.clone(),
            rng: self.rng.clone(),
        }
    }

    /// Write the whole trainer to `path` (see the module documentation).
    pub fn save_resume(&self, path: &Path) -> Result<()> {
        self.save_resume_with(path, &HashMap::new())
    }

    /// [`AdmtTrainer::save_resume`] with more metadata beside the trainer's (the training
    /// loop's run state and configuration).
    pub fn save_resume_with(&self, path: &Path, extra: &HashMap<String, String>) -> Result<()> {
        let mut tensors = BTreeMap::new();
        for (prefix, m) in MODELS
            .iter()
            .zip([&self.student, &self.teacher1, &self.teacher2])
        {
            let state = m.state()?;
            for s in m.specs() {
                tensors.insert(
                    format!("{prefix}{}", s.name),
                    (state[&s.name].clone(), s.shape.clone()),
                );
            }
        }
        for (k, t) in &self.momentum {
            tensors.insert(format!("{MOMENTUM}{k}"), (t.to_f32()?, t.shape().to_vec()));
        }
        let json = serde_json::to_string(&self.resume_state())
            .map_err(|e| Error::file(path, format!("cannot encode the AD-MT state: {e}")))?;
        let mut meta = extra.clone();
        meta.extend([
            (META_ADMT.to_string(), json),
            (
                META_MODEL.to_string(),
                serde_json::to_string(&self.student.cfg).unwrap_or_default(),
            ),
            (
                META_VARIANT.to_string(),
                self.student.variant().name().to_string(),
            ),
        ]);
        checkpoint::write(path, &tensors, &meta)
    }

    /// A trainer exactly as [`AdmtTrainer::save_resume`] left it.
    pub fn load_resume(gpu: &Arc<Gpu>, path: &Path) -> Result<AdmtTrainer> {
        Self::from_contents(gpu, path, checkpoint::read(path)?)
    }

    /// [`AdmtTrainer::load_resume`] from a file already read (`path` names it in errors).
    pub fn from_contents(
        gpu: &Arc<Gpu>,
        path: &Path,
        c: checkpoint::Contents,
    ) -> Result<AdmtTrainer> {
        let json = c.metadata.get(META_ADMT).ok_or_else(|| {
            Error::file(
                path,
                format!("not an AD-MT resume file (no '{META_ADMT}' metadata)"),
            )
        })?;
        let st: AdmtResume = serde_json::from_str(json)
            .map_err(|e| Error::file(path, format!("bad {META_ADMT} metadata: {e}")))?;
        let mut groups: [BTreeMap<String, Vec<f32>>; 4] = Default::default();
        for (k, (v, _)) in c.tensors {
            let (slot, name) = MODELS
                .iter()
                .chain([&MOMENTUM])
                .enumerate()
                .find_map(|(i, p)| k.strip_prefix(p).map(|n| (i, n.to_string())))
                .ok_or_else(|| Error::file(path, format!("unexpected tensor '{k}'")))?;
            groups[slot].insert(name, v);
        }
        let [s, t1, t2, mom] = groups;
        let model = |values: BTreeMap<String, Vec<f32>>, which: &str| -> Result<Model> {
            let specs = spec::specs_of(st.model, Variant::Admt)?;
            Model::from_values_as(gpu, st.model, Variant::Admt, specs, values)
                .map_err(|e| Error::file(path, format!("{which}: {e}")))
        };
        let student = model(s, "student")?;
        let teacher1 = model(t1, "teacher 1")?;
        let teacher2 = model(t2, "teacher 2")?;
        let mut momentum = BTreeMap::new();
        for (k, v) in mom {
            let p = student.params().get(&k).ok_or_else(|| {
                Error::file(path, format!("momentum for unknown parameter '{k}'"))
            })?;
            if v.len() != p.numel() {
                return Err(Error::file(
                    path,
                    format!(
                        "momentum '{k}' has {} values for {} parameters",
                        v.len(),
                        p.numel()
                    ),
                ));
            }
            momentum.insert(k, Tensor::from_f32(gpu, &v, p.shape())?);
        }
        let mut t = AdmtTrainer::new(student, teacher1, teacher2, st.cfg, st.rng.clone())?;
        // `new` drew a first period from the RNG: put back the saved alternation and RNG.
        t.schedule = st.schedule;
        t.rng = st.rng;
        t.iter = st.iter;
        t.lr = st.lr;
        t.momentum = momentum;
        Ok(t)
    }
}
