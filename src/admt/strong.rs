//! The strong views of AD-MT (ADMT.md §5), seeded, on the CPU.
//!
//! - LA ([`la_strong`], D3:235-280): brightness/contrast on the min-max normalised crop (with
//!   probability 0.8), then clipped additive Gaussian noise (probability 0.2; the official
//!   code calls it "blur"). Both factors are drawn whether or not they apply.
//! - ACDC ([`acdc_strong`], D2:255-282): the slice truncated to uint8 (`trunc(255·x)`), then
//!   torchvision's `ColorJitter(0.5, 0.5, 0.5, 0.25)` on a one-channel PIL image (probability
//!   0.8: brightness and contrast in a random order, each a Pillow blend truncated to uint8;
//!   saturation and hue are identities on one channel), then Pillow's `GaussianBlur` with a
//!   radius uniform in [0.1, 2) (probability 0.2), and back to `v / 255`: the strong view is
//!   quantised to 1/255, the weak one is not.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rand_pcg::Pcg32;

/// LA's strong view of a weak crop `x` (any shape; the statistics are over all of it).
pub fn la_strong(x: &[f32], rng: &mut Pcg32) -> Vec<f32> {
    let mut out = x.to_vec();
    // RandomBrightnessContrast(0.5, 0.5, p = 0.8): contrast a, brightness b, then the coin.
    let a = 1.0 + rng.random_range(-0.5f64..0.5);
    let b = rng.random_range(-0.5f64..0.5);
    if rng.random::<f64>() < 0.8 {
        brightness_contrast(&mut out, a as f32, b as f32);
    }
    // RandomGaussianNoise(sigma in [0.1, 1.0], p = 0.2).
    let sigma = rng.random_range(0.1f64..1.0);
    if rng.random::<f64>() < 0.2 {
        for v in out.iter_mut() {
            let e: f64 = StandardNormal.sample(rng);
            *v = (*v as f64 + (sigma * e).clamp(-2.0 * sigma, 2.0 * sigma)) as f32;
        }
    }
    out
}

/// t = (x − min)/(max − min); t ← a·t; t ← t + b·mean(t); t ← clip(t, 0, 1); back to the
/// crop's range. A constant crop is left as it is (the official code divides by zero there).
pub fn brightness_contrast(x: &mut [f32], a: f32, b: f32) {
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let range = hi - lo;
    if x.is_empty() || range <= 0.0 || !range.is_finite() {
        return;
    }
    let mean = x
        .iter()
        .map(|&v| (a * (v - lo) / range) as f64)
        .sum::<f64>()
        / x.len() as f64;
    let shift = b * mean as f32;
    for v in x.iter_mut() {
        let t = (a * (*v - lo) / range + shift).clamp(0.0, 1.0);
        *v = t * range + lo;
    }
}

/// ACDC's strong view of a weak slice `x` (`[h, w]`, values in [0, 1]).
pub fn acdc_strong(x: &[f32], h: usize, w: usize, rng: &mut Pcg32) -> Vec<f32> {
    assert_eq!(x.len(), h * w, "acdc_strong: slice of another size");
    let mut v: Vec<u8> = x
        .iter()
        .map(|&p| (255.0 * p).clamp(0.0, 255.0) as u8)
        .collect();
    if rng.random::<f64>() < 0.8 {
        color_jitter_gray(&mut v, rng);
    }
    if rng.random::<f64>() < 0.2 {
        let radius = rng.random_range(0.1f32..2.0);
        v = gaussian_blur(&v, h, w, radius);
    }
    v.iter().map(|&p| p as f32 / 255.0).collect()
}

/// torchvision `ColorJitter(0.5, 0.5, 0.5, 0.25)` on a one-channel image: a random order of
/// the four ops and the factors drawn first; brightness and contrast act, saturation (the
/// image is its own grey version) and hue (one channel) leave it unchanged.
pub fn color_jitter_gray(v: &mut [u8], rng: &mut Pcg32) {
    let mut order = [0usize, 1, 2, 3];
    rand::seq::SliceRandom::shuffle(&mut order[..], rng);
    let brightness = rng.random_range(0.5f32..1.5);
    let contrast = rng.random_range(0.5f32..1.5);
    let _saturation = rng.random_range(0.5f32..1.5);
    let _hue = rng.random_range(-0.25f32..0.25);
    for op in order {
        match op {
            0 => blend_constant(v, 0, brightness),
            1 => {
                // ImageEnhance.Contrast: blend with the rounded mean grey level.
                let mean = v.iter().map(|&p| p as f64).sum::<f64>() / v.len().max(1) as f64;
                blend_constant(v, (mean + 0.5) as u8, contrast);
            }
            _ => {}
        }
    }
}

/// Pillow's `Image.blend(constant, v, alpha)`: `c + alpha·(v − c)` in single precision,
/// truncated to uint8, clipped to [0, 255] when extrapolating.
pub fn blend_constant(v: &mut [u8], c: u8, alpha: f32) {
    if alpha == 1.0 {
        return;
    }
    for p in v.iter_mut() {
        let t = c as f32 + alpha * (*p as i32 - c as i32) as f32;
        *p = if (0.0..=1.0).contains(&alpha) {
            t as u8
        } else if t <= 0.0 {
            0
        } else if t >= 255.0 {
            255
        } else {
            t as u8
        };
    }
}

/// The fractional box radius of Pillow's Gaussian blur for `passes` box passes (the box
/// length of Gwosdek et al., SSVM 2011), in Pillow's single/double precision mix.
pub fn box_radius(radius: f32, passes: u32) -> f32 {
    let sigma2 = radius * radius / passes as f32;
    let big_l = (12.0 * sigma2 as f64 + 1.0).sqrt() as f32;
    let l = ((big_l as f64 - 1.0) / 2.0).floor() as f32;
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// One box blur of radius `r` (fractional) along each row of a `[h, w]` uint8 image, in
/// Pillow's 8.24 fixed point: the window `[x − ⌊r⌋, x + ⌊r⌋]` at full weight and its two next
/// neighbours at the fractional weight, edge pixels repeated beyond the border.
fn box_blur_rows(v: &[u8], h: usize, w: usize, r: f32) -> Vec<u8> {
    let ri = r as i64;
    let ww = (16_777_216f32 / (r * 2.0 + 1.0)) as u64;
    let fw = ((1u64 << 24) - (2 * ri as u64 + 1) * ww) / 2;
    let last = w as i64 - 1;
    let mut out = vec![0u8; v.len()];
    for y in 0..h {
        let row = &v[y * w..(y + 1) * w];
        let at = |i: i64| row[i.clamp(0, last) as usize] as u64;
        for x in 0..w as i64 {
            let acc: u64 = (x - ri..=x + ri).map(at).sum();
            let bulk = acc * ww + (at(x - ri - 1) + at(x + ri + 1)) * fw;
            out[y * w + x as usize] = ((bulk + (1 << 23)) >> 24) as u8;
        }
    }
    out
}

fn transpose(v: &[u8], h: usize, w: usize) -> Vec<u8> {
    let mut t = vec![0u8; v.len()];
    for y in 0..h {
        for x in 0..w {
            t[x * h + y] = v[y * w + x];
        }
    }
    t
}

/// Pillow's `ImageFilter.GaussianBlur(radius)` on a `[h, w]` uint8 image: three box passes
/// along the rows, then three along the columns, each rounded to uint8.
pub fn gaussian_blur(v: &[u8], h: usize, w: usize, radius: f32) -> Vec<u8> {
    if radius <= 0.0 || h == 0 || w == 0 {
        return v.to_vec();
    }
    let r = box_radius(radius, 3);
    let mut out = v.to_vec();
    for _ in 0..3 {
        out = box_blur_rows(&out, h, w, r);
    }
    let mut t = transpose(&out, h, w);
    for _ in 0..3 {
        t = box_blur_rows(&t, w, h, r);
    }
    transpose(&t, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn blur_keeps_constants_and_mass_and_spreads_a_point() {
        let flat = vec![77u8; 9 * 7];
        assert_eq!(gaussian_blur(&flat, 9, 7, 1.3), flat);
        let mut dot = vec![0u8; 15 * 15];
        dot[7 * 15 + 7] = 255;
        let b = gaussian_blur(&dot, 15, 15, 1.0);
        // Mirror-symmetric (rows then columns, each pass rounded: not transpose-symmetric),
        // peaked at the centre, decreasing outwards.
        for y in 0..15 {
            for x in 0..15 {
                assert_eq!(b[y * 15 + x], b[(14 - y) * 15 + x]);
                assert_eq!(b[y * 15 + x], b[y * 15 + 14 - x]);
            }
        }
        assert!(b[7 * 15 + 7] > b[7 * 15 + 8] && b[7 * 15 + 8] > b[7 * 15 + 9]);
        let mass: u32 = b.iter().map(|&p| p as u32).sum();
        assert!((mass as i32 - 255).abs() < 40, "mass {mass}");
        // The box radius of the three-pass approximation: sigma² = r²/3 per pass.
        let r = box_radius(2.0, 3);
        let l = r.floor();
        let var = ((2.0 * l + 1.0) * (l * (l + 1.0)) / 3.0 + (r - l) * 2.0 * (l + 1.0).powi(2))
            / (2.0 * r + 1.0);
        assert!((var - 4.0 / 3.0).abs() < 1e-3, "box variance {var}");
    }

    /// Outputs of Pillow 13.0.0 (`ImageFilter.GaussianBlur(r)`, `ImageEnhance.Contrast`,
    /// `ImageEnhance.Brightness`) on an 8×10 'L' image whose pixel i is
    /// `(37 i + 13 ((i² mod 11))) mod 256`.
    #[test]
    fn matches_pillow_bit_for_bit() {
        let (h, w) = (8usize, 10usize);
        let img: Vec<u8> = (0..h * w)
            .map(|i| ((i * 37 + (i * i) % 11 * 13) % 256) as u8)
            .collect();
        let want: [(f32, [u8; 80]); 3] = [
            (
                0.6,
                [
                    27, 71, 135, 186, 197, 177, 60, 86, 145, 125, 98, 121, 146, 91, 128, 113, 97,
                    127, 160, 91, 64, 66, 86, 109, 143, 61, 48, 60, 90, 113, 148, 143, 146, 167,
                    185, 105, 135, 128, 137, 162, 62, 107, 111, 114, 132, 148, 161, 100, 91, 99,
                    111, 159, 189, 189, 188, 185, 103, 119, 155, 165, 181, 190, 123, 147, 125, 116,
                    114, 131, 77, 117, 116, 127, 139, 164, 70, 34, 35, 57, 83, 139,
                ],
            ),
            (
                1.3,
                [
                    74, 93, 121, 141, 144, 127, 111, 108, 115, 121, 84, 97, 118, 132, 133, 119,
                    106, 105, 113, 119, 96, 105, 118, 128, 127, 116, 106, 106, 113, 119, 107, 114,
                    126, 134, 134, 125, 116, 113, 117, 122, 119, 126, 137, 144, 143, 136, 126, 120,
                    122, 125, 132, 137, 145, 147, 142, 132, 122, 116, 119, 124, 140, 143, 146, 141,
                    127, 111, 101, 101, 110, 118, 142, 142, 142, 131, 111, 90, 80, 86, 101, 113,
                ],
            ),
            (
                1.9,
                [
                    88, 100, 114, 126, 128, 124, 118, 113, 113, 114, 94, 103, 115, 125, 127, 123,
                    117, 113, 114, 115, 102, 109, 119, 126, 127, 123, 118, 115, 116, 117, 112, 117,
                    125, 129, 129, 125, 120, 117, 118, 119, 122, 125, 131, 133, 130, 125, 120, 118,
                    119, 120, 129, 132, 135, 134, 128, 121, 116, 114, 116, 119, 134, 135, 136, 131,
                    123, 114, 108, 108, 112, 116, 136, 137, 135, 128, 117, 107, 101, 102, 107, 113,
                ],
            ),
        ];
        for (r, want) in want {
            assert_eq!(gaussian_blur(&img, h, w, r), want.to_vec(), "radius {r}");
        }
        let contrast: [u8; 80] = [
            0, 24, 128, 255, 247, 255, 0, 48, 170, 132, 129, 162, 230, 0, 124, 103, 118, 169, 255,
            26, 0, 0, 18, 87, 191, 0, 0, 0, 25, 111, 233, 195, 192, 225, 255, 47, 187, 166, 181,
            232, 0, 89, 51, 48, 81, 150, 254, 43, 22, 37, 88, 174, 255, 255, 255, 255, 6, 110, 250,
            229, 244, 255, 30, 152, 114, 111, 144, 213, 0, 106, 85, 100, 151, 237, 9, 0, 0, 0, 69,
            173,
        ];
        let mean = img.iter().map(|&p| p as f64).sum::<f64>() / img.len() as f64;
        let mut v = img.clone();
        blend_constant(&mut v, (mean + 0.5) as u8, 1.37);
        assert_eq!(v, contrast.to_vec());
        let bright: [u8; 80] = [
            0, 35, 89, 161, 151, 159, 3, 48, 111, 91, 90, 107, 142, 14, 87, 76, 84, 110, 155, 36,
            17, 15, 32, 68, 122, 12, 2, 9, 36, 80, 144, 124, 122, 139, 175, 47, 119, 109, 117, 143,
            6, 69, 49, 48, 65, 100, 154, 45, 34, 42, 68, 113, 176, 156, 155, 172, 26, 80, 152, 142,
            149, 176, 39, 102, 82, 80, 97, 133, 5, 78, 67, 75, 101, 146, 27, 7, 6, 23, 58, 112,
        ];
        let mut v = img.clone();
        blend_constant(&mut v, 0, 0.71);
        assert_eq!(v, bright.to_vec());
    }

    #[test]
    fn blend_truncates_and_clips_as_pillow() {
        let mut v = vec![0u8, 10, 100, 200, 255];
        blend_constant(&mut v, 0, 0.5);
        assert_eq!(v, vec![0, 5, 50, 100, 127]);
        let mut v = vec![0u8, 10, 100, 200, 255];
        blend_constant(&mut v, 100, 1.5);
        assert_eq!(v, vec![0, 0, 100, 250, 255]);
    }

    #[test]
    fn la_strong_is_seeded_and_stays_in_range_without_noise() {
        let x: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
        let a = la_strong(&x, &mut Pcg32::seed_from_u64(9));
        let b = la_strong(&x, &mut Pcg32::seed_from_u64(9));
        assert_eq!(a, b);
        let mut y = x.clone();
        brightness_contrast(&mut y, 1.3, 0.2);
        let (lo, hi) = (
            x.iter().cloned().fold(f32::MAX, f32::min),
            x.iter().cloned().fold(f32::MIN, f32::max),
        );
        assert!(y.iter().all(|&v| v >= lo - 1e-6 && v <= hi + 1e-6));
        // a = 1, b = 0 is the identity (up to rounding).
        let mut z = x.clone();
        brightness_contrast(&mut z, 1.0, 0.0);
        assert!(z.iter().zip(&x).all(|(p, q)| (p - q).abs() < 1e-6));
    }

    #[test]
    fn acdc_strong_is_quantised_to_a_255th() {
        let x: Vec<f32> = (0..64 * 48).map(|i| ((i % 97) as f32) / 96.0).collect();
        let mut rng = Pcg32::seed_from_u64(4);
        for _ in 0..20 {
            let s = acdc_strong(&x, 64, 48, &mut rng);
            assert!(s.iter().all(
                |&p| (p * 255.0 - (p * 255.0).round()).abs() < 1e-4 && (0.0..=1.0).contains(&p)
            ));
        }
    }
}
