//! Resuming a run: reading `last.safetensors` and its configuration, and restoring the
//! method's state (SS-Net's trainer and memory, or AD-MT's whole trainer) with the sampler,
//! the RNG streams and the best scores.

use super::*;

impl Run {
    /// Continue the run of `path` (its folder or its `last.safetensors`) with `overrides`
    /// applied to its configuration (e.g. `max_iterations` to train longer).
    pub fn resume(gpu: &Arc<Gpu>, path: &Path, overrides: &toml::Table) -> Result<Run> {
        let (cfg, contents, state) = Self::read_resume(path, overrides)?;
        let file = last_checkpoint(path);
        // A run split by `val_split` trains and validates on the cases it wrote.
        let train = match &cfg.val_split {
            Some(v) if cfg.own.is_none() => {
                let dir = file
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let split = RunSplit::read(dir, v)?;
                TrainSet::open_with(&cfg, Some((split, &dir.join(RUN_SPLITS))))?
            }
            _ => TrainSet::open(&cfg)?,
        };
        Self::restore(
            gpu,
            cfg,
            contents,
            state,
            train,
            None,
            &last_checkpoint(path),
        )
    }

    /// [`Run::resume`] on a given training set and validation cases (see [`Run::with_data`]).
    pub fn resume_with_data(
        gpu: &Arc<Gpu>,
        path: &Path,
        overrides: &toml::Table,
        train: TrainSet,
        val: Option<Vec<Case>>,
    ) -> Result<Run> {
        let (cfg, contents, state) = Self::read_resume(path, overrides)?;
        Self::restore(
            gpu,
            cfg,
            contents,
            state,
            train,
            val,
            &last_checkpoint(path),
        )
    }

    /// The configuration a resume of `path` would run with (nothing is opened but the
    /// checkpoint).
    pub fn resume_config(path: &Path, overrides: &toml::Table) -> Result<TrainConfig> {
        Ok(Self::read_resume(path, overrides)?.0)
    }

    pub(super) fn read_resume(
        path: &Path,
        overrides: &toml::Table,
    ) -> Result<(TrainConfig, checkpoint::Contents, RunState)> {
        let file = last_checkpoint(path);
        if !path.exists() {
            return Err(Error::file(path, "no such run folder or checkpoint"));
        }
        if path.is_dir() && !file.exists() {
            let again = if path.join("config.toml").is_file() {
                format!(
                    "start it again with `ssnet train --config {} --overwrite`",
                    path.join("config.toml").display()
                )
            } else {
                "start a run with `ssnet train`".to_string()
            };
            return Err(Error::file(
                path,
                format!("no checkpoint yet in this folder (no {LAST}): {again}"),
            ));
        }
        let contents = checkpoint::read(&file)?;
        let text = contents.metadata.get(META_CONFIG).ok_or_else(|| {
            Error::file(
                &file,
                format!("not a training checkpoint: no '{META_CONFIG}' metadata"),
            )
        })?;
        let mut table = text
            .parse::<toml::Table>()
            .map_err(|e| Error::file(&file, format!("bad {META_CONFIG} metadata: {e}")))?;
        // Where to write is the folder given, never a path stored in the checkpoint (a run
        // copied or moved elsewhere must not write into the original).
        for k in LOCATION_KEYS {
            table.remove(k);
        }
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        table.insert(
            "out".into(),
            toml::Value::String(dir.to_string_lossy().into_owned()),
        );
        let saved = TrainConfig::from_table(table, Some(&file.display().to_string()))?;
        let cfg = saved.with_overrides(overrides)?;
        let fixed: [(&str, bool); 6] = [
            ("method", cfg.method == saved.method),
            ("val_split", cfg.val_split == saved.val_split),
            ("dataset", cfg.dataset == saved.dataset),
            ("labelnum", cfg.labelnum == saved.labelnum),
            ("batch_size", cfg.batch_size == saved.batch_size),
            ("labeled_bs", cfg.labeled_bs == saved.labeled_bs),
        ];
        if let Some((k, _)) = fixed.iter().find(|(_, same)| !same) {
            return Err(Error::config(format!(
                "{k} cannot change when resuming (the sampler state depends on it)"
            )));
        }
        let st = contents.metadata.get(META_STATE).ok_or_else(|| {
            Error::file(
                &file,
                format!("not a training checkpoint: no '{META_STATE}' metadata"),
            )
        })?;
        let state: RunState = serde_json::from_str(st)
            .map_err(|e| Error::file(&file, format!("bad {META_STATE} metadata: {e}")))?;
        Ok((cfg, contents, state))
    }

    pub(super) fn restore(
        gpu: &Arc<Gpu>,
        cfg: TrainConfig,
        contents: checkpoint::Contents,
        state: RunState,
        train: TrainSet,
        val: Option<Vec<Case>>,
        file: &Path,
    ) -> Result<Run> {
        if train.kind != cfg.dataset {
            return Err(Error::config(format!(
                "dataset = {} but the training set is {}",
                cfg.dataset.name(),
                train.kind.name()
            )));
        }
        let s = &state.sampler;
        if s.labelled != (0..train.labelled).collect::<Vec<_>>()
            || s.unlabelled != (train.labelled..train.len).collect::<Vec<_>>()
        {
            return Err(Error::file(
                file,
                format!(
                    "the dataset changed since the checkpoint: it has {} labelled of {} items now",
                    train.labelled, train.len
                ),
            ));
        }
        let sampler = TwoStreamSampler::from_state(state.sampler.clone())
            .map_err(|e| Error::file(file, e))?;
        checkpoint::check_finite(contents.tensors.iter().map(|(k, (v, _))| (k, v))).map_err(
            |m| {
                Error::file(
                    file,
                    format!("{m}; resume from an earlier checkpoint instead"),
                )
            },
        )?;
        let learner = match cfg.method {
            Method::Ssnet => Learner::Ssnet(Box::new(Self::restore_ssnet(
                gpu, &cfg, contents, &state, file,
            )?)),
            Method::Admt => {
                let mut t = AdmtTrainer::from_contents(gpu, file, contents)?;
                if t.iter != state.iter {
                    return Err(Error::file(
                        file,
                        format!(
                            "the AD-MT state is at iteration {}, the run at {}",
                            t.iter, state.iter
                        ),
                    ));
                }
                // The run's settings (e.g. more iterations: the poly LR follows them).
                t.cfg = cfg.admt_config();
                Learner::Admt(Box::new(t))
            }
        };
        let mut train = train;
        let val = prepare(gpu, &cfg, &mut train, val)?;
        let elapsed_before = read_sidecar(&cfg.checkpoint_dir().join(LAST))
            .filter(|s| s.iteration == state.iter)
            .map_or(state.elapsed_s, |s| s.elapsed_s);
        // Everything is checked: only now is the run folder touched.
        for d in [cfg.out.clone(), cfg.checkpoint_dir(), cfg.log_dir()] {
            create_dir(&d)?;
        }
        remove_stale(&cfg);
        for log in [TRAIN_LOG, VAL_LOG] {
            truncate_log(&cfg.log_dir().join(log), state.iter)?;
        }
        let cfg_path = cfg.out.join("config.toml");
        std::fs::write(&cfg_path, cfg.to_toml()?)
            .map_err(|e| Error::file(&cfg_path, format!("cannot write: {e}")))?;
        Ok(Run {
            cfg,
            learner,
            train,
            val,
            sampler,
            aug_rng: state.aug_rng,
            step_rng: state.step_rng,
            best: state.best_dice.map(|d| (d, state.best_iter)),
            teachers: state.teachers.clone().unwrap_or_default(),
            last_dice: state.last_dice,
            elapsed_before,
            last_saved: Some(state.iter),
            verbose: true,
        })
    }

    /// SS-Net's trainer from `last.safetensors`: weights, momentum and prototype memory.
    pub(super) fn restore_ssnet(
        gpu: &Arc<Gpu>,
        cfg: &TrainConfig,
        contents: checkpoint::Contents,
        state: &RunState,
        file: &Path,
    ) -> Result<Trainer> {
        let mcfg = cfg.model_config();
        let mut values = BTreeMap::new();
        let mut momentum = BTreeMap::new();
        let mut memory = BTreeMap::new();
        for (k, (v, shape)) in contents.tensors {
            if let Some(p) = k.strip_prefix(MOMENTUM_PREFIX) {
                momentum.insert(p.to_string(), v);
            } else if let Some(c) = k.strip_prefix(MEMORY_PREFIX) {
                let c: usize = c
                    .parse()
                    .map_err(|_| Error::file(file, format!("bad memory tensor name '{k}'")))?;
                memory.insert(c, (v, shape));
            } else {
                values.insert(k, v);
            }
        }
        let model = Model::from_values(gpu, mcfg, spec::specs(mcfg)?, values)
            .map_err(|e| Error::file(file, e))?;
        let mut trainer = Trainer::new(model, cfg.trainer_config());
        trainer
            .restore(state.iter, state.lr, momentum)
            .map_err(|e| Error::file(file, e))?;
        for (c, (v, shape)) in memory {
            if c >= trainer.memory.entries.len() || shape.len() != 2 || shape[1] != FEAT_DIM {
                return Err(Error::file(
                    file,
                    format!(
                        "memory tensor of class {c} with shape {shape:?} does not fit the model"
                    ),
                ));
            }
            trainer.memory.entries[c] = Some(Tensor::from_f32(gpu, &v, &shape)?);
        }
        Ok(trainer)
    }
}
