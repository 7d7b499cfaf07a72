//! Products on a cubecl device (WebGPU in the browser, Vulkan / CUDA natively) with a kernel
//! chosen for their shape.
//!
//! Without autotune (the browser build has none: it would time every candidate kernel on the
//! user's device) burn 0.22 multiplies everything with one general tiled kernel. For a decoding
//! step — a weight `[out, in]` times a few rows — that kernel is 4-19x slower than cubek's naive
//! one (one invocation per output, a dot product along a contiguous weight row) on the two
//! CPU-emulated adapters here, SwiftShader (headless Chromium's WebGPU) and lavapipe
//! (`cargo run --release -p bartleby --features wgpu --example gpu_matmul`, docs/benchmarks.md).
//! Products with many rows (encoding, training) keep burn's kernel, except on a software adapter
//! where the web app turns on [`use_blocked_for_many_rows`].

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
    /// [`blocked::xwt_kernel`]: 4 × 4 outputs per invocation, no shared memory.
    Blocked,
}

impl Kernel {
    pub const ALL: [Kernel; 9] = [
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
            Kernel::Blocked => unreachable!("not a cubek kernel"),
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
    matmul_with(w.clone(), xt.clone(), Kernel::Naive).ok()
}

static BLOCKED_FOR_MANY_ROWS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether products with more than [`DOT_ROWS`] rows ([`times_weight`]: encoding) use
/// [`Kernel::Blocked`] instead of burn's tiled kernel from now on. The web app turns it on for a
/// software WebGPU adapter (`isFallbackAdapter`, SwiftShader), where it is 8.5x faster at 200
/// rows; on lavapipe it is 1.6x slower and on real GPUs unmeasured, so it is off by default.
pub fn use_blocked_for_many_rows(on: bool) {
    BLOCKED_FOR_MANY_ROWS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `x w` for `x` `[rows, in]` with more than [`DOT_ROWS`] rows and a weight `w` `[in, out]`
/// (typically the transpose of an `[out, in]` checkpoint matrix) with [`Kernel::Blocked`], when
/// [`use_blocked_for_many_rows`] is on and both are f32 on a cubecl device untracked by
/// autodiff; `None` otherwise (the caller uses burn's matmul).
pub fn times_weight(x: &Tensor<2>, w: &Tensor<2>) -> Option<Tensor<2>> {
    let [rows, _] = x.dims();
    let f32s = w.dtype() == DType::F32 && x.dtype() == DType::F32;
    let on = BLOCKED_FOR_MANY_ROWS.load(std::sync::atomic::Ordering::Relaxed);
    if !on || rows <= DOT_ROWS || !f32s || w.is_autodiff() || x.is_autodiff() {
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
        // `a` [m, k] times `b` [k, n] read as the [n, k] matrix it transposes (any strides).
        let w_rows = Tensor::<2>::from_primitive::<Cube>(rhs)
            .transpose()
            .try_into_primitive::<Cube>()
            .map_err(|e| format!("{e:?}"))?;
        let (gx, gy) = (n.div_ceil(4 * 8) as u32, m.div_ceil(4 * 8) as u32);
        // SAFETY: the kernel checks every index it writes against the output's shape and reads
        // only rows and columns it clamped to the inputs' shapes.
        unsafe {
            blocked::xwt_kernel::launch_unchecked(
                &client,
                cubecl::prelude::CubeCount::Static(gx, gy, 1),
                cubecl::prelude::CubeDim::new_2d(8, 8),
                lhs.into_tensor_arg(),
                w_rows.into_tensor_arg(),
                out.clone().into_tensor_arg(),
            );
        }
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

mod blocked {
    use cubecl::prelude::*;

    /// `out[r, c] = Σ_k x[r, k] w[c, k]` (`x · wᵀ`, any strides), each invocation a block of 4 × 4
    /// outputs: per step of `k` it reads 4 values of `x` and 4 of `w` for 16 products (the naive
    /// kernel reads 2 per product). No shared memory or barriers.
    #[cube(launch_unchecked)]
    pub fn xwt_kernel(x: &Tensor<f32>, w: &Tensor<f32>, out: &mut Tensor<f32>) {
        let rows = x.shape(0);
        let cols = w.shape(0);
        let depth = x.shape(1);
        let r0 = ABSOLUTE_POS_Y as usize * 4;
        let c0 = ABSOLUTE_POS_X as usize * 4;
        if r0 >= rows || c0 >= cols {
            terminate!();
        }
        let last_r = rows - 1;
        let last_c = cols - 1;
        let (xs0, xs1) = (x.stride(0), x.stride(1));
        let (ws0, ws1) = (w.stride(0), w.stride(1));
        let xr0 = r0 * xs0;
        let xr1 = select(r0 + 1 > last_r, last_r, r0 + 1) * xs0;
        let xr2 = select(r0 + 2 > last_r, last_r, r0 + 2) * xs0;
        let xr3 = select(r0 + 3 > last_r, last_r, r0 + 3) * xs0;
        let wc0 = c0 * ws0;
        let wc1 = select(c0 + 1 > last_c, last_c, c0 + 1) * ws0;
        let wc2 = select(c0 + 2 > last_c, last_c, c0 + 2) * ws0;
        let wc3 = select(c0 + 3 > last_c, last_c, c0 + 3) * ws0;
        let mut a00 = f32::new(0.0);
        let mut a01 = f32::new(0.0);
        let mut a02 = f32::new(0.0);
        let mut a03 = f32::new(0.0);
        let mut a10 = f32::new(0.0);
        let mut a11 = f32::new(0.0);
        let mut a12 = f32::new(0.0);
        let mut a13 = f32::new(0.0);
        let mut a20 = f32::new(0.0);
        let mut a21 = f32::new(0.0);
        let mut a22 = f32::new(0.0);
        let mut a23 = f32::new(0.0);
        let mut a30 = f32::new(0.0);
        let mut a31 = f32::new(0.0);
        let mut a32 = f32::new(0.0);
        let mut a33 = f32::new(0.0);
        for k in 0..depth {
            let xk = k * xs1;
            let wk = k * ws1;
            let x0 = x[xr0 + xk];
            let x1 = x[xr1 + xk];
            let x2 = x[xr2 + xk];
            let x3 = x[xr3 + xk];
            let w0 = w[wc0 + wk];
            let w1 = w[wc1 + wk];
            let w2 = w[wc2 + wk];
            let w3 = w[wc3 + wk];
            a00 += x0 * w0;
            a01 += x0 * w1;
            a02 += x0 * w2;
            a03 += x0 * w3;
            a10 += x1 * w0;
            a11 += x1 * w1;
            a12 += x1 * w2;
            a13 += x1 * w3;
            a20 += x2 * w0;
            a21 += x2 * w1;
            a22 += x2 * w2;
            a23 += x2 * w3;
            a30 += x3 * w0;
            a31 += x3 * w1;
            a32 += x3 * w2;
            a33 += x3 * w3;
        }
        let (os0, os1) = (out.stride(0), out.stride(1));
        let o0 = r0 * os0;
        out[o0 + c0 * os1] = a00;
        if c0 + 1 < cols {
            out[o0 + (c0 + 1) * os1] = a01;
        }
        if c0 + 2 < cols {
            out[o0 + (c0 + 2) * os1] = a02;
        }
        if c0 + 3 < cols {
            out[o0 + (c0 + 3) * os1] = a03;
        }
        if r0 + 1 < rows {
            let o = (r0 + 1) * os0;
            out[o + c0 * os1] = a10;
            if c0 + 1 < cols {
                out[o + (c0 + 1) * os1] = a11;
            }
            if c0 + 2 < cols {
                out[o + (c0 + 2) * os1] = a12;
            }
            if c0 + 3 < cols {
                out[o + (c0 + 3) * os1] = a13;
            }
        }
        if r0 + 2 < rows {
            let o = (r0 + 2) * os0;
            out[o + c0 * os1] = a20;
            if c0 + 1 < cols {
                out[o + (c0 + 1) * os1] = a21;
            }
            if c0 + 2 < cols {
                out[o + (c0 + 2) * os1] = a22;
            }
            if c0 + 3 < cols {
                out[o + (c0 + 3) * os1] = a23;
            }
        }
        if r0 + 3 < rows {
            let o = (r0 + 3) * os0;
            out[o + c0 * os1] = a30;
            if c0 + 1 < cols {
                out[o + (c0 + 1) * os1] = a31;
            }
            if c0 + 2 < cols {
                out[o + (c0 + 2) * os1] = a32;
            }
            if c0 + 3 < cols {
                out[o + (c0 + 3) * os1] = a33;
            }
        }
    }
}
