//! AD-MT's per-voxel maps and batch-wide moves on the GPU (`shaders/admt.wgsl`), each the
//! twin of a function of [`crate::reference::admt`] or [`crate::admt::cutmix`]. Nothing here
//! is on the tape: the teachers' maps are constants of the student's loss (the official code
//! computes them under `no_grad`), and the EMA and CutMix act on data, not on the graph.

use super::{launch, launch_pieces, u32_of, Part};
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::reference::admt::Fusion;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdmtParams {
    n: u32,
    c: u32,
    s: u32,
    mode: u32,
    d0: u32,
    d1: u32,
    d2: u32,
    count: u32,
    inv_tau: f32,
    threshold: f32,
    alpha: f32,
    _p: f32,
}

impl AdmtParams {
    /// `n` samples of `c` channels over `s` voxels; every other field at its neutral value.
    fn new(op: &str, n: usize, c: usize, s: usize) -> Result<AdmtParams> {
        Ok(AdmtParams {
            n: u32_of(op, n)?,
            c: u32_of(op, c)?,
            s: u32_of(op, s)?,
            mode: 0,
            d0: 1,
            d1: 1,
            d2: 1,
            count: 0,
            inv_tau: 1.0,
            threshold: 0.0,
            alpha: 0.0,
            _p: 0.0,
        })
    }

    fn ncs(op: &str, x: &Tensor) -> Result<(usize, usize, usize, AdmtParams)> {
        let (n, c, s) = super::softmax::ncs(op, x)?;
        Ok((n, c, s, AdmtParams::new(op, n, c, s)?))
    }
}

/// The teachers' fused maps, each `[N, ...spatial]`.
pub struct TeacherMaps {
    /// u32: the fused label (argmax of q).
    pub label: Tensor,
    /// f32: max over classes of q.
    pub conf: Tensor,
    /// u32: 1 where the two teachers' argmaxes differ.
    pub conflict: Tensor,
}

fn map_shape(x: &Tensor) -> Vec<usize> {
    let mut s = vec![x.shape()[0]];
    s.extend_from_slice(&x.shape()[2..]);
    s
}

/// Fuse the two teachers' softmaxes `p1`, `p2` `[N, C, ...]` (ADMT.md §4 step 2).
pub fn teacher_fuse(p1: &Tensor, p2: &Tensor, mode: Fusion, tau: f32) -> Result<TeacherMaps> {
    let op = "teacher_fuse";
    p1.expect_dtype(op, DType::F32)?;
    p2.expect_dtype(op, DType::F32)?;
    if p1.shape() != p2.shape() {
        return Err(Error::op(
            op,
            format!("teachers' outputs {:?} and {:?}", p1.shape(), p2.shape()),
        ));
    }
    if !(tau > 0.0 && tau.is_finite()) {
        return Err(Error::op(op, format!("temperature {tau} (must be > 0)")));
    }
    let (n, _, s, mut prm) = AdmtParams::ncs(op, p1)?;
    prm.mode = match mode {
        Fusion::Entropy => 0,
        Fusion::Mean => 1,
    };
    prm.inv_tau = 1.0 / tau;
    let gpu = p1.gpu();
    let shape = map_shape(p1);
    let maps = TeacherMaps {
        label: Tensor::empty(gpu, &shape, DType::U32, op)?,
        conf: Tensor::empty(gpu, &shape, DType::F32, op)?,
        conflict: Tensor::empty(gpu, &shape, DType::U32, op)?,
    };
    launch(
        gpu,
        Shader::Admt,
        "teacher_fuse",
        &prm,
        &[
            p1.buffer(),
            p2.buffer(),
            maps.label.buffer(),
            maps.conf.buffer(),
            maps.conflict.buffer(),
        ],
        n * s,
    )?;
    Ok(maps)
}

/// The student's label and confidence (max softmax) from its logits `[N, C, ...]`
/// (ADMT.md §4 step 5): (u32 label, f32 confidence), each `[N, ...]`.
pub fn student_max(logits: &Tensor) -> Result<(Tensor, Tensor)> {
    let op = "student_max";
    logits.expect_dtype(op, DType::F32)?;
    let (n, _, s, prm) = AdmtParams::ncs(op, logits)?;
    let gpu = logits.gpu();
    let shape = map_shape(logits);
    let label = Tensor::empty(gpu, &shape, DType::U32, op)?;
    let conf = Tensor::empty(gpu, &shape, DType::F32, op)?;
    launch(
        gpu,
        Shader::Admt,
        "student_max",
        &prm,
        &[logits.buffer(), label.buffer(), conf.buffer()],
        n * s,
    )?;
    Ok((label, conf))
}

/// The student's target (ADMT.md §4 steps 7, 8): the compromise between the fused teachers
/// and the student, then [`super::IGNORE`] where the confidence is below `threshold`.
pub fn compromise_targets(
    maps: &TeacherMaps,
    student_label: &Tensor,
    student_conf: &Tensor,
    threshold: f32,
) -> Result<Tensor> {
    let op = "compromise_targets";
    for (t, d) in [
        (&maps.label, DType::U32),
        (&maps.conf, DType::F32),
        (&maps.conflict, DType::U32),
        (student_label, DType::U32),
        (student_conf, DType::F32),
    ] {
        t.expect_dtype(op, d)?;
        if t.shape() != maps.label.shape() {
            return Err(Error::op(
                op,
                format!("map {:?} beside {:?}", t.shape(), maps.label.shape()),
            ));
        }
    }
    let m = maps.label.numel();
    let prm = AdmtParams {
        threshold,
        ..AdmtParams::new(op, 1, 1, m)?
    };
    let gpu = maps.label.gpu();
    let target = Tensor::empty(gpu, maps.label.shape(), DType::U32, op)?;
    launch(
        gpu,
        Shader::Admt,
        "compromise_threshold",
        &prm,
        &[
            maps.label.buffer(),
            maps.conf.buffer(),
            maps.conflict.buffer(),
            student_label.buffer(),
            student_conf.buffer(),
            target.buffer(),
        ],
        m,
    )?;
    Ok(target)
}

/// The CutMix boxes of one draw as the kernel reads them: per sample `[perm, lo0, hi0, lo1,
/// hi1, lo2, hi2]` (a 2-D draw gets the whole of a unit third axis).
pub fn cutmix_boxes(draw: &crate::admt::cutmix::CutMix) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(draw.perm.len() * 7);
    for (i, &src) in draw.perm.iter().enumerate() {
        out.push(u32_of("cutmix", src)?);
        let b = &draw.boxes[i];
        if b.is_empty() || b.len() > 3 {
            return Err(Error::op(
                "cutmix",
                format!("{} box axes (2 or 3)", b.len()),
            ));
        }
        for a in 0..3 {
            let (lo, hi) = b.get(a).copied().unwrap_or((0, 1));
            out.push(u32_of("cutmix", lo)?);
            out.push(u32_of("cutmix", hi)?);
        }
    }
    Ok(out)
}

/// `x` `[N, ...]` (f32 or u32; with or without a channel axis) mixed by `boxes` (see
/// [`cutmix_boxes`]) over its trailing `spatial` axes (2 or 3).
pub fn cutmix(x: &Tensor, boxes: &Tensor, spatial: usize) -> Result<Tensor> {
    let op = "cutmix";
    boxes.expect_dtype(op, DType::U32)?;
    let sh = x.shape();
    if !(2..=3).contains(&spatial) || sh.len() < spatial + 1 {
        return Err(Error::op(
            op,
            format!("{spatial} spatial axes of a tensor {sh:?}"),
        ));
    }
    let n = sh[0];
    if boxes.numel() != n * 7 {
        return Err(Error::op(
            op,
            format!("{} box entries for {n} samples (7 each)", boxes.numel()),
        ));
    }
    let dims = &sh[sh.len() - spatial..];
    let s: usize = dims.iter().product();
    let c = x.numel() / (n * s).max(1);
    let (d0, d1, d2) = match dims {
        [a, b] => (*a, *b, 1),
        [a, b, d] => (*a, *b, *d),
        _ => unreachable!("2 or 3 spatial axes checked above"),
    };
    let prm = AdmtParams {
        d0: u32_of(op, d0)?,
        d1: u32_of(op, d1)?,
        d2: u32_of(op, d2)?,
        ..AdmtParams::new(op, n, c, s)?
    };
    let entry = match x.dtype() {
        DType::F32 => "cutmix_f32",
        DType::U32 => "cutmix_u32",
    };
    let out = Tensor::empty(x.gpu(), sh, x.dtype(), op)?;
    launch(
        x.gpu(),
        Shader::Admt,
        entry,
        &prm,
        &[boxes.buffer(), x.buffer(), out.buffer()],
        x.numel(),
    )?;
    Ok(out)
}

/// `teacher ← alpha·teacher + (1 − alpha)·student`, in place (ADMT.md §4 step 11), for one
/// tensor pair of the same shape (parameters and BatchNorm buffers alike): one dispatch per
/// tensor. A whole model's EMA goes through [`super::ema::ema_many`] (up to 16 tensors per
/// dispatch, the same bits); this stays as its reference and its fallback.
pub fn ema_into(teacher: &Tensor, student: &Tensor, alpha: f32) -> Result<()> {
    let op = "ema";
    teacher.expect_dtype(op, DType::F32)?;
    student.expect_dtype(op, DType::F32)?;
    if teacher.shape() != student.shape() {
        return Err(Error::op(
            op,
            format!(
                "teacher {:?} and student {:?}",
                teacher.shape(),
                student.shape()
            ),
        ));
    }
    let base = AdmtParams::new(op, 1, 1, 1)?;
    launch_pieces(
        teacher.gpu(),
        Shader::Admt,
        "ema",
        &[Part::Elems(teacher.buffer()), Part::Elems(student.buffer())],
        teacher.numel(),
        |_, count| AdmtParams {
            count,
            alpha,
            ..base
        },
    )
}
