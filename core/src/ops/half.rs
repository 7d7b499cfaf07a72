//! Products with weights held in half precision (f16 or bf16) on the CPU.
//!
//! A checkpoint stored in f16 or bf16 (Llama 3.2, Phi-3 and Qwen2 ship in bf16) is held as it
//! is stored — half the bytes of f32, which is what lets Phi-3-mini's 3.8 B parameters fit a
//! 24 GB machine and what a decoding step (a few rows) is bound by — and every product is taken
//! in f32: each weight widened exactly to f32 inside the kernel, multiplied and summed in f32.
//! The values are the ones transformers computes with after `from_pretrained(...)` in float32
//! (the default: the stored halves widened exactly); only the order of the sums differs, as it
//! does between any two f32 matrix products.
//!
//! One order for every path: each output is `Σ_l lane_l` over 16 lanes, lane `l` summing
//! `w[k] · x[k]` with fused multiply-adds for `k ≡ l (mod 16)` below the last full 16, the lanes
//! added pairwise (`l + 8`, `l + 4`, `l + 2`, `l + 1`), then the leftover inputs fused in one by
//! one and the bias added. The AVX-512 and AVX2 (F16C + FMA) kernels and the portable code all
//! take exactly these operations, so they give the same bits (tested), and a split of the
//! outputs over threads ([`crate::ops::int8::Parallel`]) never changes one.

use crate::ops::int8::{parallel, OutPtr, PARALLEL_MIN_WORK};

/// Lanes of the canonical sum (one AVX-512 vector of f32).
pub const LANES: usize = 16;

/// Weight rows per tile of the vector kernels (rows of one weight tile stay in cache while every
/// activation row passes).
const TILE: usize = 4;

/// Activation rows per pass of the vector kernels.
const ROWS: usize = 2;

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

/// One projection weight `[d_out, d_in]` (Hugging Face layout) held in f16 or bf16.
#[derive(Clone)]
pub struct HalfWeight {
    d_out: usize,
    d_in: usize,
    kind: Half,
    /// The stored bits `[d_out, d_in]`, each full tile of 4 rows interleaved in runs of 16
    /// inputs — row 0's inputs 0..16, row 1's, row 2's, row 3's, row 0's 16..32, ... — then the
    /// 4 rows' leftover inputs past the last full 16 one row after another, so that the kernel
    /// reads one sequential stream (4 rows side by side are 4 streams 4 KiB apart, which
    /// hardware prefetchers follow badly: half the memory rate). Rows past the last full tile
    /// are stored plainly.
    values: Vec<u16>,
    /// `[d_out]`
    bias: Option<Vec<f32>>,
}

impl std::fmt::Debug for HalfWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HalfWeight[{}, {}] {:?}",
            self.d_out, self.d_in, self.kind
        )
    }
}

impl HalfWeight {
    /// `values` `[d_out, d_in]` (the stored bits). `None` when the sizes disagree.
    pub fn new(values: Vec<u16>, kind: Half, d_out: usize, d_in: usize) -> Option<Self> {
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
            kind,
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

    /// The stored bits `[d_out, d_in]` in row-major order.
    pub fn row_major(&self) -> Vec<u16> {
        let (d_in, main) = (self.d_in, self.d_in / LANES * LANES);
        let mut out = vec![0u16; self.values.len()];
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

    /// From a checkpoint's little-endian bytes.
    pub fn from_le_bytes(data: &[u8], kind: Half, d_out: usize, d_in: usize) -> Option<Self> {
        let values = data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        Self::new(values, kind, d_out, d_in)
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

    pub fn kind(&self) -> Half {
        self.kind
    }

    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The weight's exact f32 values `[d_out, d_in]`.
    pub fn widen(&self) -> Vec<f32> {
        let kind = self.kind;
        self.row_major()
            .into_iter()
            .map(|b| kind.widen(b))
            .collect()
    }

    /// `x` `[rows, d_in]` row-major → `[rows, d_out]`, `x Wᵀ + bias`, with the best kernel this
    /// CPU has.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_with(x, Kernel::best())
    }

    /// [`HalfWeight::forward`] with the portable code: the same operations, so the same bits.
    pub fn forward_portable(&self, x: &[f32]) -> Vec<f32> {
        self.forward_with(x, Kernel::Portable)
    }

    fn forward_with(&self, x: &[f32], kernel: Kernel) -> Vec<f32> {
        let (d_in, d_out) = (self.d_in, self.d_out);
        assert_eq!(x.len() % d_in, 0, "activation width");
        let rows = x.len() / d_in;
        let mut y = vec![0f32; rows * d_out];
        let tiles = d_out.div_ceil(TILE);
        let jobs = match parallel() {
            Some(p) if rows * d_in * d_out >= PARALLEL_MIN_WORK => p.threads.min(tiles).max(1),
            _ => 1,
        };
        let per_job = tiles.div_ceil(jobs);
        let jobs = tiles.div_ceil(per_job);
        let out = OutPtr(y.as_mut_ptr());
        let job = |n: usize| {
            let first = (n * per_job * TILE).min(d_out);
            let last = ((n + 1) * per_job * TILE).min(d_out);
            // SAFETY: `out` is `y` ([rows, d_out], alive until every job has returned); the
            // jobs' output ranges are disjoint.
            unsafe { self.outputs(first..last, x, rows, out, kernel) }
        };
        if jobs > 1 {
            (parallel().expect("jobs > 1 only with a runner").run)(jobs, &job);
        } else {
            job(0);
        }
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
        out: OutPtr,
        kernel: Kernel,
    ) {
        let d_in = self.d_in;
        let mut j = range.start;
        while j < range.end {
            let n = TILE.min(range.end - j);
            let w = &self.values[j * d_in..(j + n) * d_in];
            let lay = self.layout(j, n);
            let mut r = 0;
            while r < rows {
                let m = ROWS.min(rows - r);
                let xs = &x[r * d_in..(r + m) * d_in];
                let mut sums = [[0f32; TILE]; TILE];
                match kernel {
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512 => x86::avx512(self.kind, w, lay, n, xs, m, d_in, &mut sums),
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 => x86::avx2(self.kind, w, lay, n, xs, m, d_in, &mut sums),
                    Kernel::Portable => portable(self.kind, w, lay, n, xs, m, d_in, &mut sums),
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

/// Where the inputs of one tile's rows lie in its slice of [`HalfWeight::values`]: input `k` of
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
fn tail(kind: Half, mut s: f32, w: &[u16], x: &[f32]) -> f32 {
    for (&w, &x) in w.iter().zip(x) {
        s = kind.widen(w).mul_add(x, s);
    }
    s
}

/// `sums[a][b] = w_a · x_b` for `n` weight rows and `m` activation rows, in the canonical order.
#[allow(clippy::too_many_arguments)]
fn portable(
    kind: Half,
    w: &[u16],
    lay: Layout,
    n: usize,
    x: &[f32],
    m: usize,
    d_in: usize,
    sums: &mut [[f32; TILE]; TILE],
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
                    acc[l] = kind.widen(wk[l]).mul_add(xr[k + l], acc[l]);
                }
            }
            sums[a][b] = tail(kind, reduce(acc), rest, &xr[main..]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{reduce, tail, Half, Layout, LANES, TILE};
    use std::arch::x86_64::*;

    /// 16 halves at `p` widened to f32 (bf16 when `BF16`, else f16).
    #[inline(always)]
    unsafe fn load16<const BF16: bool>(p: *const u16) -> __m512 {
        let h = unsafe { _mm256_loadu_si256(p as *const __m256i) };
        if BF16 {
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
        } else {
            _mm512_cvtph_ps(h)
        }
    }

    /// 8 halves at `p` widened to f32 (bf16 when `BF16`, else f16).
    #[inline(always)]
    unsafe fn load8<const BF16: bool>(p: *const u16) -> __m256 {
        let h = unsafe { _mm_loadu_si128(p as *const __m128i) };
        if BF16 {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        } else {
            _mm256_cvtph_ps(h)
        }
    }

    /// [`super::portable`] with 16-lane AVX-512 vectors: `N` weight rows × `M` activation rows
    /// of accumulators per pass.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn block512<const N: usize, const M: usize, const BF16: bool>(
        kind: Half,
        w: &[u16],
        lay: Layout,
        x: &[f32],
        d_in: usize,
        sums: &mut [[f32; TILE]; TILE],
    ) {
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
                *v = unsafe { load16::<BF16>(wp.add(a * lay.row + at)) };
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
                let mut lanes = [0f32; LANES];
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc[a][b]) };
                sums[a][b] = tail(
                    kind,
                    reduce(lanes),
                    &w[lay.tail + a * lay.tail_row..][..d_in - main],
                    &x[b * d_in + main..(b + 1) * d_in],
                );
            }
        }
    }

    /// [`super::portable`] with 8-lane AVX2 vectors, two per lane set (lanes 0–7 and 8–15).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block256<const N: usize, const M: usize, const BF16: bool>(
        kind: Half,
        w: &[u16],
        lay: Layout,
        x: &[f32],
        d_in: usize,
        sums: &mut [[f32; TILE]; TILE],
    ) {
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
                let w0 = unsafe { load8::<BF16>(wp.add(a * lay.row + at)) };
                let w1 = unsafe { load8::<BF16>(wp.add(a * lay.row + at + 8)) };
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
                let mut lanes = [0f32; LANES];
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), lo[a][b]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi[a][b]);
                }
                sums[a][b] = tail(
                    kind,
                    reduce(lanes),
                    &w[lay.tail + a * lay.tail_row..][..d_in - main],
                    &x[b * d_in + main..(b + 1) * d_in],
                );
            }
        }
    }

    macro_rules! dispatch {
        ($f:ident, $kind:expr, $w:expr, $lay:expr, $n:expr, $x:expr, $m:expr, $d:expr, $sums:expr) => {
            // SAFETY: the caller checked the CPU features; slices hold n (m) rows of d_in.
            unsafe {
                match ($n, $m) {
                    (4, 4) => match $kind {
                        Half::Bf16 => $f::<4, 4, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<4, 4, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (4, 3) => match $kind {
                        Half::Bf16 => $f::<4, 3, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<4, 3, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (4, 2) => match $kind {
                        Half::Bf16 => $f::<4, 2, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<4, 2, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (4, 1) => match $kind {
                        Half::Bf16 => $f::<4, 1, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<4, 1, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (3, 4) => match $kind {
                        Half::Bf16 => $f::<3, 4, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<3, 4, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (3, 3) => match $kind {
                        Half::Bf16 => $f::<3, 3, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<3, 3, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (3, 2) => match $kind {
                        Half::Bf16 => $f::<3, 2, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<3, 2, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (3, 1) => match $kind {
                        Half::Bf16 => $f::<3, 1, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<3, 1, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (2, 4) => match $kind {
                        Half::Bf16 => $f::<2, 4, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<2, 4, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (2, 3) => match $kind {
                        Half::Bf16 => $f::<2, 3, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<2, 3, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (2, 2) => match $kind {
                        Half::Bf16 => $f::<2, 2, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<2, 2, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (2, 1) => match $kind {
                        Half::Bf16 => $f::<2, 1, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<2, 1, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (1, 4) => match $kind {
                        Half::Bf16 => $f::<1, 4, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<1, 4, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (1, 3) => match $kind {
                        Half::Bf16 => $f::<1, 3, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<1, 3, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (1, 2) => match $kind {
                        Half::Bf16 => $f::<1, 2, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<1, 2, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    (1, 1) => match $kind {
                        Half::Bf16 => $f::<1, 1, true>($kind, $w, $lay, $x, $d, $sums),
                        Half::F16 => $f::<1, 1, false>($kind, $w, $lay, $x, $d, $sums),
                    },
                    _ => unreachable!("tiles are 1..=4 by 1..=4"),
                }
            }
        };
    }

    /// AVX-512F + FMA (checked by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn avx512(
        kind: Half,
        w: &[u16],
        lay: Layout,
        n: usize,
        x: &[f32],
        m: usize,
        d_in: usize,
        sums: &mut [[f32; TILE]; TILE],
    ) {
        dispatch!(block512, kind, w, lay, n, x, m, d_in, sums)
    }

    /// AVX2 + FMA + F16C (checked by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn avx2(
        kind: Half,
        w: &[u16],
        lay: Layout,
        n: usize,
        x: &[f32],
        m: usize,
        d_in: usize,
        sums: &mut [[f32; TILE]; TILE],
    ) {
        dispatch!(block256, kind, w, lay, n, x, m, d_in, sums)
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
    /// tile; 1..=9 activation rows (tiles of rows with leftovers); with and without a bias.
    fn cases() -> impl Iterator<Item = (HalfWeight, Vec<f32>)> {
        let mut out = Vec::new();
        let mut seed = 1;
        for kind in [Half::F16, Half::Bf16] {
            for (d_out, d_in) in [
                (1, 1),
                (3, 15),
                (5, 16),
                (7, 17),
                (9, 33),
                (13, 64),
                (6, 100),
            ] {
                for rows in [1, 2, 3, 4, 5, 9] {
                    seed += 1;
                    let w = HalfWeight::new(halves(d_out * d_in, seed, kind), kind, d_out, d_in)
                        .unwrap();
                    let w = if seed % 2 == 0 {
                        w.with_bias(values(d_out, seed + 100)).unwrap()
                    } else {
                        w
                    };
                    out.push((w, values(rows * d_in, seed + 200)));
                }
            }
        }
        out.into_iter()
    }

    /// The portable code against a float64 product of the widened values.
    #[test]
    fn portable_matches_a_float64_product() {
        for (w, x) in cases() {
            let (d_in, d_out) = (w.d_in(), w.d_out());
            let wide = w.widen();
            let y = w.forward_portable(&x);
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
    }

    /// The tile layout gives back the stored bits in row-major order.
    #[test]
    fn tile_layout_round_trips() {
        for (d_out, d_in) in [(1, 1), (4, 16), (5, 17), (8, 40), (11, 3), (9, 64)] {
            let bits = halves(d_out * d_in, 5, Half::Bf16);
            let w = HalfWeight::new(bits.clone(), Half::Bf16, d_out, d_in).unwrap();
            assert_eq!(w.row_major(), bits, "[{d_out}, {d_in}]");
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
        let mut checked = 0;
        for (w, x) in cases() {
            let want = bits(&w.forward_portable(&x));
            if x86::has_avx512() {
                assert_eq!(
                    bits(&w.forward_with(&x, Kernel::Avx512)),
                    want,
                    "{w:?} avx512"
                );
                checked += 1;
            }
            if x86::has_avx2() {
                assert_eq!(bits(&w.forward_with(&x, Kernel::Avx2)), want, "{w:?} avx2");
                checked += 1;
            }
        }
        eprintln!("{checked} vector-kernel cases checked");
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
    }
}
