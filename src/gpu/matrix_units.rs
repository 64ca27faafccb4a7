//! Which matrix-unit (tensor-core) tile an adapter gets: from what it reports (wgpu's
//! cooperative-matrix properties) and a denylist of drivers known to return wrong results or
//! to crash, which keep the f32 path with a one-line reason.
//!
//! - 16×16×16, f16 × f16 → f32, 32-lane subgroups: NVIDIA's tensor cores (and other Vulkan
//!   drivers that report that shape).
//! - 8×8×8, f16 × f16 → f32, 32-lane subgroups: Metal-shaped adapters (Apple's simdgroup
//!   matrices, which wgpu 30 translates cooperative matrices to).
//!
//! Both run the same kernel (conv_mma.wgsl), the 8×8 one through mma8.wgsl's assembly of a
//! 16×16 product from 8×8 fragments; the emulated back-ends of both shapes check them on any
//! adapter (tests/tensor_cores.rs), and the path is compared with the f32 one on first use.

/// The cooperative-matrix tile the convolution kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MmaShape {
    /// 16×16×16 f16 → f32.
    #[default]
    M16x16,
    /// 8×8×8 f16 → f32 (Metal's simdgroup matrices).
    M8x8,
}

impl MmaShape {
    /// Side of the tile.
    pub fn side(self) -> u32 {
        match self {
            MmaShape::M16x16 => 16,
            MmaShape::M8x8 => 8,
        }
    }

    /// `16x16x16` / `8x8x8`.
    pub fn name(self) -> &'static str {
        match self {
            MmaShape::M16x16 => "16x16x16",
            MmaShape::M8x8 => "8x8x8",
        }
    }
}

/// A (vendor, driver, version) known to break the cooperative-matrix path.
struct Denied {
    /// PCI vendor id.
    vendor: u32,
    /// A substring of the driver name (`AdapterInfo::driver`), lower case.
    driver: &'static str,
    /// A substring of the adapter name, lower case (empty: any).
    name: &'static str,
    /// Only integrated GPUs.
    integrated_only: bool,
    /// Driver versions (`AdapterInfo::driver_info`, e.g. "Mesa 25.1.3") affected: those that
    /// do not contain any of these substrings (empty: every version, no fix known).
    fixed_in: &'static [&'static str],
    reason: &'static str,
}

/// Drivers whose cooperative matrices are known bad (public driver reports).
const DENYLIST: &[Denied] = &[
    Denied {
        vendor: 0x8086,
        driver: "mesa",
        name: "xe3",
        integrated_only: false,
        fixed_in: &[],
        reason: "Intel's Mesa ANV driver returns wrong cooperative-matrix results on Xe3",
    },
    Denied {
        vendor: 0x8086,
        driver: "mesa",
        name: "ptl",
        integrated_only: false,
        fixed_in: &[],
        reason:
            "Intel's Mesa ANV driver returns wrong cooperative-matrix results on Xe3 (Panther Lake)",
    },
    Denied {
        vendor: 0x1002,
        driver: "amd open-source driver",
        name: "",
        integrated_only: true,
        fixed_in: &[],
        reason: "AMDVLK crashes in its cooperative-matrix property query on AMD integrated GPUs",
    },
];

/// Why the adapter's cooperative matrices must not be used, if they must not (checked before
/// the property query: one of the entries is a crash in that query).
pub fn denied(
    vendor: u32,
    name: &str,
    driver: &str,
    driver_info: &str,
    device_type: wgpu::DeviceType,
) -> Option<&'static str> {
    let (name, driver, info) = (
        name.to_lowercase(),
        driver.to_lowercase(),
        driver_info.to_lowercase(),
    );
    DENYLIST
        .iter()
        .find(|d| {
            d.vendor == vendor
                && (driver.contains(d.driver) || info.contains(d.driver))
                && name.contains(d.name)
                && (!d.integrated_only || device_type == wgpu::DeviceType::IntegratedGpu)
                && !d.fixed_in.iter().any(|v| info.contains(v))
        })
        .map(|d| d.reason)
}

fn denied_adapter(info: &wgpu::AdapterInfo) -> Option<&'static str> {
    denied(
        info.vendor,
        &info.name,
        &info.driver,
        &info.driver_info,
        info.device_type,
    )
}

/// The cooperative-matrix configurations the adapter reports, unless its driver is denied
/// (whose query may crash) or it has no cooperative matrices.
pub fn reported_configs(a: &wgpu::Adapter) -> Vec<wgpu::CooperativeMatrixProperties> {
    if denied_adapter(&a.get_info()).is_some()
        || !a
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        return vec![];
    }
    a.cooperative_matrix_properties()
}

/// Whether the adapter can run the cooperative-matrix convolution, and on which tile:
/// SHADER_F16, an f16 × f16 → f32 tile of 16×16×16 (preferred) or 8×8×8, subgroups of
/// exactly 32 lanes (the kernel's layout), and a driver not on the denylist.
pub fn cooperative_matrix_support(a: &wgpu::Adapter) -> std::result::Result<MmaShape, String> {
    let info = a.get_info();
    if let Some(why) = denied_adapter(&info) {
        return Err(format!("known-bad driver: {why}"));
    }
    let f = a.features();
    if !f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        return Err("no EXPERIMENTAL_COOPERATIVE_MATRIX".into());
    }
    if !f.contains(wgpu::Features::SHADER_F16) {
        return Err("no SHADER_F16".into());
    }
    let shape = pick_shape(&a.cooperative_matrix_properties())
        .ok_or("no f16 x f16 -> f32 cooperative matrix of 16x16x16 or 8x8x8")?;
    if info.subgroup_min_size != 32 || info.subgroup_max_size != 32 {
        return Err(format!(
            "subgroups of {}..{} lanes (the kernel needs exactly 32)",
            info.subgroup_min_size, info.subgroup_max_size
        ));
    }
    Ok(shape)
}

/// The tile among reported configurations: 16×16×16 f16 → f32 when offered, else 8×8×8.
pub fn pick_shape(configs: &[wgpu::CooperativeMatrixProperties]) -> Option<MmaShape> {
    let has = |s: u32| {
        configs.iter().any(|c| {
            c.m_size == s
                && c.n_size == s
                && c.k_size == s
                && c.ab_type == wgpu::CooperativeScalarType::F16
                && c.cr_type == wgpu::CooperativeScalarType::F32
        })
    };
    [MmaShape::M16x16, MmaShape::M8x8]
        .into_iter()
        .find(|s| has(s.side()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::DeviceType::{DiscreteGpu, IntegratedGpu};

    #[test]
    fn the_denylist_names_its_drivers_and_spares_the_others() {
        let anv = denied(
            0x8086,
            "Intel(R) Graphics (PTL)",
            "Intel open-source Mesa driver",
            "Mesa 25.2.0",
            IntegratedGpu,
        );
        assert!(anv.is_some_and(|r| r.contains("ANV")), "{anv:?}");
        let amdvlk = denied(
            0x1002,
            "AMD Radeon(TM) Graphics",
            "AMD open-source driver",
            "2025.Q2.1",
            IntegratedGpu,
        );
        assert!(amdvlk.is_some_and(|r| r.contains("AMDVLK")), "{amdvlk:?}");
        // The same driver on a discrete card, RADV on the iGPU, NVIDIA: allowed.
        assert!(denied(
            0x1002,
            "AMD Radeon RX 7900",
            "AMD open-source driver",
            "2025.Q2.1",
            DiscreteGpu
        )
        .is_none());
        assert!(denied(
            0x1002,
            "AMD Radeon(TM) Graphics (RADV)",
            "radv",
            "Mesa 25.0",
            IntegratedGpu
        )
        .is_none());
        assert!(denied(0x10de, "NVIDIA H100", "NVIDIA", "570.86", DiscreteGpu).is_none());
        assert!(denied(
            0x8086,
            "Intel(R) Arc(tm) A770 (DG2)",
            "Intel open-source Mesa driver",
            "Mesa 25.2.0",
            DiscreteGpu
        )
        .is_none());
    }

    fn cfg(
        s: u32,
        ab: wgpu::CooperativeScalarType,
        cr: wgpu::CooperativeScalarType,
    ) -> wgpu::CooperativeMatrixProperties {
        wgpu::CooperativeMatrixProperties {
            m_size: s,
            n_size: s,
            k_size: s,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        }
    }

    #[test]
    fn the_tile_follows_what_the_adapter_reports() {
        use wgpu::CooperativeScalarType::{F16, F32};
        assert_eq!(
            pick_shape(&[cfg(8, F16, F32), cfg(16, F16, F32)]),
            Some(MmaShape::M16x16)
        );
        assert_eq!(
            pick_shape(&[cfg(8, F16, F32), cfg(8, F32, F32)]),
            Some(MmaShape::M8x8)
        );
        assert_eq!(pick_shape(&[cfg(16, F16, F16)]), None);
        assert_eq!(pick_shape(&[]), None);
    }
}
