//! Preprocessing of a whole own dataset: the 100 ACDC patients (200 volumes, every one
//! labelled) written in the Decathlon layout, then read, checked, reoriented, cropped,
//! z-scored and resampled in parallel (rayon) as `ssnet train --data` does before training
//! (`cold`: fingerprint + preprocessing, nothing cached), and read back from the run's cache
//! (`cache_hit`: what a second run of the same training costs).
//!
//! `cargo bench --bench preprocess` (targets on the 2-core CI machine: cold < 60 s, cache
//! hit < 2 s). `SSNET_DATA_DIR` points at another `shared/data`.

use criterion::{criterion_group, criterion_main, Criterion};
use ssnet::cli::own::{own_data, OwnArgs};
use ssnet::data::dataset::{AcdcDataset, Split as AcdcSplit};
use ssnet::data::layout::convert::{acdc_cases, write_dataset};
use ssnet::data::layout::dataset_json::JsonFlavour;
use ssnet::data::layout::{OpenOptions, OwnDataset, Split, SplitOptions};
use ssnet::train::own;
use ssnet::train::plan::{Plan, PlanOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn acdc_root() -> PathBuf {
    match std::env::var_os("SSNET_DATA_DIR") {
        Some(d) => PathBuf::from(d).join("acdc"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/acdc"),
    }
}

fn preprocess(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("acdc_msd");
    let acdc = AcdcDataset::open(acdc_root()).expect("ACDC data");
    let ids: Vec<String> = AcdcSplit::ALL
        .iter()
        .flat_map(|s| acdc.cases(*s).to_vec())
        .collect();
    assert_eq!(ids.len(), 200, "100 patients, 2 frames each");
    let cases = acdc_cases(&acdc_root(), &ids, None).expect("ACDC volumes");
    let labels = [(0, "background"), (1, "RV"), (2, "Myo"), (3, "LV")];
    write_dataset(&data, JsonFlavour::Msd, "MRI", &labels, &cases, &[]).expect("write");
    drop(cases);
    let ds = OwnDataset::open(&data, &OpenOptions::default()).expect("layout");
    // 14 labelled cases (7 patients, SS-Net's larger ACDC setting), the rest unlabelled.
    let split = Split::choose(
        &ds,
        &SplitOptions {
            labelnum: Some(14),
            ..SplitOptions::default()
        },
    )
    .expect("split");
    let plan = Plan::make(&ds, &split, &PlanOptions::default()).expect("plan");
    let od = own_data(&ds, &plan, &OwnArgs::default(), None);
    let run = tmp.path().join("run");

    let t = Instant::now();
    let (prepared, dir, fresh) = own::load(&run, &ds, &split, &od).expect("preprocess");
    println!(
        "one cold pass: {} volumes in {:.2} s",
        prepared.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(fresh);
    own::write_cache(&dir, &prepared).expect("cache");
    drop(prepared);

    let mut g = c.benchmark_group("preprocess_acdc_100_patients");
    g.sample_size(10).warm_up_time(Duration::from_millis(1));
    g.bench_function("cold", |b| {
        b.iter(|| {
            let (p, _, fresh) = own::load(&tmp.path().join("empty"), &ds, &split, &od).unwrap();
            assert!(fresh && p.len() == 200);
        })
    });
    g.bench_function("cache_hit", |b| {
        b.iter(|| {
            let (p, _, fresh) = own::load(&run, &ds, &split, &od).unwrap();
            assert!(!fresh && p.len() == 200);
        })
    });
    g.finish();
}

criterion_group!(benches, preprocess);
criterion_main!(benches);
