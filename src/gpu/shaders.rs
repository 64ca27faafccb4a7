//! The shader registry: every WGSL file of `shaders/`, included once. A test walks the
//! folder and fails on a file that is not listed here, and naga validates each one.

/// One WGSL file (an op family). Entry points inside are named `<op>_fwd`, `<op>_bwd_<input>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Shader {
    Elementwise,
    Reduce,
    Softmax,
    Loss,
    Matmul,
    Rows,
    Conv,
    ConvTranspose,
    BatchNorm,
    Resample,
    Dropout,
    Optim,
    Infer,
}

macro_rules! registry {
    ($($v:ident => $file:literal),* $(,)?) => {
        impl Shader {
            /// Every registered shader.
            pub const ALL: &'static [Shader] = &[$(Shader::$v),*];
            /// File name under `shaders/`.
            pub fn file(self) -> &'static str {
                match self { $(Shader::$v => $file),* }
            }
            /// WGSL source, compiled into the binary.
            pub fn source(self) -> &'static str {
                match self { $(Shader::$v => include_str!(concat!("../../shaders/", $file))),* }
            }
        }
    };
}

registry! {
    Elementwise => "elementwise.wgsl",
    Reduce => "reduce.wgsl",
    Softmax => "softmax.wgsl",
    Loss => "loss.wgsl",
    Matmul => "matmul.wgsl",
    Rows => "rows.wgsl",
    Conv => "conv.wgsl",
    ConvTranspose => "conv_transpose.wgsl",
    BatchNorm => "batchnorm.wgsl",
    Resample => "resample.wgsl",
    Dropout => "dropout.wgsl",
    Optim => "optim.wgsl",
    Infer => "infer.wgsl",
}
