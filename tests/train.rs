//! `ssnet train`: configuration, sampler, augmentations, exact resume, failure modes, and the
//! CLI on the shared LA / ACDC data and the bundled sample. Sizes are tiny (lavapipe).

mod common;
use common::*;

use rand::SeedableRng;
use rand_pcg::Pcg32;
use ssnet::data::nifti;
use ssnet::nn::checkpoint;
use ssnet::ssnet::TrainerConfig;
use ssnet::train::augment::{
    acdc_sample, crop_padding, crop_start, flip, random_crop, random_rot_flip, rot90,
    rotate_nearest,
};
use ssnet::train::config::{DatasetKind, Preset, TrainConfig};
use ssnet::train::data::{Item, TrainSet};
use ssnet::train::run::{Run, LAST};
use ssnet::train::sampler::TwoStreamSampler;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared data folder beside the checkout (`../shared/data`).
fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

fn resolve(preset: Option<Preset>, file: &str) -> ssnet::Result<TrainConfig> {
    TrainConfig::resolve(
        preset,
        Some((file, Path::new("test.toml"))),
        &toml::Table::new(),
    )
}

fn one_line_err<T: std::fmt::Debug>(r: ssnet::Result<T>) -> String {
    let e = r.unwrap_err().to_string();
    assert!(!e.contains('\n'), "not one line: {e}");
    e
}

// ---- configuration --------------------------------------------------------------------

#[test]
fn presets_are_the_reference_defaults() {
    let la = TrainConfig::preset(Preset::La);
    assert_eq!(la.dataset, DatasetKind::La);
    assert_eq!((la.labelnum, la.batch_size, la.labeled_bs), (4, 4, 2));
    assert_eq!(la.patch, vec![112, 112, 80]);
    assert_eq!(la.max_iterations, 15000);
    assert_eq!((la.base_lr, la.lr_step, la.lr_gamma), (0.01, 2500, 0.1));
    assert_eq!(
        (la.consistency, la.consistency_rampup, la.vat_eps, la.vat_xi),
        (1.0, 40.0, 10.0, 10.0)
    );
    assert_eq!(
        (
            la.val_interval,
            la.val_start,
            la.val_stride_xy,
            la.val_stride_z
        ),
        (200, 2000, 18, 4)
    );
    assert_eq!(la.val_patch(), vec![112, 112, 80]);
    assert_eq!((la.seed, la.memory_per_class, la.dropout), (1337, 32, true));
    assert_eq!(la.checkpoint_interval(), 200);
    let acdc = TrainConfig::preset(Preset::Acdc);
    assert_eq!(acdc.dataset, DatasetKind::Acdc);
    assert_eq!(
        (acdc.labelnum, acdc.batch_size, acdc.labeled_bs),
        (3, 24, 12)
    );
    assert_eq!(acdc.patch, vec![256, 256]);
    assert_eq!(
        (acdc.max_iterations, acdc.base_lr, acdc.lr_step),
        (30000, 0.01, 0)
    );
    assert_eq!(
        (acdc.consistency, acdc.consistency_rampup, acdc.vat_eps),
        (0.1, 200.0, 6.0)
    );
    assert_eq!(
        (acdc.val_interval, acdc.val_start, acdc.seed),
        (200, 0, 1337)
    );
    // The objective's settings are the Trainer's reference ones.
    let j = |c: &TrainerConfig| serde_json::to_value(c).unwrap();
    assert_eq!(j(&la.trainer_config()), j(&TrainerConfig::la()));
    assert_eq!(j(&acdc.trainer_config()), j(&TrainerConfig::acdc()));
    let s = TrainConfig::preset(Preset::Sample);
    assert_eq!(
        (s.dataset, s.patch.clone(), s.final_eval),
        (DatasetKind::Acdc, vec![32, 32], true)
    );
}

#[test]
fn config_file_layers_and_unknown_keys() {
    // preset key in the file, file keys, then overrides.
    let mut o = toml::Table::new();
    o.insert("base_lr".into(), toml::Value::Float(0.5));
    let c = TrainConfig::resolve(
        None,
        Some((
            "preset = \"acdc\"\nmax_iterations = 7\nmemory_order = \"descending\"",
            Path::new("f.toml"),
        )),
        &o,
    )
    .unwrap();
    assert_eq!(
        (c.dataset, c.max_iterations, c.base_lr, c.batch_size),
        (DatasetKind::Acdc, 7, 0.5, 24)
    );
    assert_eq!(c.memory_order, ssnet::ssnet::MemoryOrder::Descending);
    // A file naming only the dataset starts from that dataset's preset.
    assert_eq!(
        resolve(None, "dataset = \"acdc\"").unwrap().patch,
        vec![256, 256]
    );
    // The written config.toml reads back to the same configuration.
    let back = resolve(None, &c.to_toml().unwrap()).unwrap();
    assert_eq!(back, c);
    let e = one_line_err(resolve(
        Some(Preset::La),
        "labelnum = 4\nlearning_rate = 0.1",
    ));
    assert!(
        e.contains("learning_rate") && e.contains("test.toml"),
        "{e}"
    );
    let e = one_line_err(resolve(Some(Preset::La), "labelnum = \"four\""));
    assert!(e.contains("labelnum"), "{e}");
}

#[test]
fn config_out_of_range_names_the_key() {
    for (text, key) in [
        ("labelnum = 0", "labelnum"),
        ("patch = [100, 112, 80]", "patch"),
        ("patch = [112, 112]", "patch"),
        ("base_lr = -0.1", "base_lr"),
        ("labeled_bs = 4", "labeled_bs"),
        ("batch_size = 1\nlabeled_bs = 1", "batch_size"),
        ("momentum = 1.5", "momentum"),
        ("vat_eps = nan", "vat_eps"),
        ("val_stride_z = 0", "val_stride_z"),
        ("max_iterations = 0", "max_iterations"),
    ] {
        let e = one_line_err(resolve(Some(Preset::La), text));
        assert!(e.contains(key), "{text}: {e}");
    }
}

// ---- sampler --------------------------------------------------------------------------

#[test]
fn sampler_epochs_streams_determinism_and_state() {
    let lab: Vec<usize> = (0..5).collect();
    let unl: Vec<usize> = (5..12).collect();
    let mut s = TwoStreamSampler::new(lab.clone(), unl.clone(), 2, 3, 7).unwrap();
    assert_eq!(s.batches_per_epoch(), 2);
    let mut seen_u = Vec::new();
    for epoch in 0..4 {
        let mut seen_l = BTreeSet::new();
        for _ in 0..2 {
            let b = s.next_batch();
            assert_eq!(b.len(), 5);
            assert!(
                b[..2].iter().all(|i| lab.contains(i)) && b[2..].iter().all(|i| unl.contains(i)),
                "{b:?}"
            );
            for &i in &b[..2] {
                assert!(
                    seen_l.insert(i),
                    "labelled index {i} twice in epoch {epoch}"
                );
            }
            seen_u.extend_from_slice(&b[2..]);
        }
        assert_eq!(s.epoch(), epoch + 1);
        // Within an epoch the unlabelled chain starts with a full permutation: 6 draws of 7.
        let e = &seen_u[seen_u.len() - 6..];
        assert_eq!(e.iter().collect::<BTreeSet<_>>().len(), 6, "{e:?}");
    }
    // Same seed, same batches; another seed, other batches.
    let run = |seed| {
        let mut s = TwoStreamSampler::new(lab.clone(), unl.clone(), 2, 3, seed).unwrap();
        (0..10).map(|_| s.next_batch()).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    // The state round-trips (JSON, as in the checkpoint) mid-epoch.
    let mut a = TwoStreamSampler::new(lab.clone(), unl.clone(), 2, 3, 9).unwrap();
    a.next_batch();
    let json = serde_json::to_string(a.state()).unwrap();
    let mut b = TwoStreamSampler::from_state(serde_json::from_str(&json).unwrap()).unwrap();
    for _ in 0..7 {
        assert_eq!(a.next_batch(), b.next_batch());
    }
    // Streams too small for their share of the batch.
    let e = one_line_err(TwoStreamSampler::new(lab.clone(), unl.clone(), 6, 2, 1));
    assert!(e.contains("labeled_bs = 6"), "{e}");
    assert!(TwoStreamSampler::new(lab, unl, 2, 8, 1).is_err());
}

/// AD-MT's sampler (ADMT.md §5): epochs over the unlabelled cases (each once per epoch, the
/// remainder dropped), the labelled ones from a chain of permutations restarted every epoch;
/// batches still list the labelled indices first. SS-Net's state JSON is unchanged.
#[test]
fn sampler_with_unlabelled_primary_runs_epochs_over_the_unlabelled_cases() {
    use ssnet::train::Primary;
    let lab: Vec<usize> = (0..3).collect();
    let unl: Vec<usize> = (3..10).collect();
    let mut s =
        TwoStreamSampler::with_primary(lab.clone(), unl.clone(), 2, 2, Primary::Unlabelled, 5)
            .unwrap();
    assert_eq!(
        s.batches_per_epoch(),
        3,
        "7 unlabelled cases by 2: 3 batches"
    );
    for epoch in 0..5 {
        let mut seen_u = BTreeSet::new();
        let mut seen_l = Vec::new();
        for _ in 0..3 {
            let b = s.next_batch();
            assert!(
                b[..2].iter().all(|i| lab.contains(i)) && b[2..].iter().all(|i| unl.contains(i)),
                "{b:?}"
            );
            for &i in &b[2..] {
                assert!(seen_u.insert(i), "unlabelled {i} twice in epoch {epoch}");
            }
            seen_l.extend_from_slice(&b[..2]);
        }
        assert_eq!(s.epoch(), epoch + 1);
        // The labelled chain restarts each epoch with a full permutation of the 3.
        assert_eq!(
            seen_l[..3].iter().collect::<BTreeSet<_>>().len(),
            3,
            "{seen_l:?}"
        );
    }
    let mut a =
        TwoStreamSampler::with_primary(lab.clone(), unl.clone(), 2, 2, Primary::Unlabelled, 9)
            .unwrap();
    a.next_batch();
    let json = serde_json::to_string(a.state()).unwrap();
    assert!(json.contains("\"primary\":\"unlabelled\""), "{json}");
    let mut b = TwoStreamSampler::from_state(serde_json::from_str(&json).unwrap()).unwrap();
    for _ in 0..8 {
        assert_eq!(a.next_batch(), b.next_batch());
    }
    let ss = TwoStreamSampler::new(lab, unl, 2, 2, 9).unwrap();
    let json = serde_json::to_string(ss.state()).unwrap();
    assert!(
        !json.contains("primary") && json.contains("perm_l") && json.contains("pos_u"),
        "{json}"
    );
}

// ---- augmentations --------------------------------------------------------------------

#[test]
fn rot_flip_permutes_voxels_and_keeps_image_and_label_together() {
    let shape = [5, 3, 4];
    let img: Vec<f32> = (0..60).map(|i| i as f32).collect();
    let lab: Vec<u8> = (0..60).map(|i| i as u8).collect();
    for k in 0..4 {
        let (r, s) = rot90(&img, shape, k);
        assert_eq!(s, if k % 2 == 1 { [3, 5, 4] } else { shape });
        let mut sorted = r.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, img, "rot90 k={k} is not a permutation");
        assert_eq!(
            rot90(&rot90(&img, shape, k).0, s, 4 - k).0,
            img,
            "rot90 k then 4-k"
        );
    }
    for axis in 0..3 {
        assert_eq!(flip(&flip(&img, shape, axis), shape, axis), img);
    }
    let mut rng = Pcg32::seed_from_u64(3);
    for _ in 0..20 {
        let (i, l, s) = random_rot_flip(&img, &lab, shape, &mut rng);
        assert_eq!(s.iter().product::<usize>(), 60);
        assert!(
            i.iter().zip(&l).all(|(&a, &b)| a as u8 == b),
            "image and label moved differently"
        );
    }
}

#[test]
fn crop_pads_with_the_reference_quirk_and_never_draws_the_last_start() {
    // No side <= patch: no padding.
    assert_eq!(crop_padding([150, 130, 88], [112, 112, 80]), [0, 0, 0]);
    // One side <= patch: every side padded by max((patch - s) // 2 + 3, 0), floor division.
    assert_eq!(crop_padding([100, 150, 88], [112, 112, 80]), [9, 0, 0]);
    assert_eq!(crop_padding([113, 200, 80], [112, 112, 80]), [2, 0, 3]);
    let mut rng = Pcg32::seed_from_u64(5);
    let starts: BTreeSet<usize> = (0..200).map(|_| crop_start(18, 16, &mut rng)).collect();
    assert_eq!(
        starts,
        [0, 1].into_iter().collect(),
        "start drawn from [0, size - patch)"
    );
    // Output sizes; a padded volume keeps every voxel value and zeros.
    let shape = [20, 14, 10];
    let img: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|i| i as f32 + 1.0)
        .collect();
    let lab: Vec<u8> = img.iter().map(|&v| (v as usize % 2) as u8).collect();
    for _ in 0..10 {
        let (i, l) = random_crop(&img, &lab, shape, [16, 16, 16], &mut rng);
        assert_eq!((i.len(), l.len()), (16 * 16 * 16, 16 * 16 * 16));
        assert!(i.iter().zip(&l).all(|(&a, &b)| if a == 0.0 {
            b == 0
        } else {
            (a as usize % 2) as u8 == b
        }));
    }
}

#[test]
fn acdc_augmentation_sizes_and_rotation() {
    let (h, w) = (21, 17);
    let img: Vec<f32> = (0..h * w).map(|i| (i % 7) as f32).collect();
    let lab: Vec<u8> = (0..h * w).map(|i| (i % 4) as u8).collect();
    let mut rng = Pcg32::seed_from_u64(11);
    for _ in 0..30 {
        let (i, l) = acdc_sample(&img, &lab, [h, w], [32, 16], &mut rng).unwrap();
        assert_eq!((i.len(), l.len()), (32 * 16, 32 * 16));
        assert!(l.iter().all(|&v| v < 4));
    }
    // Rotation: identity at 0, rot90 at 90, zero fill outside, values preserved inside.
    assert_eq!(rotate_nearest(&lab, [h, w], 0.0), lab);
    let sq: Vec<u16> = (1..=49).collect();
    assert_eq!(
        rotate_nearest(&sq, [7, 7], 90.0),
        rot90(&sq, [7, 7, 1], 1).0
    );
    let r = rotate_nearest(&sq, [7, 7], 15.0);
    assert_eq!(r[3 * 7 + 3], 25, "the centre stays");
    assert_eq!(r[0], 0, "a corner rotates in from outside");
    assert!(r.iter().all(|&v| v == 0 || sq.contains(&v)));
}

#[test]
fn acdc_labelled_slices_match_the_reference_table() {
    let mut cfg = TrainConfig::preset(Preset::Acdc);
    cfg.data = shared().join("acdc");
    for (patients, slices) in [(3, 68), (7, 136), (14, 256), (35, 664)] {
        cfg.labelnum = patients;
        let t = TrainSet::open(&cfg).unwrap();
        assert_eq!((t.labelled, t.len), (slices, 1312), "{patients} patients");
    }
}

// ---- runs on a tiny dataset -----------------------------------------------------------

/// A tiny ACDC-layout dataset: `patients` train patients, 1 val and 1 test patient, each
/// with two frames of `[S, H, W]` = [3, 24, 20].
fn tiny_acdc(dir: &Path, patients: usize) {
    let (s, h, w) = (3usize, 24usize, 20usize);
    let mut lists: [Vec<String>; 3] = Default::default();
    let mut slices = Vec::new();
    for p in 0..patients + 2 {
        let split = if p < patients { 0 } else { p - patients + 1 };
        let folder = ["train", "val", "test"][split];
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        for f in 1..=2 {
            let case = format!("patient{:03}_frame{f:02}", p + 1);
            let (mut img, mut lab) = (Vec::new(), Vec::new());
            for k in 0..s {
                for y in 0..h {
                    for x in 0..w {
                        let (cy, cx) = (12.0 + p as f32 * 0.5, 10.0 + f as f32);
                        let r = ((y as f32 - cy).powi(2) + (x as f32 - cx).powi(2)).sqrt()
                            - k as f32 * 0.5;
                        let l: u8 = if r < 3.0 {
                            3
                        } else if r < 5.0 {
                            2
                        } else if x < 4 && y > 6 && y < 18 {
                            1
                        } else {
                            0
                        };
                        lab.push(l);
                        img.push(
                            0.2 * l as f32
                                + 0.05 * (((x * 7 + y * 13 + k * 5 + p) % 11) as f32 / 11.0),
                        );
                    }
                }
            }
            let vol = nifti::Volume::new(img, [w, h, s], [1.5, 1.5, 10.0]).unwrap();
            nifti::write_volume(
                dir.join(folder).join(format!("{case}.nii.gz")),
                &vol.data,
                &vol,
            )
            .unwrap();
            nifti::write_labels(
                dir.join(folder).join(format!("{case}_gt.nii.gz")),
                &lab,
                &vol,
            )
            .unwrap();
            lists[split].push(case.clone());
            if split == 0 {
                for n in 1..=s {
                    slices.push(format!("{case}_slice_{n}"));
                }
            }
        }
    }
    std::fs::create_dir_all(dir.join("splits")).unwrap();
    for (i, name) in ["train", "val", "test"].iter().enumerate() {
        std::fs::write(
            dir.join(format!("splits/{name}.list")),
            lists[i].join("\n") + "\n",
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("splits/train_slices.list"),
        slices.join("\n") + "\n",
    )
    .unwrap();
}

fn tiny_config(data: &Path, out: &Path, max_iterations: u64) -> TrainConfig {
    TrainConfig {
        data: data.to_path_buf(),
        labelnum: 1,
        batch_size: 4,
        labeled_bs: 2,
        patch: vec![16, 16],
        max_iterations,
        val_interval: 2,
        checkpoint_every: 2,
        out: out.to_path_buf(),
        final_eval: false,
        ..TrainConfig::preset(Preset::Acdc)
    }
}

fn quiet(mut r: Run) -> Run {
    r.verbose = false;
    r
}

/// Every tensor of a checkpoint, by name, as bits.
fn bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    checkpoint::read(path)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(k, (v, _))| (k, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

/// The loss lines of train.jsonl without the timing fields.
fn losses(dir: &Path) -> Vec<serde_json::Value> {
    common::jsonl_without_times(&dir.join("train.jsonl"))
}

#[test]
fn resume_continues_bit_for_bit() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_acdc(&data, 3);
    let n = 4;
    // Straight N iterations.
    let a = tmp.path().join("a");
    let sa = quiet(Run::new(&gpu, tiny_config(&data, &a, n)).unwrap())
        .train()
        .unwrap();
    assert_eq!(sa.iterations, n);
    // N/2, then resume for the rest in a new Run (fresh model object, state from disk).
    let b = tmp.path().join("b");
    quiet(Run::new(&gpu, tiny_config(&data, &b, n / 2)).unwrap())
        .train()
        .unwrap();
    let mut o = toml::Table::new();
    o.insert("max_iterations".into(), toml::Value::Integer(n as i64));
    let mut rb = quiet(Run::resume(&gpu, &b, &o).unwrap());
    assert_eq!(rb.iter(), n / 2);
    let sb = rb.train().unwrap();
    assert_eq!((sb.iterations, sb.iterations_this_run), (n, n / 2));
    // Weights, BatchNorm buffers, momentum and memory: the same bits.
    let (ta, tb) = (bits(&a.join(LAST)), bits(&b.join(LAST)));
    assert_eq!(
        ta.iter().map(|t| &t.0).collect::<Vec<_>>(),
        tb.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    assert!(
        ta.iter().any(|t| t.0.starts_with("momentum."))
            && ta.iter().any(|t| t.0.starts_with("memory."))
    );
    for ((name, x), (_, y)) in ta.iter().zip(&tb) {
        assert!(x == y, "tensor {name} differs after resume");
    }
    // Issue 12 item 13: the files themselves, byte for byte (no path, time or host inside,
    // metadata in a fixed order), although the two runs live in different folders and one
    // was interrupted.
    // (best.safetensors exists when a validation Dice beat 0: in both runs or in neither.)
    for f in [LAST, "best.safetensors"] {
        assert!(
            std::fs::read(a.join(f)).ok() == std::fs::read(b.join(f)).ok(),
            "{f} differs between the straight and the resumed run"
        );
    }
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("last.json")).unwrap()).unwrap();
    assert_eq!(side["iteration"], n);
    assert!(side["elapsed_s"].as_f64().unwrap() > 0.0);
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(losses(&a).len(), n as usize);
    // Validation ran (val_interval 2) and logged; the two runs agree on it.
    let val = |d: &Path| {
        std::fs::read_to_string(d.join("val.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!((val(&a), val(&b)), (2, 2));
    assert_eq!(
        sa.best.map(|b| b.0.to_bits()),
        sb.best.map(|b| b.0.to_bits())
    );
}

#[test]
fn labelled_batch_larger_than_the_labelled_set_is_an_error() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_acdc(&data, 3);
    // 1 labelled patient = 6 slices.
    let mut cfg = tiny_config(&data, &tmp.path().join("o"), 1);
    cfg.batch_size = 10;
    cfg.labeled_bs = 7;
    let e = one_line_err(Run::new(&gpu, cfg).map(|_| ()));
    assert!(
        e.contains("labeled_bs = 7") && e.contains("6 of 18 slices"),
        "{e}"
    );
}

#[test]
fn nan_voxels_in_a_file_are_a_one_line_error_naming_it() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Poison every train volume so that the first batch reads one.
    tiny_acdc(&data, 2);
    for c in [
        "patient001_frame01",
        "patient001_frame02",
        "patient002_frame01",
        "patient002_frame02",
    ] {
        let p = data.join(format!("train/{c}.nii.gz"));
        let mut v = nifti::read(&p).unwrap();
        v.data[3] = f32::NAN;
        nifti::write_volume(&p, &v.data, &v).unwrap();
    }
    let mut cfg = tiny_config(&data, &tmp.path().join("o"), 1);
    cfg.batch_size = 3;
    cfg.labeled_bs = 1;
    // Refused before the run starts (issue 12 item 3: every file is read first).
    let out = cfg.out.clone();
    let e = one_line_err(Run::new(&gpu, cfg).map(|_| ()));
    assert!(e.contains("NaN") && e.contains(".nii.gz"), "{e}");
    assert!(!out.exists(), "nothing written to the run folder");
}

#[test]
fn non_finite_loss_stops_naming_the_term_and_keeps_the_last_checkpoint() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let item = |v: f32| Item {
        image: vec![v; 16 * 16],
        label: (0..256).map(|i| (i % 3) as u8).collect(),
        shape: vec![16, 16],
    };
    let items = |v: f32| {
        (0..6)
            .map(|i| item(if i == 0 { 0.5 } else { v }))
            .collect::<Vec<_>>()
    };
    let mut cfg = tiny_config(tmp.path(), &out, 1);
    cfg.patch = vec![16, 16];
    cfg.checkpoint_every = 1;
    // One good iteration: last.safetensors at iteration 1.
    let set = TrainSet::from_items(DatasetKind::Acdc, items(0.25), 2).unwrap();
    quiet(Run::with_data(&gpu, cfg.clone(), set, Some(vec![])).unwrap())
        .train()
        .unwrap();
    let before = std::fs::read(out.join(LAST)).unwrap();
    // Resume on data that bypasses file validation with NaN images.
    let set = TrainSet::from_items(DatasetKind::Acdc, items(f32::NAN), 2).unwrap();
    let mut o = toml::Table::new();
    o.insert("max_iterations".into(), toml::Value::Integer(3));
    let mut run = quiet(Run::resume_with_data(&gpu, &out, &o, set, Some(vec![])).unwrap());
    let e = one_line_err(run.train());
    // Issue 12 item 6: every non-finite term by name, the iteration, the checkpoint kept.
    assert!(
        e.contains("non-finite")
            && e.contains("loss")
            && e.contains("iteration 2")
            && e.contains("dice = NaN"),
        "{e}"
    );
    assert!(
        e.contains("the last finite checkpoint is") && e.contains("(iteration 1)"),
        "{e}"
    );
    assert_eq!(run.iter(), 1, "no update after the non-finite step");
    assert_eq!(
        std::fs::read(out.join(LAST)).unwrap(),
        before,
        "the last good checkpoint is kept"
    );
}

#[test]
fn labels_out_of_range_stop_the_step_naming_the_dice_op() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    // ACDC has 4 classes: labels 0..=4 in every slice, so every labelled batch has a 4.
    let items: Vec<Item> = (0..6)
        .map(|_| Item {
            image: (0..256).map(|i| (i % 7) as f32 / 7.0).collect(),
            label: (0..256).map(|i| (i % 5) as u8).collect(),
            shape: vec![16, 16],
        })
        .collect();
    let cfg = tiny_config(tmp.path(), &out, 1);
    let set = TrainSet::from_items(DatasetKind::Acdc, items, 2).unwrap();
    let mut run = quiet(Run::with_data(&gpu, cfg, set, Some(vec![])).unwrap());
    let e = one_line_err(run.train());
    assert!(
        e.contains("softmax_dice_loss:")
            && e.contains("labels out of range for 4 classes")
            && e.contains("iteration 1"),
        "{e}"
    );
    assert_eq!(run.iter(), 0, "no update after the failed step");
}

// ---- the command line -----------------------------------------------------------------

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

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn cli_acdc_preset_trains_validates_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let data = shared().join("acdc").display().to_string();
    let o = out.to_str().unwrap();
    let (ok, stdout, stderr) = ssnet(&[
        "train",
        "--preset",
        "acdc",
        "--data",
        &data,
        "--max-iterations",
        "2",
        "--patch",
        "16,16",
        "--batch-size",
        "4",
        "--labeled-bs",
        "2",
        "--val-interval",
        "2",
        "--out",
        o,
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("validation Dice"), "{stdout}");
    for f in [
        "last.safetensors",
        "config.toml",
        "train.jsonl",
        "val.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(std::fs::read_dir(out.join("snapshots")).unwrap().count() == 1);
    let (ok, stdout, stderr) = ssnet(&["train", "--resume", o, "--max-iterations", "3"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(lines(&out.join("train.jsonl")), 3);
    // A fresh run into the same folder is refused.
    let (ok, _, stderr) = ssnet(&["train", "--preset", "acdc", "--data", &data, "--out", o]);
    assert!(!ok && stderr.contains("--resume"), "{stderr}");
}

#[test]
fn cli_la_preset_trains_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let data = shared().join("la").display().to_string();
    let (ok, stdout, stderr) = ssnet(&[
        "train",
        "--preset",
        "la",
        "--data",
        &data,
        "--max-iterations",
        "1",
        "--patch",
        "16x16x16",
        "--batch-size",
        "2",
        "--labeled-bs",
        "1",
        "--out",
        o,
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let (ok, stdout, stderr) = ssnet(&["train", "--resume", o, "--max-iterations", "2"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(lines(&out.join("train.jsonl")), 2);
    let c = checkpoint::read(&out.join(LAST)).unwrap();
    assert!(c.metadata["ssnet.train.state"].contains("\"iter\":2"));
}

#[test]
fn cli_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "preset = \"acdc\"\nbatchsize = 4\n").unwrap();
    let (ok, _, stderr) = ssnet(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(
        !ok && stderr.trim().lines().count() == 1 && stderr.contains("batchsize"),
        "{stderr}"
    );
    let (ok, _, stderr) = ssnet(&["train", "--preset", "la", "--labeled-bs", "4"]);
    assert!(
        !ok && stderr.trim().lines().count() == 1 && stderr.contains("labeled_bs"),
        "{stderr}"
    );
    let (ok, _, stderr) = ssnet(&["train", "--preset", "la", "--patch", "30,30,16"]);
    assert!(!ok && stderr.contains("patch"), "{stderr}");
}

#[test]
fn cli_sample_preset_trains_predicts_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let (ok, stdout, stderr) = ssnet(&[
        "train",
        "--preset",
        "sample",
        "--max-iterations",
        "2",
        "--patch",
        "16,16",
        "--val-interval",
        "1",
        "--out",
        o,
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("mean") && stdout.contains("LV"), "{stdout}");
    let pred = out.join("predictions");
    let nii = std::fs::read_dir(&pred)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".nii.gz")
        })
        .count();
    let png = std::fs::read_dir(&pred)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".png")
        })
        .count();
    assert!(nii >= 2 && nii == png, "{nii} NIfTI, {png} PNG");
    assert!(pred.join("metrics.csv").is_file());
}

// ---- never lose a file (issue 12) --------------------------------------------------------

/// Item 2: `--resume RUN2` where RUN2 is a copy of RUN1 writes into RUN2, never into the
/// folder stored in the checkpoint.
#[test]
fn resume_of_a_copied_run_writes_into_the_copy() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_acdc(&data, 3);
    let (a, b) = (tmp.path().join("run1"), tmp.path().join("run2"));
    let mut cfg = tiny_config(&data, &a, 1);
    cfg.val_interval = 0;
    cfg.checkpoint_every = 1;
    quiet(Run::new(&gpu, cfg).unwrap()).train().unwrap();
    std::fs::create_dir_all(&b).unwrap();
    for e in std::fs::read_dir(&a).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), b.join(e.file_name())).unwrap();
        }
    }
    let snapshot = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&a);
    let mut o = toml::Table::new();
    o.insert("max_iterations".into(), toml::Value::Integer(2));
    quiet(Run::resume(&gpu, &b, &o).unwrap()).train().unwrap();
    assert!(
        snapshot(&a) == before,
        "the original run folder was written to"
    );
    assert_eq!(losses(&b).len(), 2);
    assert!(
        checkpoint::read(&b.join(LAST)).unwrap().metadata["ssnet.train.state"]
            .contains("\"iter\":2")
    );
}

/// Item 3: `--overwrite` onto a run folder with data that fails validation leaves the folder
/// as it was (validation happens before anything is written).
#[test]
fn cli_overwrite_with_bad_data_leaves_the_run_folder_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_acdc(&data, 4);
    // The last training patient's volume, cut short: read only late in a lazy run.
    let bad = data.join("train/patient004_frame02.nii.gz");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let files = [
        ("config.toml", "# my settings\n"),
        ("train.jsonl", "{\"iter\":1}\n"),
        ("last.safetensors", "old"),
    ];
    for (f, t) in files {
        std::fs::write(run.join(f), t).unwrap();
    }
    let (ok, _, stderr) = ssnet(&[
        "train",
        "--preset",
        "acdc",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--overwrite",
        "--max-iterations",
        "40",
        "--patch",
        "16,16",
        "--batch-size",
        "2",
        "--labeled-bs",
        "1",
        "--val-interval",
        "0",
    ]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.trim().lines().count() == 1 && stderr.contains("patient004_frame02.nii.gz"),
        "{stderr}"
    );
    for (f, t) in files {
        assert_eq!(
            std::fs::read_to_string(run.join(f)).unwrap(),
            t,
            "{f} was touched"
        );
    }
}

/// Item 5: stale temporary files of a killed checkpoint write are removed at start; a run
/// killed before its first checkpoint resumes with a message saying so and what to run.
#[test]
fn stale_temporaries_removed_and_resume_without_checkpoint_says_so() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_acdc(&data, 3);
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("config.toml"), "").unwrap();
    let e = one_line_err(Run::resume(&gpu, &run, &toml::Table::new()).map(|_| ()));
    assert!(
        e.contains("no checkpoint yet") && e.contains("ssnet train --config"),
        "{e}"
    );
    let mut cfg = tiny_config(&data, &run, 1);
    cfg.val_interval = 0;
    cfg.checkpoint_every = 1;
    // What a kill during a checkpoint write leaves: this version's names and the old ones.
    let stale = [".last.safetensors.Xy12ab.tmp", ".tmpAb12Cd"];
    for f in stale {
        std::fs::write(run.join(f), "partial").unwrap();
    }
    std::fs::write(run.join("notes.tmp"), "mine").unwrap();
    quiet(Run::new(&gpu, cfg).unwrap()).train().unwrap();
    for f in stale {
        assert!(!run.join(f).exists(), "{f} left behind");
    }
    assert!(run.join("notes.tmp").exists(), "a user's file was removed");
}

/// Item 9: an image and label map that disagree in space are refused in training unless
/// `ignore_affine` (`--ignore-affine`).
#[test]
fn affine_mismatch_refused_in_train_unless_ignored() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_acdc(&data, 3);
    let p = data.join("train/patient002_frame01_gt.nii.gz");
    let mut v = nifti::read(&p).unwrap();
    v.header.srow_x[3] += 50.0;
    let labels = v.labels().unwrap();
    nifti::write_labels(&p, &labels, &v).unwrap();
    let mut cfg = tiny_config(&data, &tmp.path().join("o"), 1);
    let e = one_line_err(Run::new(&gpu, cfg.clone()).map(|_| ()));
    assert!(
        e.contains("patient002_frame01_gt.nii.gz")
            && e.contains("affines disagree")
            && e.contains("--ignore-affine"),
        "{e}"
    );
    cfg.ignore_affine = true;
    Run::new(&gpu, cfg).unwrap();
}

/// Item 14: `--dataset acdc` alone trains with ACDC's preset (the 2-D patch, its
/// consistency, ramp-up, VAT and batch), not LA's.
#[test]
fn cli_dataset_flag_selects_its_preset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_acdc(&data, 4);
    let run = tmp.path().join("run");
    let (ok, stdout, stderr) = ssnet(&[
        "train",
        "--dataset",
        "acdc",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--max-iterations",
        "1",
        "--patch",
        "16,16",
        "--batch-size",
        "2",
        "--labeled-bs",
        "1",
        "--val-interval",
        "0",
    ]);
    assert!(ok, "{stdout}{stderr}");
    let cfg: toml::Table = std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let acdc = TrainConfig::preset(Preset::Acdc);
    assert_eq!(cfg["consistency"].as_float(), Some(acdc.consistency));
    assert_eq!(
        cfg["consistency_rampup"].as_float(),
        Some(acdc.consistency_rampup)
    );
    assert_eq!(cfg["vat_eps"].as_float(), Some(acdc.vat_eps as f64));
    assert_eq!(cfg["lr_step"].as_integer(), Some(0));
    let (ok, _, stderr) = ssnet(&["train", "--preset", "la", "--dataset", "acdc"]);
    assert!(
        !ok && stderr.contains("dataset = acdc with preset la"),
        "{stderr}"
    );
}

/// Item 13: two runs with the same seed and settings, in different folders, write
/// byte-identical `last.safetensors` and `best.safetensors`.
#[test]
fn same_seed_gives_byte_identical_checkpoints() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_acdc(&data, 3);
    let run = |name: &str| {
        let out = tmp.path().join(name);
        let mut cfg = tiny_config(&data, &out, 8);
        cfg.val_interval = 4;
        cfg.checkpoint_every = 8;
        cfg.base_lr = 0.1;
        let s = quiet(Run::new(&gpu, cfg).unwrap()).train().unwrap();
        println!("{name}: best {:?}", s.best);
        assert!(
            s.best.is_some(),
            "no validation improved: no best.safetensors to compare"
        );
        out
    };
    let (a, b) = (run("first"), run("second"));
    for f in [LAST, "best.safetensors"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two runs of the same seed"
        );
    }
}

/// Item 4: sizes a run is given (patch and batch against the adapter, validation strides
/// against the window) are refused in one line stating the limit, before the run folder is
/// created.
#[test]
fn cli_train_sizes_checked_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let (ok, _, stderr) = ssnet(&[
        "train",
        "--preset",
        "sample",
        "--patch",
        "65536,65536",
        "--out",
        o,
    ]);
    assert!(
        !ok && stderr.trim().lines().count() == 1
            && stderr.contains("patch [65536, 65536] with batch 4")
            && stderr.contains("largest buffer"),
        "{stderr}"
    );
    let la = shared().join("la").display().to_string();
    let (ok, _, stderr) = ssnet(&[
        "train",
        "--preset",
        "la",
        "--data",
        &la,
        "--patch",
        "16,16,16",
        "--batch-size",
        "2",
        "--labeled-bs",
        "1",
        "--val-stride-xy",
        "40",
        "--out",
        o,
    ]);
    assert!(
        !ok && stderr.trim().lines().count() == 1 && stderr.contains("val_stride_xy"),
        "{stderr}"
    );
    assert!(!out.exists(), "the run folder was created");
}

/// A run folder inside the data folder (or the data folder itself) is refused before anything
/// is written: its checkpoints and NIfTI predictions would sit among the scans.
#[test]
fn cli_out_inside_the_data_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_acdc(&data, 4);
    let before = |d: &Path| {
        let mut v: Vec<_> = walk(d);
        v.sort();
        v
    };
    let listing = before(&data);
    for out in [data.clone(), data.join("train").join("run")] {
        let (ok, _, stderr) = ssnet(&[
            "train",
            "--preset",
            "acdc",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--max-iterations",
            "1",
            "--patch",
            "16,16",
            "--batch-size",
            "2",
            "--labeled-bs",
            "1",
        ]);
        assert!(!ok, "{stderr}");
        assert!(
            stderr.trim().lines().count() == 1 && stderr.contains("inside the data folder"),
            "{stderr}"
        );
        assert_eq!(
            before(&data),
            listing,
            "nothing written into the data folder"
        );
    }
}

/// Every file below `d`.
fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
