//! The evaluation metrics of one full-size LA case: a real label map (183×140×88) against a
//! perturbed copy (shifted 2 voxels along X and 1 along Y, one slab removed), as a 3D
//! evaluation computes them for every test case.
//!
//! `cargo bench --bench metrics -- --sample-size 10`

use criterion::{criterion_group, criterion_main, Criterion};
use ssnet::data::h5;
use ssnet::metrics::{evaluate, foreground, largest_component, CONN_26};
use std::hint::black_box;
use std::path::{Path, PathBuf};

fn la_label() -> (Vec<bool>, Vec<bool>, Vec<usize>) {
    let data = match std::env::var_os("SSNET_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    let path = data.join("la/2018LA_Seg_Training Set/06SR5RBREL16DQ6M8LWS/mri_norm2.h5");
    let (label, shape) = h5::read_u8(&path, "label").expect("LA label");
    let (nx, ny, nz) = (shape[0], shape[1], shape[2]);
    let gt = foreground(&label);
    let mut pred = vec![false; gt.len()];
    for x in 2..nx {
        for y in 1..ny {
            for z in 0..nz {
                // Drop a slab of slices to make the two surfaces differ by more than a shift.
                if (40..44).contains(&z) {
                    continue;
                }
                pred[(x * ny + y) * nz + z] = gt[((x - 2) * ny + (y - 1)) * nz + z];
            }
        }
    }
    (pred, gt, shape)
}

fn bench(c: &mut Criterion) {
    let (pred, gt, dims) = la_label();
    let m = evaluate(&pred, &gt, &dims, None).unwrap();
    println!(
        "LA case {dims:?}: dice {:.4} jaccard {:.4} hd95 {:.4} asd {:.4} (voxels)",
        m.dice, m.jaccard, m.hd95, m.asd
    );
    c.bench_function("la_case_dice_jaccard_hd95_asd", |b| {
        b.iter(|| evaluate(black_box(&pred), black_box(&gt), &dims, None).unwrap())
    });
    c.bench_function("la_case_with_spacing", |b| {
        b.iter(|| evaluate(black_box(&pred), black_box(&gt), &dims, Some(&[0.625; 3])).unwrap())
    });
    c.bench_function("la_case_largest_cc_26", |b| {
        b.iter(|| largest_component(black_box(&pred), &dims, CONN_26).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
