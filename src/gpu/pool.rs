//! Storage-buffer pool: freed buffers are kept by size class and handed out again, so a
//! training step allocates nothing after the first one.
//!
//! Ordering: a buffer returned to the pool may still be read by commands recorded in the
//! pending encoder. Handing it to a later *dispatch* of the same encoder is safe (commands run
//! in recording order and wgpu puts barriers between dispatches). Handing it to a queued
//! `write_buffer` would not be (queued writes land before the pending commands run), which is
//! why uploads always take a new buffer instead.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Memory accounting, in bytes.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PoolStats {
    /// Bytes held by live tensors.
    pub live: u64,
    /// The largest `live` seen since the last reset.
    pub peak_live: u64,
    /// Bytes allocated from the device (live + cached in the pool).
    pub allocated: u64,
    /// The largest `allocated` seen since the last reset.
    pub peak_allocated: u64,
    /// Buffers created / buffers served from the pool.
    pub created: u64,
    pub reused: u64,
}

pub struct BufferPool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    reuse: bool,
    stats: PoolStats,
    /// The device's storage-binding and buffer limits (bytes, multiples of 4): see
    /// [`BufferPool::class`].
    max_binding: u64,
    max_buffer: u64,
}

/// Size classes: 256 B minimum, then 4 classes per power of two (at most 25 % slack).
fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = 63 - b.leading_zeros() as u64; // floor(log2 b)
    let step = (1u64 << p) / 4;
    b.div_ceil(step) * step
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl BufferPool {
    /// A pool for a device with these storage-binding and buffer limits.
    pub fn new(reuse: bool, max_binding: u64, max_buffer: u64) -> Self {
        BufferPool {
            free: HashMap::new(),
            reuse,
            stats: PoolStats::default(),
            max_binding: max_binding & !3,
            max_buffer: max_buffer & !3,
        }
    }

    /// The size of the buffer that holds `bytes`: its [`size_class`], capped so that a
    /// buffer is larger than the binding limit only when its contents are (a whole-buffer
    /// binding then fits whenever the tensor does) and never larger than the buffer limit.
    fn class(&self, bytes: u64) -> u64 {
        let c = size_class(bytes);
        if bytes <= self.max_binding && c > self.max_binding {
            self.max_binding
        } else if bytes <= self.max_buffer && c > self.max_buffer {
            self.max_buffer
        } else {
            c
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    pub fn reset_peak(&mut self) {
        self.stats.peak_live = self.stats.live;
        self.stats.peak_allocated = self.stats.allocated;
    }

    fn account_new(&mut self, class: u64) {
        self.stats.created += 1;
        self.stats.allocated += class;
        self.stats.peak_allocated = self.stats.peak_allocated.max(self.stats.allocated);
        self.account_live(class);
    }

    fn account_live(&mut self, class: u64) {
        self.stats.live += class;
        self.stats.peak_live = self.stats.peak_live.max(self.stats.live);
    }

    pub fn alloc(
        pool: &Arc<Mutex<BufferPool>>,
        device: &wgpu::Device,
        bytes: u64,
    ) -> Result<Storage> {
        let mut p = pool.lock().unwrap();
        let class = p.class(bytes);
        if let Some(buf) = p.free.get_mut(&class).and_then(|v| v.pop()) {
            p.stats.reused += 1;
            p.account_live(class);
            return Ok(Storage {
                buf,
                bytes,
                class,
                pool: Arc::downgrade(pool),
            });
        }
        p.account_new(class);
        drop(p);
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: class,
            usage: USAGE,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            pool.lock().unwrap().stats.allocated -= class;
            return Err(Error::gpu(format!(
                "out of GPU memory allocating {bytes} bytes: {e}"
            )));
        }
        Ok(Storage {
            buf,
            bytes,
            class,
            pool: Arc::downgrade(pool),
        })
    }

    pub fn upload(
        pool: &Arc<Mutex<BufferPool>>,
        device: &wgpu::Device,
        data: &[u8],
    ) -> Result<Storage> {
        let bytes = (data.len() as u64).max(4);
        let class = {
            let mut p = pool.lock().unwrap();
            let class = p.class(bytes);
            p.account_new(class);
            class
        };
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: class,
            usage: USAGE,
            mapped_at_creation: true,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu(format!(
                "out of GPU memory allocating {bytes} bytes: {e}"
            )));
        }
        {
            let mut view = buf
                .get_mapped_range_mut(..)
                .map_err(|e| Error::gpu(format!("upload: {e}")))?;
            view.slice(..data.len()).copy_from_slice(data);
        }
        buf.unmap();
        Ok(Storage {
            buf,
            bytes,
            class,
            pool: Arc::downgrade(pool),
        })
    }
}

/// A device buffer owned by one tensor storage; returns to the pool when dropped.
pub struct Storage {
    pub buf: wgpu::Buffer,
    /// Bytes the tensor uses (the buffer may be larger).
    pub bytes: u64,
    class: u64,
    pool: std::sync::Weak<Mutex<BufferPool>>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let Ok(mut p) = pool.lock() else { return };
        p.stats.live -= self.class;
        if p.reuse {
            let buf = self.buf.clone();
            p.free.entry(self.class).or_default().push(buf);
        } else {
            p.stats.allocated -= self.class;
            self.buf.destroy();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{size_class, BufferPool};

    #[test]
    fn classes_stay_within_the_binding_and_buffer_limits() {
        let p = BufferPool::new(true, 1_000_000, 3_000_000);
        assert_eq!(p.class(1_000_000), 1_000_000);
        assert_eq!(p.class(999_996), 1_000_000);
        assert!(p.class(1_000_004) > 1_000_000);
        assert_eq!(p.class(2_999_996), 3_000_000);
        assert_eq!(p.class(1 << 20), 1 << 20);
    }

    #[test]
    fn size_classes_cover_and_bound_slack() {
        for b in [
            1u64,
            255,
            256,
            257,
            1000,
            4096,
            5000,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let c = size_class(b);
            assert!(c >= b && c >= 256, "{b} -> {c}");
            assert!(c <= (b.max(256) as f64 * 1.25) as u64 + 1, "{b} -> {c}");
        }
    }
}
