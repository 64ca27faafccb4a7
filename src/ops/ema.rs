//! The teachers' EMA over every tensor of a model in few dispatches (`shaders/ema.wgsl`):
//! `t ← α·t + (1 − α)·s` for each (teacher, student) pair, parameters and BatchNorm buffers
//! alike (ADMT.md §4 step 11). The per-tensor kernel ([`super::admt::ema_into`]) costs one
//! dispatch per tensor (176 for VNet, 118 for UNet); here one dispatch updates up to 16
//! tensors, each bound as its own pair of storage bindings, so a VNet teacher takes 11.
//!
//! Why bindings and not one flat arena: every tensor of a model is its own buffer, bound
//! whole by the layers' kernels; an arena would need views with offsets through every op.
//! The binding count is the adapter's limit to respect: a dispatch binds 2 storage buffers
//! per slot, so the entry point is the largest of 16, 8 or 4 slots that
//! `max_storage_buffers_per_shader_stage` allows (WebGPU's minimum, 8, gives 4); below 8 the
//! per-tensor kernel runs. A tensor over `max_storage_buffer_binding_size` is cut into pieces
//! of the binding limit (offsets aligned as `launch_pieces` aligns them), each piece
//! a slot of its own. The arithmetic is the per-tensor kernel's f32 expression, so both paths
//! give the same bits (tests/admt_ops.rs).

use super::{piece_elems, u32_of, WG};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Shader};
use crate::tensor::{DType, Tensor};

/// Elements per workgroup (`CHUNK` in `shaders/ema.wgsl`): 16 per invocation.
const CHUNK: usize = 16 * WG as usize;

/// Slots (teacher/student pairs) of the widest entry point.
pub const MAX_SLOTS: usize = 16;

/// The entry points by slot count, widest first.
const ENTRIES: [(usize, &str); 3] = [(16, "ema_group16"), (8, "ema_group8"), (4, "ema_group4")];

/// Mirrors `EmaGroupParams` in `shaders/ema.wgsl`: `first[k]` / `len[k]` are the WGSL
/// `array<vec4<u32>, 4>` entries `[k / 4][k % 4]`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmaGroupParams {
    alpha: f32,
    slots: u32,
    _p: [u32; 2],
    first: [u32; MAX_SLOTS],
    len: [u32; MAX_SLOTS],
}

/// One slot of a grouped dispatch: elements `start .. start + len` of pair `pair`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmaSlot {
    pub pair: usize,
    pub start: usize,
    pub len: usize,
}

/// The dispatches of a grouped EMA over tensors of `lens` elements, in order: each tensor cut
/// into pieces of at most `piece` elements, the pieces packed `slots` to a dispatch. Empty
/// tensors take no slot.
pub fn ema_plan(lens: &[usize], slots: usize, piece: usize) -> Result<Vec<Vec<EmaSlot>>> {
    if slots == 0 || slots > MAX_SLOTS || piece == 0 {
        return Err(Error::op(
            "ema",
            format!(
                "plan of {slots} slots per dispatch with pieces of {piece} elements (slots 1..={MAX_SLOTS}, pieces > 0)"
            ),
        ));
    }
    let mut pieces = vec![];
    for (pair, &n) in lens.iter().enumerate() {
        let mut start = 0;
        while start < n {
            let len = piece.min(n - start);
            pieces.push(EmaSlot { pair, start, len });
            start += len;
        }
    }
    Ok(pieces.chunks(slots).map(<[EmaSlot]>::to_vec).collect())
}

/// Slots per dispatch on this device: the widest entry point whose 2 storage buffers per
/// slot fit `max_storage_buffers_per_shader_stage`, or 1 (the per-tensor kernel) below 8.
pub fn ema_slots(gpu: &Gpu) -> usize {
    let buffers = gpu.limits.max_storage_buffers_per_shader_stage as usize;
    ENTRIES
        .iter()
        .map(|&(n, _)| n)
        .find(|&n| 2 * n <= buffers)
        .unwrap_or(1)
}

/// `teacher ← alpha·teacher + (1 − alpha)·student` for every pair (same shapes, f32), in
/// [`ema_slots`] pairs per dispatch. The teachers must be distinct tensors, none of them a
/// student's.
pub fn ema_many(pairs: &[(&Tensor, &Tensor)], alpha: f32) -> Result<()> {
    ema_many_with(pairs, alpha, MAX_SLOTS)
}

/// [`ema_many`] with at most `max_slots` pairs per dispatch (the device may allow fewer): the
/// narrower entry points on a device that offers the wider ones (tests, the pipeline list);
/// under 4, the per-tensor kernel.
pub fn ema_many_with(pairs: &[(&Tensor, &Tensor)], alpha: f32, max_slots: usize) -> Result<()> {
    let op = "ema";
    let Some(&(first, _)) = pairs.first() else {
        return Ok(());
    };
    for (i, &(t, s)) in pairs.iter().enumerate() {
        t.expect_dtype(op, DType::F32)?;
        s.expect_dtype(op, DType::F32)?;
        if t.shape() != s.shape() {
            return Err(Error::op(
                op,
                format!(
                    "pair {i}: teacher {:?} and student {:?} (same shapes needed)",
                    t.shape(),
                    s.shape()
                ),
            ));
        }
        if !std::sync::Arc::ptr_eq(t.gpu(), first.gpu())
            || !std::sync::Arc::ptr_eq(s.gpu(), first.gpu())
        {
            return Err(Error::op(
                op,
                format!("pair {i} lives on another device than pair 0"),
            ));
        }
        // A teacher twice would be blended twice; a teacher that is a student would be bound
        // for writing and reading in one dispatch.
        if let Some(j) = (0..=i).find(|&j| {
            let (t2, s2) = pairs[j];
            (j < i && t2.same_storage(t)) || s2.same_storage(t) || t2.same_storage(s)
        }) {
            return Err(Error::op(
                op,
                format!("pairs {j} and {i} share a teacher's storage (each teacher tensor once, never a student's)"),
            ));
        }
    }
    let gpu = first.gpu();
    let slots = ema_slots(gpu).min(max_slots);
    let Some(&(width, entry)) = ENTRIES.iter().find(|&&(n, _)| n <= slots) else {
        for &(t, s) in pairs {
            super::admt::ema_into(t, s, alpha)?;
        }
        return Ok(());
    };
    let lens: Vec<usize> = pairs.iter().map(|(t, _)| t.numel()).collect();
    let plan = ema_plan(&lens, width, piece_elems(gpu) as usize)?;
    // Unused slots of a short dispatch: the student side binds the first slot's student again
    // (read-only aliasing is allowed); the teacher side, written, gets its own aligned word of
    // a scratch buffer (writable bindings may not overlap). Never touched: length 0, and
    // their first workgroup (u32::MAX) matches no workgroup.
    let align = (gpu.limits.min_storage_buffer_offset_alignment as usize).max(4);
    let scratch = if plan.iter().any(|g| g.len() < width) {
        Some(Tensor::empty(
            gpu,
            &[width * align / 4],
            DType::F32,
            "ema padding",
        )?)
    } else {
        None
    };
    for group in &plan {
        let mut prm = EmaGroupParams {
            alpha,
            slots: u32_of(op, group.len())?,
            _p: [0; 2],
            first: [u32::MAX; MAX_SLOTS],
            len: [0; MAX_SLOTS],
        };
        let mut workgroups = 0usize;
        let mut bound = Vec::with_capacity(2 * width);
        for (k, sl) in group.iter().enumerate() {
            prm.first[k] = u32_of(op, workgroups)?;
            prm.len[k] = u32_of(op, sl.len)?;
            workgroups += sl.len.div_ceil(CHUNK);
            let (t, s) = pairs[sl.pair];
            for x in [t, s] {
                bound.push(wgpu::BufferBinding {
                    buffer: x.buffer(),
                    offset: sl.start as u64 * 4,
                    size: std::num::NonZeroU64::new(sl.len as u64 * 4),
                });
            }
        }
        for k in group.len()..width {
            let pad = scratch
                .as_ref()
                .ok_or_else(|| Error::op(op, "a short dispatch without its padding buffer"))?;
            bound.push(wgpu::BufferBinding {
                buffer: pad.buffer(),
                offset: (k * align) as u64,
                size: std::num::NonZeroU64::new(4),
            });
            bound.push(bound[1].clone());
        }
        let groups = gpu.grid(workgroups as u64, 1)?;
        gpu.dispatch_bound(Shader::Ema, entry, &[], &prm, &bound, groups)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(pair: usize, start: usize, len: usize) -> EmaSlot {
        EmaSlot { pair, start, len }
    }

    #[test]
    fn plan_cuts_large_tensors_and_packs_pieces_in_order() {
        let plan = ema_plan(&[10, 0, 700, 5], 2, 256).unwrap();
        assert_eq!(
            plan,
            vec![
                vec![slot(0, 0, 10), slot(2, 0, 256)],
                vec![slot(2, 256, 256), slot(2, 512, 188)],
                vec![slot(3, 0, 5)],
            ]
        );
    }

    /// AD-MT's networks: VNet's 176 tensors (parameters and running statistics) take 11
    /// dispatches of 16 (176 one per tensor), UNet's 118 take 8; 44 and 30 of 4 (WebGPU's
    /// 8 storage buffers per stage).
    #[test]
    fn a_model_takes_a_sixteenth_of_the_dispatches() {
        use crate::nn::{spec::specs_of, Arch, ModelConfig, Variant};
        for (arch, classes, tensors, wide, narrow) in
            [(Arch::VNet, 2, 176, 11, 44), (Arch::UNet, 4, 118, 8, 30)]
        {
            let cfg = ModelConfig {
                arch,
                in_channels: 1,
                num_classes: classes,
            };
            let lens: Vec<usize> = specs_of(cfg, Variant::Admt)
                .unwrap()
                .iter()
                .map(|s| s.numel())
                .collect();
            assert_eq!(lens.len(), tensors, "{arch:?}");
            // The binding limit of WebGPU's defaults (128 MiB) splits none of them.
            let piece = (128 << 20) / 4;
            assert_eq!(ema_plan(&lens, 16, piece).unwrap().len(), wide, "{arch:?}");
            assert_eq!(ema_plan(&lens, 4, piece).unwrap().len(), narrow, "{arch:?}");
        }
    }

    #[test]
    fn the_shader_covers_chunk_elements_per_workgroup() {
        let src = Shader::Ema.source();
        assert!(
            src.contains(&format!("const CHUNK: u32 = {CHUNK}u;")),
            "CHUNK differs"
        );
        for (n, entry) in ENTRIES {
            assert!(src.contains(&format!("fn {entry}(")), "{entry}");
            assert!(src.contains(&format!("case {}u:", n - 1)), "{entry}");
        }
    }

    #[test]
    fn plan_refuses_zero_or_too_many_slots() {
        for (slots, piece) in [(0, 64), (17, 64), (4, 0)] {
            let e = ema_plan(&[3], slots, piece).unwrap_err().to_string();
            assert!(e.contains("ema") && e.contains("slots"), "{e}");
        }
    }
}
