//! Convert SS-Net's datasets to the Decathlon (or nnU-Net v2) layout that `ssnet train --data`
//! reads (a maintenance tool, not part of the CLI).
//!
//! ```text
//! cargo run --release --bin to_msd -- la   ../shared/data/la   out/LA_msd   [--nnunet-v2] [--crop X,Y,Z]
//! cargo run --release --bin to_msd -- acdc ../shared/data/acdc out/ACDC_msd [--nnunet-v2] [--crop X,Y,Z]
//! ```
//!
//! LA: every case of `train.list` (labelled) to `imagesTr/` + `labelsTr/`, `test.list` to
//! `imagesTs/`; 0.625 mm isotropic voxels. ACDC: the `train` and `val` lists to
//! `imagesTr/` + `labelsTr/`, `test` to `imagesTs/`; classes RV, Myo, LV. `--crop` keeps a
//! box of at most X×Y×Z voxels around each label's foreground.

use ssnet::data::dataset::{read_list, AcdcDataset, Split};
use ssnet::data::layout::convert::{acdc_cases, la_cases, write_dataset};
use ssnet::data::layout::dataset_json::JsonFlavour;
use std::path::PathBuf;

fn run() -> ssnet::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        || ssnet::Error::config("usage: to_msd la|acdc SRC OUT [--nnunet-v2] [--crop X,Y,Z]");
    let (kind, src, out) = match args.as_slice() {
        [k, s, o, ..] => (k.as_str(), PathBuf::from(s), PathBuf::from(o)),
        _ => return Err(usage()),
    };
    let flavour = if args.iter().any(|a| a == "--nnunet-v2") {
        JsonFlavour::NnUnetV2
    } else {
        JsonFlavour::Msd
    };
    let crop = match args.iter().position(|a| a == "--crop") {
        Some(i) => {
            let v: Vec<usize> = args
                .get(i + 1)
                .ok_or_else(usage)?
                .split(',')
                .map(|s| s.trim().parse().map_err(|_| usage()))
                .collect::<ssnet::Result<_>>()?;
            Some(<[usize; 3]>::try_from(v.as_slice()).map_err(|_| usage())?)
        }
        None => None,
    };
    let (train, test, modality, labels): (_, _, _, Vec<(u8, &str)>) = match kind {
        "la" => (
            la_cases(&src, &read_list(src.join("train.list"))?, crop)?,
            la_cases(&src, &read_list(src.join("test.list"))?, crop)?,
            "MRI",
            vec![(0, "background"), (1, "left atrium")],
        ),
        "acdc" => {
            let ds = AcdcDataset::open(&src)?;
            let mut ids = ds.cases(Split::Train).to_vec();
            ids.extend_from_slice(ds.cases(Split::Val));
            (
                acdc_cases(&src, &ids, crop)?,
                acdc_cases(&src, ds.cases(Split::Test), crop)?,
                "MRI",
                vec![(0, "background"), (1, "RV"), (2, "Myo"), (3, "LV")],
            )
        }
        _ => return Err(usage()),
    };
    write_dataset(&out, flavour, modality, &labels, &train, &test)?;
    println!(
        "wrote {} training and {} test cases to {}",
        train.len(),
        test.len(),
        out.display()
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
