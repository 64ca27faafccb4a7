//! Cropping to the non-zero region of an image (nnU-Net's first step), and the inverse.

use serde::{Deserialize, Serialize};

/// A box `[start, end)` per axis of a `[z][y][x]` array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BBox {
    pub start: [usize; 3],
    pub end: [usize; 3],
}

impl BBox {
    pub fn full(shape: [usize; 3]) -> BBox {
        BBox {
            start: [0; 3],
            end: shape,
        }
    }

    pub fn shape(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.end[a] - self.start[a])
    }

    /// The smallest box holding every non-zero voxel (the whole array when there is none).
    pub fn nonzero(data: &[f32], shape: [usize; 3]) -> BBox {
        let [_, ny, nx] = shape;
        let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
        for (i, &v) in data.iter().enumerate() {
            if v != 0.0 {
                let p = [i / (ny * nx), (i / nx) % ny, i % nx];
                for a in 0..3 {
                    lo[a] = lo[a].min(p[a]);
                    hi[a] = hi[a].max(p[a] + 1);
                }
            }
        }
        if lo[0] == usize::MAX {
            return BBox::full(shape);
        }
        BBox { start: lo, end: hi }
    }

    /// The part of `data` (shape `shape`) inside the box.
    pub fn crop<T: Copy>(&self, data: &[T], shape: [usize; 3]) -> Vec<T> {
        let [_, ny, nx] = shape;
        let s = self.shape();
        let mut out = Vec::with_capacity(s.iter().product());
        for z in self.start[0]..self.end[0] {
            for y in self.start[1]..self.end[1] {
                let row = (z * ny + y) * nx;
                out.extend_from_slice(&data[row + self.start[2]..row + self.end[2]]);
            }
        }
        out
    }

    /// `data` of the box's shape put back into an array of `shape`, `T::default()` outside.
    pub fn uncrop<T: Copy + Default>(&self, data: &[T], shape: [usize; 3]) -> Vec<T> {
        let [nz, ny, nx] = shape;
        let w = self.end[2] - self.start[2];
        let mut out = vec![T::default(); nz * ny * nx];
        let mut n = 0;
        for z in self.start[0]..self.end[0] {
            for y in self.start[1]..self.end[1] {
                let row = (z * ny + y) * nx + self.start[2];
                out[row..row + w].copy_from_slice(&data[n..n + w]);
                n += w;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_uncrop_round_trip() {
        let shape = [2, 3, 4];
        let mut d = vec![0f32; 24];
        d[(3 + 1) * 4 + 2] = 5.0; // (z 1, y 1, x 2)
        d[(3 + 2) * 4 + 1] = 7.0; // (z 1, y 2, x 1)
        let b = BBox::nonzero(&d, shape);
        assert_eq!(
            b,
            BBox {
                start: [1, 1, 1],
                end: [2, 3, 3]
            }
        );
        let c = b.crop(&d, shape);
        assert_eq!(c, vec![0.0, 5.0, 7.0, 0.0]);
        assert_eq!(b.uncrop(&c, shape), d);
        assert_eq!(BBox::nonzero(&[0.0; 24], shape), BBox::full(shape));
    }
}
