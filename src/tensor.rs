//! GPU tensors: a shape, a dtype and a pooled device buffer, row-major (last index fastest).
//!
//! Tensors are immutable values as far as the tape is concerned: every op writes a new
//! output. The few in-place updates (SGD, BatchNorm running statistics) are explicit
//! functions that say so. Cloning a tensor is cheap (an `Arc`).

use crate::autograd::{self, Node};
use crate::error::{Error, Result};
use crate::gpu::pool::Storage;
use crate::gpu::Gpu;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Element types. Integer tensors hold labels, masks and indices as u32.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DType {
    F32,
    U32,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    pub(crate) storage: Arc<Storage>,
    pub(crate) gpu: Arc<Gpu>,
    /// A leaf whose gradient is wanted.
    pub(crate) requires_grad: bool,
    /// The op that produced this tensor, when recorded on the tape.
    pub(crate) node: Option<Arc<Node>>,
}

#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(#{} {:?} {:?}{})",
            self.0.id,
            self.0.dtype,
            self.0.shape,
            if self.requires_grad() { " grad" } else { "" }
        )
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    pub(crate) fn from_storage(
        gpu: &Arc<Gpu>,
        storage: Arc<Storage>,
        shape: Vec<usize>,
        dtype: DType,
    ) -> Tensor {
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape,
            dtype,
            storage,
            gpu: gpu.clone(),
            requires_grad: false,
            node: None,
        }))
    }

    /// Upload f32 data with the given shape.
    pub fn from_f32(gpu: &Arc<Gpu>, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::op(
                "tensor upload",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        let s = gpu.upload(bytemuck::cast_slice(data), "tensor upload")?;
        Ok(Self::from_storage(
            gpu,
            Arc::new(s),
            shape.to_vec(),
            DType::F32,
        ))
    }

    /// Upload u32 data (labels, masks, indices).
    pub fn from_u32(gpu: &Arc<Gpu>, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::op(
                "tensor upload",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        let s = gpu.upload(bytemuck::cast_slice(data), "tensor upload")?;
        Ok(Self::from_storage(
            gpu,
            Arc::new(s),
            shape.to_vec(),
            DType::U32,
        ))
    }

    /// An uninitialised tensor from the pool; every op that calls this writes all of it.
    pub fn empty(gpu: &Arc<Gpu>, shape: &[usize], dtype: DType, what: &str) -> Result<Tensor> {
        let bytes = numel(shape) as u64 * 4;
        let s = gpu.alloc(bytes, what)?;
        Ok(Self::from_storage(gpu, Arc::new(s), shape.to_vec(), dtype))
    }

    /// A tensor filled with `v`.
    pub fn full(gpu: &Arc<Gpu>, shape: &[usize], v: f32) -> Result<Tensor> {
        let t = Tensor::empty(gpu, shape, DType::F32, "full")?;
        crate::ops::elementwise::fill_(&t, v)?;
        Ok(t)
    }

    pub fn zeros(gpu: &Arc<Gpu>, shape: &[usize]) -> Result<Tensor> {
        Self::full(gpu, shape, 0.0)
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.0.gpu
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.0.storage.buf
    }
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad || self.0.node.is_some()
    }
    /// Whether this is a leaf whose gradient was asked for.
    pub fn is_grad_leaf(&self) -> bool {
        self.0.requires_grad && self.0.node.is_none()
    }
    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.0.node.as_ref()
    }

    /// This tensor as a leaf that wants its gradient (same buffer, new identity).
    pub fn with_grad(&self) -> Tensor {
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape: self.0.shape.clone(),
            dtype: self.0.dtype,
            storage: self.0.storage.clone(),
            gpu: self.0.gpu.clone(),
            requires_grad: true,
            node: None,
        }))
    }

    /// The same values, cut from the tape (same buffer, no gradient).
    pub fn detach(&self) -> Tensor {
        Tensor::from_storage(
            &self.0.gpu,
            self.0.storage.clone(),
            self.0.shape.clone(),
            self.0.dtype,
        )
    }

    /// Whether two tensors share one device buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// A view with another shape of the same number of elements (on the tape).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::op(
                "reshape",
                format!(
                    "{:?} ({} elements) to {shape:?}",
                    self.shape(),
                    self.numel()
                ),
            ));
        }
        let out = Tensor::from_storage(
            &self.0.gpu,
            self.0.storage.clone(),
            shape.to_vec(),
            self.0.dtype,
        );
        let old = self.shape().to_vec();
        Ok(autograd::record("reshape", out, &[self], move |g, _| {
            Ok(vec![Some(g.reshape(&old)?)])
        }))
    }

    /// Copy to the CPU as f32 (submits pending work and waits).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        if self.dtype() != DType::F32 {
            return Err(Error::op("readback", format!("{self:?} is not f32")));
        }
        let bytes = self
            .gpu()
            .read_bytes(self.buffer(), self.numel() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Copy to the CPU as u32.
    pub fn to_u32(&self) -> Result<Vec<u32>> {
        if self.dtype() != DType::U32 {
            return Err(Error::op("readback", format!("{self:?} is not u32")));
        }
        let bytes = self
            .gpu()
            .read_bytes(self.buffer(), self.numel() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// A scalar (single-element) tensor's value.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::op(
                "item",
                format!("{self:?} has {} elements", self.numel()),
            ));
        }
        Ok(self.to_f32()?[0])
    }

    /// Overwrite the contents from the CPU (same element count). Used for parameters and
    /// buffers loaded from checkpoints; ordered after every op recorded so far.
    pub fn write_f32(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() || self.dtype() != DType::F32 {
            return Err(Error::op(
                "tensor write",
                format!("{} f32 values into {self:?}", data.len()),
            ));
        }
        let gpu = self.gpu();
        let tmp = gpu.upload(bytemuck::cast_slice(data), "tensor write")?;
        gpu.with_encoder(|e| {
            e.copy_buffer_to_buffer(&tmp.buf, 0, self.buffer(), 0, data.len() as u64 * 4)
        });
        Ok(())
    }

    /// Copy the contents of `src` (same element count and dtype) into this tensor, in place,
    /// ordered with the recorded ops.
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if src.numel() != self.numel() || src.dtype() != self.dtype() {
            return Err(Error::op("copy_from", format!("{src:?} into {self:?}")));
        }
        if self.numel() == 0 || self.same_storage(src) {
            return Ok(());
        }
        self.gpu().with_encoder(|e| {
            e.copy_buffer_to_buffer(src.buffer(), 0, self.buffer(), 0, self.numel() as u64 * 4)
        });
        Ok(())
    }

    /// Check the shape, naming the op.
    pub fn expect_shape(&self, op: &str, shape: &[usize]) -> Result<()> {
        if self.shape() != shape {
            return Err(Error::op(
                op,
                format!("expected shape {shape:?}, got {:?}", self.shape()),
            ));
        }
        Ok(())
    }

    pub fn expect_dtype(&self, op: &str, dtype: DType) -> Result<()> {
        if self.dtype() != dtype {
            return Err(Error::op(op, format!("expected {dtype:?}, got {self:?}")));
        }
        Ok(())
    }
}
