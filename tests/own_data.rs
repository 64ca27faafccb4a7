//! Own datasets end to end on real scans, through the `ssnet` binary as a user runs it:
//! datasets in the Decathlon, nnU-Net v2 and plain layouts are built inside the test (in temp
//! folders) from `../shared/data/acdc` and the LA HDF5 files, trained for a few iterations at
//! tiny patches (lavapipe), predicted, checked voxel for voxel against the inputs' geometry
//! (dims, sform, qform), and evaluated.

use ssnet::data::layout::convert::{acdc_cases, la_cases, write_dataset, Converted};
use ssnet::data::layout::dataset_json::JsonFlavour;
use ssnet::data::nifti::{self, Volume};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

fn ssnet(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ssnet"))
        .args(args)
        .output()
        .expect("run ssnet");
    println!(
        "$ ssnet {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(args: &[&str]) -> String {
    let out = ssnet(args);
    assert!(out.status.success(), "ssnet {} failed", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const ACDC_LABELS: [(u8, &str); 4] = [(0, "background"), (1, "RV"), (2, "Myo"), (3, "LV")];

/// Six small ACDC cases (48×48 in-plane around the heart, 8 slices).
fn acdc_small() -> Vec<Converted> {
    let ids: Vec<String> = [
        "patient099_frame01",
        "patient099_frame02",
        "patient038_frame01",
        "patient038_frame02",
        "patient050_frame01",
        "patient050_frame02",
    ]
    .map(String::from)
    .to_vec();
    acdc_cases(&shared().join("acdc"), &ids, Some([48, 48, 8])).unwrap()
}

/// The case re-saved with 2 mm in-plane voxels (every second column and row) and its x axis
/// flipped in the affine (data reversed along x, sform and qform say so).
fn resaved_flipped(c: &Converted) -> Converted {
    let [nx, ny, nz] = c.image.dims;
    let (mx, my) = (nx / 2, ny / 2);
    let label = c.label.as_ref().unwrap();
    let (mut data, mut lab) = (Vec::new(), Vec::new());
    for z in 0..nz {
        for y in 0..my {
            for x in 0..mx {
                let src = (z * ny + 2 * y) * nx + 2 * (mx - 1 - x);
                data.push(c.image.data[src]);
                lab.push(label[src]);
            }
        }
    }
    let sp = c.image.spacing;
    let mut v = Volume::new(data, [mx, my, nz], [2.0 * sp[0], 2.0 * sp[1], sp[2]]).unwrap();
    let h = &mut v.header;
    let x0 = (2 * (mx - 1)) as f32 * sp[0] as f32;
    h.srow_x = [-2.0 * sp[0] as f32, 0.0, 0.0, x0];
    // qform: 180° about y (x → -x, z → -z) with qfac -1 (z back): diag(-1, 1, 1).
    h.quatern_b = 0.0;
    h.quatern_c = 1.0;
    h.quatern_d = 0.0;
    h.pixdim[0] = -1.0;
    h.quatern_x = x0;
    v.affine = nifti::affine_of(h);
    Converted {
        id: c.id.clone(),
        image: v,
        label: Some(lab),
    }
}

/// Every `OUT/<case>.nii.gz` has the input's dims, sform and qform.
fn check_geometry(inputs: &[(String, PathBuf)], out: &Path) {
    for (case, path) in inputs {
        let i = nifti::read(path).unwrap();
        let p = nifti::read(out.join(format!("{case}.nii.gz"))).unwrap();
        assert_eq!(p.dims, i.dims, "{case}: dims");
        assert_eq!(p.affine, i.affine, "{case}: affine");
        let (hi, hp) = (&i.header, &p.header);
        assert_eq!(
            (hp.sform_code, hp.qform_code),
            (hi.sform_code, hi.qform_code),
            "{case}"
        );
        assert_eq!(
            [hp.srow_x, hp.srow_y, hp.srow_z],
            [hi.srow_x, hi.srow_y, hi.srow_z],
            "{case}"
        );
        assert_eq!(
            [
                hp.quatern_b,
                hp.quatern_c,
                hp.quatern_d,
                hp.quatern_x,
                hp.quatern_y,
                hp.quatern_z,
                hp.pixdim[0]
            ],
            [
                hi.quatern_b,
                hi.quatern_c,
                hi.quatern_d,
                hi.quatern_x,
                hi.quatern_y,
                hi.quatern_z,
                hi.pixdim[0]
            ],
            "{case}: qform"
        );
        assert!(p.labels().unwrap().iter().all(|&l| l < 4), "{case}: labels");
    }
}

fn inputs_of(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            let stem = n.strip_suffix(".nii.gz").unwrap().to_string();
            let case = stem.strip_suffix("_0000").unwrap_or(&stem).to_string();
            (case, e.path())
        })
        .collect();
    v.sort();
    v
}

/// The checkpoint to predict with: best when a validation improved on Dice 0, else last.
fn checkpoint(run: &Path) -> PathBuf {
    let best = run.join("best.safetensors");
    if best.is_file() {
        best
    } else {
        run.join("last.safetensors")
    }
}

const TINY_2D: [&str; 8] = [
    "--patch",
    "16,16",
    "--batch-size",
    "4",
    "--labeled-bs",
    "2",
    "--val-interval",
    "2",
];

#[test]
fn msd_layout_with_a_resaved_flipped_case_trains_predicts_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("Task_ACDC");
    let mut cases = acdc_small();
    cases[1] = resaved_flipped(&cases[1]);
    // Labels withheld from two cases: unlabelled images.
    cases[4].label = None;
    cases[5].label = None;
    let test = vec![cases[0].clone()];
    write_dataset(&ds, JsonFlavour::Msd, "MRI", &ACDC_LABELS, &cases, &test).unwrap();

    let plan = ok(&["plan", "--data", s(&ds)]);
    assert!(
        plan.contains("network: unet") && plan.contains("RV, Myo, LV"),
        "{plan}"
    );

    let run = tmp.path().join("run");
    let mut args = vec![
        "train",
        "--data",
        s(&ds),
        "--out",
        s(&run),
        "--max-iterations",
        "2",
    ];
    args.extend(TINY_2D);
    let out = ok(&args);
    assert!(out.contains("preprocessed"), "{out}");
    let splits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("splits.json")).unwrap()).unwrap();
    assert_eq!(splits["unlabelled"].as_array().unwrap().len(), 2);
    assert_eq!(splits["validation"].as_array().unwrap().len(), 1);
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["network"], "unet");
    assert_eq!(plan["target_spacing"][2].as_f64(), Some(10.0));

    let ck = checkpoint(&run);
    // Predicting into the scans' own folder would replace them (same <case>.nii.gz): refused.
    let images = ds.join("imagesTr");
    let before = std::fs::read(images.join(format!("{}.nii.gz", cases[0].id))).unwrap();
    let out = ssnet(&[
        "predict",
        "--checkpoint",
        s(&ck),
        "--input",
        s(&images),
        "--output",
        s(&images),
    ]);
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read(images.join(format!("{}.nii.gz", cases[0].id))).unwrap(),
        before
    );
    let pred = tmp.path().join("pred");
    ok(&[
        "predict",
        "--checkpoint",
        s(&ck),
        "--input",
        s(&ds.join("imagesTr")),
        "--output",
        s(&pred),
    ]);
    check_geometry(&inputs_of(&ds.join("imagesTr")), &pred);
    let ev = ok(&[
        "eval",
        "--pred",
        s(&pred),
        "--gt",
        s(&ds.join("labelsTr")),
        "--spacing",
        "header",
    ]);
    assert!(ev.contains("4 cases") && ev.contains("mm"), "{ev}");
}

#[test]
fn nnunet_v2_layout_trains_resumes_on_its_split_and_predicts_without_channel_suffix() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("Dataset001_ACDC");
    let mut cases = acdc_small();
    cases[3].label = None;
    write_dataset(
        &ds,
        JsonFlavour::NnUnetV2,
        "MRI",
        &ACDC_LABELS,
        &cases,
        &cases[..1],
    )
    .unwrap();
    let run = tmp.path().join("run");
    let mut args = vec![
        "train",
        "--data",
        s(&ds),
        "--out",
        s(&run),
        "--labelnum",
        "2",
    ];
    args.extend(TINY_2D);
    args.extend(["--max-iterations", "1"]);
    ok(&args);
    let splits = std::fs::read_to_string(run.join("splits.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&splits).unwrap();
    assert_eq!(v["labelled"].as_array().unwrap().len(), 2, "{splits}");
    // 5 labelled: 1 validation, 2 kept, 2 moved to the unlabelled stream with the unlabelled one.
    assert_eq!(v["unlabelled"].as_array().unwrap().len(), 3, "{splits}");

    let out = ok(&["train", "--resume", s(&run), "--max-iterations", "2"]);
    assert!(out.contains("done: 2 iterations (1 in this run)"), "{out}");
    assert_eq!(
        std::fs::read_to_string(run.join("splits.json")).unwrap(),
        splits
    );
    let caches = std::fs::read_dir(run.join("preprocessed")).unwrap().count();
    assert_eq!(caches, 1, "the resumed run reuses the cache");

    let pred = tmp.path().join("pred");
    ok(&[
        "predict",
        "--checkpoint",
        s(&run.join("last.safetensors")),
        "--input",
        s(&ds.join("imagesTs")),
        "--output",
        s(&pred),
    ]);
    assert!(pred.join(format!("{}.nii.gz", cases[0].id)).is_file());
    check_geometry(&inputs_of(&ds.join("imagesTs")), &pred);
    let ev = ok(&[
        "eval",
        "--pred",
        s(&pred),
        "--gt",
        s(&ds.join("labelsTr")),
        "--list",
        s(&write_list(tmp.path(), &cases[0].id)),
    ]);
    assert!(ev.contains("1 cases"), "{ev}");
}

fn write_list(dir: &Path, id: &str) -> PathBuf {
    let p = dir.join("one.list");
    std::fs::write(&p, format!("{id}\n")).unwrap();
    p
}

#[test]
fn la_scans_as_plain_nifti_folder_train_a_vnet_and_predict_on_their_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("la_plain");
    let ids: Vec<String> = std::fs::read_to_string(shared().join("la/train.list"))
        .unwrap()
        .lines()
        .take(3)
        .map(String::from)
        .collect();
    let cases = la_cases(&shared().join("la"), &ids, Some([32, 32, 32])).unwrap();
    for d in ["images", "labels"] {
        std::fs::create_dir_all(ds.join(d)).unwrap();
    }
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(c.image.spacing, [0.625; 3]);
        nifti::write_volume(
            ds.join(format!("images/{}.nii.gz", c.id)),
            &c.image.data,
            &c.image,
        )
        .unwrap();
        if i < 2 {
            let l = c.label.as_ref().unwrap();
            nifti::write_labels(ds.join(format!("labels/{}.nii.gz", c.id)), l, &c.image).unwrap();
        }
    }
    let run = tmp.path().join("run");
    // Settings from a TOML file too (as RUN/config.toml writes them), flags over them.
    let toml = tmp.path().join("mine.toml");
    std::fs::write(
        &toml,
        "max_iterations = 2\nval_interval = 2\nbatch_size = 2\n",
    )
    .unwrap();
    ok(&[
        "train",
        "--data",
        s(&ds),
        "--out",
        s(&run),
        "--config",
        s(&toml),
        "--patch",
        "16,16,16",
        "--labeled-bs",
        "1",
    ]);
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["network"], "vnet");
    assert_eq!(plan["num_classes"], 2);
    assert_eq!(
        (plan["patch"][0].as_u64(), plan["batch_size"].as_u64()),
        (Some(16), Some(2))
    );
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        cfg.contains("max_iterations = 2") && cfg.contains("[own"),
        "{cfg}"
    );
    let pred = tmp.path().join("pred");
    ok(&[
        "predict",
        "--checkpoint",
        s(&checkpoint(&run)),
        "--input",
        s(&ds.join("images")),
        "--output",
        s(&pred),
    ]);
    check_geometry(&inputs_of(&ds.join("images")), &pred);
    let ev = ok(&["eval", "--pred", s(&pred), "--gt", s(&ds)]);
    assert!(ev.contains("2 cases"), "{ev}");
}
