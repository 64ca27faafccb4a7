//! NIfTI-1 images in and out (`.nii`, `.nii.gz`), through the `nifti` crate for the file format
//! and our own code for everything that crate gets wrong or panics on (see
//! `shared/design/IO-NOTES.md`): value conversion and scaling, the affine, header validation.
//!
//! # Axis order
//! NIfTI stores voxel `(i, j, k)` = `(x, y, z)` with `i` fastest. [`Volume::data`] keeps exactly
//! that buffer, which read as a row-major (C-order) array is **`[z][y][x]`**: shape
//! [`Volume::shape_zyx`] = `[nz, ny, nx]`, element `(x, y, z)` at `(z·ny + y)·nx + x`. For the
//! ACDC files this is `[slice][H][W]`, SS-Net's own order (slice `k` is `data[k·H·W..]`).
//! [`Volume::dims`] and [`Volume::spacing`] are in NIfTI order `[x, y, z]`; use
//! [`Volume::spacing_zyx`] with metrics computed over `data`. For data kept the LA way
//! (`[X][Y][Z]` C order, as SS-Net's LA h5 files and its VNet input), convert with
//! [`zyx_to_xyz`] / [`xyz_to_zyx`] or [`Volume::to_xyz`].
//!
//! # Values
//! uint8, int8, int16, uint16, int32, uint32, float32 and float64 voxels are read into `f32`.
//! `scl_slope` / `scl_inter` are applied (in f64) as nibabel does: a slope of 0 or a non-finite
//! slope means no scaling (the `nifti` crate turns every voxel into NaN for a NaN slope);
//! a valid slope with a non-finite intercept is an error.
//!
//! # Affine (voxel index → world millimetres)
//! The sform when `sform_code > 0`, else the qform when `qform_code > 0` (computed here with
//! nifti1_io's `quatern_to_mat44` rules: `pixdim[0]` other than ±1 counts as 1, non-positive
//! voxel sizes count as 1 — the `nifti` crate's `qform_affine()` panics instead), else the
//! NIfTI "method 1" fallback `diag(pixdim[1], pixdim[2], pixdim[3])`.

use crate::error::{Error, Result};
use ::nifti::{NiftiError, NiftiHeader, NiftiType};
use flate2::read::MultiGzDecoder;
use nalgebra::Matrix4;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One NIfTI image in memory. See the module docs for the axis order.
#[derive(Clone, Debug)]
pub struct Volume {
    /// Voxel values (scaled), C-order `[z][y][x]` (x fastest): the NIfTI on-disk order.
    pub data: Vec<f32>,
    /// `[nx, ny, nz]` (NIfTI `dim[1..=3]`; 1 for the axes of a 1-D or 2-D image).
    pub dims: [usize; 3],
    /// `[dx, dy, dz]`: `|pixdim[1..=3]|` as stored (for ACDC the header says 1×1×10, which is
    /// not the real spacing; see `shared/data/acdc/README.md`).
    pub spacing: [f64; 3],
    /// Voxel `(x, y, z, 1)` → world coordinates (mm). See the module docs for the source.
    pub affine: Matrix4<f64>,
    /// The header as read (datatype, dims and scaling are rewritten on writing).
    pub header: NiftiHeader,
    /// The NIfTI datatype the voxels were stored as.
    pub datatype: NiftiType,
    /// Where it was read from (empty for a volume built in memory); used in error messages.
    pub path: PathBuf,
}

impl Volume {
    /// A volume built in memory from `[z][y][x]` data, NIfTI dims `[nx, ny, nz]` and voxel
    /// size `[dx, dy, dz]` (mm): a fresh header with that spacing, units mm, and the affine
    /// `diag(dx, dy, dz)` as sform (code 2, aligned) and qform (code 1, scanner).
    pub fn new(data: Vec<f32>, dims: [usize; 3], spacing: [f64; 3]) -> Result<Volume> {
        let n = dims.iter().product::<usize>();
        if data.len() != n || n == 0 {
            return Err(Error::msg(format!(
                "nifti: {} values do not fill dims {dims:?}",
                data.len()
            )));
        }
        if dims.iter().any(|&d| d > u16::MAX as usize) {
            return Err(Error::msg(format!(
                "nifti: dims {dims:?} exceed the NIfTI-1 limit of 32767 per axis"
            )));
        }
        if spacing.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return Err(Error::msg(format!(
                "nifti: spacing {spacing:?} must be positive"
            )));
        }
        let mut header = NiftiHeader::default();
        let ndim = if dims[2] > 1 {
            3
        } else if dims[1] > 1 {
            2
        } else {
            1
        };
        header.dim = [
            ndim as u16,
            dims[0] as u16,
            dims[1] as u16,
            dims[2] as u16,
            1,
            1,
            1,
            1,
        ];
        header.pixdim = [
            1.0,
            spacing[0] as f32,
            spacing[1] as f32,
            spacing[2] as f32,
            1.0,
            1.0,
            1.0,
            1.0,
        ];
        header.xyzt_units = 2; // NIFTI_UNITS_MM
        header.datatype = NiftiType::Float32 as i16;
        header.bitpix = 32;
        header.scl_slope = 1.0;
        header.scl_inter = 0.0;
        // Identity rotation quaternion, zero offset: the qform is diag(spacing) too.
        header.qform_code = 1;
        header.quatern_b = 0.0;
        header.quatern_c = 0.0;
        header.quatern_d = 0.0;
        header.sform_code = 2;
        header.srow_x = [spacing[0] as f32, 0.0, 0.0, 0.0];
        header.srow_y = [0.0, spacing[1] as f32, 0.0, 0.0];
        header.srow_z = [0.0, 0.0, spacing[2] as f32, 0.0];
        let affine = affine_of(&header);
        Ok(Volume {
            data,
            dims,
            spacing,
            affine,
            header,
            datatype: NiftiType::Float32,
            path: PathBuf::new(),
        })
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Shape of [`Volume::data`] read as a C-order array: `[nz, ny, nx]`.
    pub fn shape_zyx(&self) -> [usize; 3] {
        [self.dims[2], self.dims[1], self.dims[0]]
    }

    /// Voxel size in the order of [`Volume::shape_zyx`]: `[dz, dy, dx]`.
    pub fn spacing_zyx(&self) -> [f64; 3] {
        [self.spacing[2], self.spacing[1], self.spacing[0]]
    }

    /// Number of axes the header declares (1 to 3; a 4-D+ image with singleton extra axes
    /// counts as 3-D).
    pub fn ndim(&self) -> usize {
        (self.header.dim[0] as usize).clamp(1, 3)
    }

    /// Value at voxel `(x, y, z)`.
    pub fn at(&self, x: usize, y: usize, z: usize) -> f32 {
        self.data[(z * self.dims[1] + y) * self.dims[0] + x]
    }

    /// The data as a C-order `[x][y][z]` array (z fastest): SS-Net's LA layout.
    pub fn to_xyz(&self) -> Vec<f32> {
        zyx_to_xyz(&self.data, self.shape_zyx())
    }

    /// Number of NaN voxels.
    pub fn nan_count(&self) -> usize {
        self.data.iter().filter(|v| v.is_nan()).count()
    }

    /// The voxels as a label map: every value must be an integer in 0..=255 (one-line error
    /// naming the file otherwise).
    pub fn labels(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.data.len());
        for (i, &v) in self.data.iter().enumerate() {
            if !((0.0..=255.0).contains(&v) && v.fract() == 0.0) {
                let z = i / (self.dims[0] * self.dims[1]);
                let y = (i / self.dims[0]) % self.dims[1];
                let x = i % self.dims[0];
                return Err(Error::file(
                    &self.path,
                    format!("not a label map: voxel (x {x}, y {y}, z {z}) is {v}, labels must be integers in 0..=255"),
                ));
            }
            out.push(v as u8);
        }
        Ok(out)
    }
}

/// `[z][y][x]` C-order → `[x][y][z]` C-order (`shape_zyx = [nz, ny, nx]`).
pub fn zyx_to_xyz<T: Copy>(data: &[T], shape_zyx: [usize; 3]) -> Vec<T> {
    let [nz, ny, nx] = shape_zyx;
    assert_eq!(
        data.len(),
        nz * ny * nx,
        "zyx_to_xyz: length does not match the shape"
    );
    let mut out = Vec::with_capacity(data.len());
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                out.push(data[(z * ny + y) * nx + x]);
            }
        }
    }
    out
}

/// `[x][y][z]` C-order → `[z][y][x]` C-order (`shape_xyz = [nx, ny, nz]`).
pub fn xyz_to_zyx<T: Copy>(data: &[T], shape_xyz: [usize; 3]) -> Vec<T> {
    let [nx, ny, nz] = shape_xyz;
    assert_eq!(
        data.len(),
        nz * ny * nx,
        "xyz_to_zyx: length does not match the shape"
    );
    let mut out = Vec::with_capacity(data.len());
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                out.push(data[(x * ny + y) * nz + z]);
            }
        }
    }
    out
}

/// The `nifti` crate's error as one readable phrase.
fn describe(e: &NiftiError) -> String {
    match e {
        NiftiError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated file ({io})")
        }
        NiftiError::Io(io) => io.to_string(),
        NiftiError::IncompatibleLength(got, want) => {
            format!("truncated or corrupt voxel data: {got} bytes where the header needs {want}")
        }
        NiftiError::InvalidFormat => "not a NIfTI-1 file (bad magic code)".to_string(),
        other => other.to_string(),
    }
}

/// Bytes per voxel of the datatypes we read; `None` for the others.
fn supported_size(t: NiftiType) -> Option<usize> {
    match t {
        NiftiType::Uint8 | NiftiType::Int8 => Some(1),
        NiftiType::Int16 | NiftiType::Uint16 => Some(2),
        NiftiType::Int32 | NiftiType::Uint32 | NiftiType::Float32 => Some(4),
        NiftiType::Float64 => Some(8),
        _ => None,
    }
}

const SUPPORTED: &str = "uint8, int8, int16, uint16, int32, uint32, float32, float64";

/// The opened file as a stream of NIfTI bytes: gunzipped when it starts with the gzip magic
/// (every member, each checked against its CRC and length when read to its end).
fn open_stream(path: &Path) -> Result<(Box<dyn Read>, bool, u64)> {
    let mut f = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let len = f
        .metadata()
        .map_err(|e| Error::file(path, format!("cannot stat: {e}")))?
        .len();
    let mut magic = [0u8; 2];
    let gz = f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    f.seek(SeekFrom::Start(0))
        .map_err(|e| Error::file(path, format!("cannot seek: {e}")))?;
    let r = BufReader::new(f);
    Ok(if gz {
        (Box::new(MultiGzDecoder::new(r)), true, len)
    } else {
        (Box::new(r), false, len)
    })
}

/// A read error of the (possibly gzipped) stream as one phrase.
fn stream_error(e: &std::io::Error, gz: bool) -> String {
    match (gz, e.kind()) {
        (_, std::io::ErrorKind::UnexpectedEof) => {
            format!("truncated or malformed: the data ends early ({e})")
        }
        (true, _) => {
            format!("corrupt gzip data ({e}): the file is damaged, re-copy or re-export it")
        }
        (false, _) => format!("cannot read: {e}"),
    }
}

/// The sizes a header declares, checked before anything is allocated: `dim[0]` in 1..=7,
/// every used `dim[i]` positive (the crate reads them as u16: a negative i16 shows as a huge
/// value), and voxel bytes that fit in memory. Returns `(dims, voxel count)`.
fn declared_size(
    header: &NiftiHeader,
    size: usize,
) -> std::result::Result<(Vec<usize>, usize), String> {
    let nd = header.dim[0] as i16;
    if !(1..=7).contains(&nd) {
        return Err(format!(
            "truncated or malformed header: dim[0] = {nd}, the number of axes must be 1 to 7"
        ));
    }
    let mut dims = Vec::with_capacity(nd as usize);
    for i in 1..=nd as usize {
        let d = header.dim[i] as i16;
        if d <= 0 {
            return Err(format!(
                "truncated or malformed header: dim[{i}] = {d}, every size must be positive"
            ));
        }
        dims.push(d as usize);
    }
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(size).is_some())
        .ok_or_else(|| format!("truncated or malformed header: dims {dims:?} overflow"))?;
    Ok((dims, n))
}

/// Read a `.nii` or `.nii.gz` file. Every failure is a one-line [`Error::File`] naming it.
///
/// The header is checked first; the declared voxel bytes are compared with what the file
/// holds before they are allocated (a header declaring 30000³ voxels over 100 bytes of data
/// is "truncated or malformed", not an allocation failure), and a gzip file is read to its
/// end so that its CRC and length are verified.
pub fn read(path: impl AsRef<Path>) -> Result<Volume> {
    let path = path.as_ref();
    if path.is_dir() {
        return Err(Error::file(path, "is a folder, not a NIfTI file"));
    }
    if !path.is_file() {
        return Err(Error::file(path, "no such file"));
    }
    let (mut stream, gz, file_len) = open_stream(path)?;
    // The header first (348 bytes): reject what we cannot read before decoding the whole
    // volume, with a message about the real problem.
    let mut head = Vec::with_capacity(348);
    (&mut stream)
        .take(348)
        .read_to_end(&mut head)
        .map_err(|e| {
            Error::file(
                path,
                format!("cannot read the NIfTI header: {}", stream_error(&e, gz)),
            )
        })?;
    if head.len() < 348 {
        return Err(Error::file(
            path,
            format!(
                "truncated or malformed: {} bytes, a NIfTI-1 header alone is 348",
                head.len()
            ),
        ));
    }
    let header = NiftiHeader::from_reader(&head[..]).map_err(|e| {
        Error::file(
            path,
            format!("cannot read the NIfTI header: {}", describe(&e)),
        )
    })?;
    if header.sizeof_hdr != 348 {
        return Err(Error::file(
            path,
            format!(
                "not a NIfTI-1 file (sizeof_hdr {}, expected 348)",
                header.sizeof_hdr
            ),
        ));
    }
    let datatype = header.data_type().map_err(|_| {
        Error::file(
            path,
            format!(
                "unknown NIfTI datatype code {} (supported: {SUPPORTED})",
                header.datatype
            ),
        )
    })?;
    let size = supported_size(datatype).ok_or_else(|| {
        Error::file(
            path,
            format!(
                "unsupported NIfTI datatype {datatype:?} (code {}); supported: {SUPPORTED}",
                header.datatype
            ),
        )
    })?;
    if header.bitpix as usize != size * 8 {
        return Err(Error::file(
            path,
            format!(
                "bitpix {} does not match datatype {datatype:?} ({} bits)",
                header.bitpix,
                size * 8
            ),
        ));
    }
    let (dim, n) = declared_size(&header, size).map_err(|m| Error::file(path, m))?;
    if dim.len() > 3 && dim[3..].iter().any(|&d| d > 1) {
        return Err(Error::file(
            path,
            format!(
                "{}-D image of dims {dim:?}: only 1-D to 3-D images are supported",
                dim.len()
            ),
        ));
    }
    let mut dims = [1usize; 3];
    for (d, &v) in dims.iter_mut().zip(&dim) {
        *d = v;
    }

    let (slope, inter) = (header.scl_slope as f64, header.scl_inter as f64);
    // nibabel: a zero or non-finite slope means "no scaling".
    let scale = slope != 0.0 && slope.is_finite();
    if scale && !inter.is_finite() {
        return Err(Error::file(
            path,
            format!("valid scl_slope {slope} with invalid scl_inter {inter}"),
        ));
    }
    let scale = scale && !(slope == 1.0 && inter == 0.0);

    let vox_offset = header.vox_offset;
    if !(vox_offset.is_finite() && vox_offset >= 0.0) {
        return Err(Error::file(
            path,
            format!("truncated or malformed header: vox_offset = {vox_offset}"),
        ));
    }
    // Single-file NIfTI: the voxels start at vox_offset, at least right after the header.
    let offset = (vox_offset as u64).max(348);
    let need = n * size;
    let truncated = |have: u64| {
        Error::file(
            path,
            format!(
                "truncated or malformed: the header declares dims {dim:?} of {datatype:?} \
                 ({need} bytes of voxels from byte {offset}), the {}file holds {have}",
                if gz { "decompressed " } else { "" }
            ),
        )
    };
    if !gz && offset.saturating_add(need as u64) > file_len {
        return Err(truncated(file_len));
    }
    let skip = std::io::copy(&mut (&mut stream).take(offset - 348), &mut std::io::sink())
        .map_err(|e| Error::file(path, stream_error(&e, gz)))?;
    if skip < offset - 348 {
        return Err(truncated(348 + skip));
    }
    // Grown as the data arrives: never more than the file really holds.
    let mut raw = Vec::with_capacity(need.min(64 << 20));
    (&mut stream)
        .take(need as u64)
        .read_to_end(&mut raw)
        .map_err(|e| Error::file(path, stream_error(&e, gz)))?;
    if raw.len() < need {
        return Err(truncated(offset + raw.len() as u64));
    }
    if gz {
        // To the end of the last member: flate2 checks each member's CRC32 and length there.
        std::io::copy(&mut stream, &mut std::io::sink()).map_err(|e| {
            Error::file(
                path,
                format!(
                    "gzip check failed after the voxel data ({e}): the file may be damaged, re-copy or re-export it"
                ),
            )
        })?;
    }
    let little = header.endianness == ::nifti::Endianness::Little;
    let mut data = decode(&raw, datatype, little);
    drop(raw);
    if scale {
        for v in &mut data {
            *v = *v * slope + inter;
        }
    }
    let data: Vec<f32> = data.into_iter().map(|v| v as f32).collect();
    let spacing = [
        header.pixdim[1].abs() as f64,
        header.pixdim[2].abs() as f64,
        header.pixdim[3].abs() as f64,
    ];
    let affine = affine_of(&header);
    if affine.iter().any(|v| !v.is_finite()) {
        return Err(Error::file(path, "non-finite affine (sform/qform fields)"));
    }
    Ok(Volume {
        data,
        dims,
        spacing,
        affine,
        header,
        datatype,
        path: path.to_path_buf(),
    })
}

/// The header of a `.nii` / `.nii.gz` file alone (a few hundred bytes are decompressed).
pub fn read_header(path: &Path) -> Result<NiftiHeader> {
    let (stream, gz, _) = open_stream(path)?;
    let mut head = Vec::with_capacity(348);
    stream.take(348).read_to_end(&mut head).map_err(|e| {
        Error::file(
            path,
            format!("cannot read the NIfTI header: {}", stream_error(&e, gz)),
        )
    })?;
    NiftiHeader::from_reader(&head[..]).map_err(|e| {
        Error::file(
            path,
            format!("cannot read the NIfTI header: {}", describe(&e)),
        )
    })
}

/// How two affines (voxel → mm) disagree, when they do by more than `tol_mm` at any corner
/// of a `dims` grid (`[nx, ny, nz]`): a phrase for a warning or an error; `None` when they
/// agree. Comparing mapped corners catches a shifted origin and a flipped or swapped axis.
pub fn affine_mismatch(
    a: &Matrix4<f64>,
    b: &Matrix4<f64>,
    dims: [usize; 3],
    tol_mm: f64,
) -> Option<String> {
    let mut worst = 0f64;
    for corner in 0..8 {
        let p = nalgebra::Vector4::new(
            if corner & 1 != 0 {
                dims[0].saturating_sub(1) as f64
            } else {
                0.0
            },
            if corner & 2 != 0 {
                dims[1].saturating_sub(1) as f64
            } else {
                0.0
            },
            if corner & 4 != 0 {
                dims[2].saturating_sub(1) as f64
            } else {
                0.0
            },
            1.0,
        );
        let d = (a * p - b * p).norm();
        worst = worst.max(if d.is_finite() { d } else { f64::INFINITY });
    }
    (worst > tol_mm).then(|| {
        let origin = |m: &Matrix4<f64>| format!("({:.1}, {:.1}, {:.1})", m[(0, 3)], m[(1, 3)], m[(2, 3)]);
        let diag = |m: &Matrix4<f64>| {
            format!("[{:.3}, {:.3}, {:.3}]", m[(0, 0)], m[(1, 1)], m[(2, 2)])
        };
        format!(
            "the affines disagree by up to {worst:.2} mm on the voxel grid (origin {} vs {}, diagonal {} vs {})",
            origin(a),
            origin(b),
            diag(a),
            diag(b)
        )
    })
}

/// Raw voxel bytes → f64 values (exact for every supported type but float64 → f32 later).
fn decode(raw: &[u8], t: NiftiType, little: bool) -> Vec<f64> {
    macro_rules! conv {
        ($ty:ty, $n:expr) => {
            raw.chunks_exact($n)
                .map(|c| {
                    let b: [u8; $n] = c.try_into().expect("chunks_exact");
                    (if little {
                        <$ty>::from_le_bytes(b)
                    } else {
                        <$ty>::from_be_bytes(b)
                    }) as f64
                })
                .collect()
        };
    }
    match t {
        NiftiType::Uint8 => raw.iter().map(|&b| b as f64).collect(),
        NiftiType::Int8 => raw.iter().map(|&b| b as i8 as f64).collect(),
        NiftiType::Int16 => conv!(i16, 2),
        NiftiType::Uint16 => conv!(u16, 2),
        NiftiType::Int32 => conv!(i32, 4),
        NiftiType::Uint32 => conv!(u32, 4),
        NiftiType::Float32 => conv!(f32, 4),
        NiftiType::Float64 => conv!(f64, 8),
        // read() refuses every other type before decoding.
        _ => unreachable!("decode: unsupported datatype {t:?}"),
    }
}

/// The affine of a header (module docs): sform, qform or the method-1 fallback. Never panics.
pub fn affine_of(h: &NiftiHeader) -> Matrix4<f64> {
    if h.sform_code > 0 {
        let (x, y, z) = (h.srow_x, h.srow_y, h.srow_z);
        #[rustfmt::skip]
        let m = Matrix4::new(
            x[0] as f64, x[1] as f64, x[2] as f64, x[3] as f64,
            y[0] as f64, y[1] as f64, y[2] as f64, y[3] as f64,
            z[0] as f64, z[1] as f64, z[2] as f64, z[3] as f64,
            0.0, 0.0, 0.0, 1.0,
        );
        return m;
    }
    if h.qform_code > 0 {
        return qform_affine(h);
    }
    let p = |i: usize| h.pixdim[i] as f64;
    Matrix4::new(
        p(1),
        0.0,
        0.0,
        0.0,
        0.0,
        p(2),
        0.0,
        0.0,
        0.0,
        0.0,
        p(3),
        0.0,
        0.0,
        0.0,
        0.0,
        1.0,
    )
}

/// nifti1_io's `quatern_to_mat44`.
fn qform_affine(h: &NiftiHeader) -> Matrix4<f64> {
    let (mut b, mut c, mut d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let mut a = 1.0 - (b * b + c * c + d * d);
    if a < 1e-7 {
        // Special case (180° rotation): renormalise (b, c, d), a = 0.
        let norm = (b * b + c * c + d * d).sqrt();
        a = 0.0;
        if norm > 0.0 {
            b /= norm;
            c /= norm;
            d /= norm;
        }
    } else {
        a = a.sqrt();
    }
    let pos = |v: f32| {
        if v > 0.0 && v.is_finite() {
            v as f64
        } else {
            1.0
        }
    };
    let (xd, yd) = (pos(h.pixdim[1]), pos(h.pixdim[2]));
    let mut zd = pos(h.pixdim[3]);
    if h.pixdim[0] < 0.0 {
        zd = -zd;
    }
    #[rustfmt::skip]
    let m = Matrix4::new(
        (a * a + b * b - c * c - d * d) * xd, 2.0 * (b * c - a * d) * yd, 2.0 * (b * d + a * c) * zd, h.quatern_x as f64,
        2.0 * (b * c + a * d) * xd, (a * a + c * c - b * b - d * d) * yd, 2.0 * (c * d - a * b) * zd, h.quatern_y as f64,
        2.0 * (b * d - a * c) * xd, 2.0 * (c * d + a * b) * yd, (a * a + d * d - c * c - b * b) * zd, h.quatern_z as f64,
        0.0, 0.0, 0.0, 1.0,
    );
    m
}

/// Write `[z][y][x]` data with `header` (dims taken from it). The `nifti` writer wants an
/// `[x, y, z]`-indexed array: the reversed-axes view of ours, no copy.
fn write_any<T: ::nifti::DataElement + bytemuck::Pod>(
    path: &Path,
    data: &[T],
    header: &NiftiHeader,
    label: bool,
) -> Result<()> {
    let dim = header.dim().map_err(|e| {
        Error::file(
            path,
            format!(
                "cannot write with a header of bad dimensions: {}",
                describe(&e)
            ),
        )
    })?;
    let mut shape: Vec<usize> = dim.iter().map(|&d| d as usize).collect();
    // Trailing singleton axes (a 4-D header with t = 1) are dropped; others cannot be written.
    while shape.len() > 3 && shape.last() == Some(&1) {
        shape.pop();
    }
    let n: usize = shape.iter().product();
    if shape.len() > 3 || data.len() != n {
        return Err(Error::file(
            path,
            format!(
                "cannot write {} voxels with a header of dims {dim:?}",
                data.len()
            ),
        ));
    }
    shape.reverse();
    let view = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&shape), data)
        .map_err(|e| Error::file(path, format!("cannot shape the data: {e}")))?;
    let mut header = header.clone();
    header.dim[0] = shape.len() as u16;
    if label {
        // The display window of an intensity image makes no sense for labels.
        header.cal_min = 0.0;
        header.cal_max = 0.0;
    }
    ::nifti::writer::WriterOptions::new(path)
        .reference_header(&header)
        .write_nifti(&view.reversed_axes())
        .map_err(|e| Error::file(path, format!("cannot write NIfTI: {}", describe(&e))))
}

/// Write `[z][y][x]` float32 data with the header (spacing, sform/qform, orientation) of
/// `reference`, so it opens aligned with it in a viewer. `.nii.gz` paths are compressed.
/// The datatype becomes float32 with no scaling.
pub fn write_volume(path: impl AsRef<Path>, data: &[f32], reference: &Volume) -> Result<()> {
    write_any(path.as_ref(), data, &reference.header, false)
}

/// Write a `[z][y][x]` uint8 label map with the header of `reference` (see [`write_volume`]).
pub fn write_labels(path: impl AsRef<Path>, labels: &[u8], reference: &Volume) -> Result<()> {
    write_any(path.as_ref(), labels, &reference.header, true)
}

/// [`write_volume`] with a header alone (its dims must match the data).
pub fn write_volume_with_header(
    path: impl AsRef<Path>,
    data: &[f32],
    header: &NiftiHeader,
) -> Result<()> {
    write_any(path.as_ref(), data, header, false)
}

/// [`write_labels`] with a header alone (its dims must match the data).
pub fn write_labels_with_header(
    path: impl AsRef<Path>,
    labels: &[u8],
    header: &NiftiHeader,
) -> Result<()> {
    write_any(path.as_ref(), labels, header, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_helpers_are_inverse() {
        let d: Vec<u16> = (0..24).collect();
        let xyz = zyx_to_xyz(&d, [2, 3, 4]);
        // (x=1, y=0, z=0) is zyx index 1 and xyz index (1·3+0)·2+0 = 6.
        assert_eq!(xyz[6], 1);
        assert_eq!(xyz_to_zyx(&xyz, [4, 3, 2]), d);
    }

    #[test]
    fn qform_identity_and_flip() {
        let mut h = NiftiHeader {
            sform_code: 0,
            qform_code: 1,
            ..NiftiHeader::default()
        };
        h.pixdim = [-1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0];
        h.quatern_x = 5.0;
        let a = affine_of(&h);
        assert_eq!(a[(0, 0)], 2.0);
        assert_eq!(a[(1, 1)], 3.0);
        assert_eq!(a[(2, 2)], -4.0);
        assert_eq!(a[(0, 3)], 5.0);
        // Garbage quaternion and pixdim: no panic, a finite matrix.
        h.quatern_b = 3.0;
        h.pixdim = [0.0, -1.0, f32::NAN, 0.0, 1.0, 1.0, 1.0, 1.0];
        assert!(affine_of(&h).iter().all(|v| v.is_finite()));
    }
}
