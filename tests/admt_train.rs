//! `ssnet train --method admt`: AD-MT on the shared training loop (sampler, augmentation,
//! validation, checkpoints, logs, resume), on the bundled sample (lavapipe-sized).

mod common;
use common::*;

use ssnet::metrics;
use ssnet::nn::{checkpoint, Model, Variant};
use ssnet::train::config::{Method, Preset, TrainConfig};
use ssnet::train::data::test_cases;
use ssnet::train::run::{Run, BEST, LAST};
use std::path::Path;
use std::process::Command;

fn ssnet(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ssnet"))
        .args(args)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp/xdg".into()),
        )
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn jsonl(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The sample preset with AD-MT, tiny.
fn tiny(out: &Path, max_iterations: u64) -> TrainConfig {
    TrainConfig {
        method: Method::Admt,
        patch: vec![16, 16],
        max_iterations,
        val_interval: 2,
        checkpoint_every: 2,
        snapshots: false,
        final_eval: false,
        out: out.to_path_buf(),
        ..TrainConfig::preset(Preset::Sample)
    }
}

#[test]
fn method_defaults_to_ssnet_and_is_not_written_for_it() {
    let c = TrainConfig::preset(Preset::Sample);
    assert_eq!(c.method, Method::Ssnet);
    // SS-Net configurations (and so its checkpoints) keep their bytes.
    assert!(!c.to_toml().unwrap().contains("method"));
    let a = TrainConfig {
        method: Method::Admt,
        ..c.clone()
    };
    assert!(a
        .to_checkpoint_toml()
        .unwrap()
        .contains("method = \"admt\""));
    // The run's settings override AD-MT's: 2D recipe → ACDC's, 3D → LA's.
    let ac = a.admt_config();
    assert_eq!((ac.threshold, ac.max_period), (0.95, 50));
    assert_eq!((ac.base_lr, ac.max_iterations), (0.01, c.max_iterations));
    let la = TrainConfig::preset(Preset::La).admt_config();
    assert_eq!(
        (la.threshold, la.max_period, la.max_iterations),
        (0.8, 19, 15000)
    );
}

#[test]
fn cli_admt_sample_trains_validates_and_its_checkpoint_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    // The sample preset as it is (UNet, 32×32, batch 2+2, 40 iterations, validation every
    // 20, then the test cases predicted and evaluated): about 30 s on lavapipe.
    let (ok, stdout, stderr) = ssnet(&[
        "train",
        "--method",
        "admt",
        "--preset",
        "sample",
        "--max-iterations",
        "40",
        "--out",
        o,
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("training admt"), "{stdout}");
    assert!(stdout.contains("validation Dice"), "{stdout}");
    // final_eval of the sample preset: the test cases predicted and evaluated.
    assert!(stdout.contains("mean") && stdout.contains("LV"), "{stdout}");
    assert!(out.join("predictions").join("metrics.csv").is_file());
    // The log: one line per iteration, AD-MT's terms.
    let log = jsonl(&out.join("train.jsonl"));
    assert_eq!(log.len(), 40);
    for (i, l) in log.iter().enumerate() {
        assert_eq!(l["iter"], i as u64 + 1);
        for k in [
            "loss",
            "loss_sup",
            "loss_unsup",
            "unsup_weight",
            "lr",
            "updated",
        ] {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
    }
    assert_eq!(jsonl(&out.join("val.jsonl")).len(), 2);
    // last: the AD-MT resume file with the run's state; best (when a validation beat 0):
    // the student, heads-free variant, loadable by predict / eval.
    let last = checkpoint::read(&out.join(LAST)).unwrap();
    assert!(last.metadata.contains_key("admt.state"));
    assert!(last.metadata["ssnet.train.state"].contains("\"iter\":40"));
    assert!(last.tensors.keys().any(|k| k.starts_with("teacher2.")));
    let best = out.join(BEST);
    if best.is_file() {
        let m = Model::load(&gpu(), &best).unwrap();
        assert_eq!(m.variant(), Variant::Admt);
        let pred = tmp.path().join("pred");
        let input = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/sample/test/patient011_frame01.nii.gz");
        let (ok, stdout, stderr) = ssnet(&[
            "predict",
            "--checkpoint",
            best.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            pred.to_str().unwrap(),
        ]);
        assert!(ok, "{stdout}\n{stderr}");
        assert!(pred.join("patient011_frame01.nii.gz").is_file());
    }
    beats_chance(&out);
    // Resume continues the AD-MT run.
    let (ok, stdout, stderr) = ssnet(&[
        "train",
        "--resume",
        o,
        "--max-iterations",
        "41",
        "--final-eval",
        "false",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(jsonl(&out.join("train.jsonl")).len(), 41);
    // The method cannot change on resume.
    let (ok, _, stderr) = ssnet(&["train", "--resume", o, "--method", "ssnet"]);
    assert!(!ok && stderr.contains("method"), "{stderr}");
}

#[test]
fn toml_method_key_and_unknown_method() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    let out = tmp.path().join("run");
    std::fs::write(
        &cfg,
        "preset = \"sample\"\nmethod = \"admt\"\nmax_iterations = 1\npatch = [16, 16]\nval_interval = 0\nfinal_eval = false\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = ssnet(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("training admt"), "{stdout}");
    let written = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(written.contains("method = \"admt\""), "{written}");
    assert!(checkpoint::read(&out.join(LAST))
        .unwrap()
        .metadata
        .contains_key("admt.state"));
    // An unknown method: one line naming the key, from the flag and from the file.
    let (ok, _, stderr) = ssnet(&["train", "--preset", "sample", "--method", "fixmatch"]);
    assert!(
        !ok && stderr.trim().lines().count() == 1 && stderr.contains("method"),
        "{stderr}"
    );
    std::fs::write(&cfg, "preset = \"sample\"\nmethod = \"mt\"\n").unwrap();
    let (ok, _, stderr) = ssnet(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(
        !ok && stderr.trim().lines().count() == 1 && stderr.contains("method"),
        "{stderr}"
    );
}

/// The trained student's mean test Dice (`predictions/metrics.csv` of the final evaluation)
/// against trivial predictions of the same cases: all background (Dice 0 for every class),
/// and the best constant label map (every voxel one class: Dice 2|G|/(|G|+N) for that class,
/// 0 for the others).
fn beats_chance(out: &Path) {
    let csv = std::fs::read_to_string(out.join("predictions").join("metrics.csv")).unwrap();
    let mean: f64 = csv
        .lines()
        .find(|l| l.starts_with("mean,all,"))
        .and_then(|l| l.split(',').nth(2))
        .unwrap()
        .parse()
        .unwrap();
    let cases = test_cases(&TrainConfig::preset(Preset::Sample)).unwrap();
    let classes = 3u8;
    let mut background = 0.0;
    let mut constant = vec![0.0; classes as usize];
    for case in &cases {
        let n = case.label.len();
        for c in 1..=classes {
            let g = metrics::class_mask(&case.label, c);
            background += metrics::dice(&vec![false; n], &g).unwrap();
            constant[c as usize - 1] += metrics::dice(&vec![true; n], &g).unwrap();
        }
    }
    let per = (cases.len() * classes as usize) as f64;
    let background = background / per;
    let best_constant = constant.iter().cloned().fold(0.0, f64::max) / per;
    eprintln!(
        "AD-MT sample: test mean Dice {mean:.4}; all background {background:.4}; best constant map {best_constant:.4}"
    );
    assert!(
        mean > background + 0.1 && mean > best_constant,
        "test mean Dice {mean} does not beat chance (all background {background}, best constant map {best_constant})"
    );
}

fn quiet(mut r: Run) -> Run {
    r.verbose = false;
    r
}

/// Same seed ⇒ same bytes, and an interrupted AD-MT run resumed equals the straight run:
/// student, teachers, momentum, alternation and RNG all restored.
#[test]
fn admt_resume_equals_the_straight_run_byte_for_byte() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let n = 4;
    let a = tmp.path().join("a");
    quiet(Run::new(&gpu, tiny(&a, n)).unwrap()).train().unwrap();
    let b = tmp.path().join("b");
    // Interrupted after N/2 (the poly LR follows max_iterations = N throughout), then
    // resumed in a new Run from disk.
    quiet(Run::new(&gpu, tiny(&b, n)).unwrap())
        .train_until(n / 2)
        .unwrap();
    let mut rb = quiet(Run::resume(&gpu, &b, &toml::Table::new()).unwrap());
    assert_eq!(rb.iter(), n / 2);
    let sb = rb.train().unwrap();
    assert_eq!((sb.iterations, sb.iterations_this_run), (n, n / 2));
    for f in [LAST, BEST] {
        assert!(
            std::fs::read(a.join(f)).ok() == std::fs::read(b.join(f)).ok(),
            "{f} differs between the straight and the resumed run"
        );
    }
    let strip = |d: &Path| -> Vec<serde_json::Value> {
        jsonl(&d.join("train.jsonl"))
            .into_iter()
            .map(|mut v| {
                let o = v.as_object_mut().unwrap();
                o.remove("time_s");
                o.remove("step_s");
                v
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(strip(&a).len(), n as usize);
}
