//! The closest canonical orientation of a NIfTI volume: the voxel axes permuted and flipped so
//! that array axis x, y, z runs along world x, y, z (increasing), as nibabel's
//! `as_closest_canonical`. Two scans of the same anatomy stored with different axis orders or
//! a flipped axis land on the same grid; [`Orientation::restore`] undoes it exactly.

use nalgebra::Matrix4;
use serde::{Deserialize, Serialize};

/// Canonical axis `j` (0 = x, 1 = y, 2 = z) is voxel axis `perm[j]`, reversed when `flip[j]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orientation {
    pub perm: [usize; 3],
    pub flip: [bool; 3],
}

impl Orientation {
    pub const IDENTITY: Orientation = Orientation {
        perm: [0, 1, 2],
        flip: [false; 3],
    };

    /// The orientation of an affine (voxel → world): each voxel axis goes to the world axis
    /// its direction is closest to (largest component first, so the result is a permutation).
    pub fn of_affine(a: &Matrix4<f64>) -> Orientation {
        let mut pairs: Vec<(f64, usize, usize)> = Vec::with_capacity(9);
        for world in 0..3 {
            for voxel in 0..3 {
                pairs.push((a[(world, voxel)].abs(), world, voxel));
            }
        }
        pairs.sort_by(|p, q| q.0.total_cmp(&p.0).then((p.1, p.2).cmp(&(q.1, q.2))));
        let (mut perm, mut flip) = ([usize::MAX; 3], [false; 3]);
        let mut used = [false; 3];
        for (_, w, v) in pairs {
            if perm[w] == usize::MAX && !used[v] {
                perm[w] = v;
                used[v] = true;
                flip[w] = a[(w, v)] < 0.0;
            }
        }
        Orientation { perm, flip }
    }

    /// Voxel sizes (column norms of the affine), in voxel-axis order x, y, z.
    pub fn voxel_sizes(a: &Matrix4<f64>) -> [f64; 3] {
        [0, 1, 2].map(|v| (0..3).map(|w| a[(w, v)] * a[(w, v)]).sum::<f64>().sqrt())
    }

    /// `[x, y, z]`-ordered values of the voxel axes, in canonical order.
    pub fn apply3<T: Copy>(&self, v: [T; 3]) -> [T; 3] {
        [v[self.perm[0]], v[self.perm[1]], v[self.perm[2]]]
    }

    /// The source voxel index of canonical index `c` (both `[x, y, z]`), `dims` the original's.
    fn source(&self, c: [usize; 3], dims: [usize; 3]) -> [usize; 3] {
        let mut v = [0; 3];
        for ((&a, &flip), &cj) in self.perm.iter().zip(&self.flip).zip(&c) {
            v[a] = if flip { dims[a] - 1 - cj } else { cj };
        }
        v
    }

    /// Reorder `[z][y][x]` data of NIfTI dims `dims` (`[nx, ny, nz]`) into the canonical grid;
    /// returns the data (`[z][y][x]` C order) and the canonical dims.
    pub fn reorient<T: Copy>(&self, data: &[T], dims: [usize; 3]) -> (Vec<T>, [usize; 3]) {
        let cd = self.apply3(dims);
        let mut out = Vec::with_capacity(data.len());
        for z in 0..cd[2] {
            for y in 0..cd[1] {
                for x in 0..cd[0] {
                    let [i, j, k] = self.source([x, y, z], dims);
                    out.push(data[(k * dims[1] + j) * dims[0] + i]);
                }
            }
        }
        (out, cd)
    }

    /// The inverse of [`Orientation::reorient`]: canonical `[z][y][x]` data back to the
    /// original dims `dims`.
    pub fn restore<T: Copy + Default>(&self, data: &[T], dims: [usize; 3]) -> Vec<T> {
        let cd = self.apply3(dims);
        let mut out = vec![T::default(); data.len()];
        let mut n = 0;
        for z in 0..cd[2] {
            for y in 0..cd[1] {
                for x in 0..cd[0] {
                    let [i, j, k] = self.source([x, y, z], dims);
                    out[(k * dims[1] + j) * dims[0] + i] = data[n];
                    n += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flipped_and_permuted_axes_round_trip() {
        // voxel x → world -y, voxel y → world x, voxel z → world z.
        #[rustfmt::skip]
        let a = Matrix4::new(
            0.0, 1.5, 0.0, 0.0,
            -2.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 10.0, 0.0,
            0.0, 0.0, 0.0, 1.0,
        );
        let o = Orientation::of_affine(&a);
        assert_eq!(o.perm, [1, 0, 2]);
        assert_eq!(o.flip, [false, true, false]);
        assert_eq!(Orientation::voxel_sizes(&a), [2.0, 1.5, 10.0]);
        let dims = [3, 4, 2];
        let data: Vec<u16> = (0..24).collect();
        let (c, cd) = o.reorient(&data, dims);
        assert_eq!(cd, [4, 3, 2]);
        // canonical (x 0, y 0, z 0) = voxel (x 2, y 0, z 0) (x flipped into world y).
        assert_eq!(c[0], 2);
        assert_eq!(o.restore(&c, dims), data);
        assert_eq!(
            Orientation::of_affine(&Matrix4::identity()),
            Orientation::IDENTITY
        );
    }
}
