//! PNG snapshots: image | label | prediction of one 2-D slice, side by side.

use crate::error::{Error, Result};
use std::path::Path;

/// Label colours: background black, then red, green, blue, yellow, ...
const PALETTE: [[u8; 3]; 6] = [
    [0, 0, 0],
    [230, 60, 60],
    [60, 200, 80],
    [70, 110, 240],
    [240, 210, 60],
    [200, 80, 220],
];
/// White separator width between panels.
const GAP: usize = 2;

/// A 2-D slice `[h, w]` of a row-major `[a, b, c]` volume: `axis` 0 takes `[b, c]` at
/// index `k`, axis 2 takes `[a, b]` at index `k`.
pub fn slice_of<T: Copy>(
    v: &[T],
    shape: [usize; 3],
    axis: usize,
    k: usize,
) -> (Vec<T>, [usize; 2]) {
    let [a, b, c] = shape;
    if axis == 0 {
        (v[k * b * c..(k + 1) * b * c].to_vec(), [b, c])
    } else {
        let mut out = Vec::with_capacity(a * b);
        for i in 0..a {
            for j in 0..b {
                out.push(v[(i * b + j) * c + k]);
            }
        }
        (out, [a, b])
    }
}

/// Write `path`: the image (min-max to grey), the label and the prediction (palette), each
/// `[h, w]`, left to right; small slices are enlarged by an integer factor (nearest) to at
/// least 160 pixels high.
pub fn write_panels(
    path: &Path,
    image: &[f32],
    label: &[u8],
    pred: &[u8],
    shape: [usize; 2],
) -> Result<()> {
    let [h, w] = shape;
    let f = 160usize.div_ceil(h.max(1)).max(1);
    let (sh, sw) = (h * f, w * f);
    let width = 3 * sw + 2 * GAP;
    let mut rgb = vec![255u8; width * sh * 3];
    let (lo, hi) = image
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let range = if hi > lo { hi - lo } else { 1.0 };
    let colour = |l: u8| PALETTE[(l as usize).min(PALETTE.len() - 1)];
    for y in 0..sh {
        for x in 0..sw {
            let i = (y / f) * w + x / f;
            let g = (((image[i] - lo) / range).clamp(0.0, 1.0) * 255.0).round() as u8;
            let px = [[g, g, g], colour(label[i]), colour(pred[i])];
            for (p, c) in px.iter().enumerate() {
                let o = (y * width + p * (sw + GAP) + x) * 3;
                rgb[o..o + 3].copy_from_slice(c);
            }
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::file(dir, format!("cannot create folder: {e}")))?;
    }
    let file = std::fs::File::create(path)
        .map_err(|e| Error::file(path, format!("cannot create PNG: {e}")))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, sh as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc
        .write_header()
        .map_err(|e| Error::file(path, format!("cannot write PNG: {e}")))?;
    wr.write_image_data(&rgb)
        .map_err(|e| Error::file(path, format!("cannot write PNG: {e}")))?;
    wr.finish()
        .map_err(|e| Error::file(path, format!("cannot write PNG: {e}")))?;
    Ok(())
}
