//! Products on a cubecl device (WebGPU in the browser, Vulkan / CUDA natively) with a kernel
//! chosen for their shape.
//!
//! Without autotune (the browser build has none: it would time every candidate kernel on the
//! user's device) burn 0.22 multiplies everything with one general tiled kernel. For a decoding
//! step — a weight `[out, in]` times a few rows — that kernel is 4-19x slower than cubek's naive
//! one (one invocation per output, a dot product along a contiguous weight row) on the two
//! CPU-emulated adapters here, SwiftShader (headless Chromium's WebGPU) and lavapipe
//! (`cargo run --release -p bartleby --features wgpu --example gpu_matmul`, docs/benchmarks.md).
//! Products with many rows (encoding, training) keep burn's kernel.

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
}

impl Kernel {
    pub const ALL: [Kernel; 8] = [
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

/// `a b` with `kernel` if both are f32 tensors on a cubecl device (an error otherwise, or if the
/// kernel declines the shape).
pub fn matmul_with(a: Tensor<2>, b: Tensor<2>, kernel: Kernel) -> Result<Tensor<2>, String> {
    let [m, _] = a.dims();
    let [_, n] = b.dims();
    let device = a.device();
    let out = Tensor::<2>::empty([m, n], &device);
    let prim = |t: Tensor<2>| -> Result<CubeTensor, String> {
        t.try_into_primitive::<Cube>().map_err(|e| format!("{e:?}"))
    };
    let (lhs, rhs, out) = (prim(a)?, prim(b)?, prim(out)?);
    let st = burn_backend::cubecl::dtype_to_storage_type(out.dtype);
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: st,
        rhs: st,
        out: st,
    });
    let client = out.client.clone();
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
