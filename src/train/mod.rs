//! The training loop: presets, config, sampler, augmentation, logging, checkpoints, resume.
//!
//! - [`config`]: [`TrainConfig`] (every setting, TOML keys), the presets `la`, `acdc`
//!   (the reference scripts' defaults) and `sample` (the bundled demo), overrides, checks;
//! - [`sampler`]: the reference's two-stream batch sampler, seeded, with its state;
//! - [`augment`]: LA rot/flip + random crop (padding quirk included), ACDC rot/flip or
//!   rotation + nearest zoom;
//! - [`data`]: the training items (LA scans, ACDC slices), batches, validation / test cases;
//! - [`plan`] and [`own`]: a user's own dataset: the plan (network, patch, spacing, classes)
//!   and its preprocessed cases as training items;
//! - [`run`]: [`Run`], the loop with JSONL logs, validation, checkpoints and exact resume;
//! - [`valsplit`]: which cases validate an LA / ACDC run (`val_split`), written to the run's
//!   `splits.json`;
//! - [`validate`]: a network scored on the validation cases (Dice, and AD-MT's ACDC HD95);
//! - [`snapshot`] (PNG panels). Validation and the final predictions use [`crate::infer`].

pub mod augment;
pub mod config;
pub mod data;
pub mod learner;
pub mod own;
pub mod plan;
pub mod predict;
pub mod run;
pub mod sampler;
pub mod sidecar;
pub mod snapshot;
pub mod validate;
pub mod valsplit;

pub use config::{DatasetKind, Preset, TrainConfig};
pub use run::{Run, Summary};
pub use sampler::{Primary, TwoStreamSampler};
