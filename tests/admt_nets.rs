//! AD-MT's heads-free networks (ADMT.md §2): the same computation as SS-Net's backbone under
//! AD-MT's state_dict names, and checkpoints that keep those names.

mod common;
use common::gpu;
use ssnet::nn::checkpoint::{self, META_VARIANT};
use ssnet::nn::spec::{specs_of, ParamSpec};
use ssnet::nn::{Arch, Model, ModelConfig, Pass, Variant};
use ssnet::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};

const VNET: ModelConfig = ModelConfig {
    arch: Arch::VNet,
    in_channels: 1,
    num_classes: 2,
};
const UNET: ModelConfig = ModelConfig {
    arch: Arch::UNet,
    in_channels: 1,
    num_classes: 4,
};

fn by_name(specs: &[ParamSpec]) -> BTreeMap<String, Vec<usize>> {
    specs
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect()
}

fn is_head(name: &str) -> bool {
    name.starts_with("projection_head")
        || name.starts_with("prediction_head")
        || name.starts_with("contrastive_class_selector")
}

#[test]
fn admt_vnet_keys_are_flat_and_headless() {
    let names = by_name(&specs_of(VNET, Variant::Admt).unwrap());
    // ADMT.md §2's examples (num_batches_tracked is not kept: BN momentum is fixed).
    assert_eq!(names["block_one.conv.0.weight"], vec![16, 1, 3, 3, 3]);
    assert_eq!(names["block_one_dw.conv.1.running_mean"], vec![32]);
    assert_eq!(
        names["block_five_up.conv.0.weight"],
        vec![256, 128, 2, 2, 2]
    );
    assert_eq!(names["block_nine.conv.1.running_var"], vec![16]);
    assert_eq!(names["out_conv.weight"], vec![2, 16, 1, 1, 1]);
    assert!(names
        .keys()
        .all(|k| !k.starts_with("encoder.") && !k.starts_with("decoder.") && !is_head(k)));
    // Exactly SS-Net's backbone, prefix removed.
    let ss: BTreeMap<String, Vec<usize>> = by_name(&specs_of(VNET, Variant::SsNet).unwrap())
        .into_iter()
        .filter(|(k, _)| !is_head(k))
        .map(|(k, v)| {
            let flat = k
                .strip_prefix("encoder.")
                .or_else(|| k.strip_prefix("decoder."))
                .unwrap_or_else(|| panic!("SS-Net backbone key {k} without a prefix"))
                .to_string();
            (flat, v)
        })
        .collect();
    assert_eq!(names, ss);
}

#[test]
fn admt_unet_keeps_ssnet_keys_without_heads() {
    let names = by_name(&specs_of(UNET, Variant::Admt).unwrap());
    for (i, (c1, c2)) in [(256, 128), (128, 64), (64, 32), (32, 16)]
        .iter()
        .enumerate()
    {
        let n = format!("decoder.up{}.conv1x1", i + 1);
        assert_eq!(names[&format!("{n}.weight")], vec![*c2, *c1, 1, 1]);
        assert_eq!(names[&format!("{n}.bias")], vec![*c2]);
    }
    assert!(names.keys().all(|k| !k.contains(".up.") && !is_head(k)));
    assert_eq!(names["decoder.out_conv.weight"], vec![4, 16, 3, 3]);
    let ss: BTreeMap<String, Vec<usize>> = by_name(&specs_of(UNET, Variant::SsNet).unwrap())
        .into_iter()
        .filter(|(k, _)| !is_head(k))
        .collect();
    assert_eq!(names, ss);
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// The SS-Net model's tensor that AD-MT's model calls `k`.
fn twin<'a>(ss: &'a Model, k: &str) -> &'a Tensor {
    ss.get(k)
        .or_else(|_| ss.get(&format!("encoder.{k}")))
        .or_else(|_| ss.get(&format!("decoder.{k}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The heads model and the heads-free one built from the same seed hold the same backbone
/// and give the same logits (eval, then train mode with dropout), moving the same running
/// statistics.
fn same_logits(cfg: ModelConfig, x_shape: &[usize]) {
    let g = gpu();
    let ss = Model::init(&g, cfg, 11).unwrap();
    let ad = Model::init_variant(&g, cfg, Variant::Admt, 11).unwrap();
    assert_eq!(ad.variant(), Variant::Admt);
    assert!(ad.num_parameters() < ss.num_parameters());
    for (k, t) in ad.params().iter().chain(ad.buffers()) {
        assert_eq!(bits(t), bits(twin(&ss, k)), "{k}: initial values differ");
    }
    let n: usize = x_shape.iter().product();
    let x = Tensor::from_f32(
        &g,
        &ssnet::reference::to_f32(&ssnet::reference::normal(3, n)),
        x_shape,
    )
    .unwrap();
    for pass in [Pass::EVAL, Pass::train(Some(77))] {
        let a = ss.forward(&x, pass).unwrap().0;
        let b = ad.logits(&x, pass).unwrap();
        assert_eq!(a.shape(), b.shape());
        let va = a.to_f32().unwrap();
        assert!(va.iter().all(|v| v.is_finite()));
        assert!(va.iter().any(|&v| v != 0.0));
        assert_eq!(
            bits(&a),
            bits(&b),
            "{:?} logits differ ({:?})",
            cfg.arch,
            pass.bn
        );
    }
    // The train pass moved the running statistics, identically.
    let mut moved = false;
    for (k, t) in ad.buffers() {
        assert_eq!(
            bits(t),
            bits(twin(&ss, k)),
            "{k}: running statistics differ"
        );
        moved |= t.to_f32().unwrap().iter().any(|&v| v != 0.0 && v != 1.0);
    }
    assert!(
        moved,
        "the train-mode pass did not move the running statistics"
    );
}

#[test]
fn heads_free_vnet_logits_equal_the_heads_model() {
    same_logits(VNET, &[2, 1, 16, 16, 16]);
}

#[test]
fn heads_free_unet_logits_equal_the_heads_model() {
    same_logits(UNET, &[2, 1, 32, 32]);
}

#[test]
fn admt_checkpoints_round_trip_under_admt_names() {
    let g = gpu();
    let dir = tempfile::tempdir().unwrap();
    for cfg in [VNET, UNET] {
        let m = Model::init_variant(&g, cfg, Variant::Admt, 5).unwrap();
        let shape: Vec<usize> = match cfg.arch {
            Arch::VNet => vec![2, 1, 16, 16, 16],
            Arch::UNet => vec![2, 1, 16, 16],
        };
        let n: usize = shape.iter().product();
        let x = Tensor::from_f32(
            &g,
            &ssnet::reference::to_f32(&ssnet::reference::normal(4, n)),
            &shape,
        )
        .unwrap();
        m.logits(&x, Pass::train(None)).unwrap(); // move the running statistics
        let path = dir.path().join(format!("{}.safetensors", cfg.arch.name()));
        m.save(&path, &BTreeMap::new(), &HashMap::new()).unwrap();
        let c = checkpoint::read(&path).unwrap();
        assert_eq!(c.metadata[META_VARIANT], "admt");
        let want: Vec<String> = m.specs().iter().map(|s| s.name.clone()).collect();
        let mut got: Vec<String> = c.tensors.keys().cloned().collect();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        got.sort();
        assert_eq!(got, want_sorted);
        let back = Model::load(&g, &path).unwrap();
        assert_eq!(back.variant(), Variant::Admt);
        assert_eq!(back.cfg, cfg);
        let (s0, s1) = (m.state().unwrap(), back.state().unwrap());
        assert_eq!(s0.len(), s1.len());
        for (k, v) in &s0 {
            let b: Vec<u32> = s1[k].iter().map(|x| x.to_bits()).collect();
            let a: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
            assert_eq!(a, b, "{k}");
        }

        // A converted official state_dict: no metadata, PyTorch's num_batches_tracked
        // counters (blended into floats by AD-MT's EMA). The variant comes from the names.
        let mut raw: BTreeMap<String, (Vec<f32>, Vec<usize>)> = m
            .specs()
            .iter()
            .map(|s| (s.name.clone(), (s0[&s.name].clone(), s.shape.clone())))
            .collect();
        let bn = match cfg.arch {
            Arch::VNet => "block_one.conv.1.num_batches_tracked",
            Arch::UNet => "encoder.in_conv.conv_conv.1.num_batches_tracked",
        };
        raw.insert(bn.to_string(), (vec![3.5], vec![]));
        let p2 = dir
            .path()
            .join(format!("{}_pth.safetensors", cfg.arch.name()));
        checkpoint::write(&p2, &raw, &HashMap::new()).unwrap();
        let conv = Model::load(&g, &p2).unwrap();
        assert_eq!(conv.variant(), Variant::Admt);
        assert_eq!(conv.cfg, cfg);
        // An SS-Net model does not load as AD-MT's, nor the reverse: the names say which.
        let ss = Model::init(&g, cfg, 5).unwrap();
        let p3 = dir
            .path()
            .join(format!("{}_ss.safetensors", cfg.arch.name()));
        ss.save(&p3, &BTreeMap::new(), &HashMap::new()).unwrap();
        assert_eq!(Model::load(&g, &p3).unwrap().variant(), Variant::SsNet);
    }
}
