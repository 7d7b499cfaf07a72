//! Products with weights held on the host as they are stored — f32, f16 or bf16 — on the CPU.
//!
//! A checkpoint stored in f16 or bf16 (Llama 3.2, Phi-3 and Qwen2 ship in bf16) is held as it
//! is stored — half the bytes of f32, which is what lets Phi-3-mini's 3.8 B parameters fit a
//! 24 GB machine and what a decoding step (a few rows) is bound by — and an f32 checkpoint
//! (bart-large-cnn) in f32. Every product is taken in f32: each weight widened exactly to f32
//! inside the kernel (f32: as is), multiplied and summed in f32. The values are the ones
//! transformers computes with after `from_pretrained(...)` in float32 (the default: the stored
//! halves widened exactly); only the order of the sums differs, as it does between any two f32
//! matrix products.
//!
//! Why not burn's matrix product for f32: a decoding step multiplies a few rows (beams × inputs)
//! by every weight, and is bound by streaming the weights (batch 1) or by the multiply-adds
//! (a batch of beams); these kernels read one sequential stream of 4-row weight tiles with
//! 16-lane AVX-512 fused multiply-adds, at the machine's read rate for one row and near its
//! FMA rate from 32 rows on (docs/benchmarks.md), where the general product packs the weight
//! anew on every call.
//!
//! One order for every path: each output is `Σ_l lane_l` over 16 lanes, lane `l` summing
//! `w[k] · x[k]` with fused multiply-adds for `k ≡ l (mod 16)` below the last full 16, the lanes
//! added pairwise (`l + 8`, `l + 4`, `l + 2`, `l + 1`), then the leftover inputs fused in one by
//! one and the bias added. The AVX-512 and AVX2 kernels and the portable code all take exactly
//! these operations, so they give the same bits (tested); a split of the outputs over threads
//! ([`crate::ops::int8::Parallel`]) never changes one, and neither does the number of rows: an
//! output row's values do not depend on which other rows share the call (a server's batch).

use crate::ops::int8::{split_jobs, SyncPtr, PARALLEL_MIN_WORK};

/// Lanes of the canonical sum (one AVX-512 vector of f32).
pub const LANES: usize = 16;

/// Weight rows per tile of the vector kernels (rows of one weight tile stay in cache while every
/// activation row passes).
const TILE: usize = 4;

/// Activation rows per pass of the vector kernels.
const ROWS: usize = 4;

/// Activation rows per block: every weight tile of a job passes over one block of rows (kept in
/// the core's cache) before the next block, so many rows (a prompt) do not stream the
/// activations once per tile.
const ROW_BLOCK: usize = 64;

/// The stored half-precision format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    F16,
    Bf16,
}

impl Half {
    /// The exact f32 value of one stored half.
    #[inline(always)]
    pub fn widen(self, bits: u16) -> f32 {
        match self {
            Half::F16 => half::f16::from_bits(bits).to_f32(),
            Half::Bf16 => f32::from_bits((bits as u32) << 16),
        }
    }

    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            Half::F16 => burn::tensor::DType::F16,
            Half::Bf16 => burn::tensor::DType::BF16,
        }
    }
}

/// How a [`DenseWeight`]'s values are stored (the kernels' `F` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    F32,
    F16,
    Bf16,
}

/// [`Format`] as the vector kernels' const parameter.
#[cfg(target_arch = "x86_64")]
const F32: u8 = 0;
#[cfg(target_arch = "x86_64")]
const F16: u8 = 1;
#[cfg(target_arch = "x86_64")]
const BF16: u8 = 2;

/// A stored weight value: `f32`, or the bits of an f16/bf16 (`u16`).
pub trait Element: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    /// Its exact f32 value in `format`.
    fn to_f32(self, format: Format) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self, _: Format) -> f32 {
        self
    }
}

impl Element for u16 {
    #[inline(always)]
    fn to_f32(self, format: Format) -> f32 {
        match format {
            Format::Bf16 => Half::Bf16.widen(self),
            _ => Half::F16.widen(self),
        }
    }
}

/// One projection weight `[d_out, d_in]` (Hugging Face layout) held on the host as stored.
#[derive(Clone)]
pub struct DenseWeight<T: Element> {
    d_out: usize,
    d_in: usize,
    format: Format,
    /// The stored values `[d_out, d_in]`, each full tile of 4 rows interleaved in runs of 16
    /// inputs — row 0's inputs 0..16, row 1's, row 2's, row 3's, row 0's 16..32, ... — then the
    /// 4 rows' leftover inputs past the last full 16 one row after another, so that the kernel
    /// reads one sequential stream (4 rows side by side are 4 streams 4 KiB apart, which
    /// hardware prefetchers follow badly: half the memory rate). Rows past the last full tile
    /// are stored plainly.
    values: Vec<T>,
    /// `[d_out]`
    bias: Option<Vec<f32>>,
}

/// An f16/bf16 checkpoint's weight (its stored bits).
pub type HalfWeight = DenseWeight<u16>;

/// An f32 checkpoint's weight.
pub type F32Weight = DenseWeight<f32>;

impl<T: Element> std::fmt::Debug for DenseWeight<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DenseWeight[{}, {}] {:?}",
            self.d_out, self.d_in, self.format
        )
    }
}

impl HalfWeight {
    /// `values` `[d_out, d_in]` (the stored bits). `None` when the sizes disagree.
    pub fn new(values: Vec<u16>, kind: Half, d_out: usize, d_in: usize) -> Option<Self> {
        let format = match kind {
            Half::F16 => Format::F16,
            Half::Bf16 => Format::Bf16,
        };
        Self::tiled(&values, format, d_out, d_in)
    }

    /// From a checkpoint's little-endian bytes.
    pub fn from_le_bytes(data: &[u8], kind: Half, d_out: usize, d_in: usize) -> Option<Self> {
        let values = data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        Self::new(values, kind, d_out, d_in)
    }

    pub fn kind(&self) -> Half {
        match self.format {
            Format::Bf16 => Half::Bf16,
            _ => Half::F16,
        }
    }
}

impl F32Weight {
    /// `values` `[d_out, d_in]`. `None` when the sizes disagree.
    pub fn new(values: &[f32], d_out: usize, d_in: usize) -> Option<Self> {
        Self::tiled(values, Format::F32, d_out, d_in)
    }
}

impl<T: Element> DenseWeight<T> {
    fn tiled(values: &[T], format: Format, d_out: usize, d_in: usize) -> Option<Self> {
        if d_out == 0 || d_in == 0 || values.len() != d_out * d_in {
            return None;
        }
        let main = d_in / LANES * LANES;
        let full = d_out / TILE * TILE;
        let mut packed = Vec::with_capacity(values.len());
        for tile in values[..full * d_in].chunks_exact(TILE * d_in) {
            for k in (0..main).step_by(LANES) {
                for a in 0..TILE {
                    packed.extend_from_slice(&tile[a * d_in + k..][..LANES]);
                }
            }
            for a in 0..TILE {
                packed.extend_from_slice(&tile[a * d_in + main..(a + 1) * d_in]);
            }
        }
        packed.extend_from_slice(&values[full * d_in..]);
        Some(Self {
            d_out,
            d_in,
            format,
            values: packed,
            bias: None,
        })
    }

    /// Where rows `j..j + n` (a tile: `j` a multiple of 4) lie in `values`.
    fn layout(&self, j: usize, n: usize) -> Layout {
        let main = self.d_in / LANES * LANES;
        if n == TILE && j + TILE <= self.d_out / TILE * TILE {
            Layout {
                row: LANES,
                step: TILE * LANES,
                tail: TILE * main,
                tail_row: self.d_in - main,
            }
        } else {
            Layout {
                row: self.d_in,
                step: LANES,
                tail: main,
                tail_row: self.d_in,
            }
        }
    }

    /// The stored values `[d_out, d_in]` in row-major order.
    pub fn row_major(&self) -> Vec<T> {
        let (d_in, main) = (self.d_in, self.d_in / LANES * LANES);
        let mut out = vec![T::default(); self.values.len()];
        let mut j = 0;
        while j < self.d_out {
            let n = TILE.min(self.d_out - j);
            let lay = self.layout(j, n);
            let w = &self.values[j * d_in..(j + n) * d_in];
            for a in 0..n {
                for k in 0..d_in {
                    out[(j + a) * d_in + k] = w[lay.at(a, k, main)];
                }
            }
            j += n;
        }
        out
    }

    /// Adds `bias` `[d_out]` to every output row. `None` when its length is not `d_out`.
    pub fn with_bias(mut self, bias: Vec<f32>) -> Option<Self> {
        (bias.len() == self.d_out).then(|| {
            self.bias = Some(bias);
            self
        })
    }

    pub fn d_out(&self) -> usize {
        self.d_out
    }

    pub fn d_in(&self) -> usize {
        self.d_in
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The weight's exact f32 values `[d_out, d_in]`.
    pub fn widen(&self) -> Vec<f32> {
        let format = self.format;
        self.row_major()
            .into_iter()
            .map(|v| v.to_f32(format))
            .collect()
    }

    /// `x` `[rows, d_in]` row-major → `[rows, d_out]`, `x Wᵀ + bias`, with the best kernel this
    /// CPU has.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_with(x, Kernel::best())
    }

    /// [`DenseWeight::forward`] with the portable code: the same operations, so the same bits.
    pub fn forward_portable(&self, x: &[f32]) -> Vec<f32> {
        self.forward_with(x, Kernel::Portable)
    }

    fn forward_with(&self, x: &[f32], kernel: Kernel) -> Vec<f32> {
        let (d_in, d_out) = (self.d_in, self.d_out);
        assert_eq!(x.len() % d_in, 0, "activation width");
        let rows = x.len() / d_in;
        let mut y = vec![0f32; rows * d_out];
        let out = SyncPtr(y.as_mut_ptr());
        let parallel = rows * d_in * d_out >= PARALLEL_MIN_WORK;
        split_jobs(d_out.div_ceil(TILE), 1, parallel, &|tiles| {
            let outputs = tiles.start * TILE..(tiles.end * TILE).min(d_out);
            // SAFETY: `out` is `y` ([rows, d_out], alive until every job has returned); the
            // jobs' output ranges are disjoint.
            unsafe { self.outputs(outputs, x, rows, out, kernel) }
        });
        y
    }

    /// Outputs `range` of every activation row, written to their columns of `out`.
    ///
    /// # Safety
    /// `out` must be valid for writes of `rows · d_out` values, and no one else may access the
    /// columns of `range` while this runs.
    unsafe fn outputs(
        &self,
        range: std::ops::Range<usize>,
        x: &[f32],
        rows: usize,
        out: SyncPtr<f32>,
        kernel: Kernel,
    ) {
        let d_in = self.d_in;
        for block in (0..rows).step_by(ROW_BLOCK) {
            let block_end = rows.min(block + ROW_BLOCK);
            let mut j = range.start;
            while j < range.end {
                let n = TILE.min(range.end - j);
                let w = &self.values[j * d_in..(j + n) * d_in];
                let lay = self.layout(j, n);
                let mut r = block;
                while r < block_end {
                    let m = ROWS.min(block_end - r);
                    let xs = &x[r * d_in..(r + m) * d_in];
                    let mut sums = [[0f32; ROWS]; TILE];
                    let f = self.format;
                    match kernel {
                        #[cfg(target_arch = "x86_64")]
                        Kernel::Avx512 => x86::avx512(f, w, lay, n, xs, m, d_in, &mut sums),
                        #[cfg(target_arch = "x86_64")]
                        Kernel::Avx2 => x86::avx2(f, w, lay, n, xs, m, d_in, &mut sums),
                        Kernel::Portable => portable(f, w, lay, n, xs, m, d_in, &mut sums),
                    }
                    for (a, row) in sums.iter().enumerate().take(n) {
                        for (b, &s) in row.iter().enumerate().take(m) {
                            let v = match &self.bias {
                                Some(bias) => s + bias[j + a],
                                None => s,
                            };
                            // SAFETY: column j + a < d_out belongs to this call (the contract).
                            unsafe { *out.0.add((r + b) * self.d_out + j + a) = v };
                        }
                    }
                    r += m;
                }
                j += n;
            }
        }
    }
}

/// Where the inputs of one tile's rows lie in its slice of [`DenseWeight::values`]: input `k` of
/// row `a` at `a · row + (k / 16) · step + k % 16` below the last full 16, at
/// `tail + a · tail_row + (k − main)` past it.
#[derive(Clone, Copy, Debug)]
struct Layout {
    row: usize,
    step: usize,
    tail: usize,
    tail_row: usize,
}

impl Layout {
    #[inline(always)]
    fn at(&self, a: usize, k: usize, main: usize) -> usize {
        if k < main {
            a * self.row + k / LANES * self.step + k % LANES
        } else {
            self.tail + a * self.tail_row + (k - main)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
            *BEST.get_or_init(|| {
                if x86::has_avx512() {
                    Kernel::Avx512
                } else if x86::has_avx2() {
                    Kernel::Avx2
                } else {
                    Kernel::Portable
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Portable
    }
}

/// The lanes added pairwise (`l + 8`, `l + 4`, `l + 2`, `l + 1`): the canonical reduction.
#[inline(always)]
fn reduce(mut acc: [f32; LANES]) -> f32 {
    for l in 0..8 {
        acc[l] += acc[l + 8];
    }
    for l in 0..4 {
        acc[l] += acc[l + 4];
    }
    for l in 0..2 {
        acc[l] += acc[l + 2];
    }
    acc[0] + acc[1]
}

/// The leftover inputs past the last full 16, fused in one by one.
#[inline(always)]
fn tail<T: Element>(format: Format, mut s: f32, w: &[T], x: &[f32]) -> f32 {
    for (&w, &x) in w.iter().zip(x) {
        s = w.to_f32(format).mul_add(x, s);
    }
    s
}

/// `sums[a][b] = w_a · x_b` for `n` weight rows and `m` activation rows, in the canonical order.
#[allow(clippy::too_many_arguments)]
fn portable<T: Element>(
    format: Format,
    w: &[T],
    lay: Layout,
    n: usize,
    x: &[f32],
    m: usize,
    d_in: usize,
    sums: &mut [[f32; ROWS]; TILE],
) {
    let main = d_in / LANES * LANES;
    for a in 0..n {
        let rest = &w[lay.tail + a * lay.tail_row..][..d_in - main];
        for b in 0..m {
            let xr = &x[b * d_in..(b + 1) * d_in];
            let mut acc = [0f32; LANES];
            for k in (0..main).step_by(LANES) {
                let wk = &w[a * lay.row + k / LANES * lay.step..][..LANES];
                for l in 0..LANES {
                    acc[l] = wk[l].to_f32(format).mul_add(xr[k + l], acc[l]);
                }
            }
            sums[a][b] = tail(format, reduce(acc), rest, &xr[main..]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{tail, Element, Format, Layout, BF16, F16, F32, LANES, ROWS, TILE};
    use std::arch::x86_64::*;

    /// [`super::reduce`] of lanes 0–7 (`lo`) and 8–15 (`hi`) with vector adds: the same
    /// additions of the same pairs (`l + 8`, `l + 4`, `l + 2`, `l + 1`), so the same bits.
    #[inline(always)]
    unsafe fn reduce8(lo: __m256, hi: __m256) -> f32 {
        let v8 = _mm256_add_ps(lo, hi);
        let v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
        let v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
        _mm_cvtss_f32(_mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1)))
    }

    /// [`super::reduce`] of one 16-lane vector (see [`reduce8`]).
    #[inline(always)]
    unsafe fn reduce16(v: __m512) -> f32 {
        unsafe {
            reduce8(
                _mm512_castps512_ps256(v),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
            )
        }
    }

    /// 16 stored values at `p` as f32 (`F`: f32 as is, bf16 or f16 widened).
    #[inline(always)]
    unsafe fn load16<const F: u8, T>(p: *const T) -> __m512 {
        if F == F32 {
            return unsafe { _mm512_loadu_ps(p as *const f32) };
        }
        let h = unsafe { _mm256_loadu_si256(p as *const __m256i) };
        if F == BF16 {
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
        } else {
            _mm512_cvtph_ps(h)
        }
    }

    /// 8 stored values at `p` as f32 (`F`: f32 as is, bf16 or f16 widened).
    #[inline(always)]
    unsafe fn load8<const F: u8, T>(p: *const T) -> __m256 {
        if F == F32 {
            return unsafe { _mm256_loadu_ps(p as *const f32) };
        }
        let h = unsafe { _mm_loadu_si128(p as *const __m128i) };
        if F == BF16 {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        } else {
            _mm256_cvtph_ps(h)
        }
    }

    /// [`super::portable`] with 16-lane AVX-512 vectors: `N` weight rows × `M` activation rows
    /// of accumulators per pass.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn block512<const N: usize, const M: usize, const F: u8, T: Element>(
        format: Format,
        w: &[T],
        lay: Layout,
        x: &[f32],
        d_in: usize,
        sums: &mut [[f32; ROWS]; TILE],
    ) {
        assert!(std::mem::size_of::<T>() == if F == F32 { 4 } else { 2 });
        let main = d_in / LANES * LANES;
        let mut acc = [[_mm512_setzero_ps(); M]; N];
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        assert!(w.len() >= lay.tail + N.saturating_sub(1) * lay.tail_row + (d_in - main));
        assert!(x.len() >= M * d_in);
        assert!(main == 0 || w.len() >= (N - 1) * lay.row + (main / LANES - 1) * lay.step + LANES);
        let mut k = 0;
        while k < main {
            let at = k / LANES * lay.step;
            let mut wv = [_mm512_setzero_ps(); N];
            for (a, v) in wv.iter_mut().enumerate() {
                // SAFETY: in bounds (asserted above).
                *v = unsafe { load16::<F, T>(wp.add(a * lay.row + at)) };
            }
            for b in 0..M {
                let xv = unsafe { _mm512_loadu_ps(xp.add(b * d_in + k)) };
                for a in 0..N {
                    acc[a][b] = _mm512_fmadd_ps(wv[a], xv, acc[a][b]);
                }
            }
            k += LANES;
        }
        for a in 0..N {
            for b in 0..M {
                sums[a][b] = tail(
                    format,
                    unsafe { reduce16(acc[a][b]) },
                    &w[lay.tail + a * lay.tail_row..][..d_in - main],
                    &x[b * d_in + main..(b + 1) * d_in],
                );
            }
        }
    }

    /// [`super::portable`] with 8-lane AVX2 vectors, two per lane set (lanes 0–7 and 8–15).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block256<const N: usize, const M: usize, const F: u8, T: Element>(
        format: Format,
        w: &[T],
        lay: Layout,
        x: &[f32],
        d_in: usize,
        sums: &mut [[f32; ROWS]; TILE],
    ) {
        assert!(std::mem::size_of::<T>() == if F == F32 { 4 } else { 2 });
        let main = d_in / LANES * LANES;
        let mut lo = [[_mm256_setzero_ps(); M]; N];
        let mut hi = [[_mm256_setzero_ps(); M]; N];
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        assert!(w.len() >= lay.tail + N.saturating_sub(1) * lay.tail_row + (d_in - main));
        assert!(x.len() >= M * d_in);
        assert!(main == 0 || w.len() >= (N - 1) * lay.row + (main / LANES - 1) * lay.step + LANES);
        let mut k = 0;
        while k < main {
            let at = k / LANES * lay.step;
            for a in 0..N {
                // SAFETY: in bounds (asserted above).
                let w0 = unsafe { load8::<F, T>(wp.add(a * lay.row + at)) };
                let w1 = unsafe { load8::<F, T>(wp.add(a * lay.row + at + 8)) };
                for b in 0..M {
                    let x0 = unsafe { _mm256_loadu_ps(xp.add(b * d_in + k)) };
                    let x1 = unsafe { _mm256_loadu_ps(xp.add(b * d_in + k + 8)) };
                    lo[a][b] = _mm256_fmadd_ps(w0, x0, lo[a][b]);
                    hi[a][b] = _mm256_fmadd_ps(w1, x1, hi[a][b]);
                }
            }
            k += LANES;
        }
        for a in 0..N {
            for b in 0..M {
                sums[a][b] = tail(
                    format,
                    unsafe { reduce8(lo[a][b], hi[a][b]) },
                    &w[lay.tail + a * lay.tail_row..][..d_in - main],
                    &x[b * d_in + main..(b + 1) * d_in],
                );
            }
        }
    }

    /// Calls `$f::<n, m, F, T>` for the tile's shape and the weight's format (`f32` weights are
    /// always [`Format::F32`], `u16` ones never: the constructors keep to that).
    macro_rules! dispatch {
        ($f:ident, $format:expr, $n:expr, $m:expr, ($($arg:expr),*)) => {
            dispatch!(@n $f, $format, $n, $m, ($($arg),*), [4, 3, 2, 1])
        };
        (@n $f:ident, $format:expr, $n:expr, $m:expr, $args:tt, [$($nn:literal),*]) => {
            match $n {
                $($nn => dispatch!(@m $f, $format, $nn, $m, $args),)*
                _ => unreachable!("tiles have 1..=4 rows"),
            }
        };
        (@m $f:ident, $format:expr, $nn:literal, $m:expr, $args:tt) => {
            match $m {
                4 => dispatch!(@f $f, $format, $nn, 4, $args),
                3 => dispatch!(@f $f, $format, $nn, 3, $args),
                2 => dispatch!(@f $f, $format, $nn, 2, $args),
                1 => dispatch!(@f $f, $format, $nn, 1, $args),
                _ => unreachable!("passes have 1..=4 rows"),
            }
        };
        (@f $f:ident, $format:expr, $nn:literal, $mm:literal, ($($arg:expr),*)) => {
            // SAFETY: the caller checked the CPU features; slices hold n (m) rows of d_in.
            unsafe {
                match $format {
                    Format::F32 => $f::<$nn, $mm, F32, T>($($arg),*),
                    Format::F16 => $f::<$nn, $mm, F16, T>($($arg),*),
                    Format::Bf16 => $f::<$nn, $mm, BF16, T>($($arg),*),
                }
            }
        };
    }

    /// AVX-512F + FMA (checked by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn avx512<T: Element>(
        format: Format,
        w: &[T],
        lay: Layout,
        n: usize,
        x: &[f32],
        m: usize,
        d_in: usize,
        sums: &mut [[f32; ROWS]; TILE],
    ) {
        dispatch!(block512, format, n, m, (format, w, lay, x, d_in, sums))
    }

    /// AVX2 + FMA + F16C (checked by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn avx2<T: Element>(
        format: Format,
        w: &[T],
        lay: Layout,
        n: usize,
        x: &[f32],
        m: usize,
        d_in: usize,
        sums: &mut [[f32; ROWS]; TILE],
    ) {
        dispatch!(block256, format, n, m, (format, w, lay, x, d_in, sums))
    }

    pub fn has_avx512() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma")
    }

    pub fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) (SplitMix64), rounded to `kind`.
    fn halves(n: usize, seed: u64, kind: Half) -> Vec<u16> {
        values(n, seed)
            .into_iter()
            .map(|v| match kind {
                Half::F16 => half::f16::from_f32(v * 4.0).to_bits(),
                Half::Bf16 => half::bf16::from_f32(v * 4.0).to_bits(),
            })
            .collect()
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Odd shapes: inputs below, at and past multiples of 16; outputs not a multiple of the
    /// tile; 1..=9 activation rows (passes of rows with leftovers) and past a row block; with
    /// and without a bias; f16, bf16 and f32 weights.
    fn cases() -> (Vec<(HalfWeight, Vec<f32>)>, Vec<(F32Weight, Vec<f32>)>) {
        let (mut halfs, mut f32s) = (Vec::new(), Vec::new());
        let mut seed = 1;
        let shapes = [
            (1, 1),
            (3, 15),
            (5, 16),
            (7, 17),
            (9, 33),
            (13, 64),
            (6, 100),
        ];
        for (d_out, d_in) in shapes {
            for rows in [1, 2, 3, 4, 5, 9, 67] {
                seed += 1;
                let bias = (seed % 2 == 0).then(|| values(d_out, seed + 100));
                let x = values(rows * d_in, seed + 200);
                for kind in [Half::F16, Half::Bf16] {
                    let w = HalfWeight::new(halves(d_out * d_in, seed, kind), kind, d_out, d_in)
                        .unwrap();
                    let w = match &bias {
                        Some(b) => w.with_bias(b.clone()).unwrap(),
                        None => w,
                    };
                    halfs.push((w, x.clone()));
                }
                let w = F32Weight::new(&values(d_out * d_in, seed + 300), d_out, d_in).unwrap();
                let w = match &bias {
                    Some(b) => w.with_bias(b.clone()).unwrap(),
                    None => w,
                };
                f32s.push((w, x));
            }
        }
        (halfs, f32s)
    }

    fn check_float64<T: Element>(w: &DenseWeight<T>, x: &[f32]) {
        let (d_in, d_out) = (w.d_in(), w.d_out());
        let wide = w.widen();
        let y = w.forward_portable(x);
        for (i, xr) in x.chunks(d_in).enumerate() {
            for j in 0..d_out {
                let mut want: f64 = (0..d_in)
                    .map(|k| wide[j * d_in + k] as f64 * xr[k] as f64)
                    .sum();
                if let Some(b) = w.bias() {
                    want += b[j] as f64;
                }
                let scale: f64 = (0..d_in)
                    .map(|k| (wide[j * d_in + k] as f64 * xr[k] as f64).abs())
                    .sum::<f64>()
                    + 1.0;
                let got = y[i * d_out + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * scale,
                    "{w:?} [{i}, {j}]: {got} vs {want}"
                );
            }
        }
    }

    /// The portable code against a float64 product of the widened values.
    #[test]
    fn portable_matches_a_float64_product() {
        let (halfs, f32s) = cases();
        for (w, x) in &halfs {
            check_float64(w, x);
        }
        for (w, x) in &f32s {
            check_float64(w, x);
        }
    }

    /// The tile layout gives back the stored bits in row-major order.
    #[test]
    fn tile_layout_round_trips() {
        for (d_out, d_in) in [(1, 1), (4, 16), (5, 17), (8, 40), (11, 3), (9, 64)] {
            let stored = halves(d_out * d_in, 5, Half::Bf16);
            let w = HalfWeight::new(stored.clone(), Half::Bf16, d_out, d_in).unwrap();
            assert_eq!(w.row_major(), stored, "[{d_out}, {d_in}]");
            let f = values(d_out * d_in, 6);
            let w = F32Weight::new(&f, d_out, d_in).unwrap();
            assert_eq!(bits(&w.row_major()), bits(&f), "[{d_out}, {d_in}] f32");
        }
    }

    /// The widening is exact: f16/bf16 → f32 as `half` converts.
    #[test]
    fn widening_is_exact() {
        for bits in [
            0u16, 1, 0x3c00, 0x7bff, 0x8001, 0x7c00, 0xfc00, 0x0400, 0x03ff,
        ] {
            assert_eq!(
                Half::F16.widen(bits).to_bits(),
                half::f16::from_bits(bits).to_f32().to_bits()
            );
            assert_eq!(
                Half::Bf16.widen(bits).to_bits(),
                half::bf16::from_bits(bits).to_f32().to_bits()
            );
        }
    }

    /// Every vector kernel this CPU has gives the portable code's bits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_kernels_are_bit_identical_to_portable() {
        fn check<T: Element>(w: &DenseWeight<T>, x: &[f32]) -> usize {
            let want = bits(&w.forward_portable(x));
            let mut checked = 0;
            if x86::has_avx512() {
                assert_eq!(
                    bits(&w.forward_with(x, Kernel::Avx512)),
                    want,
                    "{w:?} avx512"
                );
                checked += 1;
            }
            if x86::has_avx2() {
                assert_eq!(bits(&w.forward_with(x, Kernel::Avx2)), want, "{w:?} avx2");
                checked += 1;
            }
            checked
        }
        let (halfs, f32s) = cases();
        let checked: usize = halfs.iter().map(|(w, x)| check(w, x)).sum::<usize>()
            + f32s.iter().map(|(w, x)| check(w, x)).sum::<usize>();
        eprintln!("{checked} vector-kernel cases checked");
    }

    /// A row's outputs do not depend on the other rows of the call (a server's batch).
    #[test]
    fn rows_do_not_depend_on_their_company() {
        let (halfs, f32s) = cases();
        fn check<T: Element>(w: &DenseWeight<T>, x: &[f32]) {
            let all = bits(&w.forward(x));
            let d_out = w.d_out();
            for (i, row) in x.chunks(w.d_in()).enumerate() {
                assert_eq!(
                    bits(&w.forward(row)),
                    all[i * d_out..(i + 1) * d_out],
                    "{w:?} row {i}"
                );
            }
        }
        for (w, x) in halfs.iter().step_by(5) {
            check(w, x);
        }
        for (w, x) in &f32s {
            check(w, x);
        }
    }

    /// Split over jobs (a runner that runs them out of order): the same bits as one job.
    #[test]
    fn split_over_jobs_is_bit_identical() {
        let kind = Half::Bf16;
        let cases: Vec<(HalfWeight, Vec<f32>)> = [(61, 2051, 9), (130, 1030, 8), (7, 40000, 4)]
            .into_iter()
            .enumerate()
            .map(|(i, (d_out, d_in, rows))| {
                let w = HalfWeight::new(halves(d_out * d_in, i as u64, kind), kind, d_out, d_in);
                (w.unwrap(), values(rows * d_in, 77 + i as u64))
            })
            .collect();
        let unsplit: Vec<Vec<u32>> = cases
            .iter()
            .map(|(w, x)| bits(&w.forward_portable(x)))
            .collect();
        crate::ops::int8::set_parallel(crate::ops::int8::Parallel {
            threads: 3,
            run: |n, job| (0..n).rev().for_each(job),
        });
        for ((w, x), want) in cases.iter().zip(unsplit) {
            assert!(x.len() * w.d_out() >= PARALLEL_MIN_WORK);
            assert_eq!(bits(&w.forward(x)), want, "{w:?}");
        }
        let (d_out, d_in, rows) = (70, 1030, 150);
        let w = F32Weight::new(&values(d_out * d_in, 9), d_out, d_in).unwrap();
        let x = values(rows * d_in, 10);
        let want = bits(&w.forward_portable(&x));
        assert_eq!(bits(&w.forward(&x)), want, "{w:?}");
    }
}
