//! The SS-Net networks: VNet (3D, LA) and UNet (2D, ACDC), each with the projection head,
//! the prediction head and the per-class selector MLPs of SS-Net, parameters named and
//! shaped as the reference PyTorch `state_dict` (so its checkpoints load without renaming),
//! PyTorch's default initialisation (seeded), and safetensors checkpoints.

pub mod checkpoint;
pub mod spec;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::{self, Act, BnMode};
use crate::tensor::Tensor;
use spec::{ParamKind, ParamSpec};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// VNet with BatchNorm, 16 base filters, Dropout3d(0.5) after block five and nine.
    VNet,
    /// UNet [16, 32, 64, 128, 256] with LeakyReLU(0.01) and encoder dropout.
    UNet,
}

impl Arch {
    pub fn spatial_dims(self) -> usize {
        match self {
            Arch::VNet => 3,
            Arch::UNet => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::VNet => "vnet",
            Arch::UNet => "unet",
        }
    }
}

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub in_channels: usize,
    pub num_classes: usize,
}

/// Which method's network: the same backbone either way, with or without SS-Net's heads
/// and under that method's state_dict names (ADMT.md §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// SS-Net: projection and prediction heads, per-class selectors; keys `encoder.…`,
    /// `decoder.…` (both networks).
    #[default]
    SsNet,
    /// AD-MT: no heads, logits only. Its VNet is a flat module tree (SS-Net's keys without
    /// the `encoder.` / `decoder.` prefix: `block_one.conv.0.weight`, `out_conv.weight`); its
    /// UNet keeps SS-Net's keys.
    Admt,
}

impl Variant {
    pub fn has_heads(self) -> bool {
        self == Variant::SsNet
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::SsNet => "ssnet",
            Variant::Admt => "admt",
        }
    }

    /// The state_dict name of the tensor that SS-Net's `arch` calls `name`. Names that are
    /// already the variant's own pass through unchanged.
    pub fn key(self, arch: Arch, name: &str) -> &str {
        match (self, arch) {
            (Variant::Admt, Arch::VNet) => name
                .strip_prefix("encoder.")
                .or_else(|| name.strip_prefix("decoder."))
                .unwrap_or(name),
            _ => name,
        }
    }
}

/// BatchNorm momentum and eps of every layer (PyTorch defaults).
pub const BN_MOMENTUM: f32 = 0.1;
pub const BN_EPS: f32 = 1e-5;
/// Width of the embedding, of the projected features and of the selectors.
pub const EMBED_DIM: usize = 16;
pub const FEAT_DIM: usize = 32;

/// How a forward pass runs: BatchNorm mode and the dropout seed (`None` = no dropout, as in
/// eval mode and in the golden fixtures).
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    pub bn: BnMode,
    pub dropout: Option<u64>,
}

impl Pass {
    pub const EVAL: Pass = Pass {
        bn: BnMode::Eval,
        dropout: None,
    };
    pub fn train(dropout: Option<u64>) -> Pass {
        Pass {
            bn: BnMode::Train,
            dropout,
        }
    }
    pub fn frozen(dropout: Option<u64>) -> Pass {
        Pass {
            bn: BnMode::Frozen,
            dropout,
        }
    }
}

/// A network with its parameters (leaves that want gradients) and buffers (BatchNorm
/// running statistics), keyed by the reference's state_dict names.
pub struct Model {
    pub cfg: ModelConfig,
    pub gpu: Arc<Gpu>,
    variant: Variant,
    params: BTreeMap<String, Tensor>,
    buffers: BTreeMap<String, Tensor>,
    specs: Vec<ParamSpec>,
}

/// Mixes a dropout layer's index into the pass seed (SplitMix64 finaliser).
fn layer_seed(seed: u64, layer: u64) -> u64 {
    let mut z = seed ^ layer.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Model {
    /// A new model with PyTorch's default initialisation drawn from `seed`.
    pub fn init(gpu: &Arc<Gpu>, cfg: ModelConfig, seed: u64) -> Result<Model> {
        Self::init_variant(gpu, cfg, Variant::SsNet, seed)
    }

    /// A new model of `variant` (AD-MT: heads-free) initialised from `seed`. The backbone
    /// values equal those of [`Model::init`] with the same seed.
    pub fn init_variant(
        gpu: &Arc<Gpu>,
        cfg: ModelConfig,
        variant: Variant,
        seed: u64,
    ) -> Result<Model> {
        let specs = spec::specs_of(cfg, variant)?;
        let values = spec::init_values(&specs, seed);
        Self::from_values_as(gpu, cfg, variant, specs, values)
    }

    /// A model from named values (a checkpoint); every expected tensor must be present with
    /// its shape. `extra` names that are not ours are an error unless they are PyTorch's
    /// `num_batches_tracked` counters.
    pub fn from_values(
        gpu: &Arc<Gpu>,
        cfg: ModelConfig,
        specs: Vec<ParamSpec>,
        values: BTreeMap<String, Vec<f32>>,
    ) -> Result<Model> {
        Self::from_values_as(gpu, cfg, Variant::SsNet, specs, values)
    }

    /// [`Model::from_values`] for a model of `variant` (`specs` from [`spec::specs_of`]).
    pub fn from_values_as(
        gpu: &Arc<Gpu>,
        cfg: ModelConfig,
        variant: Variant,
        specs: Vec<ParamSpec>,
        mut values: BTreeMap<String, Vec<f32>>,
    ) -> Result<Model> {
        let mut params = BTreeMap::new();
        let mut buffers = BTreeMap::new();
        for s in &specs {
            let v = values.remove(&s.name).ok_or_else(|| {
                Error::msg(format!(
                    "checkpoint has no tensor '{}' ({} model)",
                    s.name,
                    cfg.arch.name()
                ))
            })?;
            if v.len() != s.numel() {
                return Err(Error::msg(format!(
                    "checkpoint tensor '{}' has {} values, the {} model needs shape {:?}",
                    s.name,
                    v.len(),
                    cfg.arch.name(),
                    s.shape
                )));
            }
            let t = Tensor::from_f32(gpu, &v, &s.shape)?;
            if s.kind.is_buffer() {
                buffers.insert(s.name.clone(), t);
            } else {
                params.insert(s.name.clone(), t.with_grad());
            }
        }
        if let Some(extra) = values.keys().find(|k| !k.ends_with("num_batches_tracked")) {
            return Err(Error::msg(format!("checkpoint has tensor '{extra}' that a {} {} model does not have (another architecture or method?)", variant.name(), cfg.arch.name())));
        }
        Ok(Model {
            cfg,
            gpu: gpu.clone(),
            variant,
            params,
            buffers,
            specs,
        })
    }

    /// SS-Net's network (with heads) or AD-MT's (heads-free).
    pub fn variant(&self) -> Variant {
        self.variant
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// Trainable parameters, by name.
    pub fn params(&self) -> &BTreeMap<String, Tensor> {
        &self.params
    }

    /// BatchNorm running statistics, by name.
    pub fn buffers(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    /// A parameter or buffer by name: the model's own state_dict name, or SS-Net's name of
    /// the same tensor (the layers below use SS-Net's names for both variants).
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        let name = self.variant.key(self.cfg.arch, name);
        self.params
            .get(name)
            .or_else(|| self.buffers.get(name))
            .ok_or_else(|| {
                Error::msg(format!(
                    "{} {} model has no tensor '{name}'",
                    self.variant.name(),
                    self.cfg.arch.name()
                ))
            })
    }

    pub fn num_parameters(&self) -> usize {
        self.params.values().map(|t| t.numel()).sum()
    }

    /// Every parameter and buffer read back, by name (checkpoints, golden comparisons).
    pub fn state(&self) -> Result<BTreeMap<String, Vec<f32>>> {
        let mut out = BTreeMap::new();
        for (k, t) in self.params.iter().chain(self.buffers.iter()) {
            out.insert(k.clone(), t.to_f32()?);
        }
        Ok(out)
    }

    /// Overwrite parameters and buffers from named values (same names and sizes).
    pub fn load_state(&self, values: &BTreeMap<String, Vec<f32>>) -> Result<()> {
        for (k, t) in self.params.iter().chain(self.buffers.iter()) {
            let v = values
                .get(k)
                .ok_or_else(|| Error::msg(format!("state has no tensor '{k}'")))?;
            t.write_f32(v)?;
        }
        Ok(())
    }

    // ---- layers -------------------------------------------------------------------------

    fn bn(&self, x: &Tensor, name: &str, pass: Pass, act: Act) -> Result<Tensor> {
        ops::batch_norm(
            x,
            self.get(&format!("{name}.weight"))?,
            self.get(&format!("{name}.bias"))?,
            self.get(&format!("{name}.running_mean"))?,
            self.get(&format!("{name}.running_var"))?,
            pass.bn,
            BN_MOMENTUM,
            BN_EPS,
            act,
        )
    }

    fn conv3d(&self, x: &Tensor, name: &str, stride: usize, pad: usize) -> Result<Tensor> {
        ops::conv3d(
            x,
            self.get(&format!("{name}.weight"))?,
            Some(self.get(&format!("{name}.bias"))?),
            stride,
            pad,
        )
    }

    fn conv2d(&self, x: &Tensor, name: &str, pad: usize) -> Result<Tensor> {
        ops::conv2d(
            x,
            self.get(&format!("{name}.weight"))?,
            Some(self.get(&format!("{name}.bias"))?),
            1,
            pad,
        )
    }

    fn linear(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        ops::linear(
            x,
            self.get(&format!("{name}.weight"))?,
            Some(self.get(&format!("{name}.bias"))?),
        )
    }

    /// Linear → BatchNorm1d → activation → Linear (the heads and selectors).
    /// The BatchNorm and the second Linear are one op (`ops::batch_norm_linear`): the
    /// normalised activation is read by the product as it is computed, never stored.
    fn mlp(&self, x: &Tensor, name: &str, pass: Pass, act: Act) -> Result<Tensor> {
        let h = self.linear(x, &format!("{name}.0"))?;
        let bn = format!("{name}.1");
        let args = ops::BnArgs {
            gamma: self.get(&format!("{bn}.weight"))?,
            beta: self.get(&format!("{bn}.bias"))?,
            running_mean: self.get(&format!("{bn}.running_mean"))?,
            running_var: self.get(&format!("{bn}.running_var"))?,
            mode: pass.bn,
            momentum: BN_MOMENTUM,
            eps: BN_EPS,
            act,
        };
        ops::batch_norm_linear(
            &h,
            &args,
            self.get(&format!("{name}.3.weight"))?,
            Some(self.get(&format!("{name}.3.bias"))?),
        )
    }

    /// projection_head: Linear(16, 32) → BN → ReLU → Linear(32, 32), on rows [M, 16].
    pub fn projection_head(&self, rows: &Tensor, bn: BnMode) -> Result<Tensor> {
        self.mlp(
            rows,
            "projection_head",
            Pass { bn, dropout: None },
            Act::Relu,
        )
    }

    /// prediction_head: Linear(32, 32) → BN → ReLU → Linear(32, 32).
    pub fn prediction_head(&self, rows: &Tensor, bn: BnMode) -> Result<Tensor> {
        self.mlp(
            rows,
            "prediction_head",
            Pass { bn, dropout: None },
            Act::Relu,
        )
    }

    /// The class-c selector (`memory` = the memory-side one): Linear → BN → LeakyReLU(0.2)
    /// → Linear(32, 1), raw scores [M, 1].
    pub fn selector(&self, c: usize, memory: bool, rows: &Tensor, bn: BnMode) -> Result<Tensor> {
        let name = if memory {
            format!("contrastive_class_selector_memory{c}")
        } else {
            format!("contrastive_class_selector_{c}")
        };
        self.mlp(rows, &name, Pass { bn, dropout: None }, Act::LeakyRelu(0.2))
    }

    /// The logits alone (AD-MT's `forward`; the embedding is not kept).
    pub fn logits(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        Ok(self.forward(x, pass)?.0)
    }

    /// The network: (logits [N, classes, ...], embedding [N, 16, ...]).
    pub fn forward(&self, x: &Tensor, pass: Pass) -> Result<(Tensor, Tensor)> {
        let dims = self.cfg.arch.spatial_dims();
        if x.shape().len() != dims + 2 || x.shape()[1] != self.cfg.in_channels {
            return Err(Error::op(
                "forward",
                format!(
                    "{} expects [N, {}, {}], got {:?}",
                    self.cfg.arch.name(),
                    self.cfg.in_channels,
                    if dims == 3 { "X, Y, Z" } else { "H, W" },
                    x.shape()
                ),
            ));
        }
        match self.cfg.arch {
            Arch::VNet => self.vnet(x, pass),
            Arch::UNet => self.unet(x, pass),
        }
    }

    fn vnet(&self, x: &Tensor, pass: Pass) -> Result<(Tensor, Tensor)> {
        // Four halvings: every spatial size must be divisible by 16.
        if x.shape()[2..].iter().any(|&s| s % 16 != 0 || s == 0) {
            return Err(Error::op(
                "vnet",
                format!("spatial size {:?} is not a multiple of 16", &x.shape()[2..]),
            ));
        }
        let block = |x: &Tensor, name: &str, stages: usize| -> Result<Tensor> {
            let mut h = x.clone();
            for i in 0..stages {
                h = self.conv3d(&h, &format!("{name}.conv.{}", 3 * i), 1, 1)?;
                h = self.bn(&h, &format!("{name}.conv.{}", 3 * i + 1), pass, Act::Relu)?;
            }
            Ok(h)
        };
        let down = |x: &Tensor, name: &str| -> Result<Tensor> {
            let h = self.conv3d(x, &format!("{name}.conv.0"), 2, 0)?;
            self.bn(&h, &format!("{name}.conv.1"), pass, Act::Relu)
        };
        let up = |x: &Tensor, name: &str| -> Result<Tensor> {
            let h = ops::conv_transpose3d(
                x,
                self.get(&format!("{name}.conv.0.weight"))?,
                Some(self.get(&format!("{name}.conv.0.bias"))?),
                2,
            )?;
            self.bn(&h, &format!("{name}.conv.1"), pass, Act::Relu)
        };
        let drop = |x: &Tensor, layer: u64| -> Result<Tensor> {
            match pass.dropout {
                Some(seed) => ops::channel_dropout(x, 0.5, layer_seed(seed, layer)),
                None => Ok(x.clone()),
            }
        };
        let x1 = block(x, "encoder.block_one", 1)?;
        let x2 = block(&down(&x1, "encoder.block_one_dw")?, "encoder.block_two", 2)?;
        let x3 = block(
            &down(&x2, "encoder.block_two_dw")?,
            "encoder.block_three",
            3,
        )?;
        let x4 = block(
            &down(&x3, "encoder.block_three_dw")?,
            "encoder.block_four",
            3,
        )?;
        let x5 = block(
            &down(&x4, "encoder.block_four_dw")?,
            "encoder.block_five",
            3,
        )?;
        let x5 = drop(&x5, 1)?;
        let x6 = block(
            &ops::add(&up(&x5, "decoder.block_five_up")?, &x4)?,
            "decoder.block_six",
            3,
        )?;
        let x7 = block(
            &ops::add(&up(&x6, "decoder.block_six_up")?, &x3)?,
            "decoder.block_seven",
            3,
        )?;
        let x8 = block(
            &ops::add(&up(&x7, "decoder.block_seven_up")?, &x2)?,
            "decoder.block_eight",
            2,
        )?;
        let x9 = block(
            &ops::add(&up(&x8, "decoder.block_eight_up")?, &x1)?,
            "decoder.block_nine",
            1,
        )?;
        let x9 = drop(&x9, 2)?;
        let logits = self.conv3d(&x9, "decoder.out_conv", 1, 0)?;
        Ok((logits, x9))
    }

    fn unet(&self, x: &Tensor, pass: Pass) -> Result<(Tensor, Tensor)> {
        if x.shape()[2..].iter().any(|&s| s % 16 != 0 || s == 0) {
            return Err(Error::op(
                "unet",
                format!("spatial size {:?} is not a multiple of 16", &x.shape()[2..]),
            ));
        }
        let leaky = Act::LeakyRelu(0.01);
        // ConvBlock: conv → BN → LeakyReLU → Dropout(p) → conv → BN → LeakyReLU
        let block = |x: &Tensor, name: &str, p: f32, layer: u64| -> Result<Tensor> {
            let h = self.conv2d(x, &format!("{name}.conv_conv.0"), 1)?;
            let h = self.bn(&h, &format!("{name}.conv_conv.1"), pass, leaky)?;
            let h = match pass.dropout {
                Some(seed) if p > 0.0 => ops::dropout(&h, p, layer_seed(seed, layer))?,
                _ => h,
            };
            let h = self.conv2d(&h, &format!("{name}.conv_conv.4"), 1)?;
            self.bn(&h, &format!("{name}.conv_conv.5"), pass, leaky)
        };
        let ps = [0.05f32, 0.1, 0.2, 0.3, 0.5];
        let x0 = block(x, "encoder.in_conv", ps[0], 10)?;
        let mut skips = vec![x0];
        for (i, &p) in ps.iter().enumerate().skip(1) {
            let pooled = ops::max_pool2d(&skips[i - 1], 2)?;
            skips.push(block(
                &pooled,
                &format!("encoder.down{i}.maxpool_conv.1"),
                p,
                10 + i as u64,
            )?);
        }
        let mut h = skips[4].clone();
        for i in 1..5 {
            let name = format!("decoder.up{i}");
            let u = self.conv2d(&h, &format!("{name}.conv1x1"), 0)?;
            let u = ops::upsample_bilinear2x(&u)?;
            let cat = ops::concat_channels(&[&skips[4 - i], &u])?;
            h = block(&cat, &format!("{name}.conv"), 0.0, 20 + i as u64)?;
        }
        let logits = self.conv2d(&h, "decoder.out_conv", 1)?;
        Ok((logits, h))
    }
}

impl ParamKind {
    pub fn is_buffer(self) -> bool {
        matches!(self, ParamKind::RunningMean | ParamKind::RunningVar)
    }
}
