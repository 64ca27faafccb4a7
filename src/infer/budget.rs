//! Sizes a user gives (patch, batch) checked against what the adapter and the host can hold,
//! before anything is allocated: one line that states the limit, instead of a long stall
//! filling host memory or a wgpu validation error deep inside a kernel.

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Channels of the first feature map of both networks (VNet `n_filters`, UNet `ft_chns[0]`):
/// the largest activation is `batch × 16 × patch` f32 values.
pub const FIRST_FEATURES: u64 = 16;

/// Host bytes per input voxel of a batch, about: the input, its zoomed / padded copy, the
/// class probabilities read back and the label map (a generous 16 f32 per voxel).
const HOST_BYTES_PER_VOXEL: u64 = 64;

/// Bytes free for new allocations on this host (`MemAvailable` of `/proc/meminfo`); `None`
/// where the system does not say.
pub fn host_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// `what` (e.g. `--patch`) of `batch` samples of `patch` fits: the first feature map in the
/// adapter's largest buffer, and the batch's host copies in the memory this host has free.
pub fn check_fits(gpu: &Gpu, what: &str, batch: usize, patch: &[usize]) -> Result<()> {
    check_fits_limits(
        what,
        batch,
        patch,
        gpu.limits.max_buffer_size.min(gpu.max_binding()),
        &gpu.info.name,
        host_available_bytes(),
    )
}

/// [`check_fits`] against explicit limits (`gpu_max`: the largest buffer the adapter binds).
pub fn check_fits_limits(
    what: &str,
    batch: usize,
    patch: &[usize],
    gpu_max: u64,
    adapter: &str,
    host_free: Option<u64>,
) -> Result<()> {
    let voxels = patch
        .iter()
        .try_fold(batch.max(1) as u64, |a, &p| a.checked_mul(p as u64));
    let feature = voxels.and_then(|v| v.checked_mul(FIRST_FEATURES * 4));
    let Some(feature) = feature.filter(|&f| f <= gpu_max) else {
        return Err(Error::config(format!(
            "{what} {patch:?} with batch {}: the first feature map ({FIRST_FEATURES} channels of f32) needs {}, more than the largest buffer of '{adapter}' ({}): use a smaller patch or batch",
            batch.max(1),
            feature.map_or("more than 2^64 bytes".to_string(), gib),
            gib(gpu_max)
        )));
    };
    let host = feature / (FIRST_FEATURES * 4) * HOST_BYTES_PER_VOXEL;
    if let Some(free) = host_free {
        if host > free {
            return Err(Error::config(format!(
                "{what} {patch:?} with batch {}: about {} of host memory needed, {} available on this machine: use a smaller patch or batch",
                batch.max(1),
                gib(host),
                gib(free)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_patches_are_refused_with_the_limit() {
        let e = check_fits_limits("--patch", 1, &[65536, 65536], 1 << 30, "x", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1.00 GiB") && e.contains("256.00 GiB"), "{e}");
        let e = check_fits_limits("--patch", 1, &[64, 64], 1 << 30, "x", Some(1000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("host memory"), "{e}");
        check_fits_limits("--patch", 2, &[64, 64], 1 << 30, "x", Some(1 << 30)).unwrap();
        // No overflow on absurd sizes.
        assert!(check_fits_limits("--patch", 9, &[usize::MAX, 9], u64::MAX, "x", None).is_err());
    }
}
