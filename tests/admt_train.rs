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
    // AD-MT validates as its official code: at the end of epochs 0, 2, 4, ... (the ACDC
    // recipe; 30 unlabelled slices / 2 per batch = 15 iterations an epoch) and after the last
    // iteration: 15 and 40. The student, teacher 1 and teacher 2, with each class's HD95.
    let val = jsonl(&out.join("val.jsonl"));
    let at: Vec<(u64, u64)> = val
        .iter()
        .map(|l| (l["iter"].as_u64().unwrap(), l["epoch"].as_u64().unwrap()))
        .collect();
    assert_eq!(at, [(15, 0), (40, 2)]);
    for l in &val {
        for k in ["dice", "class_hd95", "teacher1", "teacher2"] {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
        assert_eq!(l["teacher2"]["class_dice"].as_array().unwrap().len(), 3);
    }
    assert!(
        stdout.contains("(epoch 0): validation Dice student") && stdout.contains("teacher 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("validation on 2 cases of splits/val.list"),
        "{stdout}"
    );
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
    for f in [LAST, BEST, ssnet::train::run::BEST_TEACHER] {
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

// ---- validation as the official code (issue 13 item 7) ----------------------------------

/// The official schedule: the end of epochs 0, k, 2k, ... and the last iteration; an epoch
/// is ⌊unlabelled / U⌋ iterations (LA-4: 76 / 2 = 38, ACDC-3: 1244 / 12 = 103). An explicit
/// iteration interval replaces it; SS-Net keeps its own schedule and refuses the key.
#[test]
fn admt_validates_at_epoch_ends_as_the_official_code() {
    let flags = |kv: &[(&str, toml::Value)]| -> toml::Table {
        kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    };
    let admt = ("method", toml::Value::String("admt".into()));
    let la =
        TrainConfig::resolve(Some(Preset::La), None, &flags(std::slice::from_ref(&admt))).unwrap();
    assert_eq!(
        (la.val_interval_epochs, la.val_epochs()),
        (Some(4), Some(4))
    );
    let at: Vec<u64> = (1..=15000).filter(|&i| la.validates_after(i, 38)).collect();
    assert_eq!(&at[..4], &[38, 190, 342, 494]);
    assert_eq!(at.last(), Some(&15000));
    assert_eq!(at.len(), 99 + 1);
    let acdc = TrainConfig::resolve(
        Some(Preset::Acdc),
        None,
        &flags(std::slice::from_ref(&admt)),
    )
    .unwrap();
    assert_eq!(acdc.val_epochs(), Some(2));
    let at: Vec<u64> = (1..=30000)
        .filter(|&i| acdc.validates_after(i, 103))
        .collect();
    assert_eq!(&at[..3], &[103, 309, 515]);
    assert_eq!(at.last(), Some(&30000));
    // The resolved schedule is written to config.toml (and so the checkpoint).
    assert!(acdc.to_toml().unwrap().contains("val_interval_epochs = 2"));
    // --val-interval given: every N iterations from val_start, as SS-Net.
    let it = TrainConfig::resolve(
        Some(Preset::Acdc),
        None,
        &flags(&[admt.clone(), ("val_interval", toml::Value::Integer(100))]),
    )
    .unwrap();
    assert_eq!((it.val_interval_epochs, it.val_epochs()), (Some(0), None));
    assert!(it.validates_after(200, 103) && !it.validates_after(103, 103));
    // The same on resume (overrides of a stored AD-MT configuration).
    let resumed = acdc
        .with_overrides(&flags(&[("val_interval", toml::Value::Integer(50))]))
        .unwrap();
    assert_eq!(resumed.val_epochs(), None);
    // SS-Net: unchanged (no key written, iterations), and the key refused in one line.
    let ss = TrainConfig::resolve(Some(Preset::La), None, &toml::Table::new()).unwrap();
    assert_eq!(ss.val_epochs(), None);
    assert!(ss.validates_after(2000, 38) && !ss.validates_after(38, 38));
    let toml = ss.to_toml().unwrap();
    assert!(!toml.contains("val_interval_epochs") && !toml.contains("val_split"));
    let e = TrainConfig::resolve(
        Some(Preset::La),
        None,
        &flags(&[("val_interval_epochs", toml::Value::Integer(2))]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("val_interval_epochs") && e.contains("--val-interval") && !e.contains('\n'),
        "{e}"
    );
}

/// A ball of foreground in a `[24, 24, 20]` volume, centre moved by `k`; the image is the
/// label plus a fixed texture.
fn ball(k: usize) -> (Vec<f32>, Vec<u8>) {
    let (nx, ny, nz) = (24usize, 24usize, 20usize);
    let (mut img, mut lab) = (Vec::new(), Vec::new());
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                let c = [11.0 + (k % 3) as f32, 12.0 - (k % 2) as f32, 10.0];
                let r = ((x as f32 - c[0]).powi(2)
                    + (y as f32 - c[1]).powi(2)
                    + (z as f32 - c[2]).powi(2))
                .sqrt();
                let l = (r < 6.0) as u8;
                lab.push(l);
                img.push(l as f32 + 0.1 * (((x * 7 + y * 13 + z * 5 + k) % 11) as f32 / 11.0));
            }
        }
    }
    (img, lab)
}

fn ball_case(k: usize) -> ssnet::data::dataset::Case {
    let (image, label) = ball(k);
    let path = std::path::PathBuf::from(format!("ball{k}"));
    ssnet::data::dataset::Case {
        id: format!("ball{k}"),
        image,
        label,
        shape: [24, 24, 20],
        spacing: None,
        image_path: path.clone(),
        label_path: path,
        header: None,
    }
}

fn ball_set() -> ssnet::train::data::TrainSet {
    let items = (0..6)
        .map(|k| {
            let (image, label) = ball(k);
            ssnet::train::data::Item {
                image,
                label,
                shape: vec![24, 24, 20],
            }
        })
        .collect();
    ssnet::train::data::TrainSet::from_items(ssnet::train::config::DatasetKind::La, items, 2)
        .unwrap()
}

/// A seed whose first alternation period is 3 (AD-MT's trainer draws three network seeds,
/// then the period, from `Pcg32(seed)`): teacher 1 is updated at steps 0-2, then teacher 2
/// (for at least one step), so at the validation after iteration 4 teacher 1 is not the
/// student.
fn seed_with_first_period_3() -> u64 {
    use rand::{Rng, SeedableRng};
    (0u64..)
        .find(|&s| {
            let mut r = rand_pcg::Pcg32::seed_from_u64(s);
            for _ in 0..3 {
                let _: u64 = r.random();
            }
            r.random_range(1..=19u32) == 3
        })
        .unwrap()
}

/// The LA recipe on balls in memory: 2 labelled + 4 unlabelled volumes, batch 2+2 (the
/// teachers' train-mode pass needs 2 samples for the VNet's 1-voxel bottleneck), so an
/// epoch is 2 iterations; validation after every epoch (and the last iteration).
fn ball_config(out: &Path, max_iterations: u64) -> TrainConfig {
    TrainConfig {
        method: Method::Admt,
        seed: seed_with_first_period_3(),
        labelnum: 2,
        batch_size: 4,
        labeled_bs: 2,
        patch: vec![16, 16, 16],
        max_iterations,
        val_interval_epochs: Some(1),
        val_stride_xy: 8,
        val_stride_z: 4,
        checkpoint_every: 4,
        snapshots: false,
        final_eval: false,
        out: out.to_path_buf(),
        ..TrainConfig::preset(Preset::La)
    }
}

/// AD-MT's validation on the LA recipe: the student and teacher 1 scored at each epoch end
/// and logged; the student's best (unrounded, `best_dice_stu = dice`) kept as
/// best.safetensors, teacher 1's best (LA: kept rounded to 4 decimals) as
/// best_teacher.safetensors; each saved network reproduces its logged score; an interrupted
/// and resumed run keeps the same bests (the teachers' bests are in the run state).
#[test]
fn admt_validation_keeps_the_best_student_and_the_best_teacher() {
    use ssnet::train::run::BEST_TEACHER;
    use ssnet::train::validate::score;
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let val = vec![ball_case(7), ball_case(8)];
    let n = 6;
    let a = tmp.path().join("a");
    let sa =
        quiet(Run::with_data(&gpu, ball_config(&a, n), ball_set(), Some(val.clone())).unwrap())
            .train()
            .unwrap();
    let lines = jsonl(&a.join("val.jsonl"));
    let iters: Vec<u64> = lines.iter().map(|l| l["iter"].as_u64().unwrap()).collect();
    let epochs: Vec<u64> = lines.iter().map(|l| l["epoch"].as_u64().unwrap()).collect();
    assert_eq!((iters, epochs), (vec![2, 4, 6], vec![0, 1, 2]));
    // LA: teacher 2 is not evaluated, Dice only.
    for l in &lines {
        assert!(
            l.get("teacher2").is_none() && l.get("class_hd95").is_none(),
            "{l}"
        );
    }
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    // JSON numbers read back within an ulp (serde_json's parser is not correctly rounded).
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
    let stu: Vec<f64> = lines.iter().map(|l| f(&l["dice"])).collect();
    let t1: Vec<f64> = lines.iter().map(|l| f(&l["teacher1"]["dice"])).collect();
    let updated: Vec<String> = jsonl(&a.join("train.jsonl"))
        .iter()
        .map(|l| l["updated"].to_string())
        .collect();
    eprintln!("student {stu:?}, teacher 1 {t1:?}, updated {updated:?}");
    // Teacher 1 is not the student at every validation, else the test could not tell them
    // apart (the seed is chosen for it).
    assert!(
        stu.iter().zip(&t1).any(|(s, t)| !close(*s, *t)),
        "teacher 1 scored as the student at every validation (updated: {updated:?})"
    );
    // The reference's rules, from the logged scores.
    let pick = |scores: &[f64], keep: &dyn Fn(f64) -> f64| {
        let mut best: Option<(f64, usize)> = None;
        for (i, &d) in scores.iter().enumerate() {
            if d > best.map_or(0.0, |b| b.0) {
                best = Some((keep(d), i));
            }
        }
        best
    };
    let (stu_kept, si) = pick(&stu, &|d| d).expect("no student validation above Dice 0");
    let round4 = |d: f64| format!("{d:.4}").parse::<f64>().unwrap();
    let (t1_kept, ti) = pick(&t1, &round4).expect("no teacher 1 validation above Dice 0");
    let (b, bt) = (sa.best.unwrap(), sa.best_teacher.unwrap());
    assert!(close(b.0, stu_kept) && b.1 == 2 * (si as u64 + 1), "{b:?}");
    assert!(
        close(bt.0, t1_kept) && bt.1 == 2 * (ti as u64 + 1),
        "{bt:?}"
    );
    assert!(close(f(&lines[2]["best_dice"]), stu_kept));
    assert!(close(f(&lines[2]["teacher1"]["best_dice"]), t1_kept));
    // Each checkpoint holds its network at its best validation: it scores what was logged.
    let cfg = ball_config(&a, n);
    for (file, i, logged, network) in [
        (BEST, si, stu[si], None),
        (BEST_TEACHER, ti, t1[ti], Some("teacher1")),
    ] {
        let c = checkpoint::read(&a.join(file)).unwrap();
        let meta: serde_json::Value =
            serde_json::from_str(&c.metadata["ssnet.train.best"]).unwrap();
        assert_eq!(meta["iter"], 2 * (i as u64 + 1), "{file}");
        assert_eq!(meta.get("network").and_then(|v| v.as_str()), network);
        let m = Model::load(&gpu, &a.join(file)).unwrap();
        assert_eq!(m.variant(), Variant::Admt);
        let s = score(&m, &cfg, &val, false, None).unwrap();
        assert!(
            close(s.dice, logged),
            "{file} scores {} where {logged} was logged",
            s.dice
        );
        assert!(
            a.join(file).with_extension("json").is_file(),
            "{file} sidecar"
        );
    }
    // Interrupted after 3 iterations (mid-epoch), resumed: the same files and logs.
    let b = tmp.path().join("b");
    quiet(Run::with_data(&gpu, ball_config(&b, n), ball_set(), Some(val.clone())).unwrap())
        .train_until(3)
        .unwrap();
    let mut rb = quiet(
        Run::resume_with_data(&gpu, &b, &toml::Table::new(), ball_set(), Some(val.clone()))
            .unwrap(),
    );
    let sb = rb.train().unwrap();
    assert_eq!((sb.best, sb.best_teacher), (sa.best, sa.best_teacher));
    for file in [LAST, BEST, BEST_TEACHER] {
        assert!(
            std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(),
            "{file} differs between the straight and the resumed run"
        );
    }
    assert_eq!(
        common::jsonl_without_times(&a.join("val.jsonl")),
        common::jsonl_without_times(&b.join("val.jsonl"))
    );
    // `ssnet predict` takes the teacher's checkpoint like any network checkpoint.
    let (image, _) = ball(7);
    let vol = ssnet::data::nifti::Volume::new(image, [20, 24, 24], [1.0; 3]).unwrap();
    let scan = tmp.path().join("ball7.nii.gz");
    ssnet::data::nifti::write_volume(&scan, &vol.data, &vol).unwrap();
    let pred = tmp.path().join("pred");
    let (ok, stdout, stderr) = ssnet(&[
        "predict",
        "--checkpoint",
        a.join(BEST_TEACHER).to_str().unwrap(),
        "--input",
        scan.to_str().unwrap(),
        "--output",
        pred.to_str().unwrap(),
        "--patch",
        "16,16,16",
        "--stride-xy",
        "8",
        "--stride-z",
        "4",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(pred.join("ball7.nii.gz").is_file());
}

/// A tiny LA layout: `CASE01..=CASE06` in train.list, `TEST01`, `TEST02` in test.list, each
/// the `[32, 32, 16]` corner of a real scan.
fn tiny_la(root: &Path) {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/la");
    let ids = ssnet::data::dataset::read_list(shared.join("train.list")).unwrap();
    let names: Vec<String> = (1..=6)
        .map(|i| format!("CASE{i:02}"))
        .chain((1..=2).map(|i| format!("TEST{i:02}")))
        .collect();
    for (name, id) in names.iter().zip(&ids) {
        shrink_la_h5(
            &shared
                .join("2018LA_Seg_Training Set")
                .join(id)
                .join("mri_norm2.h5"),
            &root
                .join("2018LA_Seg_Training Set")
                .join(name)
                .join("mri_norm2.h5"),
            [32, 32, 16],
        );
    }
    std::fs::write(root.join("train.list"), names[..6].join("\n") + "\n").unwrap();
    std::fs::write(root.join("test.list"), names[6..].join("\n") + "\n").unwrap();
}

/// `ssnet train --method admt --preset la` on the tiny layout (batch 2+2, 16³ patches, the
/// validation window's strides within them).
fn la_args<'a>(data: &'a str, out: &'a str, iters: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--method",
        "admt",
        "--preset",
        "la",
        "--data",
        data,
        "--labelnum",
        "2",
        "--patch",
        "16,16,16",
        "--batch-size",
        "4",
        "--labeled-bs",
        "2",
        "--val-stride-xy",
        "16",
        "--val-stride-z",
        "8",
        "--snapshots",
        "false",
        "--max-iterations",
        iters,
        "--out",
        out,
    ]
}

fn split_of(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("splits.json")).unwrap()).unwrap()
}

/// LA validates on test.list by default, as the reference (and says so in one line);
/// `--val-split holdout:2` validates on the last 2 scans of train.list instead, holds them
/// out of training, writes the split beside the checkpoints, and a resumed run reuses it
/// even when train.list changed; the value cannot change on resume.
#[test]
fn cli_val_split_holds_out_la_scans_and_survives_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("la");
    tiny_la(&data);
    let d = data.to_str().unwrap();
    // The default: the test list, with the note.
    let def = tmp.path().join("default");
    let (ok, stdout, stderr) = ssnet(&la_args(d, def.to_str().unwrap(), "1"));
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("validation on 2 cases of test.list (TEST01, TEST02)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("note: the best checkpoint is selected on the test cases"),
        "{stdout}"
    );
    assert!(stdout.contains("(2 of 6 scans labelled)"), "{stdout}");
    assert!(!def.join("splits.json").exists());
    assert_eq!(jsonl(&def.join("val.jsonl")).len(), 1);
    // holdout:2: CASE05 and CASE06 validate and leave the unlabelled stream (2 unlabelled
    // scans, 2 per batch: an epoch is 1 iteration; validations after epoch 0 and the last
    // iteration).
    let run = tmp.path().join("run");
    let o = run.to_str().unwrap();
    let mut args = la_args(d, o, "2");
    args.extend(["--val-split", "holdout:2"]);
    let (ok, stdout, stderr) = ssnet(&args);
    assert!(ok, "{stdout}\n{stderr}");
    let line = "validation on 2 cases of --val-split holdout:2 (CASE05, CASE06)";
    assert!(stdout.contains(line), "{stdout}");
    assert!(stdout.contains("(2 of 4 scans labelled)"), "{stdout}");
    assert!(!stdout.contains("note: the best checkpoint"), "{stdout}");
    let split = split_of(&run);
    assert_eq!(split["val_split"], "holdout:2");
    assert_eq!(split["labelled"], serde_json::json!(["CASE01", "CASE02"]));
    assert_eq!(split["unlabelled"], serde_json::json!(["CASE03", "CASE04"]));
    assert_eq!(split["validation"], serde_json::json!(["CASE05", "CASE06"]));
    assert!(std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .contains("val_split = \"holdout:2\""));
    let at = |d: &Path| -> Vec<u64> {
        jsonl(&d.join("val.jsonl"))
            .iter()
            .map(|l| l["iter"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(at(&run), [1, 2]);
    // train.list changes; the resumed run keeps its own split.
    std::fs::write(
        data.join("train.list"),
        "CASE02\nCASE01\nCASE03\nCASE04\nCASE05\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = ssnet(&["train", "--resume", o, "--max-iterations", "4"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(line), "{stdout}");
    assert_eq!(split_of(&run), split);
    assert_eq!(jsonl(&run.join("train.jsonl")).len(), 4);
    assert_eq!(at(&run), [1, 2, 4]);
    assert!(jsonl(&run.join("val.jsonl"))
        .iter()
        .all(|l| l.get("teacher1").is_some()));
    // The split cannot change on resume; a missing split file is named.
    let (ok, _, stderr) = ssnet(&["train", "--resume", o, "--val-split", "test"]);
    assert!(
        !ok && stderr.trim().lines().count() == 1 && stderr.contains("val_split cannot change"),
        "{stderr}"
    );
    std::fs::rename(run.join("splits.json"), tmp.path().join("moved.json")).unwrap();
    let (ok, _, stderr) = ssnet(&["train", "--resume", o, "--max-iterations", "5"]);
    assert!(
        !ok && stderr.trim().lines().count() == 1 && stderr.contains("splits.json"),
        "{stderr}"
    );
}

/// Bad `--val-split` values: one line naming the option, what is wrong and the fix, and no
/// run folder.
#[test]
fn cli_bad_val_split_is_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("la");
    tiny_la(&data);
    let labelled = tmp.path().join("labelled.list");
    std::fs::write(&labelled, "CASE05\nCASE01\n").unwrap();
    let out = tmp.path().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    for (value, want) in [
        ("holdout:0", "holdout takes a number of scans of at least 1"),
        ("holdout:4", "hold out at most 3"),
        (
            "nosuch.list",
            "no such list file; give test, val, holdout:N",
        ),
        ("val", "use holdout:N"),
        (
            labelled.to_str().unwrap(),
            "case 'CASE01' is one of the 2 labelled scans",
        ),
    ] {
        let mut args = la_args(d, o, "1");
        args.extend(["--val-split", value]);
        let (ok, stdout, stderr) = ssnet(&args);
        let err = stderr.trim();
        assert!(
            !ok && err.lines().count() == 1 && err.contains("--val-split") && err.contains(want),
            "{value}: {stdout}\n{stderr}"
        );
        assert!(!out.exists(), "{value}: the run folder was created");
    }
    // ACDC has its own validation list: no holdout.
    let (ok, _, stderr) = ssnet(&[
        "train",
        "--preset",
        "sample",
        "--val-split",
        "holdout:1",
        "--out",
        o,
    ]);
    assert!(
        !ok && stderr.trim().lines().count() == 1 && stderr.contains("use val"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// ACDC: a list file of case ids validates on them and holds the slices of the training
/// ones out of the unlabelled stream (never a labelled patient's); `test` takes the test
/// list. The split is chosen when the set is opened (nothing trained here).
#[test]
fn acdc_val_split_list_file_holds_out_training_cases() {
    use ssnet::train::data::{validation_cases_of, TrainSet};
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("v.list");
    std::fs::write(&list, "patient050_frame01\npatient028_frame02\n").unwrap();
    let mut cfg = TrainConfig::preset(Preset::Sample);
    let all = TrainSet::open(&cfg).unwrap();
    assert_eq!((all.labelled, all.len), (10, 40));
    cfg.val_split = Some(list.display().to_string());
    cfg.validate().unwrap();
    let t = TrainSet::open(&cfg).unwrap();
    // patient050_frame01's 5 slices leave the unlabelled stream; patient028 is a val case.
    assert_eq!((t.labelled, t.len), (10, 35));
    let s = t.split.as_ref().unwrap();
    assert!(s
        .unlabelled
        .iter()
        .all(|n| !n.starts_with("patient050_frame01")));
    assert!(s
        .unlabelled
        .iter()
        .any(|n| n.starts_with("patient050_frame02")));
    let ids: Vec<String> = validation_cases_of(&cfg, Some(s))
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["patient050_frame01", "patient028_frame02"]);
    cfg.val_split = Some("test".into());
    let t = TrainSet::open(&cfg).unwrap();
    assert_eq!(t.len, 40);
    assert_eq!(t.split.unwrap().validation.len(), 4);
    // A labelled patient's case cannot validate.
    std::fs::write(&list, "patient099_frame02\n").unwrap();
    cfg.val_split = Some(list.display().to_string());
    let e = TrainSet::open(&cfg).err().unwrap().to_string();
    assert!(
        e.contains("patient099_frame02") && e.contains("labelled") && !e.contains('\n'),
        "{e}"
    );
}
