//! Medical images in and out: NIfTI round trips and datatypes, SS-Net's HDF5 files, the
//! dataset layouts on the real data of `../shared/data`, every bad input giving a one-line
//! error that names the file, and `ssnet eval` run as a binary.
//!
//! Writes only to temporary folders; the shared data are read-only.

use ssnet::data::dataset::{AcdcDataset, FolderDataset, LaDataset, Split};
use ssnet::data::{h5, nifti};
use std::path::{Path, PathBuf};
use std::process::Command;

fn data_dir() -> PathBuf {
    match std::env::var_os("SSNET_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

fn acdc() -> PathBuf {
    data_dir().join("acdc")
}

fn la() -> PathBuf {
    data_dir().join("la")
}

fn la_h5(id: &str) -> PathBuf {
    la().join("2018LA_Seg_Training Set")
        .join(id)
        .join("mri_norm2.h5")
}

/// An error's message: one line, naming `file` (its path is the message's prefix).
fn one_line_naming(e: ssnet::Error, file: &Path) -> String {
    let m = e.to_string();
    println!("error: {m}");
    assert!(!m.contains('\n'), "multi-line error: {m}");
    assert!(
        m.contains(&file.display().to_string()),
        "error does not name {}: {m}",
        file.display()
    );
    m
}

/// A small float volume with distinct values and a non-trivial spacing.
fn small_volume() -> nifti::Volume {
    let dims = [5, 4, 3];
    let data: Vec<f32> = (0..60).map(|i| i as f32 * 0.5 - 7.25).collect();
    nifti::Volume::new(data, dims, [0.7, 0.8, 2.5]).unwrap()
}

// ---------------------------------------------------------------- NIfTI

#[test]
fn nifti_roundtrip_float_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let v = small_volume();
    for name in ["v.nii.gz", "v.nii"] {
        let p = dir.path().join(name);
        nifti::write_volume(&p, &v.data, &v).unwrap();
        let r = nifti::read(&p).unwrap();
        assert_eq!(r.data, v.data);
        assert_eq!(r.dims, v.dims);
        assert_eq!(r.spacing.map(|s| s as f32), v.spacing.map(|s| s as f32));
        assert_eq!(r.affine, v.affine);
        assert_eq!(r.shape_zyx(), [3, 4, 5]);
        // (x, y, z) = (2, 1, 0) is flat index (0·4 + 1)·5 + 2 = 7.
        assert_eq!(r.at(2, 1, 0), v.data[7]);
    }
    let labels: Vec<u8> = (0..60).map(|i| (i % 4) as u8).collect();
    let p = dir.path().join("l.nii.gz");
    nifti::write_labels(&p, &labels, &v).unwrap();
    let r = nifti::read(&p).unwrap();
    assert_eq!(r.datatype, ::nifti::NiftiType::Uint8);
    assert_eq!(r.labels().unwrap(), labels);
    assert_eq!(r.affine, v.affine);
    // Wrong number of voxels: an error naming the output file, nothing written.
    let bad = dir.path().join("bad.nii.gz");
    let e = nifti::write_labels(&bad, &labels[..10], &v).unwrap_err();
    one_line_naming(e, &bad);
}

#[test]
fn nifti_real_acdc_volume_and_aligned_prediction() {
    let img_p = acdc().join("test/patient001_frame01.nii.gz");
    let gt_p = acdc().join("test/patient001_frame01_gt.nii.gz");
    let img = nifti::read(&img_p).unwrap();
    let gt = nifti::read(&gt_p).unwrap();
    assert_eq!(img.datatype, ::nifti::NiftiType::Float32);
    assert_eq!(gt.datatype, ::nifti::NiftiType::Uint8);
    assert_eq!(img.dims, gt.dims);
    assert_eq!(img.spacing, [1.0, 1.0, 10.0]);
    let [s, h, w] = img.shape_zyx();
    assert_eq!(s * h * w, img.len());
    let labels = gt.labels().unwrap();
    assert!(labels.iter().all(|&l| l <= 3) && (1..=3).all(|c| labels.contains(&c)));
    assert!(img.data.iter().all(|v| (0.0..=1.0).contains(v)));
    // A prediction written with the image's header opens aligned: same affine, spacing, dims.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pred.nii.gz");
    nifti::write_labels(&out, &labels, &img).unwrap();
    let back = nifti::read(&out).unwrap();
    assert_eq!(back.affine, img.affine);
    assert_eq!(back.spacing, img.spacing);
    assert_eq!(back.dims, img.dims);
    assert_eq!(back.labels().unwrap(), labels);
    // [x][y][z] helper: voxel (x, y, z) at (x·ny + y)·nz + z.
    let xyz = img.to_xyz();
    assert_eq!(xyz[(7 * h + 11) * s + 3], img.at(7, 11, 3));
}

/// Write `values` (x fastest) as a NIfTI of datatype T through the `nifti` crate's writer.
fn write_typed<T: ::nifti::DataElement + bytemuck::Pod>(
    path: &Path,
    values: Vec<T>,
    dims: [usize; 3],
) {
    let arr = ndarray::Array::from_shape_vec(ndarray::IxDyn(&[dims[2], dims[1], dims[0]]), values)
        .unwrap();
    let h = small_volume().header;
    ::nifti::writer::WriterOptions::new(path)
        .reference_header(&h)
        .write_nifti(&arr.reversed_axes())
        .unwrap();
}

/// Overwrite bytes of an uncompressed `.nii` header.
fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut b = std::fs::read(path).unwrap();
    b[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, b).unwrap();
}

#[test]
fn nifti_datatypes_and_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [5, 4, 3];
    let ints: Vec<i64> = (0..60).map(|i| i * 3 - 20).collect();
    let want: Vec<f32> = ints.iter().map(|&v| v as f32).collect();
    let pos: Vec<f32> = ints.iter().map(|&v| (v + 20) as f32).collect();
    let p = |n: &str| dir.path().join(n);
    write_typed(
        &p("u8.nii"),
        ints.iter().map(|&v| (v + 20) as u8).collect(),
        dims,
    );
    write_typed(
        &p("i16.nii"),
        ints.iter().map(|&v| v as i16).collect(),
        dims,
    );
    write_typed(
        &p("u16.nii.gz"),
        ints.iter().map(|&v| (v + 20) as u16).collect(),
        dims,
    );
    write_typed(
        &p("i32.nii.gz"),
        ints.iter().map(|&v| v as i32).collect(),
        dims,
    );
    write_typed(&p("f32.nii"), want.clone(), dims);
    write_typed(
        &p("f64.nii.gz"),
        ints.iter().map(|&v| v as f64).collect(),
        dims,
    );
    for (name, expect, t) in [
        ("u8.nii", &pos, ::nifti::NiftiType::Uint8),
        ("i16.nii", &want, ::nifti::NiftiType::Int16),
        ("u16.nii.gz", &pos, ::nifti::NiftiType::Uint16),
        ("i32.nii.gz", &want, ::nifti::NiftiType::Int32),
        ("f32.nii", &want, ::nifti::NiftiType::Float32),
        ("f64.nii.gz", &want, ::nifti::NiftiType::Float64),
    ] {
        let v = nifti::read(p(name)).unwrap();
        assert_eq!(v.datatype, t, "{name}");
        assert_eq!(&v.data, expect, "{name}");
        assert_eq!(v.dims, dims, "{name}");
    }
    // scl_slope (offset 112) / scl_inter (116): value·2 - 1, applied on int16.
    patch(&p("i16.nii"), 112, &2f32.to_le_bytes());
    patch(&p("i16.nii"), 116, &(-1f32).to_le_bytes());
    let v = nifti::read(p("i16.nii")).unwrap();
    assert_eq!(
        v.data,
        want.iter().map(|x| x * 2.0 - 1.0).collect::<Vec<_>>()
    );
    // NaN slope: no scaling (nibabel), not NaN voxels (what the nifti crate would give).
    patch(&p("i16.nii"), 112, &f32::NAN.to_le_bytes());
    let v = nifti::read(p("i16.nii")).unwrap();
    assert_eq!(v.data, want);
    // A zero slope means no scaling too.
    patch(&p("i16.nii"), 112, &0f32.to_le_bytes());
    assert_eq!(nifti::read(p("i16.nii")).unwrap().data, want);
    // A valid slope with a NaN intercept is an error.
    patch(&p("i16.nii"), 112, &1.5f32.to_le_bytes());
    patch(&p("i16.nii"), 116, &f32::NAN.to_le_bytes());
    let m = one_line_naming(nifti::read(p("i16.nii")).unwrap_err(), &p("i16.nii"));
    assert!(m.contains("scl_inter"), "{m}");
}

#[test]
fn bad_nifti_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // Truncated .nii.gz: a valid file cut in half.
    let n = 40 * 30 * 20;
    let mut state = 7u32;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            (state >> 8) as f32 / 16777216.0
        })
        .collect();
    let v = nifti::Volume::new(data, [40, 30, 20], [1.0, 1.0, 1.0]).unwrap();
    nifti::write_volume(p("full.nii.gz"), &v.data, &v).unwrap();
    let bytes = std::fs::read(p("full.nii.gz")).unwrap();
    std::fs::write(p("trunc.nii.gz"), &bytes[..bytes.len() / 2]).unwrap();
    let m = one_line_naming(
        nifti::read(p("trunc.nii.gz")).unwrap_err(),
        &p("trunc.nii.gz"),
    );
    assert!(m.contains("truncated") || m.contains("corrupt"), "{m}");
    // Truncated inside the header.
    std::fs::write(p("hdr.nii"), [0u8; 100]).unwrap();
    let m = one_line_naming(nifti::read(p("hdr.nii")).unwrap_err(), &p("hdr.nii"));
    assert!(m.contains("header"), "{m}");
    // Not NIfTI at all (long enough to have a header's size).
    std::fs::write(p("text.nii"), "this is not a NIfTI image\n".repeat(40)).unwrap();
    let m = one_line_naming(nifti::read(p("text.nii")).unwrap_err(), &p("text.nii"));
    assert!(m.contains("not a NIfTI-1 file"), "{m}");
    // Not gzip although named .nii.gz.
    std::fs::write(p("text.nii.gz"), "this is not a NIfTI image\n".repeat(40)).unwrap();
    let m = one_line_naming(
        nifti::read(p("text.nii.gz")).unwrap_err(),
        &p("text.nii.gz"),
    );
    assert!(m.contains("header"), "{m}");
    // Missing file.
    one_line_naming(
        nifti::read(p("missing.nii.gz")).unwrap_err(),
        &p("missing.nii.gz"),
    );
    // Unsupported datatype: RGB24 (datatype at offset 70, bitpix at 72).
    nifti::write_volume(p("rgb.nii"), &small_volume().data, &small_volume()).unwrap();
    patch(&p("rgb.nii"), 70, &128i16.to_le_bytes());
    patch(&p("rgb.nii"), 72, &24i16.to_le_bytes());
    let m = one_line_naming(nifti::read(p("rgb.nii")).unwrap_err(), &p("rgb.nii"));
    assert!(m.contains("unsupported NIfTI datatype"), "{m}");
    // An unknown datatype code.
    patch(&p("rgb.nii"), 70, &77i16.to_le_bytes());
    let m = one_line_naming(nifti::read(p("rgb.nii")).unwrap_err(), &p("rgb.nii"));
    assert!(m.contains("datatype code 77"), "{m}");
    // A 4-D image with several volumes.
    nifti::write_volume(p("4d.nii"), &small_volume().data, &small_volume()).unwrap();
    let mut dim = [4u16, 5, 4, 1, 3, 1, 1, 1];
    let b: Vec<u8> = dim.iter_mut().flat_map(|d| d.to_le_bytes()).collect();
    patch(&p("4d.nii"), 40, &b);
    let m = one_line_naming(nifti::read(p("4d.nii")).unwrap_err(), &p("4d.nii"));
    assert!(m.contains("4-D"), "{m}");
    // A float image is not a label map.
    let m = one_line_naming(
        nifti::read(p("full.nii.gz")).unwrap().labels().unwrap_err(),
        &p("full.nii.gz"),
    );
    assert!(m.contains("not a label map"), "{m}");
}

// ---------------------------------------------------------------- HDF5

#[test]
fn h5_real_la_file() {
    // Reference values from h5py on the same file.
    let p = la_h5("06SR5RBREL16DQ6M8LWS");
    let il = h5::read_image_label(&p).unwrap();
    assert_eq!(il.shape, vec![183, 140, 88]);
    let sum: f64 = il.image.iter().map(|&v| v as f64).sum();
    assert!(
        (sum - 3288043.4489254355).abs() < 1e-6 * 3288043.4489254355,
        "image sum {sum}"
    );
    let [_, ny, nz] = [183, 140, 88];
    assert_eq!(
        il.image[(10 * ny + 20) * nz + 30] as f64,
        -0.21435055136680603
    );
    assert_eq!(
        il.image.iter().copied().fold(f32::MIN, f32::max) as f64,
        6.347480297088623
    );
    assert!(il.label.iter().all(|&l| l <= 1));
    assert_eq!(il.label.iter().map(|&l| l as u64).sum::<u64>(), 154296);
    let slice40: u64 = il
        .label
        .iter()
        .skip(40)
        .step_by(nz)
        .map(|&l| l as u64)
        .sum();
    assert_eq!(slice40, 4404);
    // The label read after the image through the same file is the label (the rustyhdf5 bug).
    let (lab, shape) = h5::read_u8(&p, "label").unwrap();
    assert_eq!(shape, il.shape);
    assert_eq!(lab, il.label);
}

#[test]
fn bad_h5_files() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mri_norm2.h5");
    std::fs::copy(la_h5("0RZDK210BSMWAA6467LU"), &copy).unwrap();
    let m = one_line_naming(h5::read_u8(&copy, "seg").unwrap_err(), &copy);
    assert!(
        m.contains("no dataset 'seg'") && m.contains("image, label"),
        "{m}"
    );
    let m = one_line_naming(h5::read_f32(&copy, "mask").unwrap_err(), &copy);
    assert!(m.contains("no dataset 'mask'"), "{m}");
    let m = one_line_naming(h5::read_u8(&copy, "image").unwrap_err(), &copy);
    assert!(m.contains("'image' is float32, expected uint8"), "{m}");
    let m = one_line_naming(h5::read_f32(&copy, "label").unwrap_err(), &copy);
    assert!(m.contains("'label' is uint8, expected float32"), "{m}");
    let junk = dir.path().join("junk.h5");
    std::fs::write(&junk, "not hdf5".repeat(100)).unwrap();
    let m = one_line_naming(h5::read_image_label(&junk).unwrap_err(), &junk);
    assert!(m.contains("HDF5"), "{m}");
    // Truncated HDF5.
    let bytes = std::fs::read(&copy).unwrap();
    let cut = dir.path().join("cut.h5");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    one_line_naming(h5::read_image_label(&cut).unwrap_err(), &cut);
    one_line_naming(
        h5::read_image_label(dir.path().join("none.h5")).unwrap_err(),
        &dir.path().join("none.h5"),
    );
}

// ---------------------------------------------------------------- datasets

#[test]
fn la_layout_real() {
    let ds = LaDataset::open(la()).unwrap();
    assert_eq!(ds.train.len(), 12);
    assert_eq!(ds.test.len(), 4);
    assert_eq!(ds.train[0], "06SR5RBREL16DQ6M8LWS");
    let c = ds.load(&ds.test[0]).unwrap();
    assert_eq!(c.shape[2], 88);
    assert_eq!(c.image.len(), c.shape.iter().product::<usize>());
    assert!(c.label.contains(&1));
}

#[test]
fn acdc_layout_real() {
    let ds = AcdcDataset::open(acdc()).unwrap();
    assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (140, 20, 40));
    assert_eq!(ds.cases(Split::Test)[0], "patient011_frame01");
    assert_eq!(ds.train_slices.len(), 1312);
    // First entry: patient099_frame01_slice_15 is slice 14 of a train volume.
    let r = &ds.train_slices[0];
    assert_eq!((r.case.as_str(), r.index), ("patient099_frame01", 14));
    let case = ds.load(&r.case).unwrap();
    assert_eq!(case.shape, [16, 224, 154]); // [S, H, W]; manifest: W 154, H 224, S 16
    let s = ds.load_slice(r).unwrap();
    assert_eq!(s.shape, [224, 154]);
    assert_eq!(s.image, case.image[14 * 224 * 154..15 * 224 * 154]);
    assert!(case.slice(16).is_err());
    let (img, _) = ds.paths("patient028_frame01").unwrap();
    assert!(img.starts_with(acdc().join("val")));
}

/// Write a labelled case `name` into `dir` (image dims [x, y, z]).
fn write_case(
    dir: &Path,
    name: &str,
    img: Vec<f32>,
    lab: Vec<u8>,
    img_dims: [usize; 3],
    lab_dims: [usize; 3],
) {
    let v = nifti::Volume::new(img, img_dims, [1.0, 1.0, 1.0]).unwrap();
    nifti::write_volume(dir.join(format!("{name}.nii.gz")), &v.data, &v).unwrap();
    let l = nifti::Volume::new(vec![0.0; lab.len()], lab_dims, [1.0, 1.0, 1.0]).unwrap();
    nifti::write_labels(dir.join(format!("{name}_gt.nii.gz")), &lab, &l).unwrap();
}

#[test]
fn folder_layout_and_bad_cases() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let lab: Vec<u8> = (0..24).map(|i| (i % 3) as u8).collect();
    write_case(d, "good", img.clone(), lab.clone(), [4, 3, 2], [4, 3, 2]);
    let mut nan = img.clone();
    nan[5] = f32::NAN;
    write_case(d, "nan", nan, lab.clone(), [4, 3, 2], [4, 3, 2]);
    let mut seven = lab.clone();
    seven[3] = 7;
    write_case(d, "range", img.clone(), seven, [4, 3, 2], [4, 3, 2]);
    write_case(
        d,
        "shape",
        img.clone(),
        lab[..12].to_vec(),
        [4, 3, 2],
        [4, 3, 1],
    );
    let v = nifti::Volume::new(img.clone(), [4, 3, 2], [1.0; 3]).unwrap();
    nifti::write_volume(d.join("unlab.nii.gz"), &v.data, &v).unwrap();

    let ds = FolderDataset::open(d, 3).unwrap();
    assert_eq!(ds.cases, vec!["good", "nan", "range", "shape"]);
    assert_eq!(ds.unlabelled, vec!["unlab"]);
    let c = ds.load("good").unwrap();
    assert_eq!((c.shape, &c.image, &c.label), ([2, 3, 4], &img, &lab));
    assert_eq!(c.spacing, Some([1.0, 1.0, 1.0]));
    let m = one_line_naming(ds.load("nan").unwrap_err(), &d.join("nan.nii.gz"));
    assert!(m.contains("NaN"), "{m}");
    let m = one_line_naming(ds.load("range").unwrap_err(), &d.join("range_gt.nii.gz"));
    assert!(
        m.contains("label value 7 outside the class range 0..=2"),
        "{m}"
    );
    let m = one_line_naming(ds.load("shape").unwrap_err(), &d.join("shape_gt.nii.gz"));
    assert!(m.contains("differ"), "{m}");
    let list = d.join("mine.list");
    let m = one_line_naming(
        ds.check_list(&list, &["good".into(), "gone".into()])
            .unwrap_err(),
        &list,
    );
    assert!(m.contains("'gone'"), "{m}");
    // A label without its image.
    let l = nifti::Volume::new(vec![0.0; 24], [4, 3, 2], [1.0; 3]).unwrap();
    nifti::write_labels(d.join("orphan_gt.nii.gz"), &lab, &l).unwrap();
    let m = one_line_naming(
        FolderDataset::open(d, 3).unwrap_err(),
        &d.join("orphan_gt.nii.gz"),
    );
    assert!(m.contains("without its image"), "{m}");
}

#[test]
fn lists_naming_missing_cases() {
    // LA layout with a listed ID that has no file.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let id = "0RZDK210BSMWAA6467LU";
    std::fs::create_dir_all(root.join("2018LA_Seg_Training Set").join(id)).unwrap();
    std::fs::copy(
        la_h5(id),
        root.join("2018LA_Seg_Training Set")
            .join(id)
            .join("mri_norm2.h5"),
    )
    .unwrap();
    std::fs::write(root.join("train.list"), format!("{id}\n")).unwrap();
    std::fs::write(root.join("test.list"), format!("{id}\nNOSUCHCASE\n")).unwrap();
    let m = one_line_naming(LaDataset::open(root).unwrap_err(), &root.join("test.list"));
    assert!(m.contains("'NOSUCHCASE'"), "{m}");
    std::fs::write(root.join("test.list"), format!("{id}\n")).unwrap();
    assert_eq!(
        LaDataset::open(root).unwrap().load(id).unwrap().shape,
        [199, 143, 88]
    );
    // A missing list file.
    let m = one_line_naming(
        LaDataset::open(dir.path().join("nowhere")).unwrap_err(),
        &dir.path().join("nowhere/train.list"),
    );
    assert!(m.contains("cannot read list"), "{m}");

    // ACDC layout: one real case, a list naming another.
    let a = tempfile::tempdir().unwrap();
    let r = a.path();
    std::fs::create_dir_all(r.join("splits")).unwrap();
    std::fs::create_dir_all(r.join("test")).unwrap();
    for f in ["patient001_frame01.nii.gz", "patient001_frame01_gt.nii.gz"] {
        std::fs::copy(acdc().join("test").join(f), r.join("test").join(f)).unwrap();
    }
    std::fs::write(r.join("splits/train.list"), "").unwrap();
    std::fs::write(r.join("splits/val.list"), "").unwrap();
    std::fs::write(
        r.join("splits/test.list"),
        "patient001_frame01\npatient999_frame01\n",
    )
    .unwrap();
    let m = one_line_naming(
        AcdcDataset::open(r).unwrap_err(),
        &r.join("splits/test.list"),
    );
    assert!(m.contains("'patient999_frame01'"), "{m}");
    std::fs::write(r.join("splits/test.list"), "patient001_frame01\n").unwrap();
    std::fs::write(
        r.join("splits/train_slices.list"),
        "patient001_frame01_slice_1\npatient001_frame01_slice_99\n",
    )
    .unwrap();
    let m = one_line_naming(
        AcdcDataset::open(r).unwrap_err(),
        &r.join("splits/train_slices.list"),
    );
    assert!(m.contains("has only 10 slices"), "{m}");
    std::fs::write(
        r.join("splits/train_slices.list"),
        "patient002_frame01_slice_1\n",
    )
    .unwrap();
    let m = one_line_naming(
        AcdcDataset::open(r).unwrap_err(),
        &r.join("splits/train_slices.list"),
    );
    assert!(m.contains("'patient002_frame01'"), "{m}");
}

// ---------------------------------------------------------------- ssnet eval

const EVAL_CASES: [&str; 3] = [
    "patient001_frame01",
    "patient001_frame02",
    "patient007_frame01",
];

/// Ground truth of three real ACDC test cases in `gt/`, a copy shifted by one voxel along x
/// in `pred/` (same header).
fn eval_fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred) = (dir.path().join("gt"), dir.path().join("pred"));
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    for case in EVAL_CASES {
        let src = acdc().join("test").join(format!("{case}_gt.nii.gz"));
        std::fs::copy(&src, gt.join(format!("{case}_gt.nii.gz"))).unwrap();
        let v = nifti::read(&src).unwrap();
        let labels = v.labels().unwrap();
        let nx = v.dims[0];
        let shifted: Vec<u8> = (0..labels.len())
            .map(|i| if i % nx == 0 { 0 } else { labels[i - 1] })
            .collect();
        nifti::write_labels(pred.join(format!("{case}.nii.gz")), &shifted, &v).unwrap();
    }
    (dir, gt, pred)
}

fn ssnet(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssnet"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_eval_acdc() {
    let (_dir, gt, pred) = eval_fixture();
    let out = ssnet(&[
        "eval".as_ref(),
        "--pred".as_ref(),
        pred.as_os_str(),
        "--gt".as_ref(),
        gt.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let csv = std::fs::read_to_string(pred.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "case,class,dice,jaccard,hd95,asd,assd,hd");
    for case in EVAL_CASES {
        for class in ["RV", "Myo", "LV"] {
            let row = lines
                .iter()
                .find(|l| l.starts_with(&format!("{case},{class},")))
                .unwrap_or_else(|| panic!("no row {case},{class}"));
            let dice: f64 = row.split(',').nth(2).unwrap().parse().unwrap();
            assert!(dice > 0.5 && dice < 1.0, "{row}");
            let hd95: f64 = row.split(',').nth(4).unwrap().parse().unwrap();
            assert!((0.0..=1.0).contains(&hd95), "a one-voxel shift: {row}");
        }
    }
    for summary in [
        "mean,RV,",
        "std,RV,",
        "mean,Myo,",
        "mean,LV,",
        "mean,all,",
        "std,all,",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(summary)),
            "no {summary} row"
        );
    }
    assert!(stdout.contains("patient007_frame01") && stdout.contains("Myo"));

    // Header spacing (1×1×10 here), the largest component, a CSV elsewhere, a list.
    let csv2 = pred.parent().unwrap().join("other.csv");
    let list = pred.parent().unwrap().join("two.list");
    std::fs::write(&list, "patient001_frame01\npatient007_frame01\n").unwrap();
    let out = ssnet(&[
        "eval".as_ref(),
        "--pred".as_ref(),
        pred.as_os_str(),
        "--gt".as_ref(),
        gt.as_os_str(),
        "--spacing".as_ref(),
        "header".as_ref(),
        "--largest-cc".as_ref(),
        "--classes".as_ref(),
        "3".as_ref(),
        "--csv".as_ref(),
        csv2.as_os_str(),
        "--list".as_ref(),
        list.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(&csv2).unwrap();
    assert_eq!(csv.lines().filter(|l| l.starts_with("patient")).count(), 2);
    assert!(csv.lines().all(|l| !l.contains(",RV,")));
}

#[test]
fn cli_eval_errors() {
    let (_dir, gt, pred) = eval_fixture();
    std::fs::remove_file(pred.join("patient001_frame02.nii.gz")).unwrap();
    let out = ssnet(&[
        "eval".as_ref(),
        "--pred".as_ref(),
        pred.as_os_str(),
        "--gt".as_ref(),
        gt.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("'patient001_frame02'") && err.contains(&pred.display().to_string()),
        "{err}"
    );
    assert!(!pred.join("metrics.csv").exists());

    let out = ssnet(&["eval".as_ref(), "--gt".as_ref(), gt.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--pred"), "{err}");

    // A prediction of other dims.
    let v = nifti::Volume::new(vec![0.0; 24], [4, 3, 2], [1.0; 3]).unwrap();
    nifti::write_labels(pred.join("patient001_frame02.nii.gz"), &[1u8; 24], &v).unwrap();
    let out = ssnet(&[
        "eval".as_ref(),
        "--pred".as_ref(),
        pred.as_os_str(),
        "--gt".as_ref(),
        gt.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("patient001_frame02.nii.gz")
            && err.contains("differ"),
        "{err}"
    );
}

// ---------------------------------------------------------------- never lose a file (issue 12)

/// Issue 12 item 4: a header declaring far more voxels than the file holds, or a zero or
/// negative size, is "truncated or malformed" at once, without reserving the declared bytes.
#[test]
fn nifti_header_sizes_checked_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let dims = |d: [i16; 4]| -> Vec<u8> {
        let mut all = [1i16; 8];
        all[..4].copy_from_slice(&d);
        all.iter().flat_map(|v| v.to_le_bytes()).collect()
    };
    for name in ["big.nii", "big.nii.gz"] {
        nifti::write_volume(p(name), &small_volume().data, &small_volume()).unwrap();
        // Uncompressed: patch the header in place; gzipped: rewrite through the .nii.
        let raw = p("raw.nii");
        nifti::write_volume(&raw, &small_volume().data, &small_volume()).unwrap();
        patch(&raw, 40, &dims([3, 30000, 30000, 30000]));
        let bytes = std::fs::read(&raw).unwrap();
        if name.ends_with(".gz") {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            std::fs::write(p(name), e.finish().unwrap()).unwrap();
        } else {
            std::fs::write(p(name), &bytes).unwrap();
        }
        let t = std::time::Instant::now();
        let m = one_line_naming(nifti::read(p(name)).unwrap_err(), &p(name));
        assert!(
            m.contains("truncated or malformed") && m.contains("30000"),
            "{m}"
        );
        assert!(t.elapsed().as_secs_f64() < 5.0, "took {:?}", t.elapsed());
    }
    for (d, what) in [
        ([3, -5, 4, 3], "dim[1] = -5"),
        ([3, 5, 0, 3], "dim[2] = 0"),
        ([0, 5, 4, 3], "dim[0] = 0"),
    ] {
        nifti::write_volume(p("bad.nii"), &small_volume().data, &small_volume()).unwrap();
        patch(&p("bad.nii"), 40, &dims(d));
        let m = one_line_naming(nifti::read(p("bad.nii")).unwrap_err(), &p("bad.nii"));
        assert!(
            m.contains("truncated or malformed") && m.contains(what),
            "{m}"
        );
    }
}

/// Issue 12 item 10: a gzip member whose CRC does not match its data is reported.
#[test]
fn nifti_gzip_crc_mismatch_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.nii.gz");
    nifti::write_volume(&p, &small_volume().data, &small_volume()).unwrap();
    nifti::read(&p).unwrap();
    let mut b = std::fs::read(&p).unwrap();
    // The gzip trailer: CRC32 then ISIZE, the last 8 bytes.
    let n = b.len();
    b[n - 8] ^= 0xff;
    std::fs::write(&p, &b).unwrap();
    let m = one_line_naming(nifti::read(&p).unwrap_err(), &p);
    assert!(m.contains("gzip") && m.contains("damaged"), "{m}");
}

/// Issue 12 item 8: finite but overflowing intensities are refused when the case is loaded,
/// naming the image file (not as a non-finite loss at iteration 1).
#[test]
fn overflowing_intensities_are_refused_at_load_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = (dir.path().join("c.nii.gz"), dir.path().join("c_gt.nii.gz"));
    let mut v = small_volume();
    v.data[7] = 3e38;
    nifti::write_volume(&img, &v.data, &v).unwrap();
    nifti::write_labels(&lab, &[0u8; 60], &v).unwrap();
    let e = ssnet::data::dataset::load_nifti_case("c", &img, &lab, 4).unwrap_err();
    let m = one_line_naming(e, &img);
    assert!(m.contains("3e38") && m.contains("overflow"), "{m}");
}

/// Issue 12 items 1 and 9: `eval --pred/--gt` refuses a `--csv` that is one of its inputs
/// (the file is left as it was), and warns when a prediction's affine disagrees with its
/// ground truth's (the metrics are still computed on the voxel grid).
#[test]
fn cli_eval_never_writes_over_an_input_and_warns_on_affines() {
    let (_dir, gt, pred) = eval_fixture();
    let victim = gt.join("patient001_frame01_gt.nii.gz");
    let before = std::fs::read(&victim).unwrap();
    let out = ssnet(&[
        "eval".as_ref(),
        "--pred".as_ref(),
        pred.as_os_str(),
        "--gt".as_ref(),
        gt.as_os_str(),
        "--csv".as_ref(),
        victim.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("would be written over an input"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), before);

    // A prediction shifted 50 mm and flipped along x: a warning, metrics still computed.
    let p = pred.join("patient001_frame01.nii.gz");
    let mut v = nifti::read(&p).unwrap();
    v.header.srow_x[0] = -v.header.srow_x[0];
    v.header.srow_x[3] += 50.0;
    let labels = v.labels().unwrap();
    nifti::write_labels(&p, &labels, &v).unwrap();
    let out = ssnet(&[
        "eval".as_ref(),
        "--pred".as_ref(),
        pred.as_os_str(),
        "--gt".as_ref(),
        gt.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning")
            && err.contains("affines disagree")
            && err.contains("patient001_frame01"),
        "{err}"
    );
    assert!(!err.contains("patient001_frame02"), "{err}");

    // The default CSV goes into the prediction folder, beside the inputs (said in a note), and
    // a second evaluation of the same folders writes it again: it is an output, not an input.
    for _ in 0..2 {
        let out = ssnet(&[
            "eval".as_ref(),
            "--pred".as_ref(),
            pred.as_os_str(),
            "--gt".as_ref(),
            gt.as_os_str(),
        ]);
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{se}");
        assert!(
            so.contains("note: writing into") && so.contains("metrics.csv"),
            "{so}"
        );
    }
    assert!(pred.join("metrics.csv").is_file());
}
