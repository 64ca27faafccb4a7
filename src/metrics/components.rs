//! Connected components of a binary mask and the largest one (SS-Net's `getLargestCC`, the
//! `--nms 1` post-processing of its LA evaluation).
//!
//! Connectivity follows scipy / scikit-image: `connectivity = k` joins two voxels whose
//! offset has at most `k` non-zero coordinates (each ±1). In 3D: 1 → 6-connectivity (faces),
//! 2 → 18 (faces + edges), 3 → 26 (full, skimage's default and SS-Net's). In 2D: 1 → 4, 2 → 8.

use crate::error::{Error, Result};

/// 3D face connectivity (6 neighbours).
pub const CONN_6: usize = 1;
/// 3D face + edge connectivity (18 neighbours).
pub const CONN_18: usize = 2;
/// 3D full connectivity (26 neighbours), skimage's `label` default in 3D.
pub const CONN_26: usize = 3;

/// Connected components of `mask` (row-major over `dims`).
///
/// Returns the label of every voxel (0 = background, components numbered 1, 2, ... in the
/// raster order of their first voxel, as `skimage.measure.label` numbers them) and the size
/// of each component (`sizes[l - 1]` for label `l`).
pub fn label_components(
    mask: &[bool],
    dims: &[usize],
    connectivity: usize,
) -> Result<(Vec<u32>, Vec<usize>)> {
    check(mask.len(), dims, connectivity)?;
    let nd = dims.len();
    let mut strides = vec![1usize; nd];
    for a in (0..nd.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * dims[a + 1];
    }
    // Every offset in {-1,0,1}^nd with 1..=connectivity non-zero entries.
    let mut offsets: Vec<Vec<isize>> = Vec::new();
    let total = 3usize.pow(nd as u32);
    for code in 0..total {
        let mut c = code;
        let off: Vec<isize> = (0..nd)
            .map(|_| {
                let d = (c % 3) as isize - 1;
                c /= 3;
                d
            })
            .collect();
        let nz = off.iter().filter(|&&d| d != 0).count();
        if nz >= 1 && nz <= connectivity {
            offsets.push(off);
        }
    }
    let mut labels = vec![0u32; mask.len()];
    let mut sizes: Vec<usize> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut coord = vec![0usize; nd];
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        let id = u32::try_from(sizes.len() + 1)
            .map_err(|_| Error::msg("connected components: more than 2^32 components"))?;
        labels[start] = id;
        let mut size = 0usize;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            let mut r = i;
            for a in 0..nd {
                coord[a] = r / strides[a];
                r %= strides[a];
            }
            'nb: for off in &offsets {
                let mut j = 0usize;
                for a in 0..nd {
                    let c = coord[a] as isize + off[a];
                    if c < 0 || c >= dims[a] as isize {
                        continue 'nb;
                    }
                    j += c as usize * strides[a];
                }
                if mask[j] && labels[j] == 0 {
                    labels[j] = id;
                    stack.push(j);
                }
            }
        }
        sizes.push(size);
    }
    Ok((labels, sizes))
}

/// The largest connected component of `mask`; ties go to the component met first in raster
/// order (numpy's `argmax` over skimage's labels, as SS-Net's `getLargestCC`). An empty mask
/// gives an empty mask (the reference asserts instead).
pub fn largest_component(mask: &[bool], dims: &[usize], connectivity: usize) -> Result<Vec<bool>> {
    let (labels, sizes) = label_components(mask, dims, connectivity)?;
    let mut best = 0usize;
    for (i, &s) in sizes.iter().enumerate() {
        if s > sizes[best] {
            best = i;
        }
    }
    if sizes.is_empty() {
        return Ok(vec![false; mask.len()]);
    }
    let keep = best as u32 + 1;
    Ok(labels.iter().map(|&l| l == keep).collect())
}

fn check(len: usize, dims: &[usize], connectivity: usize) -> Result<()> {
    let n: usize = dims.iter().product();
    if dims.is_empty() || n != len {
        return Err(Error::msg(format!(
            "connected components: {len} voxels do not fill dims {dims:?}"
        )));
    }
    if connectivity == 0 || connectivity > dims.len() {
        return Err(Error::msg(format!(
            "connected components: connectivity {connectivity} is not in 1..={} for a {}-D mask",
            dims.len(),
            dims.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(s: &[&str]) -> (Vec<bool>, Vec<usize>) {
        let h = s.len();
        let w = s[0].len();
        (
            s.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect(),
            vec![h, w],
        )
    }

    #[test]
    fn diagonal_joins_only_with_full_connectivity() {
        let (m, d) = mask(&["#..", ".#.", "..#"]);
        assert_eq!(label_components(&m, &d, 1).unwrap().1, vec![1, 1, 1]);
        assert_eq!(label_components(&m, &d, 2).unwrap().1, vec![3]);
    }

    #[test]
    fn conn_3d_6_18_26() {
        // Two voxels sharing a face, an edge, a corner with the origin.
        let dims = [2, 2, 2];
        let at = |z: usize, y: usize, x: usize| z * 4 + y * 2 + x;
        for (other, comps) in [
            (at(0, 0, 1), [1, 1, 1]),
            (at(0, 1, 1), [2, 1, 1]),
            (at(1, 1, 1), [2, 2, 1]),
        ] {
            let mut m = vec![false; 8];
            m[0] = true;
            m[other] = true;
            for (k, conn) in [CONN_6, CONN_18, CONN_26].into_iter().enumerate() {
                let n = label_components(&m, &dims, conn).unwrap().1.len();
                assert_eq!(n, comps[k], "other {other} conn {conn}");
            }
        }
    }

    #[test]
    fn largest_and_ties() {
        let (m, d) = mask(&["##..#", "....#", "#...."]);
        // Components: {0,1} size 2, {4,9} size 2, {10} size 1: tie goes to the first.
        let l = largest_component(&m, &d, 2).unwrap();
        let kept: Vec<usize> = l
            .iter()
            .enumerate()
            .filter(|(_, &b)| b)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(kept, vec![0, 1]);
        assert!(largest_component(&[false; 4], &[2, 2], 2)
            .unwrap()
            .iter()
            .all(|&b| !b));
        assert!(label_components(&m, &d, 3).is_err());
        assert!(label_components(&m, &[3, 4], 1).is_err());
    }
}
