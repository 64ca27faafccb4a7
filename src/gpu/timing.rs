//! GPU timing: while a timing session is open, every compute pass the recorder begins
//! carries timestamp writes (its beginning and end) into a query set; [`Gpu::timing_end`]
//! resolves them and reports the span (first pass begin to last pass end) and the busy time
//! (the sum of the pass durations). Only `timing_end` waits. Needs `TIMESTAMP_QUERY`; without
//! it `timing_end` returns `None`.

use super::Gpu;
use crate::error::{Error, Result};

/// Timestamp queries per query set of a timing session (two per compute pass); a session that
/// needs more takes another set.
pub(super) const QUERIES_PER_SET: u32 = 1024;

/// What a timing session measured on the GPU (from timestamp queries).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GpuTiming {
    /// From the beginning of the first timed compute pass to the end of the last, in ms
    /// (GPU idle gaps between passes included, like CUDA events around the same work).
    pub span_ms: f64,
    /// The sum of the timed passes' durations, in ms (at most `span_ms`).
    pub busy_ms: f64,
    /// Compute passes timed (0: nothing was dispatched between begin and end; both times 0).
    pub passes: usize,
}

/// One open timing session: its query sets (all full but the last) and the queries used in
/// the last one.
pub(super) struct TimingSession {
    pub(super) sets: Vec<wgpu::QuerySet>,
    pub(super) used: u32,
}

impl Gpu {
    /// Whether the device can time compute passes (`TIMESTAMP_QUERY`).
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Open a timing session: every compute pass begun from now until the matching
    /// [`Gpu::timing_end`] is timed on the GPU. The pass open now (work recorded before) is
    /// closed so that none of it is counted. Sessions nest: a pass belongs to the innermost.
    /// Never waits.
    pub fn timing_begin(&self) {
        let mut rec = self.rec.lock().unwrap();
        rec.pass = None;
        rec.timing.push(TimingSession {
            sets: vec![],
            used: 0,
        });
    }

    /// Close the innermost timing session: submits, waits, reads the timestamps back.
    /// `Ok(None)` when the adapter has no `TIMESTAMP_QUERY` (time on the wall clock instead);
    /// a session with no pass gives `passes: 0` and zero times. Calling it without an open
    /// session is an error.
    pub fn timing_end(&self) -> Result<Option<GpuTiming>> {
        let mut rec = self.rec.lock().unwrap();
        rec.pass = None;
        let Some(session) = rec.timing.pop() else {
            return Err(Error::op(
                "timing_end",
                "no timing session is open (call timing_begin first)",
            ));
        };
        if !self.has_timestamps() {
            return Ok(None);
        }
        if session.sets.is_empty() {
            return Ok(Some(GpuTiming {
                span_ms: 0.0,
                busy_ms: 0.0,
                passes: 0,
            }));
        }
        let stride = QUERIES_PER_SET as u64 * wgpu::QUERY_SIZE as u64;
        let nsets = session.sets.len();
        let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ssnet timing resolve"),
            size: stride * nsets as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let enc = rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("ssnet step"),
                })
        });
        for (i, set) in session.sets.iter().enumerate() {
            let used = if i + 1 == nsets {
                session.used
            } else {
                QUERIES_PER_SET
            };
            enc.resolve_query_set(set, 0..used, &resolved, i as u64 * stride);
        }
        drop(rec);
        let bytes = self.read_bytes(&resolved, stride * nsets as u64);
        // The sets are free again once the readback has waited (or failed).
        self.rec.lock().unwrap().spare_sets.extend(session.sets);
        let bytes = bytes?;
        let ticks: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| c.iter().rev().fold(0u64, |v, &b| (v << 8) | b as u64))
            .collect();
        let mut pairs = vec![];
        for i in 0..nsets {
            let used = if i + 1 == nsets {
                session.used
            } else {
                QUERIES_PER_SET
            } as usize;
            let base = i * QUERIES_PER_SET as usize;
            for q in (0..used).step_by(2) {
                pairs.push((ticks[base + q], ticks[base + q + 1]));
            }
        }
        let period_ns = self.queue.get_timestamp_period() as f64;
        timing_from_ticks(&pairs, period_ns).map(Some)
    }
}

/// Span and busy time of passes given as (begin, end) timestamps in ticks of `period_ns`.
fn timing_from_ticks(pairs: &[(u64, u64)], period_ns: f64) -> Result<GpuTiming> {
    let (Some(first), Some(last)) = (
        pairs.iter().map(|p| p.0).min(),
        pairs.iter().map(|p| p.1).max(),
    ) else {
        return Ok(GpuTiming {
            span_ms: 0.0,
            busy_ms: 0.0,
            passes: 0,
        });
    };
    let mut busy = 0u64;
    for &(b, e) in pairs {
        if e < b {
            return Err(Error::op(
                "timing_end",
                format!("a pass ended (tick {e}) before it began (tick {b}): the GPU timestamps are unusable"),
            ));
        }
        busy += e - b;
    }
    let ms = |t: u64| t as f64 * period_ns / 1e6;
    Ok(GpuTiming {
        span_ms: ms(last - first),
        busy_ms: ms(busy),
        passes: pairs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_from_ticks_spans_and_sums() {
        let t = timing_from_ticks(&[(100, 300), (400, 500), (1000, 1100)], 2.0).unwrap();
        assert_eq!(t.passes, 3);
        assert!((t.span_ms - 2000.0 / 1e6).abs() < 1e-12);
        assert!((t.busy_ms - 800.0 / 1e6).abs() < 1e-12);
        let none = timing_from_ticks(&[], 1.0).unwrap();
        assert_eq!(none.passes, 0);
        let e = timing_from_ticks(&[(5, 4)], 1.0).unwrap_err().to_string();
        assert!(e.starts_with("timing_end:") && !e.contains('\n'), "{e}");
    }
}
