//! One SS-Net training step on your own tensors, from Rust: a UNet with SS-Net's heads, a
//! batch whose first sample is labelled and whose second is not, and the full objective
//! (Dice + cross-entropy on the labelled part, VAT smoothness, prototype contrast) followed
//! by the SGD update.
//!
//! ```sh
//! cargo run --release --example train_step
//! ```

use ssnet::gpu::Gpu;
use ssnet::nn::{Arch, Model, ModelConfig};
use ssnet::ssnet::{StepInputs, Trainer, TrainerConfig};
use ssnet::tensor::Tensor;

fn main() -> ssnet::Result<()> {
    let gpu = Gpu::shared()?;
    eprintln!("device: {}", gpu.describe());
    let cfg = ModelConfig {
        arch: Arch::UNet,
        in_channels: 1,
        num_classes: 4,
    };
    let model = Model::init(&gpu, cfg, 1337)?;
    // The reference's ACDC settings, with one labelled sample in a batch of two.
    let mut trainer = Trainer::new(
        model,
        TrainerConfig {
            labeled_bs: 1,
            ..TrainerConfig::acdc()
        },
    );
    // Your data goes here: images [B, 1, H, W] (labelled first), labels [labelled, H, W].
    let (b, h, w) = (2, 32, 32);
    let image: Vec<f32> = (0..b * h * w)
        .map(|i| ((i % w) as f32 / w as f32 - 0.5) + ((i / w) % h) as f32 / h as f32)
        .collect();
    let labels: Vec<u32> = (0..h * w)
        .map(|i| ((i % w) * 4 / w) as u32) // four vertical bands: classes 0..3
        .collect();
    let x = Tensor::from_f32(&gpu, &image, &[b, 1, h, w])?;
    let y = Tensor::from_u32(&gpu, &labels, &[1, h, w])?;
    let losses = trainer.step(&StepInputs {
        x: &x,
        labels: &y,
        rand_u: None,
        seed: 7,
    })?;
    eprintln!(
        "iteration {}: loss {:.4} (dice {:.4}, ce {:.4}, lds {:.4}, contrast {:.4} / {:.4})",
        losses.iter,
        losses.loss,
        losses.loss_dice,
        losses.loss_ce,
        losses.loss_lds,
        losses.loss_cl_l,
        losses.loss_cl_u
    );
    Ok(())
}
