//! `ssnet plan --data DIR`: print the plan of an own dataset without training (see
//! `train::plan`); the same flags as `ssnet train` override it.
//!
//! ```text
//! ssnet plan --data DIR [--labelnum N] [--patch ...] [--batch-size B] [--labeled-bs L]
//!            [--seed S] [--json] [own-data flags of train]
//! ```

use super::own::{plan_of, OwnArgs};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::train::config::Method;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The dataset folder (Decathlon, nnU-Net v2 or plain images/ + labels/ layout).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Labelled cases kept for training (the others join the unlabelled stream).
    #[arg(long)]
    pub labelnum: Option<usize>,
    /// Patch: X,Y,Z (VNet) or H,W (UNet), multiples of 16.
    #[arg(long, value_name = "SIZES")]
    pub patch: Option<String>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub labeled_bs: Option<usize>,
    /// Seed of the split.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print plan.json instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// The method to plan for: ssnet (default) or admt (its student pass holds L + 2U
    /// samples, which bounds the patch).
    #[arg(long, default_value = "ssnet", value_parser = ["ssnet", "admt"])]
    pub method: String,
    #[command(flatten)]
    pub own: OwnArgs,
}

pub fn run(a: PlanArgs, device: Option<&str>) -> Result<()> {
    // The adapter's binding limit bounds the patch; without an adapter the plan still prints.
    let max_binding = match Gpu::new(device) {
        Ok(g) => Some(g.max_binding()),
        Err(e) => {
            eprintln!("note: no GPU ({e}); the patch is bounded by the memory budget only");
            None
        }
    };
    let method = if a.method == "admt" {
        Method::Admt
    } else {
        Method::Ssnet
    };
    let po = a.own.plan_options(
        a.patch.as_deref(),
        a.batch_size,
        a.labeled_bs,
        max_binding,
        method,
    )?;
    let (_, _, plan) = plan_of(&a.data, &a.own, a.labelnum, a.seed, &po)?;
    if a.json {
        print!("{}", plan.to_json()?);
    } else {
        println!("{}", plan.describe());
    }
    Ok(())
}
