//! The shader registry: every WGSL file of `shaders/`, included once. A shader module is one
//! file, or several files joined in order behind a line of `enable` directives (the
//! convolution helpers shared by the f32 and the f16 matrix-unit kernels; the two back-ends of
//! the matrix-unit kernel). A test walks the folder and fails on a file no module uses, and
//! naga validates every module.

use std::borrow::Cow;

/// One shader module (an op family). Entry points inside are named `<op>_fwd`,
/// `<op>_bwd_<input>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Shader {
    Elementwise,
    Reduce,
    Softmax,
    Loss,
    Matmul,
    Rows,
    Conv,
    /// The convolution GEMM on f16 tiles with f32 accumulation through cooperative matrices
    /// (tensor cores): needs `EXPERIMENTAL_COOPERATIVE_MATRIX` and `SHADER_F16`.
    ConvMma,
    /// The same kernel with the matrix products done lane by lane on the same f16 tiles: any
    /// adapter with `SHADER_F16` (lavapipe included) runs it, so the tests check the staging,
    /// scaling and epilogue of [`Shader::ConvMma`] where no matrix units exist.
    ConvMmaEmulated,
    /// [`Shader::ConvMma`] on 8×8 cooperative matrices (Metal-shaped adapters): each 16×16
    /// product is assembled from 8×8 fragments (mma8.wgsl).
    ConvMma8,
    /// The 8×8 fragment assembly with the fragments multiplied lane by lane: checks
    /// [`Shader::ConvMma8`]'s staging and fragment layout on any adapter with `SHADER_F16`.
    ConvMma8Emulated,
    ConvTranspose,
    BatchNorm,
    Resample,
    Dropout,
    Optim,
    Infer,
    /// AD-MT's per-voxel maps, CutMix and the per-tensor EMA.
    Admt,
    /// The teachers' EMA over many tensors per dispatch.
    Ema,
}

macro_rules! file {
    ($f:literal) => {
        ($f, include_str!(concat!("../../shaders/", $f)))
    };
}

const CONV_COMMON: (&str, &str) = file!("conv_common.wgsl");
const CONV_MMA: (&str, &str) = file!("conv_mma.wgsl");
const MMA8: (&str, &str) = file!("mma8.wgsl");

impl Shader {
    /// Every registered shader module.
    pub const ALL: &'static [Shader] = &[
        Shader::Elementwise,
        Shader::Reduce,
        Shader::Softmax,
        Shader::Loss,
        Shader::Matmul,
        Shader::Rows,
        Shader::Conv,
        Shader::ConvMma,
        Shader::ConvMmaEmulated,
        Shader::ConvMma8,
        Shader::ConvMma8Emulated,
        Shader::ConvTranspose,
        Shader::BatchNorm,
        Shader::Resample,
        Shader::Dropout,
        Shader::Optim,
        Shader::Infer,
        Shader::Admt,
        Shader::Ema,
    ];

    /// The files of the module under `shaders/` (name, contents), joined in this order.
    pub fn parts(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Shader::Elementwise => &[file!("elementwise.wgsl")],
            Shader::Reduce => &[file!("reduce.wgsl")],
            Shader::Softmax => &[file!("softmax.wgsl")],
            Shader::Loss => &[file!("loss.wgsl")],
            Shader::Matmul => &[file!("matmul.wgsl")],
            Shader::Rows => &[file!("rows.wgsl")],
            Shader::Conv => &[CONV_COMMON, file!("conv.wgsl")],
            Shader::ConvMma => &[CONV_COMMON, CONV_MMA, file!("mma_coop.wgsl")],
            Shader::ConvMmaEmulated => &[CONV_COMMON, CONV_MMA, file!("mma_emulated.wgsl")],
            Shader::ConvMma8 => &[CONV_COMMON, CONV_MMA, MMA8, file!("mma8_coop.wgsl")],
            Shader::ConvMma8Emulated => &[CONV_COMMON, CONV_MMA, MMA8, file!("mma8_emulated.wgsl")],
            Shader::ConvTranspose => &[file!("conv_transpose.wgsl")],
            Shader::BatchNorm => &[file!("batchnorm.wgsl")],
            Shader::Resample => &[file!("resample.wgsl")],
            Shader::Dropout => &[file!("dropout.wgsl")],
            Shader::Optim => &[file!("optim.wgsl")],
            Shader::Infer => &[file!("infer.wgsl")],
            Shader::Admt => &[file!("admt.wgsl")],
            Shader::Ema => &[file!("ema.wgsl")],
        }
    }

    /// `enable` directives put before the parts (they must open a WGSL module).
    pub fn enables(self) -> &'static str {
        match self {
            Shader::ConvMma | Shader::ConvMma8 => "enable f16;\nenable wgpu_cooperative_matrix;\n",
            Shader::ConvMmaEmulated | Shader::ConvMma8Emulated => "enable f16;\n",
            _ => "",
        }
    }

    /// The module's name in messages: its last part, the one holding its entry points or its
    /// back-end.
    pub fn file(self) -> &'static str {
        self.parts().last().expect("a module has a part").0
    }

    /// WGSL source of the module (compiled into the binary).
    pub fn source(self) -> Cow<'static, str> {
        match (self.enables(), self.parts()) {
            ("", [(_, one)]) => Cow::Borrowed(one),
            (enables, parts) => {
                let mut s = String::from(enables);
                for (name, text) in parts {
                    s.push_str(&format!("\n// ---- shaders/{name}\n"));
                    s.push_str(text);
                }
                Cow::Owned(s)
            }
        }
    }
}
