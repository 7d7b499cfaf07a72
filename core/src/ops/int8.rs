//! Integer products for the projections of a quantized (q8/q4) bundle on the CPU.
//!
//! What ONNX Runtime's dynamic quantization (transformers.js' q8 models) and CTranslate2's int8
//! CPU path do: each activation row is quantized at run time to symmetric int8 (one f32 scale per
//! row, `max |x| / 127`), multiplied by the stored int8 weights in integer arithmetic, and scaled
//! back. A weight row here has one f32 scale per block of `block` inputs (the bundle's layout),
//! so the integer dot product is taken per block and the blocks are summed in f32:
//!
//! `y[i, j] = (Σ_b (Σ_{k ∈ b} xq[i, k] · wq[j, k]) · sw[j, b]) · sx[i] + bias[j]`
//!
//! The per-block sums are exact integers, and the f32 operations are the same ones in the same
//! order on every path (wasm SIMD128, plain Rust), so the result is bit-identical in the browser
//! and natively: `bartleby summarize` and the web app write the same token ids. It streams a
//! quarter of the bytes of the f32 weights, which is what decoding (a few rows per step) is bound
//! by, and a wasm SIMD128 `i32x4.dot_i16x8_s` does 8 multiply-adds where f32 does 4.

/// One projection weight `[d_out, d_in]` (Hugging Face layout) as int8 values and per-block
/// f32 scales.
#[derive(Clone)]
pub struct Int8Weight {
    d_out: usize,
    d_in: usize,
    block: usize,
    /// `[d_out, d_in]`, except that with [`PACK`]-divisible blocks each full group of 4 rows
    /// (a tile) is stored interleaved in runs of 8 inputs — row 0's inputs 0..8, row 1's 0..8,
    /// row 2's, row 3's, row 0's 8..16, ... — so the 4-row kernel reads one sequential stream
    /// (4 rows read side by side are 4 streams in one 4 KiB page, which hardware prefetchers
    /// barely follow: decoding ran at a quarter of the memory bandwidth). Rows past the last
    /// full tile keep the plain layout.
    values: Vec<i8>,
    /// Whether `values` has the tile layout (`block % PACK == 0`).
    packed: bool,
    /// `[d_out, d_in / block]`
    scales: Vec<f32>,
    /// The scales of each group of 4 rows interleaved, `[d_out / 4, d_in / block, 4]`: one
    /// vector load per block in the 4-row kernel.
    tile_scales: Vec<f32>,
    /// `[d_out]`
    bias: Option<Vec<f32>>,
    /// How many groups of 16 rows at the start of `values` are stored as VNNI panels instead
    /// (x86_64 CPUs with AVX-512 VNNI; 0 elsewhere, e.g. in the browser): inputs in groups of
    /// 4, `[d_in / 4][16][4]` per panel.
    panels: usize,
    /// Per panel: the scales `[blocks][16]`.
    panel_scales: Vec<f32>,
    /// Per panel: `128 · Σ w` over each block, `[blocks][16]` (the unsigned-activation
    /// correction).
    panel_corr: Vec<i32>,
}

/// How the native binary lets the int8 products use several cores: `run(n, job)` calls `job(0)`
/// … `job(n - 1)`, in parallel where it can, and returns when all are done. The core starts no
/// threads of its own (it also runs in the browser); without one, jobs run one after another.
#[derive(Clone, Copy)]
pub struct Parallel {
    pub threads: usize,
    pub run: fn(usize, &(dyn Fn(usize) + Sync)),
}

static PARALLEL: std::sync::OnceLock<Parallel> = std::sync::OnceLock::new();

/// Installs the [`Parallel`] runner (once per process; `false` if one was already set).
pub fn set_parallel(p: Parallel) -> bool {
    PARALLEL.set(p).is_ok()
}

/// Runs `job` over `0..items` split into contiguous ranges (whole multiples of `multiple` items
/// each), one per thread of the installed [`Parallel`] runner when `parallel` (else one range):
/// the host products and the host attention, whose results never depend on the split.
pub(crate) fn split_jobs(
    items: usize,
    multiple: usize,
    parallel: bool,
    job: &(dyn Fn(std::ops::Range<usize>) + Sync),
) {
    if items == 0 {
        return;
    }
    let runner = PARALLEL.get().filter(|_| parallel);
    let jobs = runner.map_or(1, |p| p.threads.clamp(1, items));
    let per_job = items.div_ceil(jobs).next_multiple_of(multiple.max(1));
    let jobs = items.div_ceil(per_job);
    let run = |n: usize| job(n * per_job..((n + 1) * per_job).min(items));
    match runner {
        Some(p) if jobs > 1 => (p.run)(jobs, &run),
        _ => (0..jobs).for_each(run),
    }
}

/// `f` on each row (`width` values) of `data`, the rows split over the [`Parallel`] runner where
/// there is work enough (`data.len() ≥ min_values`): each row's values are what `f` makes of
/// them on one thread.
pub(crate) fn for_each_row(
    data: &mut [f32],
    width: usize,
    min_values: usize,
    f: &(dyn Fn(&mut [f32]) + Sync),
) {
    if width == 0 {
        return;
    }
    let rows = data.len() / width;
    let at = SyncPtr(data.as_mut_ptr());
    let at = &at;
    split_jobs(rows, 1, data.len() >= min_values, &|range| {
        for r in range {
            // SAFETY: row r of `data` (borrowed until every job has returned), disjoint between
            // jobs.
            f(unsafe { std::slice::from_raw_parts_mut(at.0.add(r * width), width) });
        }
    });
}

/// Products smaller than this (rows · d_in · d_out multiply-adds) stay on one thread.
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 20;

/// Inputs per run in the tile layout (one 8-lane int16 vector).
const PACK: usize = 8;

impl std::fmt::Debug for Int8Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Int8Weight[{}, {}] block {}",
            self.d_out, self.d_in, self.block
        )
    }
}

impl Int8Weight {
    /// `values` `[d_out, d_in]`, `scales` `[d_out, d_in / block]`. `None` when the sizes
    /// disagree.
    pub fn new(values: Vec<i8>, scales: Vec<f32>, d_out: usize, d_in: usize) -> Option<Self> {
        if d_out == 0 || d_in == 0 || values.len() != d_out * d_in || scales.len() % d_out != 0 {
            return None;
        }
        let blocks = scales.len() / d_out;
        if blocks == 0 || d_in % blocks != 0 {
            return None;
        }
        let mut tile_scales = Vec::with_capacity(d_out / 4 * blocks * 4);
        for tile in 0..d_out / 4 {
            for b in 0..blocks {
                for lane in 0..4 {
                    tile_scales.push(scales[(tile * 4 + lane) * blocks + b]);
                }
            }
        }
        let block = d_in / blocks;
        let packed = block % PACK == 0;
        let panels = if packed && vnni::available() {
            d_out / vnni::PANEL_ROWS
        } else {
            0
        };
        let (panel_scales, panel_corr) = vnni::panel_sums(&values, &scales, panels, d_in, block);
        let values = if packed {
            let mut out = Vec::with_capacity(values.len());
            out.extend(vnni::pack(
                &values[..panels * vnni::PANEL_ROWS * d_in],
                d_in,
            ));
            let first = panels * vnni::PANEL_ROWS * d_in;
            for tile in values[first..d_out / 4 * 4 * d_in].chunks_exact(4 * d_in) {
                for run in (0..d_in).step_by(PACK) {
                    for lane in 0..4 {
                        out.extend_from_slice(&tile[lane * d_in + run..][..PACK]);
                    }
                }
            }
            out.extend_from_slice(&values[d_out / 4 * 4 * d_in..]);
            out
        } else {
            values
        };
        Some(Self {
            d_out,
            d_in,
            block,
            values,
            packed,
            scales,
            tile_scales,
            bias: None,
            panels,
            panel_scales,
            panel_corr,
        })
    }

    /// Quantizes an f32 weight `[d_out, d_in]` (row-major) to symmetric int8 with one scale
    /// per `block` inputs (`max |w| / 127`, as the bundles' q8). `None` when `block` does not
    /// divide `d_in` or the sizes disagree.
    pub fn quantize(w: &[f32], d_out: usize, d_in: usize, block: usize) -> Option<Self> {
        if block == 0 || d_in % block != 0 || w.len() != d_out * d_in {
            return None;
        }
        let (values, scales) = quantize_blocks(w, block);
        Self::new(values, scales, d_out, d_in)
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

    /// Inputs per scale.
    pub fn block(&self) -> usize {
        self.block
    }

    /// `x` `[rows, d_in]` row-major → `[rows, d_out]`, `x W^T + bias`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_with(x, true)
    }

    /// [`Int8Weight::forward`] one output at a time, without the 4-row SIMD kernel: the same
    /// operations, so the same bits (what the browser tests check the wasm kernel against).
    pub fn forward_scalar(&self, x: &[f32]) -> Vec<f32> {
        self.forward_with(x, false)
    }

    fn forward_with(&self, x: &[f32], tiled: bool) -> Vec<f32> {
        let (d_in, d_out) = (self.d_in, self.d_out);
        let bias = self.bias.as_deref();
        assert_eq!(x.len() % d_in, 0, "activation width");
        let rows = x.len() / d_in;
        let (xq, sx) = quantize_rows(x, d_in);
        let mut y = vec![0f32; rows * d_out];
        let blocks = d_in / self.block;
        let tiles = if tiled && self.packed { d_out / 4 } else { 0 };
        // The VNNI panels take the activations offset to unsigned bytes (`xq + 128`, corrected
        // exactly in int32).
        let xu = (tiled && self.panels > 0).then(|| {
            xq.iter()
                .map(|&v| (v as i16 + 128) as u8)
                .collect::<Vec<u8>>()
        });
        let wide_x = (tiles > self.panels * vnni::PANEL_TILES && rows >= WIDE_ROWS)
            .then(|| xq.iter().map(|&v| v as i16).collect::<Vec<i16>>());
        // The tiles in ranges, one job each (in parallel where the binary installed a
        // [`Parallel`]): each output is computed by the same operations whichever job holds it,
        // so the split never changes a bit.
        // Whole panels per job where there are panels; each job writes its own columns of `y`
        // (disjoint), in place.
        let out = SyncPtr(y.as_mut_ptr());
        let multiple = if self.panels > 0 {
            vnni::PANEL_TILES
        } else {
            1
        };
        split_jobs(
            tiles,
            multiple,
            rows * d_in * d_out >= PARALLEL_MIN_WORK,
            &|range| {
                // SAFETY: `out` is `y` ([rows, d_out], alive until every job has returned); the
                // jobs' tile ranges, and so their columns, are disjoint.
                unsafe { self.tiles(range, &xq, xu.as_deref(), wide_x.as_deref(), &sx, rows, out) }
            },
        );
        for j in tiles * 4..d_out {
            let w = self.row(j);
            let s = &self.scales[j * blocks..(j + 1) * blocks];
            for i in 0..rows {
                let xr = &xq[i * d_in..(i + 1) * d_in];
                let mut acc = 0f32;
                for (b, &sw) in s.iter().enumerate() {
                    let r = b * self.block..(b + 1) * self.block;
                    acc += dot(&xr[r.clone()], &w[r]) as f32 * sw;
                }
                y[i * d_out + j] = finish(acc, sx[i], bias.map(|b| b[j]));
            }
        }
        y
    }

    /// The outputs of the weight tiles in `range` for every activation row, bias and activation
    /// scale applied, written to their columns of `out` (`[rows, d_out]`).
    ///
    /// # Safety
    /// `out` must be valid for writes of `rows · d_out` values, and no one else may access the
    /// columns of `range` while this runs.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles(
        &self,
        range: std::ops::Range<usize>,
        xq: &[i8],
        xu: Option<&[u8]>,
        wide_x: Option<&[i16]>,
        sx: &[f32],
        rows: usize,
        out: SyncPtr<f32>,
    ) {
        let (d_in, d_out) = (self.d_in, self.d_out);
        let bias = self.bias.as_deref();
        let blocks = d_in / self.block;
        let mut wide_w = vec![0i16; if wide_x.is_some() { 4 * d_in } else { 0 }];
        let mut tile = range.start;
        if let Some(xu) = xu {
            // The VNNI panels (whole panels from `range.start`): activation rows in blocks of
            // about 128 KiB (a block stays in the core's cache while this call's panels pass),
            // each panel's 16 weight rows in cache while the block's rows pass.
            let end = range.end.min(self.panels * vnni::PANEL_TILES);
            let block_rows = (VNNI_ROW_BYTES / d_in).max(8) / 8 * 8;
            for first in (0..rows).step_by(block_rows) {
                let n_rows = block_rows.min(rows - first);
                let mut tile = range.start;
                while tile < end {
                    let p = tile / vnni::PANEL_TILES;
                    let (j, n) = (tile * 4, blocks * vnni::PANEL_ROWS);
                    // SAFETY: columns j..j+16 of `out` belong to this call (the caller's
                    // contract); rows first..first + n_rows of them.
                    vnni::forward(
                        &self.values[j * d_in..][..vnni::PANEL_ROWS * d_in],
                        &self.panel_scales[p * n..][..n],
                        &self.panel_corr[p * n..][..n],
                        &xu[first * d_in..][..n_rows * d_in],
                        d_in,
                        self.block,
                        &sx[first..first + n_rows],
                        bias.map(|b| &b[j..j + vnni::PANEL_ROWS]),
                        out.0.add(first * d_out + j),
                        d_out,
                    );
                    tile += vnni::PANEL_TILES;
                }
            }
            tile = tile.max(end);
        }
        // Weight tiles outermost: 4 weight rows stay in cache while every activation row passes.
        while tile < range.end {
            let j = tile * 4;
            let w = &self.values[j * d_in..(j + 4) * d_in];
            let s = &self.tile_scales[tile * blocks * 4..(tile + 1) * blocks * 4];
            let row = |i: usize| &xq[i * d_in..(i + 1) * d_in];
            let store = |i: usize, acc: [f32; 4]| {
                for (lane, a) in acc.into_iter().enumerate() {
                    // SAFETY: row i < rows, column j + lane of this call's tiles.
                    *out.0.add(i * d_out + j + lane) = finish(a, sx[i], bias.map(|b| b[j + lane]));
                }
            };
            // Two activation rows per pass where there are two: each weight load serves both.
            // Many rows (encoding): both operands widened to i16 once (the tile into `wide_w`),
            // so the passes load instead of load-and-extend.
            let mut i = 0;
            if let Some(xw) = wide_x {
                for (o, &v) in wide_w.iter_mut().zip(w) {
                    *o = v as i16;
                }
                let wrow = |i: usize| &xw[i * d_in..(i + 1) * d_in];
                while i + 1 < rows {
                    let (a, b) = kernel::tile4x2_i16(wrow(i), wrow(i + 1), &wide_w, s, self.block);
                    store(i, a);
                    store(i + 1, b);
                    i += 2;
                }
            }
            while i + 1 < rows {
                let (a, b) = kernel::tile4x2(row(i), row(i + 1), w, s, self.block);
                store(i, a);
                store(i + 1, b);
                i += 2;
            }
            if i < rows {
                store(i, kernel::tile4(row(i), w, s, self.block));
            }
            tile += 1;
        }
    }

    /// Row `j`'s values in input order (a copy out of the tile layout where it applies).
    fn row(&self, j: usize) -> std::borrow::Cow<'_, [i8]> {
        let d_in = self.d_in;
        if !self.packed || j >= self.d_out / 4 * 4 {
            return std::borrow::Cow::Borrowed(&self.values[j * d_in..(j + 1) * d_in]);
        }
        if j < self.panels * vnni::PANEL_ROWS {
            let panel = &self.values[j / 16 * 16 * d_in..][..16 * d_in];
            let r = j % 16;
            let row = (0..d_in).map(|k| panel[(k / 4) * 64 + r * 4 + k % 4]);
            return std::borrow::Cow::Owned(row.collect());
        }
        let tile = &self.values[j / 4 * 4 * d_in..][..4 * d_in];
        let lane = j % 4;
        let row = tile
            .chunks_exact(4 * PACK)
            .flat_map(|run| &run[lane * PACK..][..PACK]);
        std::borrow::Cow::Owned(row.copied().collect())
    }

    /// The weight as f32 (`q × scale`), `[d_out, d_in]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let blocks = self.d_in / self.block;
        let mut out = Vec::with_capacity(self.d_out * self.d_in);
        for j in 0..self.d_out {
            let row = self.row(j);
            let scales = &self.scales[j * blocks..(j + 1) * blocks];
            out.extend(
                row.iter()
                    .enumerate()
                    .map(|(k, &q)| q as f32 * scales[k / self.block]),
            );
        }
        out
    }
}

fn finish(acc: f32, sx: f32, bias: Option<f32>) -> f32 {
    let y = acc * sx;
    match bias {
        Some(b) => y + b,
        None => y,
    }
}

/// Symmetric per-row int8 quantization: `(round(x / s), s)` with `s = max |x| / 127`.
pub fn quantize_rows(x: &[f32], width: usize) -> (Vec<i8>, Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (and so SSE4.1).
        return unsafe { quantize_rows_avx2(x, width) };
    }
    quantize_rows_portable(x, width)
}

/// [`quantize_rows_portable`] with each row's values rounded 8 at a time by AVX2 (the same IEEE
/// operations, so the same values).
#[cfg(target_arch = "x86_64")]
unsafe fn quantize_rows_avx2(x: &[f32], width: usize) -> (Vec<i8>, Vec<f32>) {
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn row(row: &[f32], q: &mut [i8]) -> f32 {
        quantize_row(row, q, |row, inv, q| {
            // SAFETY: the CPU has AVX2 (this function's contract).
            unsafe { round_row_avx2(row, inv, q) }
        })
    }
    // SAFETY: the CPU has AVX2 (the caller's contract).
    quantize_rows_with(x, width, &|r, q| unsafe { row(r, q) })
}

/// [`round_row`] for 8 values at a time (the rest as it does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_row_avx2(row: &[f32], inv: f32, q: &mut [i8]) {
    use std::arch::x86_64::*;
    let n = row.len() / 8 * 8;
    let (inv_v, half, one, top) = (
        _mm256_set1_ps(inv),
        _mm256_set1_ps(0.5),
        _mm256_set1_ps(1.0),
        _mm256_set1_ps(127.0),
    );
    let sign = _mm256_set1_ps(-0.0);
    for c in (0..n).step_by(8) {
        // SAFETY: c + 8 <= n <= row.len() == q.len().
        let t = _mm256_mul_ps(unsafe { _mm256_loadu_ps(row.as_ptr().add(c)) }, inv_v);
        let a = _mm256_andnot_ps(sign, t);
        let f = _mm256_floor_ps(a);
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_sub_ps(a, f), half);
        let r = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_add_ps(f, _mm256_and_ps(up, one)), top));
        // Negated where t < 0: (r ^ m) − m with m all ones there.
        let m = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(t, _mm256_setzero_ps()));
        let r = _mm256_sub_epi32(_mm256_xor_si256(r, m), m);
        let w = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
        unsafe { _mm_storel_epi64(q.as_mut_ptr().add(c) as *mut __m128i, _mm_packs_epi16(w, w)) };
    }
    round_row(&row[n..], inv, &mut q[n..]);
}

fn quantize_rows_portable(x: &[f32], width: usize) -> (Vec<i8>, Vec<f32>) {
    quantize_rows_with(x, width, &|row, q| quantize_row(row, q, round_row))
}

/// `q = round(row · inv)` (half away from zero) for a finite row whose largest magnitude
/// scaled by `inv` is 127, spelled with `floor` (|t| − ⌊|t|⌋ is exact) so that it vectorizes.
#[inline(always)]
fn round_row(row: &[f32], inv: f32, q: &mut [i8]) {
    for (o, &v) in q.iter_mut().zip(row) {
        let t = v * inv;
        let (a, f) = (t.abs(), t.abs().floor());
        let r = if a - f >= 0.5 { f + 1.0 } else { f }.min(127.0) as i32;
        *o = if t < 0.0 { -r } else { r } as i8;
    }
}

/// The rows' values and scales, each row by `row` (which writes its values and returns its
/// scale), the rows split over the [`Parallel`] runner where there are many.
fn quantize_rows_with(
    x: &[f32],
    width: usize,
    row: &(dyn Fn(&[f32], &mut [i8]) -> f32 + Sync),
) -> (Vec<i8>, Vec<f32>) {
    let rows = x.len() / width;
    let mut q = vec![0i8; rows * width];
    let mut scales = vec![0f32; rows];
    let (qp, sp) = (SyncPtr(q.as_mut_ptr()), SyncPtr(scales.as_mut_ptr()));
    let (qp, sp) = (&qp, &sp);
    split_jobs(rows, 1, x.len() >= 1 << 16, &|range| {
        for r in range {
            // SAFETY: row r's values and scale (`q` and `scales` outlive the jobs), disjoint
            // between jobs.
            let q = unsafe { std::slice::from_raw_parts_mut(qp.0.add(r * width), width) };
            let scale = row(&x[r * width..][..width], q);
            unsafe { *sp.0.add(r) = scale };
        }
    });
    (q, scales)
}

/// Symmetric int8 quantization of `w` in blocks of `block` values: each block's `round(w ·
/// 127 / max |w|)` (half away from zero; an all-zero block → zeros) and scale `max |w| / 127`,
/// as the bundles' q8 — blocks split over the [`Parallel`] runner, finite blocks rounded as
/// [`round_row`] (AVX2 where the CPU has it: the same values), others by the definition.
pub fn quantize_blocks(w: &[f32], block: usize) -> (Vec<i8>, Vec<f32>) {
    let blocks = w.len() / block;
    let mut q = vec![0i8; blocks * block];
    let mut scales = vec![0f32; blocks];
    let (qp, sp) = (SyncPtr(q.as_mut_ptr()), SyncPtr(scales.as_mut_ptr()));
    let (qp, sp) = (&qp, &sp);
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    split_jobs(blocks, 1, w.len() >= 1 << 16, &|range| {
        for b in range {
            let chunk = &w[b * block..][..block];
            // SAFETY: block b's values and scale (`q` and `scales` outlive the jobs), disjoint
            // between jobs.
            let out = unsafe { std::slice::from_raw_parts_mut(qp.0.add(b * block), block) };
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let finite = chunk.iter().all(|v| v.is_finite());
            if finite && inv.is_finite() {
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: the CPU has AVX2 (checked).
                    unsafe { round_row_avx2(chunk, inv, out) };
                } else {
                    round_row(chunk, inv, out);
                }
                #[cfg(not(target_arch = "x86_64"))]
                round_row(chunk, inv, out);
            } else {
                for (o, &v) in out.iter_mut().zip(chunk) {
                    *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
                }
            }
            unsafe { *sp.0.add(b) = amax / 127.0 };
        }
    });
    (q, scales)
}

/// One row's values into `q` by `round`, its scale returned (a row of tiny values whose `inv`
/// overflows: by the definition, value by value).
#[inline(always)]
fn quantize_row(row: &[f32], q: &mut [i8], round: impl Fn(&[f32], f32, &mut [i8])) -> f32 {
    // The largest magnitude's bits (a non-negative float's bits order as its value; NaN and the
    // infinities above every finite value): one pass that vectorizes.
    let amax = row
        .iter()
        .fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    let finite = amax < 0x7f80_0000;
    let amax = f32::from_bits(amax);
    if amax == 0.0 || !finite {
        // All zeros → zeros; a non-finite row stays non-finite (NaN) through the scale.
        return if finite { 0.0 } else { f32::NAN };
    }
    let inv = 127.0 / amax;
    if inv.is_finite() {
        round(row, inv, q);
    } else {
        for (o, &v) in q.iter_mut().zip(row) {
            *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
    }
    amax / 127.0
}

/// A pointer shared by jobs that write disjoint parts of its buffer (a product's output
/// columns, rows, blocks).
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);
impl<T> Clone for SyncPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SyncPtr<T> {}
// SAFETY: only used for writes to disjoint elements while the owner waits.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &w)| x as i32 * w as i32).sum()
}

/// Four weight rows against one activation row: the f32 block accumulations of each row.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod kernel {
    use core::arch::wasm32::*;

    /// `x` `[d_in]`, `w` one tile (4 rows, tile layout), `s` `[blocks, 4]`.
    pub fn tile4(x: &[i8], w: &[i8], s: &[f32], block: usize) -> [f32; 4] {
        let d_in = x.len();
        assert!(w.len() == 4 * d_in && s.len() * block == 4 * d_in && block % 8 == 0);
        // SAFETY: loads read 8 bytes of x at k + 8 <= d_in, 8 bytes of w at 4 k + 32 <= 4 d_in
        // (block % 8 == 0 and block divides d_in), 16 bytes of s at 4 b + 4 <= s.len(); the
        // lengths are asserted above.
        unsafe {
            let xp = x.as_ptr();
            let wp = w.as_ptr();
            let mut acc = f32x4_splat(0.0);
            for b in 0..d_in / block {
                let (mut d0, mut d1, mut d2, mut d3) = (
                    i32x4_splat(0),
                    i32x4_splat(0),
                    i32x4_splat(0),
                    i32x4_splat(0),
                );
                let mut k = b * block;
                while k < (b + 1) * block {
                    let xv = i16x8_load_extend_i8x8(xp.add(k));
                    let run = wp.add(4 * k);
                    let w0 = i16x8_load_extend_i8x8(run);
                    let w1 = i16x8_load_extend_i8x8(run.add(8));
                    let w2 = i16x8_load_extend_i8x8(run.add(16));
                    let w3 = i16x8_load_extend_i8x8(run.add(24));
                    d0 = i32x4_add(d0, i32x4_dot_i16x8(xv, w0));
                    d1 = i32x4_add(d1, i32x4_dot_i16x8(xv, w1));
                    d2 = i32x4_add(d2, i32x4_dot_i16x8(xv, w2));
                    d3 = i32x4_add(d3, i32x4_dot_i16x8(xv, w3));
                    k += 8;
                }
                let sw = v128_load(s.as_ptr().add(4 * b) as *const v128);
                acc = f32x4_add(acc, f32x4_mul(sums(d0, d1, d2, d3), sw));
            }
            lanes(acc)
        }
    }

    fn lanes(v: v128) -> [f32; 4] {
        [
            f32x4_extract_lane::<0>(v),
            f32x4_extract_lane::<1>(v),
            f32x4_extract_lane::<2>(v),
            f32x4_extract_lane::<3>(v),
        ]
    }

    /// [Σd0, Σd1, Σd2, Σd3] as f32: exact integers, whatever the order.
    #[inline(always)]
    fn sums(d0: v128, d1: v128, d2: v128, d3: v128) -> v128 {
        let t0 = i32x4_add(
            i32x4_shuffle::<0, 4, 1, 5>(d0, d1),
            i32x4_shuffle::<2, 6, 3, 7>(d0, d1),
        );
        let t1 = i32x4_add(
            i32x4_shuffle::<0, 4, 1, 5>(d2, d3),
            i32x4_shuffle::<2, 6, 3, 7>(d2, d3),
        );
        f32x4_convert_i32x4(i32x4_add(
            i32x4_shuffle::<0, 1, 4, 5>(t0, t1),
            i32x4_shuffle::<2, 3, 6, 7>(t0, t1),
        ))
    }

    /// `$name(x, y, w, s, block)`: [`tile4`] for two activation rows at once (each weight load
    /// serves both), with operands of type `$t` loaded 8 lanes at a time by `$load8`; each row's
    /// operations are exactly [`tile4`]'s.
    macro_rules! tile4x2_of {
        ($(#[$doc:meta])* $name:ident, $t:ty, $load8:ident) => {
            $(#[$doc])*
            pub fn $name(x: &[$t], y: &[$t], w: &[$t], s: &[f32], block: usize) -> ([f32; 4], [f32; 4]) {
                let d_in = x.len();
                assert!(y.len() == d_in);
                assert!(w.len() == 4 * d_in && s.len() * block == 4 * d_in && block % 8 == 0);
                // SAFETY: tile4's loads (8 lanes at the same element offsets), for two rows of
                // the asserted length.
                unsafe {
                    let (xp, yp, wp) = (x.as_ptr(), y.as_ptr(), w.as_ptr());
                    let (mut ax, mut ay) = (f32x4_splat(0.0), f32x4_splat(0.0));
                    for b in 0..d_in / block {
                        let z = i32x4_splat(0);
                        let (mut d0, mut d1, mut d2, mut d3) = (z, z, z, z);
                        let (mut e0, mut e1, mut e2, mut e3) = (z, z, z, z);
                        let mut k = b * block;
                        while k < (b + 1) * block {
                            let xv = $load8(xp.add(k));
                            let yv = $load8(yp.add(k));
                            let run = wp.add(4 * k);
                            let w0 = $load8(run);
                            d0 = i32x4_add(d0, i32x4_dot_i16x8(xv, w0));
                            e0 = i32x4_add(e0, i32x4_dot_i16x8(yv, w0));
                            let w1 = $load8(run.add(8));
                            d1 = i32x4_add(d1, i32x4_dot_i16x8(xv, w1));
                            e1 = i32x4_add(e1, i32x4_dot_i16x8(yv, w1));
                            let w2 = $load8(run.add(16));
                            d2 = i32x4_add(d2, i32x4_dot_i16x8(xv, w2));
                            e2 = i32x4_add(e2, i32x4_dot_i16x8(yv, w2));
                            let w3 = $load8(run.add(24));
                            d3 = i32x4_add(d3, i32x4_dot_i16x8(xv, w3));
                            e3 = i32x4_add(e3, i32x4_dot_i16x8(yv, w3));
                            k += 8;
                        }
                        let sw = v128_load(s.as_ptr().add(4 * b) as *const v128);
                        ax = f32x4_add(ax, f32x4_mul(sums(d0, d1, d2, d3), sw));
                        ay = f32x4_add(ay, f32x4_mul(sums(e0, e1, e2, e3), sw));
                    }
                    (lanes(ax), lanes(ay))
                }
            }
        };
    }

    /// 8 int8 values sign-extended to int16 lanes.
    #[inline(always)]
    unsafe fn load8_i8(p: *const i8) -> v128 {
        i16x8_load_extend_i8x8(p)
    }

    /// 8 int16 values.
    #[inline(always)]
    unsafe fn load8_i16(p: *const i16) -> v128 {
        v128_load(p as *const v128)
    }

    tile4x2_of!(tile4x2, i8, load8_i8);
    tile4x2_of!(
        /// [`tile4x2`] on operands already widened to i16 (`w` the tile in its layout): plain
        /// loads instead of load-and-extend, the same integer products and sums, so the same
        /// bits.
        tile4x2_i16,
        i16,
        load8_i16
    );
}

/// The same on x86_64: `pmaddwd` is wasm's `i32x4.dot_i16x8_s`. SSE4.1's `pmovsxbw` (what V8
/// compiles wasm's load-extend to) when the CPU has it, else SSE2 (every x86_64 CPU).
#[cfg(target_arch = "x86_64")]
mod kernel {
    use core::arch::x86_64::*;

    /// `x` `[d_in]`, `w` one tile (4 rows, tile layout), `s` `[blocks, 4]`.
    pub fn tile4(x: &[i8], w: &[i8], s: &[f32], block: usize) -> [f32; 4] {
        let d_in = x.len();
        assert!(w.len() == 4 * d_in && s.len() * block == 4 * d_in && block % 8 == 0);
        // SAFETY: the wasm kernel's loads, asserted the same way; SSE2 is part of x86_64, SSE4.1
        // is checked.
        unsafe {
            if std::arch::is_x86_feature_detected!("sse4.1") {
                tile4_sse41(x, w, s, block)
            } else {
                tile4_sse2(x, w, s, block)
            }
        }
    }

    /// [`tile4`] for two activation rows at once (each weight load serves both); each row's
    /// operations are exactly [`tile4`]'s.
    pub fn tile4x2(x: &[i8], y: &[i8], w: &[i8], s: &[f32], block: usize) -> ([f32; 4], [f32; 4]) {
        let d_in = x.len();
        assert!(y.len() == d_in);
        assert!(w.len() == 4 * d_in && s.len() * block == 4 * d_in && block % 8 == 0);
        // SAFETY: as tile4, for two rows of the asserted length.
        unsafe {
            if std::arch::is_x86_feature_detected!("sse4.1") {
                tile4x2_sse41(x, y, w, s, block)
            } else {
                tile4x2_sse2(x, y, w, s, block)
            }
        }
    }

    /// [`tile4x2`] on operands already widened to i16 (`w` the tile in its layout): plain
    /// loads instead of load-and-extend, the same integer products and sums, so the same bits.
    pub fn tile4x2_i16(
        x: &[i16],
        y: &[i16],
        w: &[i16],
        s: &[f32],
        block: usize,
    ) -> ([f32; 4], [f32; 4]) {
        let d_in = x.len();
        assert!(y.len() == d_in);
        assert!(w.len() == 4 * d_in && s.len() * block == 4 * d_in && block % 8 == 0);
        // SAFETY: as tile4x2, 8 lanes of i16 (16 bytes) at the same element offsets; SSE2 is
        // part of x86_64.
        unsafe { tile4x2_i16_sse2(x, y, w, s, block) }
    }

    /// [Σd0, Σd1, Σd2, Σd3] as f32: exact integers, whatever the order.
    #[inline]
    #[target_feature(enable = "sse2")]
    unsafe fn sums(d0: __m128i, d1: __m128i, d2: __m128i, d3: __m128i) -> __m128 {
        let t0 = _mm_add_epi32(_mm_unpacklo_epi32(d0, d1), _mm_unpackhi_epi32(d0, d1));
        let t1 = _mm_add_epi32(_mm_unpacklo_epi32(d2, d3), _mm_unpackhi_epi32(d2, d3));
        _mm_cvtepi32_ps(_mm_add_epi32(
            _mm_unpacklo_epi64(t0, t1),
            _mm_unpackhi_epi64(t0, t1),
        ))
    }

    macro_rules! tile4x2_with {
        ($name:ident, $feature:literal, $load8:ident, $t:ty) => {
            #[target_feature(enable = $feature)]
            unsafe fn $name(
                x: &[$t],
                y: &[$t],
                w: &[$t],
                s: &[f32],
                block: usize,
            ) -> ([f32; 4], [f32; 4]) {
                let d_in = x.len();
                let (xp, yp, wp) = (x.as_ptr(), y.as_ptr(), w.as_ptr());
                let (mut ax, mut ay) = (_mm_setzero_ps(), _mm_setzero_ps());
                for b in 0..d_in / block {
                    let z = _mm_setzero_si128();
                    let (mut d0, mut d1, mut d2, mut d3) = (z, z, z, z);
                    let (mut e0, mut e1, mut e2, mut e3) = (z, z, z, z);
                    let mut k = b * block;
                    while k < (b + 1) * block {
                        let xv = $load8(xp.add(k));
                        let yv = $load8(yp.add(k));
                        let run = wp.add(4 * k);
                        let w0 = $load8(run);
                        d0 = _mm_add_epi32(d0, _mm_madd_epi16(xv, w0));
                        e0 = _mm_add_epi32(e0, _mm_madd_epi16(yv, w0));
                        let w1 = $load8(run.add(8));
                        d1 = _mm_add_epi32(d1, _mm_madd_epi16(xv, w1));
                        e1 = _mm_add_epi32(e1, _mm_madd_epi16(yv, w1));
                        let w2 = $load8(run.add(16));
                        d2 = _mm_add_epi32(d2, _mm_madd_epi16(xv, w2));
                        e2 = _mm_add_epi32(e2, _mm_madd_epi16(yv, w2));
                        let w3 = $load8(run.add(24));
                        d3 = _mm_add_epi32(d3, _mm_madd_epi16(xv, w3));
                        e3 = _mm_add_epi32(e3, _mm_madd_epi16(yv, w3));
                        k += 8;
                    }
                    let sw = _mm_loadu_ps(s.as_ptr().add(4 * b));
                    ax = _mm_add_ps(ax, _mm_mul_ps(sums(d0, d1, d2, d3), sw));
                    ay = _mm_add_ps(ay, _mm_mul_ps(sums(e0, e1, e2, e3), sw));
                }
                let (mut ox, mut oy) = ([0f32; 4], [0f32; 4]);
                _mm_storeu_ps(ox.as_mut_ptr(), ax);
                _mm_storeu_ps(oy.as_mut_ptr(), ay);
                (ox, oy)
            }
        };
    }

    macro_rules! tile4_with {
        ($name:ident, $feature:literal, $load8:ident) => {
            #[target_feature(enable = $feature)]
            unsafe fn $name(x: &[i8], w: &[i8], s: &[f32], block: usize) -> [f32; 4] {
                let d_in = x.len();
                let xp = x.as_ptr();
                let wp = w.as_ptr();
                let mut acc = _mm_setzero_ps();
                for b in 0..d_in / block {
                    let (mut d0, mut d1, mut d2, mut d3) = (
                        _mm_setzero_si128(),
                        _mm_setzero_si128(),
                        _mm_setzero_si128(),
                        _mm_setzero_si128(),
                    );
                    let mut k = b * block;
                    while k < (b + 1) * block {
                        let xv = $load8(xp.add(k));
                        let run = wp.add(4 * k);
                        d0 = _mm_add_epi32(d0, _mm_madd_epi16(xv, $load8(run)));
                        d1 = _mm_add_epi32(d1, _mm_madd_epi16(xv, $load8(run.add(8))));
                        d2 = _mm_add_epi32(d2, _mm_madd_epi16(xv, $load8(run.add(16))));
                        d3 = _mm_add_epi32(d3, _mm_madd_epi16(xv, $load8(run.add(24))));
                        k += 8;
                    }
                    let sw = _mm_loadu_ps(s.as_ptr().add(4 * b));
                    acc = _mm_add_ps(acc, _mm_mul_ps(sums(d0, d1, d2, d3), sw));
                }
                let mut out = [0f32; 4];
                _mm_storeu_ps(out.as_mut_ptr(), acc);
                out
            }
        };
    }

    /// 8 int8 values sign-extended to int16 lanes.
    #[inline]
    #[target_feature(enable = "sse4.1")]
    unsafe fn load8_sse41(p: *const i8) -> __m128i {
        _mm_cvtepi8_epi16(_mm_loadl_epi64(p as *const __m128i))
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    unsafe fn load8_sse2(p: *const i8) -> __m128i {
        let v = _mm_loadl_epi64(p as *const __m128i);
        _mm_srai_epi16::<8>(_mm_unpacklo_epi8(v, v))
    }

    tile4_with!(tile4_sse41, "sse4.1", load8_sse41);
    tile4_with!(tile4_sse2, "sse2", load8_sse2);
    /// 8 int16 values.
    #[inline]
    #[target_feature(enable = "sse2")]
    unsafe fn load8_i16(p: *const i16) -> __m128i {
        _mm_loadu_si128(p as *const __m128i)
    }

    tile4x2_with!(tile4x2_sse41, "sse4.1", load8_sse41, i8);
    tile4x2_with!(tile4x2_sse2, "sse2", load8_sse2, i8);
    tile4x2_with!(tile4x2_i16_sse2, "sse2", load8_i16, i16);

    /// The SSE2 two-row variant whatever the CPU has (the tests compare it with the others).
    #[cfg(test)]
    pub fn tile4x2_sse2_only(
        x: &[i8],
        y: &[i8],
        w: &[i8],
        s: &[f32],
        block: usize,
    ) -> ([f32; 4], [f32; 4]) {
        assert!(y.len() == x.len());
        assert!(w.len() == 4 * x.len() && s.len() * block == 4 * x.len() && block % 8 == 0);
        // SAFETY: as tile4x2.
        unsafe { tile4x2_sse2(x, y, w, s, block) }
    }

    /// The SSE2 variant whatever the CPU has (the tests compare it with the others).
    #[cfg(test)]
    pub fn tile4_sse2_only(x: &[i8], w: &[i8], s: &[f32], block: usize) -> [f32; 4] {
        assert!(w.len() == 4 * x.len() && s.len() * block == 4 * x.len() && block % 8 == 0);
        // SAFETY: as tile4.
        unsafe { tile4_sse2(x, w, s, block) }
    }
}

/// 16-row panels through AVX-512 VNNI's `vpdpbusd` (x86_64 CPUs that have it: the weight is
/// stored so at load time). Each output's block sums are the same exact integers as the tile
/// kernels' (`Σ (x + 128) · w − 128 · Σ w`, in int32), scaled and summed in f32 in the same
/// order, so the bits equal the portable path's (tested).
#[cfg(target_arch = "x86_64")]
mod vnni {
    use core::arch::x86_64::*;

    /// Weight rows per panel (one 512-bit vector of int32 sums) and the 4-row tiles they span.
    pub const PANEL_ROWS: usize = 16;
    pub const PANEL_TILES: usize = 4;

    pub fn available() -> bool {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        })
    }

    /// Rows `[panels · 16, d_in]` (plain layout) → the panel layout, `[d_in / 4][16][4]` each.
    pub fn pack(rows: &[i8], d_in: usize) -> Vec<i8> {
        let mut out = vec![0i8; rows.len()];
        let size = PANEL_ROWS * d_in;
        let at = super::SyncPtr(out.as_mut_ptr());
        let at = &at;
        // Panels split over the host's threads (each panel's bytes where they go).
        super::split_jobs(
            rows.len() / size.max(1),
            1,
            rows.len() >= 1 << 20,
            &|panels| {
                for p in panels {
                    let panel = &rows[p * size..][..size];
                    // SAFETY: panel p's bytes of `out` (alive until the jobs return), disjoint.
                    let dst = unsafe { std::slice::from_raw_parts_mut(at.0.add(p * size), size) };
                    for (r, row) in panel.chunks_exact(d_in).enumerate() {
                        for (k, &v) in row.iter().enumerate() {
                            dst[(k / 4) * 64 + r * 4 + k % 4] = v;
                        }
                    }
                }
            },
        );
        out
    }

    /// The first `panels` panels' scales and corrections, `[panels][blocks][16]` each, from the
    /// plain values `[d_out, d_in]` and scales `[d_out, blocks]`.
    pub fn panel_sums(
        values: &[i8],
        scales: &[f32],
        panels: usize,
        d_in: usize,
        block: usize,
    ) -> (Vec<f32>, Vec<i32>) {
        let blocks = d_in / block;
        let mut s = vec![0f32; panels * blocks * PANEL_ROWS];
        let mut corr = vec![0i32; panels * blocks * PANEL_ROWS];
        for j in 0..panels * PANEL_ROWS {
            let (p, r) = (j / PANEL_ROWS, j % PANEL_ROWS);
            for b in 0..blocks {
                let at = (p * blocks + b) * PANEL_ROWS + r;
                s[at] = scales[j * blocks + b];
                let sum: i32 = values[j * d_in + b * block..][..block]
                    .iter()
                    .map(|&v| v as i32)
                    .sum();
                corr[at] = 128 * sum;
            }
        }
        (s, corr)
    }

    /// Every activation row of `xu` (`[rows, d_in]`, `xq + 128`) against one panel `w` (its
    /// scales `s` and corrections `corr`, `[blocks][16]`), finished as [`super::finish`] does
    /// (`acc · sx[i]`, then `+ bias[r]`) and stored at `out + i · ld + r`.
    ///
    /// # Safety
    /// `out` must be valid for writes at `i · ld + r` for every row i < rows and r < 16.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward(
        w: &[i8],
        s: &[f32],
        corr: &[i32],
        xu: &[u8],
        d_in: usize,
        block: usize,
        sx: &[f32],
        bias: Option<&[f32]>,
        out: *mut f32,
        ld: usize,
    ) {
        assert!(block % 4 == 0 && d_in % block == 0 && xu.len() % d_in == 0);
        assert!(w.len() == PANEL_ROWS * d_in);
        assert!(s.len() * block == PANEL_ROWS * d_in && corr.len() == s.len());
        let rows = xu.len() / d_in;
        assert!(sx.len() >= rows && bias.is_none_or(|b| b.len() == PANEL_ROWS));
        assert!(available());
        let p = Panel {
            w,
            s,
            corr,
            d_in,
            block,
            sx,
            bias,
            out,
            ld,
        };
        let mut i = 0;
        while i < rows {
            // SAFETY: the CPU has the features (asserted above); `group` reads R rows of xu
            // from row i (i + R <= rows) and the asserted panel lengths, and writes rows i..i+R
            // of `out` (the caller's contract).
            // Fewer rows: more sums per row in flight (each row's int32 sums split over `A`
            // accumulators by input and added back: exact, so the same bits).
            i += match (rows - i, block % 16) {
                (8.., _) => group::<8, 1>(&p, xu, i),
                (4.., 0) => group::<4, 2>(&p, xu, i),
                (4.., _) => group::<4, 1>(&p, xu, i),
                (_, 0) => group::<1, 4>(&p, xu, i),
                _ => group::<1, 1>(&p, xu, i),
            };
        }
    }

    struct Panel<'a> {
        w: &'a [i8],
        s: &'a [f32],
        corr: &'a [i32],
        d_in: usize,
        block: usize,
        sx: &'a [f32],
        bias: Option<&'a [f32]>,
        out: *mut f32,
        ld: usize,
    }

    /// Activation rows `i .. i + R`, each block's int32 sums over `A` accumulators per row
    /// (inputs `4a, 4a + 4A, …` in accumulator `a`; `block` a multiple of `4A`); returns R.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group<const R: usize, const A: usize>(p: &Panel, xu: &[u8], i: usize) -> usize {
        let (d_in, block) = (p.d_in, p.block);
        assert!(xu.len() >= (i + R) * d_in && block % (4 * A) == 0);
        let (xp, wp) = (xu.as_ptr().add(i * d_in), p.w.as_ptr());
        let mut f = [_mm512_setzero_ps(); R];
        for b in 0..d_in / block {
            let mut acc = [[_mm512_setzero_si512(); R]; A];
            let mut k = b * block;
            while k < (b + 1) * block {
                for (a, acc) in acc.iter_mut().enumerate() {
                    // 64 bytes: inputs k..k+4 of the 16 rows (k + 4 <= d_in).
                    let k = k + 4 * a;
                    let wv = _mm512_loadu_si512(wp.add(k * PANEL_ROWS) as *const _);
                    for r in 0..R {
                        let x = (xp.add(r * d_in + k) as *const i32).read_unaligned();
                        acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(x), wv);
                    }
                }
                k += 4 * A;
            }
            let sw = _mm512_loadu_ps(p.s.as_ptr().add(PANEL_ROWS * b));
            let c = _mm512_loadu_si512(p.corr.as_ptr().add(PANEL_ROWS * b) as *const _);
            for r in 0..R {
                let mut sum = acc[0][r];
                for acc in &acc[1..] {
                    sum = _mm512_add_epi32(sum, acc[r]);
                }
                let sums = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, c));
                f[r] = _mm512_add_ps(f[r], _mm512_mul_ps(sums, sw));
            }
        }
        for r in 0..R {
            let y = _mm512_mul_ps(f[r], _mm512_set1_ps(p.sx[i + r]));
            let y = match p.bias {
                Some(b) => _mm512_add_ps(y, _mm512_loadu_ps(b.as_ptr())),
                None => y,
            };
            _mm512_storeu_ps(p.out.add((i + r) * p.ld), y);
        }
        R
    }
}

/// Other targets (the browser's wasm included): no panels.
#[cfg(not(target_arch = "x86_64"))]
mod vnni {
    pub const PANEL_ROWS: usize = 16;
    pub const PANEL_TILES: usize = 4;
    pub fn available() -> bool {
        false
    }
    pub fn pack(rows: &[i8], _: usize) -> Vec<i8> {
        rows.to_vec()
    }
    pub fn panel_sums(_: &[i8], _: &[f32], _: usize, _: usize, _: usize) -> (Vec<f32>, Vec<i32>) {
        (Vec::new(), Vec::new())
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward(
        _: &[i8],
        _: &[f32],
        _: &[i32],
        _: &[u8],
        _: usize,
        _: usize,
        _: &[f32],
        _: Option<&[f32]>,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("no VNNI panels on this target")
    }
}

/// From this many activation rows on, [`Int8Weight::forward`] widens its operands to i16 once
/// per product rather than in every pass.
const WIDE_ROWS: usize = 8;

/// Bytes of activations per block of rows in the VNNI products.
const VNNI_ROW_BYTES: usize = 128 << 10;

/// The same in plain Rust (the kernel elsewhere; the tests compare it with the others).
#[cfg(not(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    target_arch = "x86_64"
)))]
use portable as kernel;

#[allow(dead_code)]
mod portable {
    use super::PACK;

    /// `x` `[d_in]`, `w` one tile (4 rows, tile layout), `s` `[blocks, 4]`.
    pub fn tile4(x: &[i8], w: &[i8], s: &[f32], block: usize) -> [f32; 4] {
        let mut acc = [0f32; 4];
        for (b, xb) in x.chunks_exact(block).enumerate() {
            let wb = &w[4 * b * block..4 * (b + 1) * block];
            for (lane, a) in acc.iter_mut().enumerate() {
                let d: i32 = xb
                    .chunks_exact(PACK)
                    .zip(wb.chunks_exact(4 * PACK))
                    .map(|(xr, run)| super::dot(xr, &run[lane * PACK..][..PACK]))
                    .sum();
                *a += d as f32 * s[4 * b + lane];
            }
        }
        acc
    }

    pub fn tile4x2(x: &[i8], y: &[i8], w: &[i8], s: &[f32], block: usize) -> ([f32; 4], [f32; 4]) {
        (tile4(x, w, s, block), tile4(y, w, s, block))
    }

    pub fn tile4x2_i16(
        x: &[i16],
        y: &[i16],
        w: &[i16],
        s: &[f32],
        block: usize,
    ) -> ([f32; 4], [f32; 4]) {
        let narrow = |v: &[i16]| v.iter().map(|&a| a as i8).collect::<Vec<i8>>();
        tile4x2(&narrow(x), &narrow(y), &narrow(w), s, block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no dependency for a test).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Split over jobs (a runner that runs them out of order, as threads may finish): the same
    /// bits as one job and as the scalar path, for tile counts that do not divide evenly and row
    /// counts on both sides of the widened-operand switch.
    #[test]
    fn split_over_jobs_is_bit_identical() {
        let unsplit: Vec<Vec<u32>> = split_cases().map(|(w, x)| bits(&w.forward(&x))).collect();
        set_parallel(Parallel {
            threads: 3,
            run: |n, job| (0..n).rev().for_each(job),
        });
        assert!(PARALLEL.get().is_some_and(|p| p.threads == 3));
        for ((w, x), want) in split_cases().zip(unsplit) {
            assert!(x.len() / w.d_in() * w.d_in() * w.d_out() >= PARALLEL_MIN_WORK);
            assert_eq!(bits(&w.forward(&x)), want, "{w:?}");
            assert_eq!(bits(&w.forward_scalar(&x)), want, "{w:?} scalar");
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// The AVX2 build of the activation quantization gives the portable build's values, ties
    /// (x.5 after scaling) included.
    #[test]
    fn quantize_rows_builds_agree() {
        let width = 256;
        let mut x: Vec<f32> = values(64 * width, 21).iter().map(|v| v * 7.0).collect();
        // A last row whose scaled values land exactly on .5 (max 127 → scale 1).
        x.extend(
            (0..254)
                .map(|k| k as f32 * 0.5 - 63.5)
                .chain([127.0, -127.0]),
        );
        // Rows of other magnitudes (a row's largest value × inv just above 127, tiny values,
        // negative zeros) and an infinity.
        x.extend((0..width).map(|k| if k == 3 { -3.0e-3 } else { k as f32 * 1e-5 }));
        x.extend((0..width).map(|k| if k % 2 == 0 { -0.0 } else { 1e30 / (k as f32) }));
        x.extend((0..width).map(|k| [0.0, 1e-45, -2e-45, 3e-39][k % 4]));
        let rows = x.len() / width;
        let a = quantize_rows(&x, width);
        let b = quantize_rows_portable(&x, width);
        assert_eq!(a.0, b.0);
        assert_eq!(bits(&a.1), bits(&b.1));
        // The definition: s = max |x| / 127, round(x · 127 / max |x|) half away from zero.
        for (r, row) in x.chunks_exact(width).enumerate() {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let want: Vec<i8> = row
                .iter()
                .map(|v| (v * (127.0 / amax)).round().clamp(-127.0, 127.0) as i8)
                .collect();
            assert_eq!(&a.0[r * width..][..width], &want[..], "row {r}");
            assert_eq!(a.1[r].to_bits(), (amax / 127.0).to_bits(), "row {r}");
        }
        let mut inf = x[..width].to_vec();
        inf[5] = f32::INFINITY;
        assert!(quantize_rows(&inf, width).1[0].is_nan());
        assert_eq!(rows, 68);
        let last = &a.0[64 * width..][..width];
        assert_eq!(
            (last[0], last[1], last[253]),
            (-64, -63, 63),
            "ties away from zero"
        );
    }

    /// The VNNI panels: the same bits as the scalar path, with panels, leftover tiles and
    /// leftover weight rows, full and partial row groups (1 to 200 rows), several blocks, one
    /// to four accumulators per row, activation rows in several blocks.
    #[test]
    fn vnni_panels_are_bit_identical() {
        for (d_out, d_in, block, rows) in [
            (67, 96, 32, 130),
            (16, 64, 8, 64),
            (35, 256, 64, 77),
            (64, 40, 8, 200),
            (48, 64, 32, 1),
            (33, 32, 8, 3),
            (50, 128, 16, 5),
            (32, 64, 32, 12),
            // Rows in blocks (VNNI_ROW_BYTES / d_in = 32 and 64 rows), a partial last block.
            (33, 4096, 32, 70),
            (20, 2048, 16, 150),
        ] {
            let w = Int8Weight::quantize(&values(d_out * d_in, 11), d_out, d_in, block)
                .unwrap()
                .with_bias(values(d_out, 12))
                .unwrap();
            let x: Vec<f32> = values(rows * d_in, 13).iter().map(|v| v * 5.0).collect();
            assert_eq!(
                bits(&w.forward(&x)),
                bits(&w.forward_scalar(&x)),
                "{w:?} x {rows}"
            );
            // The stored layout reads back as the values it was given.
            let wq: Vec<i8> = values(d_out * d_in, 14)
                .iter()
                .map(|v| (v * 127.0) as i8)
                .collect();
            let sw = values(d_out * (d_in / block), 15);
            let plain: Vec<f32> = (0..d_out * d_in)
                .map(|n| wq[n] as f32 * sw[n / block])
                .collect();
            let q = Int8Weight::new(wq, sw, d_out, d_in).unwrap();
            assert_eq!(bits(&q.dequantize()), bits(&plain));
            assert_eq!(w.panels, if vnni::available() { d_out / 16 } else { 0 });
        }
        if !vnni::available() {
            eprintln!("no AVX-512 VNNI on this CPU: the panels were not exercised");
        }
    }

    /// Weights of 64 to 68 rows (16 or 17 tiles + a remainder) and 1 to 70 activation rows (the
    /// last through the VNNI panels where the CPU has them), each product large enough to be
    /// split.
    fn split_cases() -> impl Iterator<Item = (Int8Weight, Vec<f32>)> {
        [
            (67, 4096, 32, 7),
            (66, 8192, 64, 2),
            (65, 16384, 32, 1),
            (64, 2048, 32, 9),
            (68, 1024, 32, 70),
        ]
        .into_iter()
        .map(|(d_out, d_in, block, rows)| {
            let w = Int8Weight::quantize(&values(d_out * d_in, 7), d_out, d_in, block)
                .unwrap()
                .with_bias(values(d_out, 8))
                .unwrap();
            (w, values(rows * d_in, 9))
        })
    }

    /// The definition, term by term in f64 from the integers: the kernel may differ from it
    /// only by f32 rounding of the few block sums.
    #[test]
    fn matches_the_definition() {
        for (d_out, d_in, block, rows) in
            // The last two: enough rows for the operands widened to i16 (an even and an odd
            // count, whose last row takes the one-row kernel).
            [
                (7, 24, 8, 3),
                (8, 64, 32, 1),
                (5, 12, 4, 2),
                (9, 48, 48, 5),
                (9, 48, 16, 11),
                (8, 64, 32, WIDE_ROWS),
            ]
        {
            let blocks = d_in / block;
            let wq: Vec<i8> = values(d_out * d_in, 1)
                .iter()
                .map(|v| (v * 127.0) as i8)
                .collect();
            let sw: Vec<f32> = values(d_out * blocks, 2)
                .iter()
                .map(|v| v.abs() * 0.01 + 1e-3)
                .collect();
            let bias = values(d_out, 3);
            let x: Vec<f32> = values(rows * d_in, 4).iter().map(|v| v * 3.0).collect();
            let w = Int8Weight::new(wq.clone(), sw.clone(), d_out, d_in)
                .unwrap()
                .with_bias(bias.clone())
                .unwrap();
            let y = w.forward(&x);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&y),
                bits(&w.forward_scalar(&x)),
                "tiled and scalar paths differ"
            );
            #[cfg(target_arch = "x86_64")]
            if block % 8 == 0 && d_out >= 4 {
                let (xq, _) = quantize_rows(&x, d_in);
                let s = &w.tile_scales[..blocks * 4];
                let a = kernel::tile4(&xq[..d_in], &w.values[..4 * d_in], s, block);
                let b = kernel::tile4_sse2_only(&xq[..d_in], &w.values[..4 * d_in], s, block);
                assert_eq!(
                    a.map(f32::to_bits),
                    b.map(f32::to_bits),
                    "SSE4.1 and SSE2 differ"
                );
                let c = portable::tile4(&xq[..d_in], &w.values[..4 * d_in], s, block);
                assert_eq!(
                    a.map(f32::to_bits),
                    c.map(f32::to_bits),
                    "SSE4.1 and Rust differ"
                );
                if rows >= 2 {
                    let (x0, x1) = (&xq[..d_in], &xq[d_in..2 * d_in]);
                    let wt = &w.values[..4 * d_in];
                    let two = kernel::tile4x2(x0, x1, wt, s, block);
                    let sse2 = kernel::tile4x2_sse2_only(x0, x1, wt, s, block);
                    let rust = portable::tile4x2(x0, x1, wt, s, block);
                    assert_eq!(
                        two.0.map(f32::to_bits),
                        a.map(f32::to_bits),
                        "two-row kernel"
                    );
                    for other in [sse2, rust] {
                        assert_eq!(other.0.map(f32::to_bits), two.0.map(f32::to_bits));
                        assert_eq!(other.1.map(f32::to_bits), two.1.map(f32::to_bits));
                    }
                }
            }
            let (xq, sx) = quantize_rows(&x, d_in);
            for i in 0..rows {
                for j in 0..d_out {
                    let mut acc = 0f64;
                    for b in 0..blocks {
                        let d: i64 = (b * block..(b + 1) * block)
                            .map(|k| xq[i * d_in + k] as i64 * wq[j * d_in + k] as i64)
                            .sum();
                        acc += d as f64 * sw[j * blocks + b] as f64;
                    }
                    let want = acc * sx[i] as f64 + bias[j] as f64;
                    let got = y[i * d_out + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{got} vs {want}"
                    );
                }
            }
            // And close to the f32 product with the dequantized weight (activation rounding only).
            let wf = w.dequantize();
            for i in 0..rows {
                for j in 0..d_out {
                    let exact: f32 = (0..d_in)
                        .map(|k| x[i * d_in + k] * wf[j * d_in + k])
                        .sum::<f32>()
                        + bias[j];
                    let amax = x[i * d_in..(i + 1) * d_in]
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs()));
                    let wsum: f32 = (0..d_in).map(|k| wf[j * d_in + k].abs()).sum();
                    // Each activation moves by at most half a quantization step.
                    let bound = 0.5 * amax / 127.0 * wsum + 1e-5;
                    assert!(
                        (y[i * d_out + j] - exact).abs() <= bound,
                        "{} vs {exact}",
                        y[i * d_out + j]
                    );
                }
            }
        }
    }

    #[test]
    fn weight_quantization_is_the_definition() {
        let mut w: Vec<f32> = values(64 * 96, 31).iter().map(|v| v * 3.0).collect();
        w[40] = f32::NAN;
        w[100] = f32::INFINITY;
        w[200..232].fill(0.0);
        w[300..332].fill(1e-44);
        for (i, v) in w[500..532].iter_mut().enumerate() {
            *v = i as f32 * 0.5 - 8.0;
        }
        let (q, s) = quantize_blocks(&w, 32);
        for (b, chunk) in w.chunks_exact(32).enumerate() {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let want: Vec<i8> = chunk
                .iter()
                .map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8)
                .collect();
            assert_eq!(&q[b * 32..][..32], &want[..], "block {b}");
            assert_eq!(s[b].to_bits(), (amax / 127.0).to_bits(), "block {b}");
        }
    }

    #[test]
    fn zero_and_non_finite_rows() {
        let w = Int8Weight::new(vec![1; 8], vec![0.5; 2], 2, 4).unwrap();
        let y = w.forward(&[f32::NAN, 0.0, 0.0, 0.0]);
        assert!(y.iter().all(|v| v.is_nan()));
        let w = w.with_bias(vec![1.0, 2.0]).unwrap();
        let y = w.forward(&[0.0; 4]);
        assert_eq!(y, vec![1.0, 2.0]);
        let y = w.forward(&[f32::NAN, 0.0, 0.0, 0.0]);
        assert!(y.iter().all(|v| v.is_nan()));
        assert!(Int8Weight::new(vec![1; 8], vec![0.5; 3], 2, 4).is_none());
    }
}
