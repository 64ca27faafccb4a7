//! The parameter list of each network: names and shapes exactly as the reference PyTorch
//! `state_dict`, and PyTorch's default initialisation.

use super::{Arch, ModelConfig, Variant, EMBED_DIM, FEAT_DIM};
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A conv / linear weight; PyTorch initialises it kaiming-uniform with a = sqrt(5), i.e.
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Weight {
        fan_in: usize,
    },
    /// A conv / linear bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the weight's fan_in.
    Bias {
        fan_in: usize,
    },
    /// BatchNorm gamma (1) and beta (0).
    BnWeight,
    BnBias,
    /// BatchNorm running statistics (0 and 1): buffers, not trained.
    RunningMean,
    RunningVar,
}

#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Builder(Vec<ParamSpec>);

impl Builder {
    fn push(&mut self, name: String, shape: Vec<usize>, kind: ParamKind) {
        self.0.push(ParamSpec { name, shape, kind });
    }
    /// Conv (or linear) with weight [out, in, k...]: fan_in = in · Πk.
    fn conv(&mut self, name: &str, out: usize, inp: usize, k: &[usize]) {
        let fan_in = inp * k.iter().product::<usize>();
        let mut shape = vec![out, inp];
        shape.extend_from_slice(k);
        self.push(
            format!("{name}.weight"),
            shape,
            ParamKind::Weight { fan_in },
        );
        self.push(
            format!("{name}.bias"),
            vec![out],
            ParamKind::Bias { fan_in },
        );
    }
    /// Transposed conv with weight [in, out, k...]: PyTorch's fan_in is size(1) · Πk.
    fn conv_t(&mut self, name: &str, inp: usize, out: usize, k: &[usize]) {
        let fan_in = out * k.iter().product::<usize>();
        let mut shape = vec![inp, out];
        shape.extend_from_slice(k);
        self.push(
            format!("{name}.weight"),
            shape,
            ParamKind::Weight { fan_in },
        );
        self.push(
            format!("{name}.bias"),
            vec![out],
            ParamKind::Bias { fan_in },
        );
    }
    fn bn(&mut self, name: &str, c: usize) {
        self.push(format!("{name}.weight"), vec![c], ParamKind::BnWeight);
        self.push(format!("{name}.bias"), vec![c], ParamKind::BnBias);
        self.push(
            format!("{name}.running_mean"),
            vec![c],
            ParamKind::RunningMean,
        );
        self.push(
            format!("{name}.running_var"),
            vec![c],
            ParamKind::RunningVar,
        );
    }
    fn mlp(&mut self, name: &str, inp: usize, hidden: usize, out: usize) {
        self.conv(&format!("{name}.0"), hidden, inp, &[]);
        self.bn(&format!("{name}.1"), hidden);
        self.conv(&format!("{name}.3"), out, hidden, &[]);
    }
}

/// Every parameter and buffer of an SS-Net model, in a fixed order.
pub fn specs(cfg: ModelConfig) -> Result<Vec<ParamSpec>> {
    specs_of(cfg, Variant::SsNet)
}

/// Every parameter and buffer of a model of `variant`, in a fixed order, under the
/// variant's state_dict names ([`Variant::key`]). The backbone comes first and in the same
/// order for both variants, so one seed initialises the same backbone values; AD-MT's
/// heads-free networks simply stop there.
pub fn specs_of(cfg: ModelConfig, variant: Variant) -> Result<Vec<ParamSpec>> {
    let mut all = backbone_and_heads(cfg, variant.has_heads())?;
    for s in &mut all {
        s.name = variant.key(cfg.arch, &s.name).to_string();
    }
    Ok(all)
}

/// SS-Net's names: the backbone, then (with `heads`) the projection / prediction heads and
/// the selectors.
fn backbone_and_heads(cfg: ModelConfig, heads: bool) -> Result<Vec<ParamSpec>> {
    if cfg.num_classes < 2 || cfg.in_channels == 0 {
        return Err(Error::config(format!(
            "a model needs at least 2 classes and 1 input channel, got {cfg:?}"
        )));
    }
    let mut b = Builder(vec![]);
    let nc = cfg.num_classes;
    match cfg.arch {
        Arch::VNet => {
            let f = 16;
            let k3 = [3, 3, 3];
            let k2 = [2, 2, 2];
            let block = |b: &mut Builder, name: &str, stages: usize, cin: usize, cout: usize| {
                for i in 0..stages {
                    b.conv(
                        &format!("{name}.conv.{}", 3 * i),
                        cout,
                        if i == 0 { cin } else { cout },
                        &k3,
                    );
                    b.bn(&format!("{name}.conv.{}", 3 * i + 1), cout);
                }
            };
            let down = |b: &mut Builder, name: &str, cin: usize, cout: usize| {
                b.conv(&format!("{name}.conv.0"), cout, cin, &k2);
                b.bn(&format!("{name}.conv.1"), cout);
            };
            let up = |b: &mut Builder, name: &str, cin: usize, cout: usize| {
                b.conv_t(&format!("{name}.conv.0"), cin, cout, &k2);
                b.bn(&format!("{name}.conv.1"), cout);
            };
            block(&mut b, "encoder.block_one", 1, cfg.in_channels, f);
            down(&mut b, "encoder.block_one_dw", f, 2 * f);
            block(&mut b, "encoder.block_two", 2, 2 * f, 2 * f);
            down(&mut b, "encoder.block_two_dw", 2 * f, 4 * f);
            block(&mut b, "encoder.block_three", 3, 4 * f, 4 * f);
            down(&mut b, "encoder.block_three_dw", 4 * f, 8 * f);
            block(&mut b, "encoder.block_four", 3, 8 * f, 8 * f);
            down(&mut b, "encoder.block_four_dw", 8 * f, 16 * f);
            block(&mut b, "encoder.block_five", 3, 16 * f, 16 * f);
            up(&mut b, "decoder.block_five_up", 16 * f, 8 * f);
            block(&mut b, "decoder.block_six", 3, 8 * f, 8 * f);
            up(&mut b, "decoder.block_six_up", 8 * f, 4 * f);
            block(&mut b, "decoder.block_seven", 3, 4 * f, 4 * f);
            up(&mut b, "decoder.block_seven_up", 4 * f, 2 * f);
            block(&mut b, "decoder.block_eight", 2, 2 * f, 2 * f);
            up(&mut b, "decoder.block_eight_up", 2 * f, f);
            block(&mut b, "decoder.block_nine", 1, f, f);
            b.conv("decoder.out_conv", nc, f, &[1, 1, 1]);
        }
        Arch::UNet => {
            let ch = [16usize, 32, 64, 128, 256];
            let block = |b: &mut Builder, name: &str, cin: usize, cout: usize| {
                b.conv(&format!("{name}.conv_conv.0"), cout, cin, &[3, 3]);
                b.bn(&format!("{name}.conv_conv.1"), cout);
                b.conv(&format!("{name}.conv_conv.4"), cout, cout, &[3, 3]);
                b.bn(&format!("{name}.conv_conv.5"), cout);
            };
            block(&mut b, "encoder.in_conv", cfg.in_channels, ch[0]);
            for i in 1..5 {
                block(
                    &mut b,
                    &format!("encoder.down{i}.maxpool_conv.1"),
                    ch[i - 1],
                    ch[i],
                );
            }
            for i in 1..5 {
                let (c1, c2) = (ch[5 - i], ch[4 - i]);
                b.conv(&format!("decoder.up{i}.conv1x1"), c2, c1, &[1, 1]);
                block(&mut b, &format!("decoder.up{i}.conv"), 2 * c2, c2);
            }
            b.conv("decoder.out_conv", nc, ch[0], &[3, 3]);
        }
    }
    if !heads {
        return Ok(b.0);
    }
    b.mlp("projection_head", EMBED_DIM, FEAT_DIM, FEAT_DIM);
    b.mlp("prediction_head", FEAT_DIM, FEAT_DIM, FEAT_DIM);
    for c in 0..nc {
        b.mlp(
            &format!("contrastive_class_selector_{c}"),
            FEAT_DIM,
            FEAT_DIM,
            1,
        );
    }
    for c in 0..nc {
        b.mlp(
            &format!("contrastive_class_selector_memory{c}"),
            FEAT_DIM,
            FEAT_DIM,
            1,
        );
    }
    Ok(b.0)
}

/// PyTorch's default initialisation, drawn from one seeded stream in spec order.
pub fn init_values(specs: &[ParamSpec], seed: u64) -> BTreeMap<String, Vec<f32>> {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for s in specs {
        let n = s.numel();
        let v: Vec<f32> = match s.kind {
            ParamKind::Weight { fan_in } | ParamKind::Bias { fan_in } => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                (0..n)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect()
            }
            ParamKind::BnWeight | ParamKind::RunningVar => vec![1.0; n],
            ParamKind::BnBias | ParamKind::RunningMean => vec![0.0; n],
        };
        out.insert(s.name.clone(), v);
    }
    out
}
