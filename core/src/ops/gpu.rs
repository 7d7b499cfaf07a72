//! Products on a cubecl device (WebGPU in the browser, Vulkan / CUDA natively) with a kernel
//! chosen for their shape.
//!
//! Without autotune (the browser build has none: it would time every candidate kernel on the
//! user's device) burn 0.22 multiplies everything with one general tiled kernel. For a decoding
//! step — a weight `[out, in]` times a few rows — that kernel is 4-19x slower than cubek's naive
//! one (one invocation per output, a dot product along a contiguous weight row) on the two
//! CPU-emulated adapters here, SwiftShader (headless Chromium's WebGPU) and lavapipe
//! (`cargo run --release -p bartleby --features wgpu --example gpu_matmul`, docs/benchmarks.md).
//! Products with many rows (encoding, training) keep burn's kernel. On a software adapter the
//! web app turns on [`use_blocked_products`]: all products on one register-blocked kernel.
//! LayerNorm, softmax, GELU and few-row projections with their bias are one kernel each: in
//! Chromium every dispatch costs ~5 ms on SwiftShader (docs/benchmarks.md), and burn composes
//! them of 5-9 kernels.

use burn::tensor::{DType, Tensor};
use burn_cubecl::{tensor::CubeTensor, Cube};
use cubek::matmul::{
    definition::{MatmulElems, MatmulGlobalElems},
    multi_level::{
        routines::{
            batch::simple_unit::SimpleUnitSelectionArgs, gemm::GemmStrategy, TileSizeSelection,
        },
        Strategy,
    },
    routine::BlueprintStrategy,
};

/// A matmul kernel of cubek (`Default`: burn's choice without autotune, the general tiled
/// kernel where the device has no tensor cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Default,
    SimpleVecMat,
    DoubleVecMat,
    GemvUnitPerpendicular,
    Gemm,
    Naive,
    SimpleUnitMin,
    SimpleUnitMax,
    /// [`blocked::xwt_kernel`]: 8 × 8 outputs per invocation held in registers, no shared memory.
    Blocked,
    /// [`rowwise::dot_kernel`]: one output per invocation, a dot product of a row of `a` and a
    /// column of `b` (the naive kernel's shape, scalar loads, four partial sums), plus a bias
    /// where [`linear_rows`] passes one.
    Dot,
}

impl Kernel {
    pub const ALL: [Kernel; 10] = [
        Kernel::Dot,
        Kernel::Blocked,
        Kernel::Default,
        Kernel::SimpleVecMat,
        Kernel::DoubleVecMat,
        Kernel::GemvUnitPerpendicular,
        Kernel::Gemm,
        Kernel::Naive,
        Kernel::SimpleUnitMin,
        Kernel::SimpleUnitMax,
    ];

    fn strategy(self) -> cubek::matmul::strategy::Strategy {
        let s = match self {
            Kernel::Default => return cubek::matmul::strategy::Strategy::Auto,
            Kernel::Blocked | Kernel::Dot => {
                unreachable!("not a cubek kernel")
            }
            Kernel::SimpleVecMat => Strategy::SimpleVecMat(BlueprintStrategy::Inferred(().into())),
            Kernel::DoubleVecMat => Strategy::DoubleVecMat(BlueprintStrategy::Inferred(().into())),
            Kernel::GemvUnitPerpendicular => {
                Strategy::GemvUnitPerpendicular(BlueprintStrategy::Inferred(Default::default()))
            }
            Kernel::Gemm => Strategy::Gemm(BlueprintStrategy::Inferred(GemmStrategy {
                target_num_planes: None,
            })),
            Kernel::Naive => Strategy::Naive,
            Kernel::SimpleUnitMin => {
                Strategy::SimpleUnit(BlueprintStrategy::Inferred(SimpleUnitSelectionArgs {
                    tile_size: TileSizeSelection::MinTileSize,
                }))
            }
            Kernel::SimpleUnitMax => {
                Strategy::SimpleUnit(BlueprintStrategy::Inferred(SimpleUnitSelectionArgs {
                    tile_size: TileSizeSelection::MaxTileSize,
                }))
            }
        };
        s.into()
    }
}

/// At most this many rows (columns of `xᵀ`) go to the naive kernel in [`weight_times`]: on
/// SwiftShader it is 19x faster than the tiled one at 4 rows, 5x at 16, 2.7x at 64; on a real GPU
/// the tiled kernel's reuse of the weight wins sooner.
pub const DOT_ROWS: usize = 16;

/// `w xᵀ` for a weight `w` `[out, in]` stored row-major and `xᵀ` `[in, rows]` with at most
/// [`DOT_ROWS`] rows, on a cubecl device in f32, with the naive kernel; `None` where that does not
/// apply (another device, dtype or shape; tensors tracked by autodiff) — the caller then uses
/// burn's matmul.
pub fn weight_times(w: &Tensor<2>, xt: &Tensor<2>) -> Option<Tensor<2>> {
    let [_, rows] = xt.dims();
    let f32s = w.dtype() == DType::F32 && xt.dtype() == DType::F32;
    if rows > DOT_ROWS || !f32s || w.is_autodiff() || xt.is_autodiff() {
        return None;
    }
    if blocked_products() {
        // (x wᵀ)ᵀ with x = (xᵀ)ᵀ: [1, 1, rows, in] times [1, 1, out, in].
        let x = four(xt.clone().transpose())?;
        let out = Tensor::<2>::empty([rows, w.dims()[0]], &w.device());
        launch_blocked(x, four(w.clone())?, None, four(out.clone())?, 1.0, false);
        return Some(out.transpose());
    }
    matmul_with(w.clone(), xt.clone(), Kernel::Naive).ok()
}

/// A matrix as a cubecl tensor `[1, 1, rows, cols]` (no copy), if it is on a cubecl device.
fn four(t: Tensor<2>) -> Option<CubeTensor> {
    t.unsqueeze::<4>().try_into_primitive::<Cube>().ok()
}

/// [`four`] of a cubecl matrix.
fn four_of(t: CubeTensor) -> Option<CubeTensor> {
    four(Tensor::<2>::from_primitive::<Cube>(t))
}

/// A cubecl vector `[n]` as `[1, 1, 1, n]` (no copy): a bias as [`launch_blocked`]'s `add`.
fn row4(v: CubeTensor) -> Option<CubeTensor> {
    Tensor::<1>::from_primitive::<Cube>(v)
        .unsqueeze::<4>()
        .try_into_primitive::<Cube>()
        .ok()
}

static BLOCKED_PRODUCTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether products use [`Kernel::Blocked`] from now on: encoding's ([`times_weight`], instead
/// of burn's tiled kernel), decoding's ([`weight_times`], [`linear_rows`], [`linear_gelu_rows`],
/// [`linear_rows3`], instead of the naive and dot kernels) and, for many queries, attention's
/// scores and weighted sums ([`attention`]). The web app turns it on for a software WebGPU
/// adapter (`isFallbackAdapter`, SwiftShader), where it is 18–27x faster than burn's at 200 rows
/// and 4–6x faster than the naive and dot kernels at one row (`gpu_matmul` example; lavapipe:
/// 1.6x slower at 200 rows; real GPUs unmeasured), so it is off by default.
pub fn use_blocked_products(on: bool) {
    BLOCKED_PRODUCTS.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn blocked_products() -> bool {
    BLOCKED_PRODUCTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// `x w` for `x` `[rows, in]` with more than [`DOT_ROWS`] rows and a weight `w` `[in, out]`
/// (typically the transpose of an `[out, in]` checkpoint matrix) with [`Kernel::Blocked`], when
/// [`use_blocked_products`] is on and both are f32 on a cubecl device untracked by
/// autodiff; `None` otherwise (the caller uses burn's matmul).
pub fn times_weight(x: &Tensor<2>, w: &Tensor<2>) -> Option<Tensor<2>> {
    let [rows, _] = x.dims();
    let f32s = w.dtype() == DType::F32 && x.dtype() == DType::F32;
    if !blocked_products() || rows <= DOT_ROWS || !f32s || w.is_autodiff() || x.is_autodiff() {
        return None;
    }
    matmul_with(x.clone(), w.clone(), Kernel::Blocked).ok()
}

/// `a b` with `kernel` if both are f32 tensors on a cubecl device (an error otherwise, or if the
/// kernel declines the shape).
pub fn matmul_with(a: Tensor<2>, b: Tensor<2>, kernel: Kernel) -> Result<Tensor<2>, String> {
    let [m, _] = a.dims();
    let [_, n] = b.dims();
    let device = a.device();
    let prim = |t: Tensor<2>| -> Result<CubeTensor, String> {
        t.try_into_primitive::<Cube>().map_err(|e| format!("{e:?}"))
    };
    // The operands first: a CPU tensor is turned away before an output is allocated.
    let (lhs, rhs) = (prim(a)?, prim(b)?);
    let out = prim(Tensor::<2>::empty([m, n], &device))?;
    let client = out.client.clone();
    if kernel == Kernel::Blocked {
        // `a` [m, k] times `b` [k, n] read as the [n, k] matrix it transposes (any strides),
        // both seen as one batch of one head (all three already on the cubecl device).
        let views = (
            four_of(lhs),
            four(Tensor::<2>::from_primitive::<Cube>(rhs).transpose()),
            four_of(out.clone()),
        );
        let (Some(x), Some(w), Some(out4)) = views else {
            return Err("not a cubecl tensor".into());
        };
        launch_blocked(x, w, None, out4, 1.0, false);
        return Ok(Tensor::from_primitive::<Cube>(out));
    }
    if kernel == Kernel::Dot {
        // out [m, n] written through its transpose: row r of bᵀ against row c of a.
        let t = |p: CubeTensor| -> Result<CubeTensor, String> {
            Tensor::<2>::from_primitive::<Cube>(p)
                .transpose()
                .try_into_primitive::<Cube>()
                .map_err(|e| format!("{e:?}"))
        };
        let (x, out_t) = (t(rhs)?, t(out.clone())?);
        let zeros = vector_of(&Tensor::<1>::zeros([m], &device)).ok_or("a zero bias")?;
        launch_dot(x, lhs, zeros, out_t, false);
        return Ok(Tensor::from_primitive::<Cube>(out));
    }
    let st = burn_backend::cubecl::dtype_to_storage_type(out.dtype);
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: st,
        rhs: st,
        out: st,
    });
    cubek::matmul::launch::launch_ref(
        &kernel.strategy(),
        &client,
        cubek::std::InputBinding::new(lhs.binding(), st),
        cubek::std::InputBinding::new(rhs.binding(), st),
        out.clone().binding(),
        &mut dtypes,
    )
    .map_err(|e| format!("{e:?}"))?;
    Ok(Tensor::from_primitive::<Cube>(out))
}

/// A tensor's values as a cubecl tensor `[rows, last axis]` (a copy only where the layout
/// needs one), if it is an f32 tensor on a cubecl device untracked by autodiff.
fn rows_of<const D: usize>(x: &Tensor<D>) -> Option<(CubeTensor, usize, usize)> {
    if x.dtype() != DType::F32 || x.is_autodiff() {
        return None;
    }
    let dims = x.dims();
    let width = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    if rows == 0 || width == 0 {
        return None;
    }
    // The device first: a CPU tensor is turned away before any reshape (a copy if strided).
    let prim = x.clone().try_into_primitive::<Cube>().ok()?;
    let prim = Tensor::<D>::from_primitive::<Cube>(prim)
        .reshape([rows, width])
        .try_into_primitive::<Cube>()
        .ok()?;
    Some((prim, rows, width))
}

/// [`blocked::xwt_kernel`] over `x` `[batch, heads, rows, k]`, `w` `[batch, heads, cols, k]`
/// and `out` `[batch, heads, rows, cols]` (any strides, shapes as the caller checked), with an
/// optional `add` `[batch, 1, 1, cols]` (a mask; a bias) added after `scale`, then GELU.
fn launch_blocked(
    x: CubeTensor,
    w: CubeTensor,
    add: Option<CubeTensor>,
    out: CubeTensor,
    scale: f32,
    then_gelu: bool,
) {
    let (dims, cols) = (x.meta.shape().clone(), w.meta.shape()[2]);
    let (tr, tc, count, dim) = blocked_grid(dims[2], cols, (dims[0] * dims[1]) as u32);
    let vector = vector_width(&[&x, &w]);
    let added = add.is_some();
    // Without one the kernel is handed `x` in its place and reads nothing of it.
    let add = add.unwrap_or_else(|| x.clone());
    let client = out.client.clone();
    // SAFETY: the kernel checks every index it writes against the output's shape and reads only
    // rows and columns it clamped to the inputs' shapes (and `add`'s columns it writes).
    unsafe {
        blocked::xwt_kernel::launch_unchecked(
            &client,
            count,
            dim,
            vector,
            x.into_tensor_arg(),
            w.into_tensor_arg(),
            add.into_tensor_arg(),
            out.into_tensor_arg(),
            scale,
            tr,
            tc,
            added,
            then_gelu,
        );
    }
}

/// Tile sizes, workgroup count and size of a [`blocked::xwt_kernel`] launch over `rows × cols`
/// outputs and `layers` batches.
fn blocked_grid(
    rows: usize,
    cols: usize,
    layers: u32,
) -> (
    usize,
    usize,
    cubecl::prelude::CubeCount,
    cubecl::prelude::CubeDim,
) {
    let rows = rows.max(1);
    // Fewer rows than a tile (decoding): a block of all of them, workgroups along the columns.
    let (tr, tc) = (rows.next_power_of_two().min(blocked::TILE), blocked::TILE);
    let row_blocks = rows.div_ceil(tr);
    let gy = row_blocks.min(blocked::GROUP as usize);
    let gx = (blocked::GROUP * blocked::GROUP) as usize / gy;
    let count = cubecl::prelude::CubeCount::Static(
        cols.div_ceil(tc * gx) as u32,
        row_blocks.div_ceil(gy) as u32,
        layers,
    );
    (
        tr,
        tc,
        count,
        cubecl::prelude::CubeDim::new_2d(gx as u32, gy as u32),
    )
}

/// Values of `k` per load in [`blocked::xwt_kernel`]: four where every operand is contiguous
/// along `k` and every other stride (of an axis longer than one) is a multiple of four (on
/// SwiftShader 1.2x faster at [200, 1024]·[1024, 1024]ᵀ, 96 -> 77 ms; 1.1x at one row,
/// 2.1 -> 1.85 ms), else one.
fn vector_width(operands: &[&CubeTensor]) -> usize {
    let fours = |t: &&CubeTensor| {
        let (shape, strides) = (t.meta.shape(), t.meta.strides());
        strides[3] == 1 && shape[3] % 4 == 0 && (0..3).all(|a| shape[a] == 1 || strides[a] % 4 == 0)
    };
    if operands.iter().all(fours) {
        4
    } else {
        1
    }
}

/// [`blocked::xwt3_kernel`]: `x` `[1, 1, rows, k]`, weights `[1, 1, cols, k]`, added vectors
/// `[1, 1, 1, cols]`, `out` `[1, 1, 3 · rows, cols]`.
fn launch_blocked3(x: CubeTensor, w: [CubeTensor; 3], add: [CubeTensor; 3], out: CubeTensor) {
    let (rows, cols) = (x.meta.shape()[2], w[0].meta.shape()[2]);
    let (tr, tc, count, dim) = blocked_grid(rows, cols, 3);
    let vector = vector_width(&[&x, &w[0], &w[1], &w[2]]);
    let client = out.client.clone();
    let [w0, w1, w2] = w;
    let [a0, a1, a2] = add;
    // SAFETY: as `launch_blocked`, the grid's third axis has exactly three layers, one per
    // weight and block of `rows` rows of `out`.
    unsafe {
        blocked::xwt3_kernel::launch_unchecked(
            &client,
            count,
            dim,
            vector,
            x.into_tensor_arg(),
            w0.into_tensor_arg(),
            w1.into_tensor_arg(),
            w2.into_tensor_arg(),
            a0.into_tensor_arg(),
            a1.into_tensor_arg(),
            a2.into_tensor_arg(),
            out.into_tensor_arg(),
            tr,
            tc,
        );
    }
}

fn vector_of(v: &Tensor<1>) -> Option<CubeTensor> {
    if v.dtype() != DType::F32 || v.is_autodiff() {
        return None;
    }
    v.clone().try_into_primitive::<Cube>().ok()
}

/// A 1-D launch of `n` invocations in groups of `per`, spread over two axes of the cube count
/// where one would exceed the 65,535 groups every adapter allows.
fn launch_1d(n: usize, per: u32) -> (cubecl::prelude::CubeCount, cubecl::prelude::CubeDim) {
    let groups = n.div_ceil(per as usize).max(1);
    let (x, y) = if groups <= 65_535 {
        (groups, 1)
    } else {
        (65_535, groups.div_ceil(65_535))
    };
    (
        cubecl::prelude::CubeCount::Static(x as u32, y as u32, 1),
        cubecl::prelude::CubeDim::new_1d(per),
    )
}

/// `(x − mean) / sqrt(var + eps) · γ + β` over the last axis (biased variance), as burn's
/// `LayerNorm` computes it, in one kernel (burn's composes about nine: two reductions and
/// element-wise steps). `None` where it does not apply (another device or dtype, autodiff).
pub fn layer_norm<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: Option<&Tensor<1>>,
    eps: f64,
) -> Option<Tensor<D>> {
    layer_norm_of(x, None, gamma, beta, eps)
}

/// [`layer_norm`] of `x + y` (a residual sum; `x` and `y` of the same shape), the sum inside the
/// kernel.
pub fn add_layer_norm<const D: usize>(
    x: &Tensor<D>,
    y: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: Option<&Tensor<1>>,
    eps: f64,
) -> Option<Tensor<D>> {
    if x.dims() != y.dims() {
        return None;
    }
    layer_norm_of(x, Some(y), gamma, beta, eps)
}

fn layer_norm_of<const D: usize>(
    x: &Tensor<D>,
    y: Option<&Tensor<D>>,
    gamma: &Tensor<1>,
    beta: Option<&Tensor<1>>,
    eps: f64,
) -> Option<Tensor<D>> {
    let (input, rows, width) = rows_of(x)?;
    // Without a `y` the kernel reads `x` in its place and adds nothing.
    let residual = match y {
        Some(y) => rows_of(y)?.0,
        None => input.clone(),
    };
    let gamma = vector_of(gamma)?;
    // No β: a zero vector (a fill, but LayerNorm without bias is not BART's).
    let beta = match beta {
        Some(b) => vector_of(b)?,
        None => vector_of(&Tensor::<1>::zeros([width], &x.device()))?,
    };
    if gamma.meta.shape()[0] != width || beta.meta.shape()[0] != width {
        return None;
    }
    let out = empty_rows(rows, width, &x.device())?;
    let (count, dim) = launch_1d(rows, 64);
    // SAFETY: the kernel returns for rows past the input's and reads only within each row.
    unsafe {
        rowwise::layer_norm_kernel::launch_unchecked(
            &out.client,
            count,
            dim,
            input.into_tensor_arg(),
            residual.into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            eps as f32,
            y.is_some(),
        );
    }
    Some(Tensor::<2>::from_primitive::<Cube>(out).reshape(x.dims()))
}

/// `softmax(x)` over the last axis (`exp(x − max) / Σ exp(x − max)`, as burn computes it) in one
/// kernel instead of five. `None` where it does not apply.
pub fn softmax_last<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
    let (input, rows, width) = rows_of(x)?;
    let out = empty_rows(rows, width, &x.device())?;
    let (count, dim) = launch_1d(rows, 64);
    // SAFETY: as for `layer_norm`.
    unsafe {
        rowwise::softmax_kernel::launch_unchecked(
            &out.client,
            count,
            dim,
            input.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
    }
    Some(Tensor::<2>::from_primitive::<Cube>(out).reshape(x.dims()))
}

/// GELU, exact (erf) form, `x (erf(x / √2) + 1) / 2` as burn composes it (same erf), in one
/// kernel instead of five. `None` where it does not apply.
pub fn gelu<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
    let (input, rows, width) = rows_of(x)?;
    let out = empty_rows(rows, width, &x.device())?;
    let (count, dim) = launch_1d(rows * width, 256);
    // SAFETY: the kernel returns for positions past the output's and reads the same position.
    unsafe {
        rowwise::gelu_kernel::launch_unchecked(
            &out.client,
            count,
            dim,
            input.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
    }
    Some(Tensor::<2>::from_primitive::<Cube>(out).reshape(x.dims()))
}

/// `x wᵀ + b` for `x` `[rows, in]` with at most [`DOT_ROWS`] rows, a weight `w` `[out, in]` and
/// a bias `[out]`, in one kernel ([`Kernel::Dot`]; burn: a product and a broadcast sum), as
/// `[rows, out]`. `None` where it does not apply (more rows, another device or dtype, autodiff).
pub fn linear_rows(x: &Tensor<2>, w: &Tensor<2>, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    linear_rows_then(x, w, bias, false)
}

/// [`linear_rows`] followed by GELU (exact form) in the same kernel: a feed-forward block's
/// first projection.
pub fn linear_gelu_rows(
    x: &Tensor<2>,
    w: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<2>> {
    linear_rows_then(x, w, bias, true)
}

fn linear_rows_then(
    x: &Tensor<2>,
    w: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    then_gelu: bool,
) -> Option<Tensor<2>> {
    let ([rows, d_in], [d_out, w_in]) = (x.dims(), w.dims());
    if rows > DOT_ROWS || d_in != w_in || w.dtype() != DType::F32 || w.is_autodiff() {
        return None;
    }
    let device = x.device();
    let (x, _, _) = rows_of(x)?;
    let w = w.clone().try_into_primitive::<Cube>().ok()?;
    let bias = bias_of(bias, d_out, &device)?;
    let out = empty_rows(rows, d_out, &device)?;
    if blocked_products() {
        let (x, w, bias, out4) = (four_of(x)?, four_of(w)?, row4(bias)?, four_of(out.clone())?);
        launch_blocked(x, w, Some(bias), out4, 1.0, then_gelu);
        return Some(Tensor::<2>::from_primitive::<Cube>(out));
    }
    launch_dot(x, w, bias, out.clone(), then_gelu);
    Some(Tensor::<2>::from_primitive::<Cube>(out))
}

/// Three [`linear_rows`] of the same `x` with weights of one shape in one kernel: `(x w_i +
/// b_i)` for `i` = 0, 1, 2 (a decoding step's query, key and value projections).
pub fn linear_rows3(
    x: &Tensor<2>,
    w: [&Tensor<2>; 3],
    bias: [Option<&Tensor<1>>; 3],
) -> Option<[Tensor<2>; 3]> {
    let [rows, d_in] = x.dims();
    let [d_out, w_in] = w[0].dims();
    let plain = |w: &&Tensor<2>| w.dtype() == DType::F32 && !w.is_autodiff();
    if rows > DOT_ROWS || w_in != d_in || !w.iter().all(|t| t.dims() == [d_out, d_in]) {
        return None;
    }
    if !w.iter().all(plain) {
        return None;
    }
    let device = x.device();
    let (x, _, _) = rows_of(x)?;
    let [w0, w1, w2] = w.map(|t| t.clone().try_into_primitive::<Cube>().ok());
    let [b0, b1, b2] = bias.map(|b| bias_of(b, d_out, &device));
    let out = empty_rows(3 * rows, d_out, &device)?;
    // Eight tensors and the metadata buffer: more storage buffers than WebGPU's default limit
    // (8); adapters commonly grant 10.
    if out.client.properties().hardware.max_bindings < 8 {
        return None;
    }
    if blocked_products() {
        launch_blocked3(
            four_of(x)?,
            [four_of(w0?)?, four_of(w1?)?, four_of(w2?)?],
            [row4(b0?)?, row4(b1?)?, row4(b2?)?],
            four_of(out.clone())?,
        );
        let out = Tensor::<2>::from_primitive::<Cube>(out);
        return Some([0, 1, 2].map(|z| out.clone().narrow(0, z * rows, rows)));
    }
    let count = cubecl::prelude::CubeCount::Static(d_out.div_ceil(64) as u32, rows as u32, 3);
    // SAFETY: as `launch_dot` (all three weights `[d_out, d_in]`, biases `[d_out]`),
    // the grid's third axis has exactly three layers, one per block of `rows` rows of `out`.
    unsafe {
        rowwise::dot3_kernel::launch_unchecked(
            &out.client,
            count,
            cubecl::prelude::CubeDim::new_1d(64),
            x.into_tensor_arg(),
            w0?.into_tensor_arg(),
            w1?.into_tensor_arg(),
            w2?.into_tensor_arg(),
            b0?.into_tensor_arg(),
            b1?.into_tensor_arg(),
            b2?.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
    }
    let out = Tensor::<2>::from_primitive::<Cube>(out);
    Some([0, 1, 2].map(|z| out.clone().narrow(0, z * rows, rows)))
}

/// A bias `[width]` as a cubecl vector (zeros where there is none).
fn bias_of(
    bias: Option<&Tensor<1>>,
    width: usize,
    device: &burn::tensor::Device,
) -> Option<CubeTensor> {
    let bias = match bias {
        Some(b) => vector_of(b)?,
        None => vector_of(&Tensor::<1>::zeros([width], device))?,
    };
    (bias.meta.shape()[0] == width).then_some(bias)
}

/// Rows `ids` of a table held as consecutive row blocks `parts` (`[rows_i, width]`; one part
/// for a whole table), times `scale`: `[ids, width]`, one kernel per part (burn: about eight
/// per part for the shift, clamp, gather and mask, and a sum). Ids outside the table give zero
/// rows. `None` where it does not apply (int ids other than i32, another dtype or device).
pub fn embed_rows(
    parts: &[Tensor<2>],
    ids: &Tensor<1, burn::tensor::Int>,
    scale: f32,
) -> Option<Tensor<2>> {
    let width = parts.first()?.dims()[1];
    let total: usize = parts.iter().map(|p| p.dims()[0]).sum();
    let plain = |p: &Tensor<2>| p.dims()[1] == width && p.dtype() == DType::F32;
    let [n] = ids.dims();
    if n == 0 || width == 0 || ids.dtype() != DType::I32 || total > i32::MAX as usize {
        return None;
    }
    if !parts.iter().all(plain) || parts.iter().any(|p| p.is_autodiff()) {
        return None;
    }
    let device = ids.device();
    let ids = ids.clone().try_into_primitive::<Cube>().ok()?;
    let out = empty_rows(n, width, &device)?;
    let mut start = 0;
    for (i, part) in parts.iter().enumerate() {
        let table = part.clone().try_into_primitive::<Cube>().ok()?;
        let (count, dim) = launch_1d(n * width, 256);
        // SAFETY: the kernel returns for positions past the output's, reads one id per row
        // and table rows only for ids inside this part (`start ..< start + rows`).
        unsafe {
            rowwise::gather_kernel::launch_unchecked(
                &out.client,
                count,
                dim,
                table.into_tensor_arg(),
                ids.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                start as u32,
                total as u32,
                scale,
                i == 0,
            );
        }
        start += part.dims()[0];
    }
    Some(Tensor::<2>::from_primitive::<Cube>(out))
}

/// Keys [`attention`] handles in one kernel (its workgroup memory: 4 KiB of scores; BART's
/// positions stop at 1,024); more go to three kernels.
pub const ATTENTION_MAX_KEYS: usize = 1024;
/// Units per workgroup of the one-kernel attention.
const ATTENTION_UNITS: u32 = 64;

/// Multi-head attention `softmax(q kᵀ · scale + mask) v`, heads merged, in one kernel (up to
/// [`DOT_ROWS`] queries and [`ATTENTION_MAX_KEYS`] keys; one workgroup per query and head) or
/// three (scores, softmax,
/// weighted sum), where burn takes about ten with the copies that split and merge the heads, the
/// scaling and the mask sum; the keys and values are read where they lie.
///
/// `q` `[queries, heads · head_dim]`; `k`, `v` `[inputs, heads, keys, head_dim]` (any strides);
/// each input has `queries / inputs` consecutive queries (the beams of one input attend to its
/// encoder output together); `mask`, added to the scores, `[inputs, 1, 1, keys]`. Returns
/// `[queries, heads · head_dim]`; `None` where it does not apply (other shapes, such as a causal
/// mask; another device or dtype; autodiff).
pub fn attention(
    q: &Tensor<2>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<4>>,
    scale: f64,
) -> Option<Tensor<2>> {
    let [inputs, heads, keys, head_dim] = k.dims();
    let [queries, width] = q.dims();
    if v.dims() != k.dims()
        || width != heads * head_dim
        || inputs == 0
        || keys == 0
        || queries % inputs != 0
        || mask.is_some_and(|m| m.dims() != [inputs, 1, 1, keys])
    {
        return None;
    }
    let device = q.device();
    let (q, _, _) = rows_of(q)?;
    let (k, v) = (tensor_of(k)?, tensor_of(v)?);
    // Without a mask the kernel is handed the keys in its place and reads nothing of them.
    let mask_arg = match mask {
        Some(m) => tensor_of(m)?,
        None => k.clone(),
    };
    // One kernel for decoding's few queries; for many (encoding) every unit's pass over all the
    // scores for their maximum and sum makes it slower than three (lavapipe: 3.5x).
    if keys <= ATTENTION_MAX_KEYS && queries <= DOT_ROWS {
        let out = empty_rows(queries, width, &device)?;
        // SAFETY: workgroups past `queries · heads` return at once (all their units alike); the
        // rest read `q`, `k`, `v` and the mask within the shapes checked above and index their
        // workgroup memory below `keys` ≤ its length.
        unsafe {
            attend::fused_kernel::launch_unchecked(
                &out.client,
                cubecl::prelude::CubeCount::Static((queries * heads) as u32, 1, 1),
                cubecl::prelude::CubeDim::new_1d(ATTENTION_UNITS),
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                mask_arg.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                scale as f32,
                mask.is_some(),
                ATTENTION_MAX_KEYS,
            );
        }
        return Some(Tensor::<2>::from_primitive::<Cube>(out));
    }
    if blocked_products() && queries > DOT_ROWS {
        return blocked_attention(q, k, v, mask.map(|_| mask_arg), scale, inputs, head_dim);
    }
    let scores = empty_rows(queries * heads, keys, &device)?;
    let (count, dim) = launch_1d(queries * heads * keys, 64);
    // SAFETY: the kernel returns for positions past the scores' and reads `q`, `k` and the mask
    // within the shapes checked above.
    unsafe {
        attend::scores_kernel::launch_unchecked(
            &scores.client,
            count,
            dim,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            mask_arg.into_tensor_arg(),
            scores.clone().into_tensor_arg(),
            scale as f32,
            mask.is_some(),
        );
    }
    let weights = softmax_last(&Tensor::<2>::from_primitive::<Cube>(scores))?;
    let weights = weights.try_into_primitive::<Cube>().ok()?;
    let out = empty_rows(queries, width, &device)?;
    let (count, dim) = launch_1d(queries * width, 64);
    // SAFETY: the kernel returns for positions past the output's and reads rows of the weights
    // and `v` within the shapes checked above.
    unsafe {
        attend::weighted_kernel::launch_unchecked(
            &out.client,
            count,
            dim,
            weights.into_tensor_arg(),
            v.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
    }
    Some(Tensor::<2>::from_primitive::<Cube>(out))
}

/// [`attention`]'s three kernels with the scores and the weighted sums as batched products on
/// [`blocked::xwt_kernel`] (one per head and input), for many queries on a software adapter:
/// `q` `[queries, heads · head_dim]` rows, `k`, `v` `[inputs, heads, keys, head_dim]`.
fn blocked_attention(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: Option<CubeTensor>,
    scale: f64,
    inputs: usize,
    head_dim: usize,
) -> Option<Tensor<2>> {
    let prim = |t: Tensor<4>| t.try_into_primitive::<Cube>().ok();
    let [_, heads, keys, _] = k.meta.shape().dims::<4>();
    let [queries, width] = q.meta.shape().dims::<2>();
    let per = queries / inputs;
    let device = Tensor::<4>::from_primitive::<Cube>(k.clone()).device();
    // Queries, scores and outputs are rows `b · per + r`, their head's part `h`: seen as
    // `[inputs, heads, per, ·]` without a copy.
    let by_head = |t: Tensor<2>, last: usize| t.reshape([inputs, per, heads, last]).swap_dims(1, 2);
    let q4 = by_head(Tensor::<2>::from_primitive::<Cube>(q), head_dim);
    let scores = Tensor::<2>::empty([queries * heads, keys], &device);
    let scores4 = prim(by_head(scores.clone(), keys))?;
    launch_blocked(prim(q4)?, k, mask, scores4, scale as f32, false);
    let weights = softmax_last(&scores)?;
    let out = Tensor::<2>::empty([queries, width], &device);
    let v_t = Tensor::<4>::from_primitive::<Cube>(v).swap_dims(2, 3);
    launch_blocked(
        prim(by_head(weights, keys))?,
        prim(v_t)?,
        None,
        prim(by_head(out.clone(), head_dim))?,
        1.0,
        false,
    );
    Some(out)
}

/// Keys and values of a decoding cache with the new ones appended along their length axis:
/// `[k_old | k_new]`, `[v_old | v_new]` (`[batch, heads, len, head_dim]`, any strides) in one
/// kernel for both (burn: an allocation and two copies each), as contiguous tensors. `None`
/// where it does not apply.
pub fn append_keys_values(
    k_old: &Tensor<4>,
    k_new: &Tensor<4>,
    v_old: &Tensor<4>,
    v_new: &Tensor<4>,
) -> Option<(Tensor<4>, Tensor<4>)> {
    let [b, h, past, e] = k_old.dims();
    let [nb, nh, n, ne] = k_new.dims();
    if (nb, nh, ne) != (b, h, e) || v_old.dims() != k_old.dims() || v_new.dims() != k_new.dims() {
        return None;
    }
    let device = k_old.device();
    let shape = [b, h, past + n, e];
    let prims = [k_old, k_new, v_old, v_new].map(tensor_of);
    let [Some(ko), Some(kn), Some(vo), Some(vn)] = prims else {
        return None;
    };
    let empty = || {
        Tensor::<4>::empty(shape, &device)
            .try_into_primitive::<Cube>()
            .ok()
    };
    let (k, v) = (empty()?, empty()?);
    let (count, dim) = launch_1d(shape.iter().product(), 256);
    // SAFETY: the kernel returns for positions past the outputs' (both of `shape`) and reads the
    // old rows below `past` and the new ones below `n`, shapes checked above.
    unsafe {
        attend::append_kernel::launch_unchecked(
            &k.client,
            count,
            dim,
            ko.into_tensor_arg(),
            kn.into_tensor_arg(),
            vo.into_tensor_arg(),
            vn.into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
        );
    }
    Some((
        Tensor::from_primitive::<Cube>(k),
        Tensor::from_primitive::<Cube>(v),
    ))
}

/// A tensor as a cubecl tensor as it lies (any strides), if it is f32 on a cubecl device and
/// untracked by autodiff.
fn tensor_of<const D: usize>(x: &Tensor<D>) -> Option<CubeTensor> {
    if x.dtype() != DType::F32 || x.is_autodiff() || x.dims().contains(&0) {
        return None;
    }
    x.clone().try_into_primitive::<Cube>().ok()
}

/// An uninitialised `[rows, width]` f32 output on `device`'s cubecl client.
fn empty_rows(rows: usize, width: usize, device: &burn::tensor::Device) -> Option<CubeTensor> {
    Tensor::<2>::empty([rows, width], device)
        .try_into_primitive::<Cube>()
        .ok()
}

/// `out[r, c] = x[r, ·] · w[c, ·] + bias[c]` for `rows × cols` outputs (any strides).
fn launch_dot(x: CubeTensor, w: CubeTensor, bias: CubeTensor, out: CubeTensor, then_gelu: bool) {
    let client = out.client.clone();
    let (rows, cols) = (x.meta.shape()[0], w.meta.shape()[0]);
    // SAFETY: the kernel returns for outputs past `x`'s rows and `w`'s rows, writes `out` and
    // reads `bias` at columns below `w`'s rows (callers pass an `out` and `bias` that wide) and
    // reads only rows of `x` and `w` below their shapes, along their common length.
    unsafe {
        rowwise::dot_kernel::launch_unchecked(
            &client,
            cubecl::prelude::CubeCount::Static(cols.div_ceil(64) as u32, rows as u32, 1),
            cubecl::prelude::CubeDim::new_1d(64),
            x.into_tensor_arg(),
            w.into_tensor_arg(),
            bias.into_tensor_arg(),
            out.into_tensor_arg(),
            then_gelu,
        );
    }
}

mod rowwise {
    use cubecl::prelude::*;

    /// One invocation per row of `x` `[rows, width]` (any strides); with `add`, of `x + y`.
    #[cube(launch_unchecked)]
    pub fn layer_norm_kernel(
        x: &Tensor<f32>,
        y: &Tensor<f32>,
        gamma: &Tensor<f32>,
        beta: &Tensor<f32>,
        out: &mut Tensor<f32>,
        eps: f32,
        #[comptime] add: bool,
    ) {
        let r = ABSOLUTE_POS;
        if r >= x.shape(0) {
            terminate!();
        }
        let width = x.shape(1);
        let (xs, x0) = (x.stride(1), r * x.stride(0));
        let (ys, y0) = (y.stride(1), r * y.stride(0));
        let mut sum = f32::new(0.0);
        for k in 0..width {
            sum += value(x, y, x0 + k * xs, y0 + k * ys, add);
        }
        let n = f32::cast_from(width);
        let mean = sum / n;
        let mut sq = f32::new(0.0);
        for k in 0..width {
            let c = value(x, y, x0 + k * xs, y0 + k * ys, add) - mean;
            sq += c * c;
        }
        let denom = f32::sqrt(sq / n + eps);
        let (gs, bs) = (gamma.stride(0), beta.stride(0));
        let (os, o0) = (out.stride(1), r * out.stride(0));
        for k in 0..width {
            let c = value(x, y, x0 + k * xs, y0 + k * ys, add) - mean;
            out[o0 + k * os] = c / denom * gamma[k * gs] + beta[k * bs];
        }
    }

    #[cube]
    fn value(x: &Tensor<f32>, y: &Tensor<f32>, i: usize, j: usize, #[comptime] add: bool) -> f32 {
        let mut v = x[i];
        if add {
            v += y[j];
        }
        v
    }

    /// `out[r, c] = Σ_k x[r, k] w[c, k] + bias[c]` (then GELU), one invocation per output (any
    /// strides); four partial sums along `k`.
    #[cube(launch_unchecked)]
    pub fn dot_kernel(
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        bias: &Tensor<f32>,
        out: &mut Tensor<f32>,
        #[comptime] then_gelu: bool,
    ) {
        let c = ABSOLUTE_POS_X as usize;
        let r = ABSOLUTE_POS_Y as usize;
        if r >= x.shape(0) || c >= w.shape(0) {
            terminate!();
        }
        dot_into(x, w, bias, out, r, r, c, then_gelu);
    }

    /// [`dot_kernel`] for three weights of one shape at once (`ABSOLUTE_POS_Z` = `z` picks
    /// one), writing rows `z · rows ..` of `out` `[3 · rows, cols]`: the query, key and value
    /// projections of a decoding step in one dispatch (eight buffers with its metadata's).
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn dot3_kernel(
        x: &Tensor<f32>,
        w0: &Tensor<f32>,
        w1: &Tensor<f32>,
        w2: &Tensor<f32>,
        b0: &Tensor<f32>,
        b1: &Tensor<f32>,
        b2: &Tensor<f32>,
        out: &mut Tensor<f32>,
    ) {
        let c = ABSOLUTE_POS_X as usize;
        let r = ABSOLUTE_POS_Y as usize;
        let z = ABSOLUTE_POS_Z as usize;
        let rows = x.shape(0);
        if r >= rows || c >= w0.shape(0) {
            terminate!();
        }
        let row = z * rows + r;
        if z == 0 {
            dot_into(x, w0, b0, out, r, row, c, false);
        } else if z == 1 {
            dot_into(x, w1, b1, out, r, row, c, false);
        } else {
            dot_into(x, w2, b2, out, r, row, c, false);
        }
    }

    /// `out[row, c] = x[r, ·] · w[c, ·] + bias[c]` (then GELU), the dot
    /// product in four partial sums.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn dot_into(
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        bias: &Tensor<f32>,
        out: &mut Tensor<f32>,
        r: usize,
        row: usize,
        c: usize,
        #[comptime] then_gelu: bool,
    ) {
        let depth = x.shape(1);
        let (xs, ws) = (x.stride(1), w.stride(1));
        let (x0, w0) = (r * x.stride(0), c * w.stride(0));
        let mut a0 = f32::new(0.0);
        let mut a1 = f32::new(0.0);
        let mut a2 = f32::new(0.0);
        let mut a3 = f32::new(0.0);
        let quads = depth / 4;
        for q in 0..quads {
            let k = q * 4;
            a0 += x[x0 + k * xs] * w[w0 + k * ws];
            a1 += x[x0 + (k + 1) * xs] * w[w0 + (k + 1) * ws];
            a2 += x[x0 + (k + 2) * xs] * w[w0 + (k + 2) * ws];
            a3 += x[x0 + (k + 3) * xs] * w[w0 + (k + 3) * ws];
        }
        for k in quads * 4..depth {
            a0 += x[x0 + k * xs] * w[w0 + k * ws];
        }
        let mut y = (a0 + a1) + (a2 + a3) + bias[c * bias.stride(0)];
        if then_gelu {
            y = gelu_of(y);
        }
        let o = row * out.stride(0) + c * out.stride(1);
        out[o] = y;
    }

    /// GELU, exact (erf) form: `v (erf(v / √2) + 1) / 2`.
    #[cube]
    pub(super) fn gelu_of(v: f32) -> f32 {
        let e = Erf::erf(v / f32::new(std::f32::consts::SQRT_2));
        v * (e + f32::new(1.0)) / f32::new(2.0)
    }

    /// `out[r, ·] = table[ids[r] - start, ·] · scale` for the rows whose id lies in this part of
    /// a table split into row blocks (`start ..< start + table rows`), one invocation per value;
    /// with `first`, also zeros for ids outside `0 ..< total` (no part holds them).
    #[cube(launch_unchecked)]
    pub fn gather_kernel(
        table: &Tensor<f32>,
        ids: &Tensor<i32>,
        out: &mut Tensor<f32>,
        start: u32,
        total: u32,
        scale: f32,
        #[comptime] first: bool,
    ) {
        let pos = ABSOLUTE_POS;
        let width = out.shape(1);
        if pos >= out.shape(0) * width {
            terminate!();
        }
        let (r, c) = (pos / width, pos % width);
        let id = ids[r * ids.stride(0)];
        let o = r * out.stride(0) + c * out.stride(1);
        if id >= start as i32 && id < (start as i32) + (table.shape(0) as i32) {
            let t = (id - start as i32) as usize;
            out[o] = table[t * table.stride(0) + c * table.stride(1)] * scale;
        } else if first && (id < 0 || id >= total as i32) {
            out[o] = f32::new(0.0);
        }
    }

    /// One invocation per row of `x` `[rows, width]` (any strides).
    #[cube(launch_unchecked)]
    pub fn softmax_kernel(x: &Tensor<f32>, out: &mut Tensor<f32>) {
        let r = ABSOLUTE_POS;
        if r >= x.shape(0) {
            terminate!();
        }
        let width = x.shape(1);
        let (xs, x0) = (x.stride(1), r * x.stride(0));
        let mut max = x[x0];
        for k in 1..width {
            max = f32::max(max, x[x0 + k * xs]);
        }
        let mut sum = f32::new(0.0);
        for k in 0..width {
            sum += f32::exp(x[x0 + k * xs] - max);
        }
        let (os, o0) = (out.stride(1), r * out.stride(0));
        for k in 0..width {
            out[o0 + k * os] = f32::exp(x[x0 + k * xs] - max) / sum;
        }
    }

    /// One invocation per value of `x` `[rows, width]` (any strides; `out` contiguous).
    #[cube(launch_unchecked)]
    pub fn gelu_kernel(x: &Tensor<f32>, out: &mut Tensor<f32>) {
        let i = ABSOLUTE_POS;
        let width = x.shape(1);
        if i >= x.shape(0) * width {
            terminate!();
        }
        out[i] = gelu_of(x[(i / width) * x.stride(0) + (i % width) * x.stride(1)]);
    }
}

mod attend {
    use cubecl::prelude::*;

    /// `scores[i, h, t] = Σ_e (q[i, h·E + e] · scale) k[b, h, t, e] (+ mask[b, 0, 0, t])` with
    /// `b = i / (queries / inputs)`, one invocation per score; `k` `[inputs, heads, keys, E]` and
    /// the mask any strides, `scores` `[queries · heads, keys]` contiguous.
    #[cube(launch_unchecked)]
    pub fn scores_kernel(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        mask: &Tensor<f32>,
        scores: &mut Tensor<f32>,
        scale: f32,
        #[comptime] masked: bool,
    ) {
        let pos = ABSOLUTE_POS;
        let (heads, keys, depth) = (k.shape(1), k.shape(2), k.shape(3));
        let queries = q.shape(0);
        if pos >= queries * heads * keys {
            terminate!();
        }
        let t = pos % keys;
        let h = (pos / keys) % heads;
        let i = pos / (keys * heads);
        let b = i / (queries / k.shape(0));
        let (qs, q0) = (q.stride(1), i * q.stride(0) + h * depth * q.stride(1));
        let (ks, k0) = (
            k.stride(3),
            b * k.stride(0) + h * k.stride(1) + t * k.stride(2),
        );
        let mut sum = f32::new(0.0);
        for e in 0..depth {
            sum += (q[q0 + e * qs] * scale) * k[k0 + e * ks];
        }
        if masked {
            sum += mask[b * mask.stride(0) + t * mask.stride(3)];
        }
        scores[pos] = sum;
    }

    /// `out[i, h·E + e] = Σ_t weights[i·heads + h, t] v[b, h, t, e]`, one invocation per output
    /// value; `v` any strides, `weights` `[queries · heads, keys]`, `out` contiguous.
    #[cube(launch_unchecked)]
    pub fn weighted_kernel(weights: &Tensor<f32>, v: &Tensor<f32>, out: &mut Tensor<f32>) {
        let pos = ABSOLUTE_POS;
        let (heads, keys, depth) = (v.shape(1), v.shape(2), v.shape(3));
        let queries = weights.shape(0) / heads;
        if pos >= queries * heads * depth {
            terminate!();
        }
        let e = pos % depth;
        let h = (pos / depth) % heads;
        let i = pos / (depth * heads);
        let b = i / (queries / v.shape(0));
        let (ws, w0) = (weights.stride(1), (i * heads + h) * weights.stride(0));
        let (vs, v0) = (
            v.stride(2),
            b * v.stride(0) + h * v.stride(1) + e * v.stride(3),
        );
        let mut sum = f32::new(0.0);
        for t in 0..keys {
            sum += weights[w0 + t * ws] * v[v0 + t * vs];
        }
        out[pos] = sum;
    }

    /// The whole of [`super::attention`] for one query and head per workgroup (`CUBE_POS` =
    /// `i · heads + h`), its units sharing the scores in workgroup memory: each unit computes the
    /// scores of keys `unit, unit + units, …` as [`scores_kernel`] does, every unit then takes
    /// their maximum and sum in key order as `softmax_kernel` does and normalises its own keys,
    /// and each unit sums `v` for values `e = unit, unit + units, …` as [`weighted_kernel`]
    /// does — the three kernels' arithmetic in one dispatch. At most `max_keys` keys.
    #[cube(launch_unchecked)]
    pub fn fused_kernel(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        v: &Tensor<f32>,
        mask: &Tensor<f32>,
        out: &mut Tensor<f32>,
        scale: f32,
        #[comptime] masked: bool,
        #[comptime] max_keys: usize,
    ) {
        let (heads, keys, depth) = (k.shape(1), k.shape(2), k.shape(3));
        let queries = q.shape(0);
        let row = CUBE_POS;
        if row >= queries * heads {
            terminate!();
        }
        let h = row % heads;
        let i = row / heads;
        let b = i / (queries / k.shape(0));
        let unit = UNIT_POS as usize;
        let units = CUBE_DIM as usize;
        let mut p = Shared::<[f32]>::new_slice(max_keys);
        let (qs, q0) = (q.stride(1), i * q.stride(0) + h * depth * q.stride(1));
        let mut t = unit;
        while t < keys {
            let k0 = b * k.stride(0) + h * k.stride(1) + t * k.stride(2);
            let mut sum = f32::new(0.0);
            for e in 0..depth {
                sum += (q[q0 + e * qs] * scale) * k[k0 + e * k.stride(3)];
            }
            if masked {
                sum += mask[b * mask.stride(0) + t * mask.stride(3)];
            }
            p[t] = sum;
            t += units;
        }
        sync_cube();
        let mut max = p[0];
        for t in 1..keys {
            max = f32::max(max, p[t]);
        }
        let mut total = f32::new(0.0);
        for t in 0..keys {
            total += f32::exp(p[t] - max);
        }
        sync_cube();
        let mut t = unit;
        while t < keys {
            p[t] = f32::exp(p[t] - max) / total;
            t += units;
        }
        sync_cube();
        let mut e = unit;
        while e < depth {
            let v0 = b * v.stride(0) + h * v.stride(1) + e * v.stride(3);
            let mut sum = f32::new(0.0);
            for t in 0..keys {
                sum += p[t] * v[v0 + t * v.stride(2)];
            }
            let o = i * out.stride(0) + (h * depth + e) * out.stride(1);
            out[o] = sum;
            e += units;
        }
    }

    /// `k = [k_old | k_new]`, `v = [v_old | v_new]` along axis 2 of `[batch, heads, len, E]`
    /// (inputs any strides, outputs contiguous), one invocation per value of each output.
    #[cube(launch_unchecked)]
    pub fn append_kernel(
        k_old: &Tensor<f32>,
        k_new: &Tensor<f32>,
        v_old: &Tensor<f32>,
        v_new: &Tensor<f32>,
        k: &mut Tensor<f32>,
        v: &mut Tensor<f32>,
    ) {
        let pos = ABSOLUTE_POS;
        let (heads, len, depth) = (k.shape(1), k.shape(2), k.shape(3));
        if pos >= k.shape(0) * heads * len * depth {
            terminate!();
        }
        let e = pos % depth;
        let t = (pos / depth) % len;
        let h = (pos / (depth * len)) % heads;
        let b = pos / (depth * len * heads);
        let past = k_old.shape(2);
        if t < past {
            k[pos] = k_old[at(k_old, b, h, t, e)];
            v[pos] = v_old[at(v_old, b, h, t, e)];
        } else {
            k[pos] = k_new[at(k_new, b, h, t - past, e)];
            v[pos] = v_new[at(v_new, b, h, t - past, e)];
        }
    }

    #[cube]
    fn at(x: &Tensor<f32>, b: usize, h: usize, t: usize, e: usize) -> usize {
        b * x.stride(0) + h * x.stride(1) + t * x.stride(2) + e * x.stride(3)
    }
}

mod blocked {
    use super::rowwise::gelu_of;
    use cubecl::prelude::*;

    /// Outputs per invocation of [`xwt_kernel`] along each axis as launched by `launch_blocked`:
    /// on SwiftShader 8 × 8 took 114–169 ms for [200, 1024]·[1024, 1024]ᵀ against 255–263 ms for
    /// 4 × 4 (8 × 16: 139–143, 16 × 8: 176, 1 × 16: 430).
    pub const TILE: usize = 8;
    /// Invocations per workgroup along each axis.
    pub const GROUP: u32 = 8;

    /// `out[b, h, r, c] = scale · Σ_k x[b, h, r, k] w[b, h, c, k] (+ add[b, 0, 0, c])` (then
    /// GELU) (batched `x · wᵀ`, any strides; `ABSOLUTE_POS_Z` = `b · heads + h`; `add` a mask or
    /// a bias), each invocation a block of
    /// `tr × tc` outputs held in registers: per step of `k` it reads `tr` vectors of `x` and `tc`
    /// of `w` (of `N` consecutive values of `k`: 4 where the launch found the layout allows it,
    /// else 1) for `tr · tc` dot products. No shared memory or barriers.
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn xwt_kernel<N: Size>(
        x: &Tensor<Vector<f32, N>>,
        w: &Tensor<Vector<f32, N>>,
        add: &Tensor<f32>,
        out: &mut Tensor<f32>,
        scale: f32,
        #[comptime] tr: usize,
        #[comptime] tc: usize,
        #[comptime] added: bool,
        #[comptime] then_gelu: bool,
    ) {
        let z = ABSOLUTE_POS_Z as usize;
        let (b, h) = (z / x.shape(1), z % x.shape(1));
        if ABSOLUTE_POS_Y as usize * tr >= x.shape(2)
            || ABSOLUTE_POS_X as usize * tc >= w.shape(2)
            || b >= x.shape(0)
        {
            terminate!();
        }
        xwt_block::<N>(x, w, add, out, b, h, 0, scale, tr, tc, added, then_gelu);
    }

    /// Three [`xwt_kernel`]s of one `x` `[1, 1, rows, k]` in one dispatch (`ABSOLUTE_POS_Z` picks
    /// the weight and added vector): `out` `[1, 1, 3 · rows, cols]` holds `x · w_zᵀ + add_z` in
    /// rows `z · rows ..`. A decoding step's query, key and value projections.
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn xwt3_kernel<N: Size>(
        x: &Tensor<Vector<f32, N>>,
        w0: &Tensor<Vector<f32, N>>,
        w1: &Tensor<Vector<f32, N>>,
        w2: &Tensor<Vector<f32, N>>,
        add0: &Tensor<f32>,
        add1: &Tensor<f32>,
        add2: &Tensor<f32>,
        out: &mut Tensor<f32>,
        #[comptime] tr: usize,
        #[comptime] tc: usize,
    ) {
        let z = ABSOLUTE_POS_Z as usize;
        let rows = x.shape(2);
        if ABSOLUTE_POS_Y as usize * tr >= rows || ABSOLUTE_POS_X as usize * tc >= w0.shape(2) {
            terminate!();
        }
        if z == 0 {
            xwt_block::<N>(x, w0, add0, out, 0, 0, 0, 1.0, tr, tc, true, false);
        } else if z == 1 {
            xwt_block::<N>(x, w1, add1, out, 0, 0, rows, 1.0, tr, tc, true, false);
        } else {
            xwt_block::<N>(x, w2, add2, out, 0, 0, 2 * rows, 1.0, tr, tc, true, false);
        }
    }

    /// The block of [`xwt_kernel`] at this invocation's position (in range) for batch `b` and
    /// head `h`, written `out_row` rows further down `out`.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn xwt_block<N: Size>(
        x: &Tensor<Vector<f32, N>>,
        w: &Tensor<Vector<f32, N>>,
        add: &Tensor<f32>,
        out: &mut Tensor<f32>,
        b: usize,
        h: usize,
        out_row: usize,
        scale: f32,
        #[comptime] tr: usize,
        #[comptime] tc: usize,
        #[comptime] added: bool,
        #[comptime] then_gelu: bool,
    ) {
        // Shapes and strides count values; indices count vectors of `n` values along `k` (`n`
        // divides every stride but the last, which is then 1, so a step of `k` is one vector
        // either way).
        let n = x.vector_size();
        let rows = x.shape(2);
        let cols = w.shape(2);
        let depth = x.shape(3) / n;
        let r0 = ABSOLUTE_POS_Y as usize * tr;
        let c0 = ABSOLUTE_POS_X as usize * tc;
        let (xs, ws) = (x.stride(3), w.stride(3));
        let x0 = b * x.stride(0) + h * x.stride(1);
        let w0 = b * w.stride(0) + h * w.stride(1);
        // Rows and columns past the edge read the last one (their sums are not written).
        let mut xo = Array::<usize>::new(tr);
        #[unroll]
        for i in 0..tr {
            xo[i] = (x0 + select(r0 + i >= rows, rows - 1, r0 + i) * x.stride(2)) / n;
        }
        let mut wo = Array::<usize>::new(tc);
        #[unroll]
        for j in 0..tc {
            wo[j] = (w0 + select(c0 + j >= cols, cols - 1, c0 + j) * w.stride(2)) / n;
        }
        let mut acc = Array::<f32>::new(tr * tc);
        #[unroll]
        for i in 0..tr * tc {
            acc[i] = f32::new(0.0);
        }
        let mut xv = Array::<Vector<f32, N>>::new(tr);
        let mut wv = Array::<Vector<f32, N>>::new(tc);
        for k in 0..depth {
            #[unroll]
            for i in 0..tr {
                xv[i] = x[xo[i] + k * xs];
            }
            #[unroll]
            for j in 0..tc {
                wv[j] = w[wo[j] + k * ws];
            }
            #[unroll]
            for i in 0..tr {
                #[unroll]
                for j in 0..tc {
                    acc[i * tc + j] += xv[i].dot(wv[j]);
                }
            }
        }
        let o0 = b * out.stride(0) + h * out.stride(1);
        let (os2, os3) = (out.stride(2), out.stride(3));
        #[unroll]
        for j in 0..tc {
            if c0 + j < cols {
                let mut plus = f32::new(0.0);
                if added {
                    plus = add[b * add.stride(0) + (c0 + j) * add.stride(3)];
                }
                #[unroll]
                for i in 0..tr {
                    if r0 + i < rows {
                        let mut y = acc[i * tc + j] * scale + plus;
                        if then_gelu {
                            y = gelu_of(y);
                        }
                        out[o0 + (out_row + r0 + i) * os2 + (c0 + j) * os3] = y;
                    }
                }
            }
        }
    }
}
