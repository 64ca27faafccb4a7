//! Own datasets without training: layout detection, the seeded split, preprocessing of real
//! scans (a flipped, re-sampled scan lands on the grid of the original), the cache
//! fingerprint, and every bad input of the issue as a one-line error naming the file and the
//! fix, with nothing written (through the `ssnet` binary).

use ssnet::data::layout::convert::{acdc_cases, Converted};
use ssnet::data::layout::{read, LayoutKind, OpenOptions, OwnDataset, Split, SplitOptions};
use ssnet::data::nifti::{self, Volume};
use ssnet::data::preprocess::{self, Intensity, Preprocessing};
use std::path::{Path, PathBuf};
use std::process::Command;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// A small synthetic scan (8×8×4, 1 mm) and a label map with a block of class `class`.
fn scan(seed: u32, class: u8) -> (Volume, Vec<u8>) {
    let data: Vec<f32> = (0..256u32)
        .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 10.0 + 1.0)
        .collect();
    let v = Volume::new(data, [8, 8, 4], [1.0, 1.0, 1.0]).unwrap();
    let label = (0..256)
        .map(|i| if (i % 64) < 20 { class } else { 0 })
        .collect();
    (v, label)
}

/// A plain layout: `n` scans, the first `labelled` with labels.
fn plain(dir: &Path, n: usize, labelled: usize) -> PathBuf {
    for d in ["images", "labels"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for i in 0..n {
        let (v, l) = scan(i as u32, 1);
        nifti::write_volume(dir.join(format!("images/case{i}.nii.gz")), &v.data, &v).unwrap();
        if i < labelled {
            nifti::write_labels(dir.join(format!("labels/case{i}.nii.gz")), &l, &v).unwrap();
        }
    }
    dir.to_path_buf()
}

/// An MSD layout of `n` labelled synthetic scans with `labels` in dataset.json, and one
/// unlabelled scan.
fn msd(dir: &Path, n: usize, labels: &str, modality: &str) -> PathBuf {
    for d in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let mut training = Vec::new();
    for i in 0..n {
        let (v, l) = scan(i as u32, 1);
        nifti::write_volume(dir.join(format!("imagesTr/c{i}.nii.gz")), &v.data, &v).unwrap();
        nifti::write_labels(dir.join(format!("labelsTr/c{i}.nii.gz")), &l, &v).unwrap();
        training.push(format!(
            r#"{{"image": "./imagesTr/c{i}.nii.gz", "label": "./labelsTr/c{i}.nii.gz"}}"#
        ));
    }
    // One image no training entry lists: unlabelled.
    let (v, _) = scan(99, 1);
    nifti::write_volume(dir.join("imagesTr/u0.nii.gz"), &v.data, &v).unwrap();
    std::fs::write(
        dir.join("dataset.json"),
        format!(
            r#"{{"modality": {modality}, "labels": {labels}, "training": [{}], "test": []}}"#,
            training.join(", ")
        ),
    )
    .unwrap();
    dir.to_path_buf()
}

/// `ssnet train` on `data` must fail with one line naming `names` and containing `says`,
/// leaving no run folder.
fn refuses(data: &Path, extra: &[&str], names: &str, says: &str) {
    let run = data.parent().unwrap().join("run_refused");
    let mut args = vec![
        "train".to_string(),
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        run.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_ssnet"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Lines of the Vulkan loader (no display server) are not ours.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    println!("{}", ours.join("\n"));
    assert!(!out.status.success(), "accepted: {args:?}");
    assert_eq!(ours.len(), 1, "not one line: {ours:?}");
    assert!(
        ours[0].starts_with("error: ") && ours[0].contains(names) && ours[0].contains(says),
        "{}",
        ours[0]
    );
    assert!(!run.exists(), "a run folder was written on bad input");
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_file_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |n: &str| tmp.path().join(n);

    // No labelled case.
    let d = plain(&t("nolabel"), 3, 0);
    refuses(&d, &[], "nolabel", "no labelled case");

    // Fewer labelled cases than --labelnum.
    let d = plain(&t("few"), 4, 3);
    refuses(
        &d,
        &["--labelnum", "5"],
        "few",
        "--labelnum 5 but only 2 labelled",
    );

    // Image and label of different shapes.
    let d = plain(&t("shape"), 3, 2);
    let small = Volume::new(vec![0.0; 128], [8, 8, 2], [1.0; 3]).unwrap();
    nifti::write_labels(d.join("labels/case1.nii.gz"), &[0u8; 128], &small).unwrap();
    refuses(&d, &[], "labels/case1.nii.gz", "label dims");

    // Image and label with affines 1 mm apart.
    let d = plain(&t("affine"), 3, 2);
    let (mut v, l) = scan(1, 1);
    v.header.srow_x[3] = 1.0;
    nifti::write_labels(d.join("labels/case1.nii.gz"), &l, &v).unwrap();
    refuses(&d, &[], "labels/case1.nii.gz", "label affine differs");

    // A label value dataset.json does not list.
    let d = msd(
        &t("values"),
        3,
        r#"{"0": "background", "1": "organ"}"#,
        r#"{"0": "MRI"}"#,
    );
    let (v, mut l) = scan(2, 1);
    l[0] = 2;
    nifti::write_labels(d.join("labelsTr/c2.nii.gz"), &l, &v).unwrap();
    refuses(
        &d,
        &[],
        "labelsTr/c2.nii.gz",
        "label value 2 is not in dataset.json",
    );

    // A 4-D image.
    let d = plain(&t("fourd"), 3, 2);
    let arr = ndarray::Array4::<f32>::from_elem((8, 8, 4, 2), 1.0);
    std::fs::remove_file(d.join("images/case0.nii.gz")).unwrap();
    ::nifti::writer::WriterOptions::new(d.join("images/case0.nii.gz"))
        .write_nifti(&arr)
        .unwrap();
    refuses(&d, &[], "images/case0.nii.gz", "4-D image");

    // Non-finite voxels.
    let d = plain(&t("nan"), 3, 2);
    let (mut v, _) = scan(0, 1);
    v.data[5] = f32::NAN;
    nifti::write_volume(d.join("images/case0.nii.gz"), &v.data, &v).unwrap();
    refuses(&d, &[], "images/case0.nii.gz", "NaN or infinite");

    // dataset.json naming a missing file.
    let d = msd(
        &t("missing"),
        3,
        r#"{"0": "background", "1": "organ"}"#,
        r#"{"0": "MRI"}"#,
    );
    std::fs::remove_file(d.join("labelsTr/c1.nii.gz")).unwrap();
    refuses(&d, &[], "dataset.json", "missing label file");

    // Duplicate case ids.
    let d = plain(&t("dup"), 3, 2);
    let (v, _) = scan(0, 1);
    nifti::write_volume(d.join("images/case0.nii"), &v.data, &v).unwrap();
    refuses(&d, &[], "case0", "duplicate case id 'case0'");

    // Several channels without --channel.
    let d = msd(
        &t("multi"),
        3,
        r#"{"0": "background", "1": "organ"}"#,
        r#"{"0": "CT", "1": "PET"}"#,
    );
    refuses(&d, &[], "dataset.json", "--channel K");

    // A patch beyond the adapter: refused before the run folder (plan, split, cache) exists.
    let d = plain(&t("huge"), 6, 5);
    refuses(&d, &["--patch", "4096,4096,4096"], "patch", "");

    // Every case labelled: no unlabelled stream for SS-Net.
    let d = plain(&t("alllabelled"), 4, 4);
    refuses(&d, &[], "alllabelled", "no unlabelled case");

    // --val-split is for the LA / ACDC layouts: own data holds out with its own flags.
    let d = plain(&t("valsplit"), 3, 2);
    refuses(
        &d,
        &["--val-split", "test"],
        "--val-split",
        "--val-fraction F or --val-cases FILE",
    );

    // A label without its image.
    let d = plain(&t("orphan"), 3, 2);
    let (v, l) = scan(0, 1);
    nifti::write_labels(d.join("labels/ghost.nii.gz"), &l, &v).unwrap();
    refuses(&d, &[], "labels/ghost.nii.gz", "label without its image");
}

#[test]
fn an_empty_label_map_is_a_warning_and_the_case_still_prepares() {
    let tmp = tempfile::tempdir().unwrap();
    let d = plain(tmp.path(), 3, 2);
    let (v, _) = scan(0, 1);
    nifti::write_labels(d.join("labels/case0.nii.gz"), &[0u8; 256], &v).unwrap();
    let ds = OwnDataset::open(&d, &OpenOptions::default()).unwrap();
    let pair = read::read_case(ds.case("case0").unwrap(), None).unwrap();
    assert_eq!(pair.warnings.len(), 1);
    assert!(pair.warnings[0].contains("empty label map") && pair.warnings[0].contains("case0"));
}

#[test]
fn layouts_are_detected_and_the_split_is_seeded() {
    let tmp = tempfile::tempdir().unwrap();
    let d = plain(&tmp.path().join("p"), 10, 8);
    let ds = OwnDataset::open(&d, &OpenOptions::default()).unwrap();
    assert_eq!(ds.kind, LayoutKind::Plain);
    assert_eq!(ds.labelled().count(), 8);
    let o = SplitOptions {
        labelnum: Some(3),
        ..SplitOptions::default()
    };
    let a = Split::choose(&ds, &o).unwrap();
    assert_eq!(a, Split::choose(&ds, &o).unwrap(), "same seed, same split");
    assert_eq!(
        (a.labelled.len(), a.validation.len(), a.unlabelled.len()),
        (3, 2, 5)
    );
    let b = Split::choose(
        &ds,
        &SplitOptions {
            seed: 7,
            ..o.clone()
        },
    )
    .unwrap();
    assert_eq!((b.labelled.len(), b.validation.len()), (3, 2));
    // splits.json round trip, checked against the dataset.
    a.write(tmp.path()).unwrap();
    assert_eq!(Split::read(tmp.path(), &ds).unwrap(), a);
    std::fs::remove_file(d.join(format!("labels/{}.nii.gz", a.labelled[0]))).unwrap();
    let ds2 = OwnDataset::open(&d, &OpenOptions::default()).unwrap();
    let e = Split::read(tmp.path(), &ds2).unwrap_err().to_string();
    assert!(
        e.contains("splits.json") && e.contains(&a.labelled[0]),
        "{e}"
    );

    let m = msd(
        &tmp.path().join("m"),
        2,
        r#"{"0": "background", "1": "organ"}"#,
        r#"{"0": "CT"}"#,
    );
    let ds = OwnDataset::open(&m, &OpenOptions::default()).unwrap();
    assert_eq!((ds.kind, ds.is_ct()), (LayoutKind::Msd, true));
}

fn dice(a: &[u8], b: &[u8], c: u8) -> f64 {
    let (mut i, mut s) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        i += (x == c && y == c) as usize;
        s += (x == c) as usize + (y == c) as usize;
    }
    2.0 * i as f64 / s.max(1) as f64
}

#[test]
fn a_flipped_coarser_rescan_lands_on_the_grid_of_the_original() {
    let ids = vec!["patient099_frame01".to_string()];
    let c = acdc_cases(&shared().join("acdc"), &ids, Some([64, 64, 8]))
        .unwrap()
        .remove(0);
    let Converted { image, label, .. } = c;
    let label = label.unwrap();
    // Re-saved: 2 mm in-plane (every second voxel), x reversed and the affine flipped.
    let [nx, ny, nz] = image.dims;
    let (mx, my) = (nx / 2, ny / 2);
    let (mut d, mut l) = (Vec::new(), Vec::new());
    for z in 0..nz {
        for y in 0..my {
            for x in 0..mx {
                let src = (z * ny + 2 * y) * nx + 2 * (mx - 1 - x);
                d.push(image.data[src]);
                l.push(label[src]);
            }
        }
    }
    let mut r = Volume::new(d, [mx, my, nz], [2.0, 2.0, 10.0]).unwrap();
    r.affine[(0, 0)] = -2.0;
    let p = Preprocessing {
        intensity: Intensity::ZScore,
        target_spacing: Some([1.0, 1.0, 10.0]),
        crop_nonzero: false,
    };
    let a = preprocess::prepare(&image, Some(&label), &p).unwrap();
    let b = preprocess::prepare(&r, Some(&l), &p).unwrap();
    assert_eq!(b.geometry.shape, a.geometry.shape);
    let (la, lb) = (a.label.unwrap(), b.label.unwrap());
    for c in 1..=3u8 {
        let same = dice(&la, &lb, c);
        assert!(
            same > 0.75,
            "class {c}: Dice {same:.3} between the original and the rescan"
        );
    }
    // Unflipped it would be mirrored: check the test can tell.
    let mut mirrored = lb.clone();
    let w = b.geometry.shape[2];
    for row in mirrored.chunks_mut(w) {
        row.reverse();
    }
    assert!(dice(&la, &mirrored, 3) < dice(&la, &lb, 3) - 0.1);
}

#[test]
fn the_cache_fingerprint_changes_with_any_input_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let d = plain(&tmp.path().join("p"), 3, 2);
    let f = d.join("images/case0.nii.gz");
    let files = [f.as_path()];
    let a = preprocess::cache::fingerprint(&files, "{}").unwrap();
    assert_eq!(a, preprocess::cache::fingerprint(&files, "{}").unwrap());
    assert_ne!(
        a,
        preprocess::cache::fingerprint(&files, "{\"x\":1}").unwrap()
    );
    let (mut v, _) = scan(0, 1);
    v.data[0] += 1.0;
    nifti::write_volume(&f, &v.data, &v).unwrap();
    assert_ne!(a, preprocess::cache::fingerprint(&files, "{}").unwrap());
}

#[test]
fn channel_k_picks_a_volume_of_a_4d_decathlon_file_or_the_000k_file_of_nnunet_v2() {
    let tmp = tempfile::tempdir().unwrap();
    // Decathlon, two modalities in 4-D files: volume k holds the value k + 1.
    let m = tmp.path().join("msd");
    std::fs::create_dir_all(m.join("imagesTr")).unwrap();
    std::fs::create_dir_all(m.join("labelsTr")).unwrap();
    let arr = ndarray::Array4::<f32>::from_shape_fn((8, 8, 4, 2), |(x, _, _, k)| {
        (k + 1) as f32 * 10.0 + x as f32
    });
    ::nifti::writer::WriterOptions::new(m.join("imagesTr/a.nii.gz"))
        .write_nifti(&arr)
        .unwrap();
    let (v, l) = scan(0, 1);
    nifti::write_labels(m.join("labelsTr/a.nii.gz"), &l, &v).unwrap();
    std::fs::write(
        m.join("dataset.json"),
        r#"{"modality": {"0": "FLAIR", "1": "T2"}, "labels": {"0": "background", "1": "tumour"},
            "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}], "test": []}"#,
    )
    .unwrap();
    let ds = OwnDataset::open(
        &m,
        &OpenOptions {
            channel: Some(1),
            unlabelled: None,
        },
    )
    .unwrap();
    assert_eq!(ds.modality(), "T2");
    let c = ds.case("a").unwrap();
    assert_eq!(c.volume, Some(1));
    let img = c.read_image().unwrap();
    assert_eq!(img.dims, [8, 8, 4]);
    // [z][y][x] order: x fastest.
    assert_eq!((img.data[0], img.data[3]), (20.0, 23.0));
    let e = OwnDataset::open(
        &m,
        &OpenOptions {
            channel: Some(2),
            unlabelled: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--channel 2 is out of range"), "{e}");

    // nnU-Net v2: <case>_0001 is channel 1; the label is <case>.nii.gz.
    let n = tmp.path().join("v2");
    std::fs::create_dir_all(n.join("imagesTr")).unwrap();
    std::fs::create_dir_all(n.join("labelsTr")).unwrap();
    for k in 0..2 {
        let (v, _) = scan(k, 1);
        nifti::write_volume(n.join(format!("imagesTr/b_{k:04}.nii.gz")), &v.data, &v).unwrap();
    }
    nifti::write_labels(n.join("labelsTr/b.nii.gz"), &l, &v).unwrap();
    std::fs::write(
        n.join("dataset.json"),
        r#"{"channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "lesion": 1},
            "numTraining": 1, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    let ds = OwnDataset::open(
        &n,
        &OpenOptions {
            channel: Some(1),
            unlabelled: None,
        },
    )
    .unwrap();
    let c = ds.case("b").unwrap();
    assert!(c.image.ends_with("imagesTr/b_0001.nii.gz") && c.label.is_some());
    assert!(!ds.is_ct());
}

#[test]
fn val_cases_list_fixes_the_validation_cases() {
    let tmp = tempfile::tempdir().unwrap();
    let d = plain(&tmp.path().join("p"), 6, 5);
    let ds = OwnDataset::open(&d, &OpenOptions::default()).unwrap();
    let list = tmp.path().join("val.list");
    std::fs::write(&list, "case1\ncase3\n").unwrap();
    let o = SplitOptions {
        val_cases: Some(list.clone()),
        ..SplitOptions::default()
    };
    let s = Split::choose(&ds, &o).unwrap();
    assert_eq!(s.validation, ["case1", "case3"]);
    assert_eq!(s.labelled, ["case0", "case2", "case4"]);
    assert_eq!(s.unlabelled, ["case5"]);
    std::fs::write(&list, "case5\n").unwrap();
    let e = Split::choose(&ds, &o).unwrap_err().to_string();
    assert!(
        e.contains("val.list") && e.contains("'case5' is not a labelled case"),
        "{e}"
    );
}

#[test]
fn plan_reads_ct_statistics_from_the_labelled_foreground_and_picks_the_network_by_spacing() {
    use ssnet::nn::Arch;
    use ssnet::train::plan::{Plan, PlanOptions};
    let tmp = tempfile::tempdir().unwrap();
    let d = msd(
        &tmp.path().join("ct"),
        4,
        r#"{"0": "background", "1": "organ"}"#,
        r#"{"0": "CT"}"#,
    );
    let ds = OwnDataset::open(&d, &OpenOptions::default()).unwrap();
    let split = Split::choose(&ds, &SplitOptions::default()).unwrap();
    let plan = Plan::make(&ds, &split, &PlanOptions::default()).unwrap();
    // Isotropic 1 mm scans of 8×8×4: 3D, patch rounded up to 16s, 2 classes with their names.
    assert_eq!(plan.network, Arch::VNet);
    assert_eq!(plan.patch, vec![16, 16, 16]);
    assert_eq!(
        (plan.num_classes, plan.class_names.clone()),
        (2, vec!["organ".to_string()])
    );
    let Intensity::Ct { lo, hi, mean, std } = plan.intensity else {
        panic!("CT scans get the CT normalisation: {:?}", plan.intensity)
    };
    // The foreground of the labelled (not validation) scans: values in [1, 101).
    assert!(
        1.0 <= lo && lo < mean && mean < hi && hi < 101.0 && std > 0.0,
        "{lo} {hi} {mean} {std}"
    );
    let off = Plan::make(
        &ds,
        &split,
        &PlanOptions {
            normalize: Some(false),
            target_spacing: Some([1.0, 1.0, 4.0]),
            memory_gib: Some(1e-6),
            ..PlanOptions::default()
        },
    )
    .unwrap();
    assert_eq!(off.intensity, Intensity::None);
    // z four times coarser than x, y: 2D slices, the patch bounded by the (tiny) budget.
    assert_eq!(off.network, Arch::UNet);
    assert_eq!(off.patch, vec![16, 16]);
    assert!(off.memory.max_patch_voxels < 256, "{:?}", off.memory);
    // AD-MT's student pass holds L + 2U samples: the same budget allows a smaller patch, and
    // the plan records the method (SS-Net's plan.json is unchanged: no `method` key).
    let plan_for = |method| {
        Plan::make(
            &ds,
            &split,
            &PlanOptions {
                memory_gib: Some(0.5),
                method,
                ..PlanOptions::default()
            },
        )
        .unwrap()
    };
    let (ss, ad) = (
        plan_for(ssnet::train::config::Method::Ssnet),
        plan_for(ssnet::train::config::Method::Admt),
    );
    let (b, l) = (ss.batch_size as u64, ss.labeled_bs as u64);
    let m = &ad.memory;
    assert_eq!(
        m.max_patch_voxels,
        m.budget_bytes / (m.bytes_per_voxel * (2 * b - l))
    );
    assert!(
        m.max_patch_voxels < ss.memory.max_patch_voxels,
        "{m:?} vs {:?}",
        ss.memory
    );
    assert!(
        ad.memory.formula.contains("L + 2U"),
        "{}",
        ad.memory.formula
    );
    assert!(ad.to_json().unwrap().contains("\"method\": \"admt\""));
    assert!(!ss.to_json().unwrap().contains("method"));
    assert!(ad.describe().contains("AD-MT on the"), "{}", ad.describe());
    let json = off.to_json().unwrap();
    assert_eq!(json, off.to_json().unwrap());
    assert!(json.contains("\"formula\""), "{json}");
}
