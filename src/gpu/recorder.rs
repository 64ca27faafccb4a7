//! The recorder: every dispatch is appended to one open compute pass of one pending command
//! encoder, its uniform parameters to an arena buffer written just before the submit; the
//! work is submitted when a result is needed on the CPU or the encoder has grown large.

use super::timing::{TimingSession, QUERIES_PER_SET};
use super::{Gpu, Shader};
use crate::error::{Error, Result};

/// Uniform parameter slots are aligned to this (the WebGPU maximum of
/// min_uniform_buffer_offset_alignment, so it is valid everywhere).
const UNIFORM_ALIGN: u64 = 256;
/// Size of one uniform arena buffer (1024 dispatches of up to 256 bytes of params).
const ARENA_BYTES: u64 = 256 * 1024;
/// Submit the pending encoder after this many dispatches even without a readback, so that
/// very long graphs do not hold unbounded command memory.
pub(super) const MAX_PENDING_DISPATCHES: usize = 8192;

pub(super) struct Recorder {
    pub(super) encoder: Option<wgpu::CommandEncoder>,
    pub(super) pass: Option<wgpu::ComputePass<'static>>,
    /// Arena buffers; `arena_used` of them are in use by the pending submission.
    pub(super) arenas: Vec<wgpu::Buffer>,
    pub(super) arena_used: usize,
    /// Parameter bytes staged for arena `arena_used - 1`.
    pub(super) staged: Vec<u8>,
    pub(super) dispatches: usize,
    /// Open timing sessions, innermost last: a pass is timed by the innermost one only.
    pub(super) timing: Vec<TimingSession>,
    /// Query sets of finished sessions, for reuse.
    pub(super) spare_sets: Vec<wgpu::QuerySet>,
}

impl Gpu {
    /// Grid for `n` invocations of a 1-D kernel with workgroup size `wg`: folded into 2-D when
    /// more than the per-dimension limit of workgroups is needed. Kernels recover the linear
    /// index as `(wid.y * nwg.x + wid.x) * WG + lid.x` and bound-check it.
    pub fn grid(&self, n: u64, wg: u32) -> Result<[u32; 3]> {
        let groups = n.div_ceil(wg as u64).max(1);
        let maxd = self.limits.max_compute_workgroups_per_dimension as u64;
        if groups <= maxd {
            return Ok([groups as u32, 1, 1]);
        }
        let y = groups.div_ceil(maxd);
        if y > maxd {
            return Err(Error::gpu(format!(
                "dispatch of {n} invocations exceeds the adapter's grid"
            )));
        }
        Ok([groups.div_ceil(y) as u32, y as u32, 1])
    }

    /// Record one dispatch: `params` goes to binding 0 (uniform), `buffers` to bindings 1..
    /// in order. Every entry point must use its params and exactly those buffers.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        shader: Shader,
        entry: &'static str,
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_with(shader, entry, &[], params, buffers, groups)
    }

    /// [`Gpu::dispatch`] with pipeline-overridable constants (tile sizes and the like).
    pub fn dispatch_with<P: bytemuck::Pod>(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let whole: Vec<wgpu::BufferBinding> = buffers
            .iter()
            .map(|b| b.as_entire_buffer_binding())
            .collect();
        self.dispatch_bound(shader, entry, constants, params, &whole, groups)
    }

    /// [`Gpu::dispatch_with`] on buffer bindings: whole buffers or ranges (offsets aligned
    /// to `min_storage_buffer_offset_alignment`). A binding larger than the device's
    /// storage-binding limit is refused naming the limit: only the callers that work in
    /// pieces (`ops::launch_pieces`) bind ranges of the larger tensors.
    pub fn dispatch_bound<P: bytemuck::Pod>(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &P,
        buffers: &[wgpu::BufferBinding],
        groups: [u32; 3],
    ) -> Result<()> {
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        for b in buffers {
            let size = b.size.map_or(b.buffer.size() - b.offset, |s| s.get());
            if size > self.max_binding() {
                return Err(self.over_binding(entry, size));
            }
            if b.offset % align != 0 {
                return Err(Error::op(
                    entry,
                    format!(
                        "binding offset {} is not a multiple of {align} (min_storage_buffer_offset_alignment)",
                        b.offset
                    ),
                ));
            }
        }
        let maxd = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > maxd) {
            return Err(Error::op(
                entry,
                format!("grid {groups:?} exceeds the adapter's {maxd} workgroups per dimension"),
            ));
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let pipeline = self.pipeline(shader, entry, constants)?;
        let bytes = bytemuck::bytes_of(params);
        let psize = (bytes.len() as u64).div_ceil(16).max(1) * 16;
        let mut rec = self.rec.lock().unwrap();
        // A slot in the current arena (a fresh arena when full).
        let mut off = rec.staged.len() as u64;
        off = off.div_ceil(UNIFORM_ALIGN) * UNIFORM_ALIGN;
        if rec.arena_used == 0 || off + psize > ARENA_BYTES {
            if rec.arena_used > 0 {
                self.stage_arena(&mut rec);
            }
            if rec.arena_used == rec.arenas.len() {
                let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params arena"),
                    size: ARENA_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                rec.arenas.push(b);
            }
            rec.arena_used += 1;
            rec.staged.clear();
            off = 0;
        }
        rec.staged.resize(off as usize, 0);
        rec.staged.extend_from_slice(bytes);
        rec.staged.resize((off + psize) as usize, 0);
        let arena = rec.arenas[rec.arena_used - 1].clone();

        let layout = pipeline.get_bind_group_layout(0);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &arena,
                offset: off,
                size: std::num::NonZeroU64::new(psize),
            }),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(b.clone()),
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::op(
                entry,
                format!("bind group: {}", e.to_string().lines().next().unwrap_or("")),
            ));
        }
        if rec.pass.is_none() {
            self.begin_pass(&mut rec);
        }
        let pass = rec.pass.as_mut().unwrap();
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        rec.dispatches += 1;
        self.dispatch_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let full = rec.dispatches >= self.submit_every;
        drop(rec);
        if self.sync_each {
            self.flush()?;
            self.wait()?;
        } else if full {
            self.flush()?;
        }
        Ok(())
    }

    /// Open the recorder's compute pass (and its encoder if needed), with timestamp writes
    /// into the innermost timing session when one is open.
    fn begin_pass(&self, rec: &mut Recorder) {
        let timestamps = self.has_timestamps();
        let Recorder {
            encoder,
            pass,
            timing,
            spare_sets,
            ..
        } = rec;
        let enc = encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("ssnet step"),
                })
        });
        let mut writes = None;
        if let Some(s) = timing.last_mut().filter(|_| timestamps) {
            let current = match s.sets.last() {
                Some(set) if s.used + 2 <= QUERIES_PER_SET => set.clone(),
                _ => {
                    let set = spare_sets.pop().unwrap_or_else(|| {
                        self.device.create_query_set(&wgpu::QuerySetDescriptor {
                            label: Some("ssnet timing"),
                            ty: wgpu::QueryType::Timestamp,
                            count: QUERIES_PER_SET,
                        })
                    });
                    s.sets.push(set.clone());
                    s.used = 0;
                    set
                }
            };
            writes = Some((current, s.used));
            s.used += 2;
        }
        let p = enc
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: writes.as_ref().map(|(set, i)| {
                    wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(*i),
                        end_of_pass_write_index: Some(*i + 1),
                    }
                }),
            })
            .forget_lifetime();
        *pass = Some(p);
    }

    fn stage_arena(&self, rec: &mut Recorder) {
        if rec.arena_used > 0 && !rec.staged.is_empty() {
            let a = &rec.arenas[rec.arena_used - 1];
            self.queue.write_buffer(a, 0, &rec.staged);
        }
    }

    /// Run `f` on the pending encoder outside any compute pass (copies, timestamps).
    pub fn with_encoder<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut rec = self.rec.lock().unwrap();
        rec.pass = None; // ends the pass
        if rec.encoder.is_none() {
            rec.encoder = Some(self.device.create_command_encoder(
                &wgpu::CommandEncoderDescriptor {
                    label: Some("ssnet step"),
                },
            ));
        }
        f(rec.encoder.as_mut().unwrap())
    }

    /// Submit everything recorded so far (does not wait).
    pub fn flush(&self) -> Result<()> {
        let mut rec = self.rec.lock().unwrap();
        rec.pass = None;
        let Some(enc) = rec.encoder.take() else {
            return Ok(());
        };
        self.stage_arena(&mut rec);
        rec.arena_used = 0;
        rec.staged.clear();
        rec.dispatches = 0;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let cb = enc.finish();
        self.queue.submit([cb]);
        self.submissions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(rec);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu(format!(
                "submit: {}",
                e.to_string().lines().next().unwrap_or("")
            )));
        }
        Ok(())
    }

    /// Block until the GPU has finished all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| Error::gpu(format!("waiting for the device: {e}")))?;
        Ok(())
    }

    /// Submit and wait: the device is idle when this returns.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.wait()
    }

    /// Copy `bytes` bytes of `src` to the CPU (submits and waits).
    pub fn read_bytes(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.div_ceil(4).max(1) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.with_encoder(|enc| enc.copy_buffer_to_buffer(src, 0, &staging, 0, size));
        self.flush()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::gpu("readback: map callback never ran"))?
            .map_err(|e| Error::gpu(format!("readback: {e}")))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::gpu(format!("readback: {e}")))?;
        let mut out = view.to_vec();
        drop(view);
        staging.unmap();
        out.truncate(bytes as usize);
        Ok(out)
    }
}
