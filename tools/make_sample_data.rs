//! Regenerates `data/sample` (the README's bundled default) from `../shared/data/acdc`:
//! `cargo run --bin make_sample_data`. Per case: the 5 slices around the middle of the
//! labelled range, an 80×80 window centred on the labels; images stored as uint8 with
//! `scl_slope` 1/255 (the source is min-max normalised to [0, 1]).

use ssnet::data::nifti;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join("acdc");
    let dst = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    let list =
        |s: &str| ssnet::data::dataset::read_list(src.join(format!("splits/{s}.list"))).unwrap();
    let patients = |l: Vec<String>, n: usize| -> Vec<String> {
        let mut ps: Vec<String> = Vec::new();
        for c in &l {
            let p = c.split('_').next().unwrap().to_string();
            if !ps.contains(&p) {
                ps.push(p);
            }
        }
        l.into_iter()
            .filter(|c| ps[..n].iter().any(|p| c.starts_with(&format!("{p}_"))))
            .collect()
    };
    let splits = [
        ("train", patients(list("train"), 4)),
        ("val", patients(list("val"), 1)),
        ("test", patients(list("test"), 2)),
    ];
    let (ns, crop) = (5usize, 80usize);
    let mut slices = Vec::new();
    for (split, cases) in &splits {
        std::fs::create_dir_all(dst.join(split)).unwrap();
        std::fs::create_dir_all(dst.join("splits")).unwrap();
        std::fs::write(
            dst.join(format!("splits/{split}.list")),
            cases.join("\n") + "\n",
        )
        .unwrap();
        for case in cases {
            let img = nifti::read(src.join(format!("{split}/{case}.nii.gz"))).unwrap();
            let lab = nifti::read(src.join(format!("{split}/{case}_gt.nii.gz"))).unwrap();
            let [s, h, w] = img.shape_zyx();
            let fg: Vec<usize> = (0..s * h * w).filter(|&i| lab.data[i] > 0.0).collect();
            let zs: Vec<usize> = fg.iter().map(|i| i / (h * w)).collect();
            let (z0, z1) = (*zs.iter().min().unwrap(), *zs.iter().max().unwrap());
            let zc = ((z0 + z1) / 2).clamp(ns / 2, s - ns + ns / 2);
            let zstart = zc - ns / 2;
            let ys: Vec<usize> = fg.iter().map(|i| i / w % h).collect();
            let xs: Vec<usize> = fg.iter().map(|i| i % w).collect();
            let yc = (ys.iter().min().unwrap() + ys.iter().max().unwrap()) / 2;
            let xc = (xs.iter().min().unwrap() + xs.iter().max().unwrap()) / 2;
            let y0 = yc.saturating_sub(crop / 2).min(h - crop);
            let x0 = xc.saturating_sub(crop / 2).min(w - crop);
            let (mut im, mut lb) = (Vec::new(), Vec::new());
            for z in zstart..zstart + ns {
                for y in y0..y0 + crop {
                    for x in x0..x0 + crop {
                        let i = (z * h + y) * w + x;
                        im.push((img.data[i].clamp(0.0, 1.0) * 255.0).round() as u8);
                        lb.push(lab.data[i] as u8);
                    }
                }
            }
            // The header of the source with the crop's dims and origin.
            let mut hdr = img.header.clone();
            hdr.dim[1] = crop as u16;
            hdr.dim[2] = crop as u16;
            hdr.dim[3] = ns as u16;
            let shift = [x0 as f32, y0 as f32, zstart as f32];
            for (r, row) in [&mut hdr.srow_x, &mut hdr.srow_y, &mut hdr.srow_z]
                .into_iter()
                .enumerate()
            {
                row[3] += row[0] * shift[0] + row[1] * shift[1] + row[2] * shift[2];
                if r == 0 {
                    hdr.quatern_x = row[3];
                } else if r == 1 {
                    hdr.quatern_y = row[3];
                } else {
                    hdr.quatern_z = row[3];
                }
            }
            let gt = dst.join(format!("{split}/{case}_gt.nii.gz"));
            nifti::write_labels_with_header(&gt, &lb, &hdr).unwrap();
            // The image: uint8 through the label writer (uncompressed), scl_slope patched to
            // 1/255 (bytes 112..116 of the NIfTI-1 header), then gzip.
            let raw = dst.join(format!("{split}/{case}.nii"));
            nifti::write_labels_with_header(&raw, &im, &hdr).unwrap();
            let mut bytes = std::fs::read(&raw).unwrap();
            bytes[112..116].copy_from_slice(&(1.0f32 / 255.0).to_le_bytes());
            bytes[116..120].copy_from_slice(&0.0f32.to_le_bytes());
            std::fs::write(&raw, bytes).unwrap();
            let st = Command::new("gzip")
                .args(["-9", "-n", "-f"])
                .arg(&raw)
                .status()
                .unwrap();
            assert!(st.success());
            if *split == "train" {
                for n in 1..=ns {
                    slices.push(format!("{case}_slice_{n}"));
                }
            }
            // Read back through the dataset code: values within 1/510 of the source.
            let back = nifti::read(dst.join(format!("{split}/{case}.nii.gz"))).unwrap();
            assert_eq!(back.shape_zyx(), [ns, crop, crop]);
            assert!((back.data[0] - im[0] as f32 / 255.0).abs() < 1e-6);
        }
    }
    std::fs::write(
        dst.join("splits/train_slices.list"),
        slices.join("\n") + "\n",
    )
    .unwrap();
    let ds = ssnet::data::dataset::AcdcDataset::open(&dst).unwrap();
    assert_eq!(ds.train_slices.len(), 8 * ns);
}
