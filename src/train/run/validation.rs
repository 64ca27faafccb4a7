//! Validation during a run: the cases, SS-Net's validation, AD-MT's (student and teachers,
//! as the official code) and what is said and saved after each.

use super::*;

impl Run {
    /// Read the validation cases, unless they are.
    pub(super) fn load_validation_cases(&mut self) -> Result<()> {
        if self.val.is_none() {
            self.val = Some(validation_cases_of(&self.cfg, self.train.split.as_ref())?);
        }
        Ok(())
    }

    /// The validation cases read (`None` when there are none).
    pub(super) fn cases(&self) -> Option<&[Case]> {
        self.val.as_deref().filter(|v| !v.is_empty())
    }

    /// Where the snapshot PNG of this iteration's validation goes, when enabled.
    pub(super) fn snapshot_path(&self) -> Option<PathBuf> {
        self.cfg.snapshots.then(|| {
            self.cfg
                .log_dir()
                .join("snapshots")
                .join(format!("iter_{:06}.png", self.learner.iter()))
        })
    }

    /// Validate now: LA sliding window on the test list, ACDC slice-wise on the val list
    /// (or the cases of `val_split`); mean Dice over cases and foreground classes (a class
    /// absent from a prediction scores 0). Writes a snapshot PNG of the first case when
    /// enabled. `None` without cases. AD-MT: the student's scores.
    pub fn validate(&mut self) -> Result<Option<(f64, Vec<f64>)>> {
        let snapshot = self.snapshot_path();
        self.load_validation_cases()?;
        let Some(cases) = self.cases() else {
            return Ok(None);
        };
        let s = score(
            self.learner.model(),
            &self.cfg,
            cases,
            false,
            snapshot.as_deref(),
        )?;
        Ok(Some((s.dice, s.class_dice)))
    }

    /// AD-MT's validation, as its official code: the student and teacher 1 (and teacher 2
    /// with the 2D (ACDC) recipe, which also gives each class's HD95) scored in eval mode;
    /// the student's PNG snapshot. `None` without cases.
    pub(super) fn validate_admt(&mut self) -> Result<Option<(Scores, Scores, Option<Scores>)>> {
        let snapshot = self.snapshot_path();
        self.load_validation_cases()?;
        let cfg = &self.cfg;
        let acdc = cfg.dataset == DatasetKind::Acdc;
        let (Some(cases), Learner::Admt(t)) = (self.cases(), &self.learner) else {
            return Ok(None);
        };
        let student = score(&t.student, cfg, cases, acdc, snapshot.as_deref())?;
        let t1 = score(&t.teacher1, cfg, cases, acdc, None)?;
        let t2 = if acdc {
            Some(score(&t.teacher2, cfg, cases, acdc, None)?)
        } else {
            None
        };
        Ok(Some((student, t1, t2)))
    }

    /// Train until `max_iterations`, validating and checkpointing on the way. A failing step
    /// (e.g. a non-finite loss) ends the run with its error; the last checkpoint written
    /// stays as it was.
    pub fn train(&mut self) -> Result<Summary> {
        self.train_until(self.cfg.max_iterations)
    }

    /// [`Run::train`], stopping after iteration `stop` (at most `max_iterations`) as an
    /// interrupted run would: the schedules still follow `max_iterations` (AD-MT's poly LR
    /// depends on it), and `last.safetensors` is written at `stop` as at the end.
    pub fn train_until(&mut self, stop: u64) -> Result<Summary> {
        let max = self.cfg.max_iterations;
        let start_iter = self.learner.iter();
        let pb = if self.verbose {
            ProgressBar::new(max)
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} ETA {eta} {msg}")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_position(start_iter);
        pb.reset_eta();
        let r = self.train_loop(&pb, stop.min(self.cfg.max_iterations));
        match &r {
            Ok(_) => pb.finish(),
            Err(_) => pb.abandon(),
        }
        r
    }

    pub(super) fn say(&self, pb: &ProgressBar, line: &str) {
        if self.verbose {
            pb.suspend(|| println!("{line}"));
        }
    }

    /// Say what validates this run (when a validation falls within iterations
    /// `start+1..=stop`): how many cases of which list, when; for LA's default, that the
    /// best checkpoint is selected on the test cases, as the reference does.
    pub(super) fn say_validation(&self, pb: &ProgressBar, start: u64, stop: u64, epoch_len: u64) {
        let Some(n) = self.val.as_ref().map(Vec::len).filter(|&n| n > 0) else {
            return;
        };
        if !(start + 1..=stop).any(|it| self.cfg.validates_after(it, epoch_len)) {
            return;
        }
        let when = match self.cfg.val_epochs() {
            Some(k) => format!(
                "at the end of epochs 0, {k}, {}, ... (epochs of {epoch_len} iterations) and after iteration {}",
                2 * k,
                self.cfg.max_iterations
            ),
            None => format!(
                "every {} iterations from iteration {}",
                self.cfg.val_interval,
                self.cfg.val_start.max(1).div_ceil(self.cfg.val_interval) * self.cfg.val_interval
            ),
        };
        let ids: Vec<&str> = self.val.iter().flatten().map(|c| c.id.as_str()).collect();
        let shown = if ids.len() > 8 {
            format!("{}, ...", ids[..8].join(", "))
        } else {
            ids.join(", ")
        };
        self.say(
            pb,
            &format!(
                "validation on {n} cases of {} ({shown}), {when}",
                validation_source(&self.cfg, self.train.split.as_ref())
            ),
        );
        if self.cfg.dataset == DatasetKind::La
            && self.cfg.own.is_none()
            && self.train.split.is_none()
        {
            self.say(
                pb,
                "note: the best checkpoint is selected on the test cases (test.list), as the reference does; --val-split holdout:N (or val, or a list file) validates on held-out cases instead",
            );
        }
    }

    /// AD-MT's validation after iteration `it` (module docs): the scores logged, the
    /// student's best kept as `best.safetensors`, teacher 1's as `best_teacher.safetensors`.
    pub(super) fn admt_validation(
        &mut self,
        pb: &ProgressBar,
        it: u64,
        epoch: u64,
        val_log: &Path,
        t_start: &Instant,
    ) -> Result<()> {
        let elapsed = |before: f64| before + t_start.elapsed().as_secs_f64();
        let Some((student, t1, t2)) = self.validate_admt()? else {
            return Ok(());
        };
        self.last_dice = Some(student.dice);
        // The student's best is kept unrounded (the official code: `best_dice_stu =
        // dice_sample_stu`, LA too); teacher 1's as SS-Net's ([`best_as_kept`]: LA's
        // `best_dice = round(dice_sample, 4)`, ACDC unrounded); teacher 2's unrounded.
        let new_student = improves(student.dice, self.best);
        if new_student {
            self.best = Some((student.dice, it));
            self.save_best(student.dice, elapsed(self.elapsed_before))?;
        }
        let new_t1 = improves(t1.dice, self.teachers.teacher1);
        if new_t1 {
            self.teachers.teacher1 = Some((best_as_kept(self.cfg.dataset, t1.dice), it));
            self.save_best_teacher(t1.dice, elapsed(self.elapsed_before))?;
        }
        if let Some(t2) = &t2 {
            if improves(t2.dice, self.teachers.teacher2) {
                self.teachers.teacher2 = Some((t2.dice, it));
            }
        }
        let (best_dice, best_iter) = self.best.unwrap_or((0.0, 0));
        let v = Validation {
            iter: it,
            dice: student.dice,
            class_dice: student.class_dice.clone(),
            best_dice,
            best_iter,
            time_s: elapsed(self.elapsed_before),
            epoch: Some(epoch),
            class_hd95: student.class_hd95.clone(),
            teacher1: Some(TeacherLine::new(&t1, self.teachers.teacher1)),
            teacher2: t2
                .as_ref()
                .map(|s| TeacherLine::new(s, self.teachers.teacher2)),
        };
        append_line(
            val_log,
            &serde_json::to_value(&v).map_err(|e| Error::msg(e.to_string()))?,
        )?;
        let per: Vec<String> = student
            .class_dice
            .iter()
            .map(|d| format!("{d:.4}"))
            .collect();
        let news = |new: bool, what: &str, name: &str, best: Best| match (new, best) {
            (true, _) => format!(
                "new best {what} -> {}",
                self.cfg.checkpoint_dir().join(name).display()
            ),
            (false, Some((d, i))) => format!("best {what} {d:.4} at {i}"),
            (false, None) => format!("no {what} above 0 yet"),
        };
        self.say(
            pb,
            &format!(
                "iteration {it} (epoch {epoch}): validation Dice student {:.4} (per class {}), teacher 1 {:.4}{}; {}; {}",
                student.dice,
                per.join(" "),
                t1.dice,
                t2.as_ref()
                    .map_or(String::new(), |s| format!(", teacher 2 {:.4}", s.dice)),
                news(new_student, "student", BEST, self.best),
                news(new_t1, "teacher 1", BEST_TEACHER, self.teachers.teacher1),
            ),
        );
        Ok(())
    }
}
