//! Softmax (attention) and log-softmax (the training loss) over the last axis, each one autodiff
//! op with a closed-form backward while training on the CPU.
//!
//! Under autodiff, burn 0.22 computes `softmax` as `max`, `sub`, `exp`, `sum`, `div` and
//! differentiates each of them (the `exp` is even computed again in the backward pass): about a
//! dozen passes over every attention-score tensor, 151 MB each for a bart-large encoder layer at
//! 4 × 768 tokens, most of them single-threaded. Here the forward is the CPU backend's own fused
//! softmax (one multi-threaded SIMD pass per row) and the backward is
//! `dx = y ⊙ (dy − Σ dy ⊙ y)` — the same function and gradient, in four passes (log-softmax: burn's
//! forward ops run once outside the graph, backward `dy − exp(y) Σ dy`). Any other device (and
//! inference) uses burn's functions unchanged.
//!
//! Also here: products with a frozen weight (`x W`, the base projections and the LM head of a
//! LoRA step) computed by a matrix-product routine the host program supplies ([`use_host_sgemm`]:
//! the native binary passes a BLAS), as one autodiff op whose backward is `dx = dy Wᵀ` (no
//! gradient for `W`). burn's CPU matmul reaches about two thirds of OpenBLAS' rate on these
//! shapes (docs/benchmarks.md). Without a host routine, or on any other device, burn's matmul.

use burn::tensor::{DType, Tensor};

/// Runs `f(i)` for every `i < n`, possibly several at once: a host's thread pool
/// ([`use_host_parallel`]; the core has no threads of its own).
pub type ParallelFn = fn(usize, &(dyn Fn(usize) + Sync));

static HOST_PARALLEL: std::sync::OnceLock<ParallelFn> = std::sync::OnceLock::new();

/// Lets the element-wise training ops of this module ([`gelu`], [`dropout`]) run their chunks
/// through `f` (first call wins; returns whether this one did). Without it they run in order.
pub fn use_host_parallel(f: ParallelFn) -> bool {
    HOST_PARALLEL.set(f).is_ok()
}

/// Fills `out` chunk by chunk (whole rows of `row` elements), `f(start, chunk)` with `start` the
/// index of the chunk's first element, the chunks in parallel where the host allows.
#[cfg(feature = "train")]
fn fill_rows<T: Send>(out: &mut [T], row: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = ((1 << 15) / row.max(1)).max(1) * row.max(1);
    let chunks: Vec<std::sync::Mutex<&mut [T]>> =
        out.chunks_mut(chunk).map(std::sync::Mutex::new).collect();
    let run = |i: usize| {
        let mut part = chunks[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i * chunk, &mut part)
    };
    match HOST_PARALLEL.get() {
        Some(parallel) => parallel(chunks.len(), &run),
        None => (0..chunks.len()).for_each(run),
    }
}

/// `len` values written by `f` chunk by chunk (whole rows of `row` values), in parallel where
/// the host allows, without zero-filling them first.
///
/// # Safety
/// `f` must write every element of each chunk it is given.
#[cfg(feature = "train")]
unsafe fn filled<T: Send>(
    len: usize,
    row: usize,
    f: impl Fn(usize, &mut [std::mem::MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut out = Vec::<T>::with_capacity(len);
    fill_rows(&mut out.spare_capacity_mut()[..len], row, f);
    // SAFETY: `fill_rows` hands each of the `len` elements to `f` once, and `f` writes it.
    unsafe { out.set_len(len) };
    out
}

/// `erf` in single precision without `exp`: the rational approximation Eigen and XLA use
/// (`x P(x²) / Q(x²)` on `[−4, 4]`, ±1 outside), within a few ulp of libm's `erff`
/// (tested below) and vectorizable.
#[cfg(feature = "train")]
#[inline]
fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = [
        2.77068142495902e-08f32,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    ]
    .iter()
    .fold(-2.72614225801306e-10f32, |acc, c| acc * x2 + c);
    let q = [
        -2.13374055278905e-04f32,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    ]
    .iter()
    .fold(-1.45660718464996e-05f32, |acc, c| acc * x2 + c);
    x * p / q
}

/// GELU with the exact (erf) form, `x Φ(x)`, as burn's `gelu` and PyTorch's `gelu` compute it.
/// While training on the CPU it is one op (forward `x Φ(x)`, backward
/// `dy (Φ(x) + x φ(x))`) over chunks in parallel, erf without libm; burn's runs libm's scalar
/// `erff` on one thread each way (about 6 % of a bart-large LoRA step).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "train")]
    {
        if x.is_autodiff() {
            if let Some(y) = autodiff_flex::gelu(&x) {
                return y;
            }
        }
    }
    #[cfg(feature = "gpu")]
    if let Some(y) = crate::ops::gpu::gelu(&x) {
        return y;
    }
    burn::tensor::activation::gelu(x)
}

/// Layer normalization over the last axis, as burn's `LayerNorm` (and PyTorch's) computes it:
/// `(x − mean) / sqrt(var + eps) · γ + β`, biased variance. While training on the CPU with `γ`,
/// `β` frozen (LoRA) it is one op, forward and backward a pass per row on the host's threads
/// (backward `dx = rstd (g − mean(g) − x̂ mean(g x̂))`, `g = dy γ`, with `x̂` and `rstd`
/// recomputed from the kept input); burn composes about ten ops each way. Otherwise burn's.
pub fn layer_norm<const D: usize>(ln: &burn::nn::LayerNorm, eps: f64, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "train")]
    {
        if x.is_autodiff() {
            if let Some(y) = autodiff_flex::layer_norm(ln, eps, &x) {
                return y;
            }
        }
    }
    #[cfg(feature = "gpu")]
    {
        let beta = ln.beta.as_ref().map(|b| b.val());
        if let Some(y) = crate::ops::gpu::layer_norm(&x, &ln.gamma.val(), beta.as_ref(), eps) {
            return y;
        }
    }
    let _ = eps; // burn's LayerNorm holds its own (the same value)
    ln.forward(x)
}

/// [`layer_norm`] of a residual sum `x + y`: on a GPU one kernel (sum included).
pub fn add_layer_norm<const D: usize>(
    ln: &burn::nn::LayerNorm,
    eps: f64,
    x: Tensor<D>,
    y: Tensor<D>,
) -> Tensor<D> {
    #[cfg(feature = "gpu")]
    {
        let beta = ln.beta.as_ref().map(|b| b.val());
        if let Some(z) =
            crate::ops::gpu::add_layer_norm(&x, &y, &ln.gamma.val(), beta.as_ref(), eps)
        {
            return z;
        }
    }
    layer_norm(ln, eps, x + y)
}

/// Dropout as burn's `Dropout` module applies it (while training, on autodiff tensors): kept
/// values scaled by `1 / (1 − p)`. On the CPU device it is one op whose mask comes from a
/// counter-based hash of the element index and a seed drawn from burn's generator (so a seeded
/// step repeats it exactly, and a resumed run too), kept as one byte per value for the backward
/// `dx = dy ⊙ mask / (1 − p)`. burn's own draws every value through ChaCha and a float sampler,
/// then multiplies twice, forward and backward: about 6 % of a bart-large LoRA step.
pub fn dropout<const D: usize>(layer: &burn::nn::Dropout, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "train")]
    {
        let p = layer.prob;
        if p > 0.0 && p < 1.0 && layer.training.is_enabled() && x.is_autodiff() {
            if let Some(y) = autodiff_flex::dropout(&x, p) {
                return y;
            }
        }
    }
    layer.forward(x)
}

/// One operand of [`Sgemm`]: matrix `i` of the batch starts at `data[offsets[i]]` and is read
/// row-major with leading dimension `ld`, as stored (`trans == false`) or transposed.
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub offsets: &'a [usize],
    pub ld: usize,
    pub trans: bool,
}

/// A batch of row-major single-precision products `c_i = op(a_i) · op(b_i)`, `op(a_i)` `[m, k]`,
/// `op(b_i)` `[k, n]`, `c` holding the `[m, n]` results one after another (`a.offsets.len()` of
/// them): the arguments of CBLAS' `sgemm` with `alpha = 1`, `beta = 0`, once per matrix.
pub struct Sgemm<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    /// Written in full by the routine (it starts uninitialized).
    pub c: &'a mut [std::mem::MaybeUninit<f32>],
}

/// A host-supplied implementation of [`Sgemm`].
pub type SgemmFn = fn(Sgemm<'_>);

static HOST_SGEMM: std::sync::OnceLock<SgemmFn> = std::sync::OnceLock::new();

/// Routes the CPU products of [`matmul`] through `f` from now on
/// (first call wins; returns whether this one did). Only training builds use it.
///
/// # Safety
/// `f` must compute what [`Sgemm`] describes and write every element of `c`, as CBLAS' `sgemm`
/// does with `beta = 0`: the results are read without having been initialized otherwise.
pub unsafe fn use_host_sgemm(f: SgemmFn) -> bool {
    HOST_SGEMM.set(f).is_ok()
}

/// `a b`, batched over the leading axes: a frozen weight's product `x W` (`W` takes no
/// gradient: base projections, the tied embedding) or attention's `[batch, heads, m, k]` ·
/// `[batch, heads, k, n]` (both may take gradients). With a host routine on the CPU it is one op
/// reading transposed and head-split views in place ([`use_host_sgemm`]), otherwise burn's
/// matmul.
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "train")]
    {
        if let Some(sgemm) = HOST_SGEMM.get() {
            return host::matmul(a, b, *sgemm, None);
        }
    }
    a.matmul(b)
}

/// [`matmul`] in `dtype`'s precision (f32: `matmul` itself) for mixed-precision training
/// ([`crate::models::Model::hold_matrices_in`]): the operands rounded to `dtype` (either may already be
/// held in it), summed in f32 and the result rounded to `dtype` once — returned as f32, as
/// `(a.to(dtype) @ b.to(dtype)).float()` computes it (and its backward: the incoming gradient
/// rounded, the product rounded). With a host routine it is one op on the f32 tensors (no
/// converted copies kept for the backward); otherwise burn's casts and matmul.
pub fn matmul_in<const D: usize>(a: Tensor<D>, b: Tensor<D>, dtype: DType) -> Tensor<D> {
    if dtype == DType::F32 {
        return matmul(a, b); // f32 (or a quantized weight, which burn dequantizes)
    }
    #[cfg(feature = "train")]
    {
        if let Some(sgemm) = HOST_SGEMM.get() {
            return host::matmul(a, b, *sgemm, Some(dtype));
        }
    }
    a.cast(dtype).matmul(b.cast(dtype)).cast(DType::F32)
}

/// `log_softmax(x)` over the last axis (the same ops as burn's forward, untracked; backward
/// `dx = dy − exp(y) Σ dy`). Used by the training loss only.
#[cfg(feature = "train")]
pub fn log_softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.is_autodiff() {
        return autodiff_flex::log_softmax_last(x);
    }
    burn::tensor::activation::log_softmax(x, D - 1)
}

/// `softmax(x)` over the last axis.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "train")]
    {
        if x.is_autodiff() {
            return autodiff_flex::softmax_last(x);
        }
    }
    #[cfg(feature = "gpu")]
    if let Some(y) = crate::ops::gpu::softmax_last(&x) {
        return y;
    }
    burn::tensor::activation::softmax(x, D - 1)
}

#[cfg(feature = "train")]
mod autodiff_flex {
    use burn::tensor::{Distribution, Tensor, TensorData};
    use burn_autodiff::checkpoint::base::Checkpointer;
    use burn_autodiff::checkpoint::strategy::NoCheckpointing;
    use burn_autodiff::grads::Gradients;
    use burn_autodiff::ops::{unary, Backward, NodeGuard, Ops, OpsKind};
    use burn_autodiff::Autodiff;
    use burn_backend::ops::ActivationOps;
    use burn_backend::tensor::FloatTensor;
    use burn_backend::{Backend, TensorMetadata};
    use burn_flex::{Flex, FlexTensor};

    pub(super) type Ad = Autodiff<Flex, NoCheckpointing>;

    /// The op in the autodiff graph; its state is the output `y`.
    #[derive(Debug)]
    struct SoftmaxLast;

    impl Backward<Flex, 1> for SoftmaxLast {
        type State = FlexTensor;

        /// Row by row in one pass, the rows on the host's threads.
        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let y = ops.state.to_contiguous();
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
                let dy = dy.to_contiguous();
                let shape = dy.shape();
                let row = shape[shape.num_dims() - 1];
                let (dy, y) = (f32s(&dy), f32s(&y));
                // SAFETY: each row of each chunk is written whole.
                let dx = unsafe {
                    super::filled(dy.len(), row, |start, out| {
                        for (i, dx) in out.chunks_mut(row).enumerate() {
                            let at = start + i * row;
                            let (dy, y) = (&dy[at..at + row], &y[at..at + row]);
                            let dot: f32 = dy.iter().zip(y).map(|(g, p)| g * p).sum();
                            for ((dx, g), p) in dx.iter_mut().zip(dy).zip(y) {
                                dx.write(p * (g - dot));
                            }
                        }
                    })
                };
                FlexTensor::from_data(TensorData::new(dx, shape))
            });
        }
    }

    /// Its state is the output `y` (log-probabilities).
    #[derive(Debug)]
    struct LogSoftmaxLast;

    impl<B: Backend> Backward<B, 1> for LogSoftmaxLast {
        type State = FloatTensor<B>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let y = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |dy| {
                let last = dy.shape().num_dims() - 1;
                let total = B::float_sum_dim(dy.clone(), last);
                B::float_sub(dy, B::float_mul(B::float_exp(y), total))
            });
        }
    }

    /// Records `op` in the autodiff graph as the op that made `y` from the input behind `guard`,
    /// with `state` for its backward when that input takes a gradient.
    pub(super) fn finish_unary<const D: usize, O: Backward<Flex, 1>>(
        op: O,
        guard: NodeGuard,
        state: O::State,
        y: FlexTensor,
    ) -> Tensor<D> {
        let out = match op
            .prepare::<NoCheckpointing>([guard])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Tensor::from_primitive::<Ad>(out)
    }

    /// Runs `forward` on the CPU tensor under `x` and records `op` (state: the output) in the
    /// autodiff graph; `None` if `x` is on another device or checkpointing strategy.
    fn record<const D: usize, O>(
        x: &Tensor<D>,
        op: O,
        forward: impl FnOnce(FloatTensor<Flex>) -> FloatTensor<Flex>,
    ) -> Option<Tensor<D>>
    where
        O: Backward<Flex, 1, State = FloatTensor<Flex>>,
    {
        let (primitive, guard) = x.clone().try_into_primitive::<Ad>().ok()?.into_parts();
        let y = forward(primitive);
        Some(finish_unary(op, guard, y.clone(), y))
    }

    /// Its state: the input `x`.
    #[derive(Debug)]
    struct Gelu;

    impl Backward<Flex, 1> for Gelu {
        type State = FlexTensor;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let x = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
                let dy = dy.to_contiguous();
                let shape = dy.shape();
                let (dy, x) = (f32s(&dy), f32s(&x));
                let inv_sqrt_2pi = 1.0 / (2.0 * std::f32::consts::PI).sqrt();
                // SAFETY: every element of each chunk is written (`dy`, `x` as long as `dx`).
                let dx = unsafe {
                    super::filled(dy.len(), 1, |start, out| {
                        let end = start + out.len();
                        for ((d, &g), &x) in out.iter_mut().zip(&dy[start..end]).zip(&x[start..end])
                        {
                            let cdf =
                                0.5 * (1.0 + super::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
                            let pdf = inv_sqrt_2pi * (-0.5 * x * x).exp();
                            d.write(g * (cdf + x * pdf));
                        }
                    })
                };
                FlexTensor::from_data(TensorData::new(dx, shape))
            });
        }
    }

    fn f32s(t: &FlexTensor) -> &[f32] {
        t.as_slice::<f32>().expect("contiguous f32")
    }

    pub(super) fn gelu<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
        if x.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        let (primitive, guard) = x.clone().try_into_primitive::<Ad>().ok()?.into_parts();
        let primitive = primitive.to_contiguous();
        let values = f32s(&primitive);
        // SAFETY: every element of each chunk is written (`values` as long as `y`).
        let y = unsafe {
            super::filled(values.len(), 1, |start, out| {
                let end = start + out.len();
                for (y, &x) in out.iter_mut().zip(&values[start..end]) {
                    y.write(x * 0.5 * (1.0 + super::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2)));
                }
            })
        };
        let y = FlexTensor::from_data(TensorData::new(y, primitive.shape()));
        Some(finish_unary(Gelu, guard, primitive, y))
    }

    /// Its state: the input `x`, `γ` and `eps`.
    #[derive(Debug)]
    struct LayerNorm;

    /// Mean and `1 / sqrt(var + eps)` of a row (two passes, f64 sums).
    #[inline]
    fn moments(row: &[f32], eps: f64) -> (f32, f32) {
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
    }

    impl Backward<Flex, 1> for LayerNorm {
        type State = (FlexTensor, std::sync::Arc<Vec<f32>>, f64);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, gamma, eps) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
                let dy = dy.to_contiguous();
                let shape = dy.shape();
                let d = gamma.len();
                let (dy, x) = (f32s(&dy), f32s(&x));
                // SAFETY: each row of each chunk is written whole.
                let dx = unsafe {
                    super::filled(dy.len(), d, |start, out| {
                        for (i, dx) in out.chunks_mut(d).enumerate() {
                            let at = start + i * d;
                            let (x, dy) = (&x[at..at + d], &dy[at..at + d]);
                            let (mean, rstd) = moments(x, eps);
                            let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
                            for ((&x, &dy), &w) in x.iter().zip(dy).zip(gamma.iter()) {
                                let g = (dy * w) as f64;
                                sum_g += g;
                                sum_gx += g * ((x - mean) * rstd) as f64;
                            }
                            let (mean_g, mean_gx) =
                                ((sum_g / d as f64) as f32, (sum_gx / d as f64) as f32);
                            for (((dx, &x), &dy), &w) in
                                dx.iter_mut().zip(x).zip(dy).zip(gamma.iter())
                            {
                                let xhat = (x - mean) * rstd;
                                dx.write(rstd * (dy * w - mean_g - xhat * mean_gx));
                            }
                        }
                    })
                };
                FlexTensor::from_data(TensorData::new(dx, shape))
            });
        }
    }

    /// A frozen 1-D CPU parameter's values (`None` if it takes gradients or lives elsewhere).
    fn frozen_values(p: &burn::module::Param<Tensor<1>>) -> Option<Vec<f32>> {
        let t = p.val();
        if t.is_autodiff() {
            return None;
        }
        let t = t.try_into_primitive::<Flex>().ok()?;
        (t.dtype() == burn_backend::DType::F32).then(|| f32s(&t.to_contiguous()).to_vec())
    }

    pub(super) fn layer_norm<const D: usize>(
        ln: &burn::nn::LayerNorm,
        eps: f64,
        x: &Tensor<D>,
    ) -> Option<Tensor<D>> {
        if x.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        let gamma = frozen_values(&ln.gamma)?;
        let beta = match &ln.beta {
            Some(b) => frozen_values(b)?,
            None => vec![0.0; gamma.len()],
        };
        let d = gamma.len();
        if d == 0 || x.dims()[D - 1] != d || beta.len() != d {
            return None;
        }
        let (primitive, guard) = x.clone().try_into_primitive::<Ad>().ok()?.into_parts();
        let primitive = primitive.to_contiguous();
        let values = f32s(&primitive);
        // SAFETY: each row of each chunk is written whole.
        let y = unsafe {
            super::filled(values.len(), d, |start, out| {
                for (i, y) in out.chunks_mut(d).enumerate() {
                    let row = &values[start + i * d..start + (i + 1) * d];
                    let (mean, rstd) = moments(row, eps);
                    for (((y, &x), &w), &b) in y.iter_mut().zip(row).zip(&gamma).zip(&beta) {
                        y.write((x - mean) * rstd * w + b);
                    }
                }
            })
        };
        let y = FlexTensor::from_data(TensorData::new(y, primitive.shape()));
        Some(finish_unary(
            LayerNorm,
            guard,
            (primitive, std::sync::Arc::new(gamma), eps),
            y,
        ))
    }

    /// Its state: the mask (1 = kept) and the scale `1 / (1 − p)`.
    #[derive(Debug)]
    struct Dropout;

    impl Backward<Flex, 1> for Dropout {
        type State = (std::sync::Arc<Vec<u8>>, f32);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (mask, scale) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
                let dy = dy.to_contiguous();
                let shape = dy.shape();
                let dy = f32s(&dy);
                // SAFETY: every element of each chunk is written (`dy`, `mask` as long as `dx`).
                let dx = unsafe {
                    super::filled(dy.len(), 1, |start, out| {
                        let end = start + out.len();
                        for ((d, &g), &m) in
                            out.iter_mut().zip(&dy[start..end]).zip(&mask[start..end])
                        {
                            d.write(g * (m as f32 * scale));
                        }
                    })
                };
                FlexTensor::from_data(TensorData::new(dx, shape))
            });
        }
    }

    /// Whether element `i` is kept: `lowbias32` (C. Wellons' 32-bit integer hash, a full
    /// avalanche) of the index mixed with the seed, twice, against `keep = (1 − p) · 2³²`.
    #[inline]
    fn kept(seed: [u32; 2], i: usize, keep: u64) -> bool {
        fn mix(mut x: u32) -> u32 {
            x ^= x >> 16;
            x = x.wrapping_mul(0x7feb_352d);
            x ^= x >> 15;
            x = x.wrapping_mul(0x846c_a68b);
            x ^ (x >> 16)
        }
        let h = mix(mix((i as u32) ^ seed[0]).wrapping_add(seed[1]) ^ ((i >> 32) as u32));
        (h as u64) < keep
    }

    pub(super) fn dropout<const D: usize>(x: &Tensor<D>, p: f64) -> Option<Tensor<D>> {
        if x.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        // Two draws from burn's generator (seeded per step while training) seed the hash.
        let draws = Tensor::<1>::random([2], Distribution::Default, &x.device())
            .inner()
            .into_data()
            .try_to_vec::<f32>()
            .ok()?;
        let seed = [draws[0].to_bits(), draws[1].to_bits().rotate_left(16)];
        let (primitive, guard) = x.clone().try_into_primitive::<Ad>().ok()?.into_parts();
        let primitive = primitive.to_contiguous();
        let shape = primitive.shape();
        let values = primitive.as_slice::<f32>()?;
        let keep = ((1.0 - p) * 4_294_967_296.0).round() as u64;
        let scale = (1.0 / (1.0 - p)) as f32;
        // SAFETY (both): every element of each chunk is written.
        let mask: Vec<u8> = unsafe {
            super::filled(values.len(), 1, |start, out| {
                for (j, m) in out.iter_mut().enumerate() {
                    m.write(kept(seed, start + j, keep) as u8);
                }
            })
        };
        let y = unsafe {
            super::filled(values.len(), 1, |start, out| {
                let end = start + out.len();
                for ((y, &v), &m) in out
                    .iter_mut()
                    .zip(&values[start..end])
                    .zip(&mask[start..end])
                {
                    y.write(v * (m as f32 * scale));
                }
            })
        };
        let y = FlexTensor::from_data(TensorData::new(y, shape));
        Some(finish_unary(
            Dropout,
            guard,
            (std::sync::Arc::new(mask), scale),
            y,
        ))
    }

    pub(super) fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
        record(&x, SoftmaxLast, |x| {
            <Flex as ActivationOps<Flex>>::softmax(x, D - 1)
        })
        .unwrap_or_else(|| burn::tensor::activation::softmax(x, D - 1))
    }

    pub(super) fn log_softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
        // The CPU backend's log-softmax is burn's own max-shifted log-sum-exp, here run once
        // outside the graph.
        record(&x, LogSoftmaxLast, |x| {
            <Flex as ActivationOps<Flex>>::log_softmax(x, D - 1)
        })
        .unwrap_or_else(|| burn::tensor::activation::log_softmax(x, D - 1))
    }
}

/// [`matmul`] through a host routine on the CPU backend.
#[cfg(feature = "train")]
mod host {
    use super::autodiff_flex::{finish_unary, Ad};
    use super::{Operand, Sgemm, SgemmFn};
    use burn::tensor::{Tensor, TensorData};
    use burn_autodiff::checkpoint::base::Checkpointer;
    use burn_autodiff::checkpoint::strategy::NoCheckpointing;
    use burn_autodiff::grads::Gradients;
    use burn_autodiff::ops::{binary, unary, Backward, NodeGuard, Ops, OpsKind};
    use burn_backend::{DType, TensorMetadata};
    use burn_flex::{Flex, FlexTensor};
    use half::{bf16, f16};

    /// A CPU tensor `[..batch, rows, cols]` as a batch of matrices read in place (a transposed or
    /// head-split view is not copied): its storage, where each matrix starts, and the layout of
    /// its rows and columns. f16/bf16 storage (mixed precision, [`crate::models::Model::hold_matrices_in`])
    /// is widened to f32 for each product ([`Matrices::values`]), exactly.
    #[derive(Debug, Clone)]
    pub(super) struct Matrices {
        t: FlexTensor,
        batch: Vec<usize>,
        offsets: Vec<usize>,
        rows: usize,
        cols: usize,
        trans: bool,
        ld: usize,
    }

    impl Matrices {
        /// `None` unless an f32, f16 or bf16 tensor of rank 2 or more.
        fn new(t: FlexTensor) -> Option<Self> {
            if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16)
                || t.shape().num_dims() < 2
            {
                return None;
            }
            let dims = t.shape().to_vec();
            let r = dims.len();
            let (rows, cols) = (dims[r - 2], dims[r - 1]);
            let strides = t.layout().strides().to_vec();
            let (rs, cs) = (strides[r - 2], strides[r - 1]);
            let (t, trans, ld) = if strides.iter().any(|s| *s < 0) {
                (t.to_contiguous(), false, cols)
            } else if cs == 1 && rs as usize >= cols.max(1) {
                (t, false, rs as usize)
            } else if rs == 1 && cs as usize >= rows.max(1) {
                (t, true, cs as usize)
            } else {
                (t.to_contiguous(), false, cols)
            };
            let strides = t.layout().strides().to_vec();
            let batch = dims[..r - 2].to_vec();
            let mut offsets = vec![t.layout().start_offset()];
            for (&n, &stride) in batch.iter().zip(&strides) {
                let stride = stride as usize;
                offsets = offsets
                    .iter()
                    .flat_map(|&o| (0..n).map(move |i| o + i * stride))
                    .collect();
            }
            Some(Self {
                t,
                batch,
                offsets,
                rows,
                cols,
                trans,
                ld: ld.max(1),
            })
        }

        /// The same storage read as the transposed matrices.
        fn transposed(&self) -> Self {
            Self {
                rows: self.cols,
                cols: self.rows,
                trans: !self.trans,
                ..self.clone()
            }
        }

        /// The storage as f32 values rounded to `round`'s precision: f32 storage as it is, or
        /// rounded into `buf`; f16/bf16 storage widened (exactly) into `buf`.
        fn values<'a>(&'a self, round: Round, buf: &'a mut Vec<f32>) -> &'a [f32] {
            match (self.t.dtype(), round) {
                (DType::F16, _) => convert_into(self.t.storage::<f16>(), buf, f16::to_f32),
                (DType::BF16, _) => convert_into(self.t.storage::<bf16>(), buf, bf16::to_f32),
                (_, Some(DType::F16)) => {
                    convert_into(self.t.storage::<f32>(), buf, |x| f16::from_f32(x).to_f32())
                }
                (_, Some(DType::BF16)) => {
                    convert_into(self.t.storage::<f32>(), buf, |x| bf16::from_f32(x).to_f32())
                }
                _ => self.t.storage::<f32>(),
            }
        }

        fn operand<'a>(&'a self, data: &'a [f32]) -> Operand<'a> {
            Operand {
                data,
                offsets: &self.offsets,
                ld: self.ld,
                trans: self.trans,
            }
        }
    }

    /// Mixed precision: the precision products round their operands and result to (`None`:
    /// plain f32).
    pub(super) type Round = Option<DType>;

    /// Buffers up to this many values are kept for the next product (most of them: the
    /// projections' operands); larger ones (the LM head's table) are freed after it.
    const KEEP: usize = 16 << 20;

    thread_local! {
        /// Operands converted to f32 for the product in progress (mixed precision), reused so
        /// that each product does not fault in fresh pages for them.
        static SCRATCH: std::cell::RefCell<[Vec<f32>; 2]> = Default::default();
    }

    /// `src` converted element by element into `buf` (its old contents dropped), in chunks on
    /// the host's threads.
    fn convert_into<'a, T: Copy + Sync>(
        src: &[T],
        buf: &'a mut Vec<f32>,
        f: impl Fn(T) -> f32 + Sync,
    ) -> &'a [f32] {
        buf.clear();
        buf.reserve(src.len());
        super::fill_rows(
            &mut buf.spare_capacity_mut()[..src.len()],
            1,
            |start, out| {
                for (o, &x) in out.iter_mut().zip(&src[start..]) {
                    o.write(f(x));
                }
            },
        );
        // SAFETY: `fill_rows` handed every element to the closure, which wrote it.
        unsafe { buf.set_len(src.len()) };
        buf
    }

    /// `values` rounded to `dtype` (f16 or bf16; to nearest even) in place.
    fn round_in_place(values: &mut [f32], dtype: DType) {
        super::fill_rows(values, 1, |_, part| {
            for x in part.iter_mut() {
                *x = match dtype {
                    DType::F16 => f16::from_f32(*x).to_f32(),
                    _ => bf16::from_f32(*x).to_f32(),
                };
            }
        });
    }

    /// `a · b`, matrix by matrix, as a contiguous f32 `[..batch, m, n]` tensor; with `round`,
    /// the operands and the f32 sum rounded to its precision ([`super::matmul_in`]).
    fn product(a: &Matrices, b: &Matrices, sgemm: SgemmFn, round: Round) -> FlexTensor {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let count = a.offsets.len();
        let len = count * m * n;
        let mut c = if k > 0 && len > 0 {
            let mut c = Vec::with_capacity(len);
            SCRATCH.with_borrow_mut(|[buf_a, buf_b]| {
                sgemm(Sgemm {
                    m,
                    n,
                    k,
                    a: a.operand(a.values(round, buf_a)),
                    b: b.operand(b.values(round, buf_b)),
                    c: &mut c.spare_capacity_mut()[..len],
                });
                for buf in [buf_a, buf_b] {
                    if buf.capacity() > KEEP {
                        *buf = Vec::new();
                    }
                }
            });
            // SAFETY: the routine wrote every element of `c` (the contract of `use_host_sgemm`).
            unsafe { c.set_len(len) };
            c
        } else {
            vec![0.0f32; len] // an empty sum
        };
        if let Some(dtype) = round {
            round_in_place(&mut c, dtype);
        }
        let mut shape = a.batch.clone();
        shape.extend([m, n]);
        FlexTensor::from_data(TensorData::new(c, shape))
    }

    fn gradient(dc: FlexTensor) -> Matrices {
        Matrices::new(dc).expect("the gradient of an f32 product is an f32 matrix batch")
    }

    /// Both operands in the graph; the state holds what each gradient needs (`a` for `db`, `b`
    /// for `da`), only for an operand whose partner takes a gradient.
    #[derive(Debug)]
    struct Product(SgemmFn, Round);

    impl Backward<Flex, 2> for Product {
        type State = (Option<Matrices>, Option<Matrices>);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (a, b) = ops.state;
            binary::<Flex, _, _>(
                ops.parents,
                ops.node,
                grads,
                |dc| {
                    let b = b.expect("kept for da").transposed();
                    product(&gradient(dc), &b, self.0, self.1)
                },
                |dc| {
                    let a = a.expect("kept for db").transposed();
                    product(&a, &gradient(dc), self.0, self.1)
                },
            );
        }
    }

    /// One operand in the graph, the other a constant (a frozen weight): the state is the
    /// constant, and whether the graph operand is on the left.
    #[derive(Debug)]
    struct ProductWithConstant(SgemmFn, Round);

    impl Backward<Flex, 1> for ProductWithConstant {
        type State = (Matrices, bool);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (constant, graph_on_left) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dc| {
                if graph_on_left {
                    product(&gradient(dc), &constant.transposed(), self.0, self.1)
                } else {
                    product(&constant.transposed(), &gradient(dc), self.0, self.1)
                }
            });
        }
    }

    /// An operand: in the autodiff graph (with its node and whether it takes a gradient), or
    /// a plain CPU tensor.
    enum Side {
        Graph(Matrices, NodeGuard, bool),
        Plain(Matrices),
    }

    impl Side {
        fn of<const D: usize>(t: Tensor<D>) -> Option<Self> {
            if t.is_autodiff() {
                let t = t.try_into_primitive::<Ad>().ok()?;
                let tracked = t.is_tracked();
                let (primitive, guard) = t.into_parts();
                Some(Side::Graph(Matrices::new(primitive)?, guard, tracked))
            } else {
                Some(Side::Plain(Matrices::new(
                    t.try_into_primitive::<Flex>().ok()?,
                )?))
            }
        }

        fn matrices(&self) -> &Matrices {
            match self {
                Side::Graph(m, ..) | Side::Plain(m) => m,
            }
        }
    }

    /// `a b` through `sgemm` when both are CPU tensors with the same batch dimensions, f32
    /// (or, with `round`, f32/f16/bf16); burn's matmul (and casts) otherwise.
    pub(super) fn matmul<const D: usize>(
        a: Tensor<D>,
        b: Tensor<D>,
        sgemm: SgemmFn,
        round: Round,
    ) -> Tensor<D> {
        let burn = |a: Tensor<D>, b: Tensor<D>| match round {
            Some(dtype) => a.cast(dtype).matmul(b.cast(dtype)).cast(DType::F32),
            None => a.matmul(b),
        };
        let (Some(left), Some(right)) = (Side::of(a.clone()), Side::of(b.clone())) else {
            return burn(a, b);
        };
        let (l, r) = (left.matrices(), right.matrices());
        let f32s = l.t.dtype() == DType::F32 && r.t.dtype() == DType::F32;
        if l.batch != r.batch || l.cols != r.rows || (round.is_none() && !f32s) {
            return burn(a, b);
        }
        let c = product(l, r, sgemm, round);
        match (left, right) {
            (Side::Plain(_), Side::Plain(_)) => Tensor::from_primitive::<Flex>(c),
            (Side::Graph(l, gl, tl), Side::Graph(r, gr, tr)) => {
                let state = (tr.then_some(l), tl.then_some(r));
                let out = match Product(sgemm, round)
                    .prepare::<NoCheckpointing>([gl, gr])
                    .compute_bound()
                    .stateful()
                {
                    OpsKind::Tracked(prep) => prep.finish(state, c),
                    OpsKind::UnTracked(prep) => prep.finish(c),
                };
                Tensor::from_primitive::<Ad>(out)
            }
            (Side::Graph(_, guard, _), Side::Plain(constant)) => finish_unary(
                ProductWithConstant(sgemm, round),
                guard,
                (constant, true),
                c,
            ),
            (Side::Plain(constant), Side::Graph(_, guard, _)) => finish_unary(
                ProductWithConstant(sgemm, round),
                guard,
                (constant, false),
                c,
            ),
        }
    }
}

#[cfg(all(test, feature = "train"))]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    type Op = fn(Tensor<4>) -> Tensor<4>;

    /// A fused op against burn's composed one on the autodiff CPU device: values and the
    /// gradient of a weighted sum (so that `dy` is not constant along the axis), with masked
    /// (`f32::MIN`) entries as attention has them.
    fn compare(fused: Op, burn_op: Op, tolerance: f32) {
        // Rows of 7, and rows of 300 over several of the chunks the backward runs in parallel
        // (their sums of 300 products accumulate in another order than burn's: 10× the bound).
        compare_shape(fused, burn_op, tolerance, [2, 3, 5, 7]);
        compare_shape(fused, burn_op, 10.0 * tolerance, [2, 4, 100, 300]);
    }

    fn compare_shape(fused: Op, burn_op: Op, tolerance: f32, shape: [usize; 4]) {
        let device = Device::flex();
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 3.0), &device);
        let mask_shape = [shape[0], 1, 1, shape[3]];
        let mask = Tensor::<4>::random(mask_shape, Distribution::Uniform(0.0, 1.0), &device)
            .lower_elem(0.3)
            .float()
            .mul_scalar(f32::MIN);
        let w = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        // The fused op is what runs (not burn's fallback), or this would compare burn with
        // itself.
        let ad = x.clone().autodiff();
        assert!(ad.try_into_primitive::<super::autodiff_flex::Ad>().is_ok());
        let run = |op: Op| {
            let x = x.clone().autodiff().require_grad();
            let y = op(x.clone() + mask.clone());
            // Masked log-probabilities are -inf-like: weigh only the finite ones.
            let keep = y.clone().inner().greater_elem(-1e30).float();
            let grads = (y.clone().mask_fill(keep.clone().equal_elem(0.0), 0.0)
                * (w.clone() * keep))
                .sum()
                .backward();
            let dx = x.grad(&grads).expect("x has a gradient");
            let values = |t: Tensor<4>| t.inner().into_data().try_to_vec::<f32>().unwrap();
            (values(y), values(dx))
        };
        let (y_fused, dx_fused) = run(fused);
        let (y_burn, dx_burn) = run(burn_op);
        for (a, b) in y_fused.iter().zip(&y_burn) {
            assert!(a == b || (a - b).abs() <= tolerance, "value {a} vs {b}");
        }
        for (a, b) in dx_fused.iter().zip(&dx_burn) {
            assert!((a - b).abs() <= tolerance, "gradient {a} vs {b}");
        }
        assert!(dx_fused.iter().any(|g| g.abs() > 1e-3));
        assert!(
            dx_fused.iter().any(|g| *g == 0.0),
            "the mask zeroes some gradients"
        );
    }

    #[test]
    fn softmax_matches_burn() {
        compare(
            super::softmax_last,
            |x| burn::tensor::activation::softmax(x, 3),
            1e-6,
        );
    }

    #[test]
    fn log_softmax_matches_burn() {
        compare(
            super::log_softmax_last,
            |x| burn::tensor::activation::log_softmax(x, 3),
            1e-5,
        );
    }
}

#[cfg(all(test, feature = "train"))]
mod test_support {
    use burn::tensor::Tensor;

    /// The values of a tensor (on any device) as f32.
    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.inner()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    }
}

#[cfg(all(test, feature = "train"))]
mod dropout_tests {
    use burn::nn::DropoutConfig;
    use burn::tensor::{Device, Distribution, Tensor};

    use super::test_support::values;

    /// Every value is dropped (0) or kept and scaled by `1 / (1 − p)`, about `1 − p` of them are
    /// kept, the gradient is the same mask and scale, a seeded device repeats the mask and the
    /// next call draws another; without autodiff (inference) nothing is dropped.
    #[test]
    fn dropout_masks_scales_and_repeats() {
        let device = Device::flex();
        let p = 0.1;
        let layer = DropoutConfig::new(p).init();
        let x = Tensor::<3>::random([4, 50, 500], Distribution::Uniform(1.0, 2.0), &device);
        let w = Tensor::<3>::random([4, 50, 500], Distribution::Normal(0.0, 1.0), &device);
        let scale = (1.0 / (1.0 - p)) as f32;
        let run = || {
            let xa = x.clone().autodiff().require_grad();
            let y = super::dropout(&layer, xa.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            (values(y), values(xa.grad(&grads).unwrap()))
        };
        // The op of this module is what runs, not burn's dropout.
        assert!(super::autodiff_flex::dropout(&x.clone().autodiff(), p).is_some());
        device.seed(7);
        let (y, dx) = run();
        let (xs, ws) = (values(x.clone()), values(w.clone()));
        let mut kept = 0;
        for i in 0..y.len() {
            if y[i] == 0.0 {
                assert_eq!(dx[i], 0.0);
            } else {
                kept += 1;
                assert_eq!(y[i], xs[i] * scale);
                assert!((dx[i] - ws[i] * scale).abs() <= 1e-6 * (1.0 + ws[i].abs()));
            }
        }
        let frac = kept as f64 / y.len() as f64;
        assert!((frac - (1.0 - p)).abs() < 0.005, "kept {frac}");
        let (y_next, _) = run();
        assert_ne!(y, y_next, "each call draws a new mask");
        device.seed(7);
        assert_eq!(run().0, y, "a seeded device repeats the mask");
        let plain = super::dropout(&layer, x.clone());
        assert_eq!(values(plain), xs);
    }
}

#[cfg(all(test, feature = "train"))]
mod layer_norm_tests {
    use super::test_support::values;
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Device, Distribution, Tensor};

    /// The LayerNorm op against burn's `LayerNorm` on the autodiff CPU device, values and the
    /// gradient of `x`, with random `γ`, `β`, rows of 300 over several parallel chunks, and an
    /// input far from zero mean (where a one-pass variance would lose digits).
    #[test]
    fn layer_norm_matches_burn() {
        let device = Device::flex();
        let d = 300;
        let mut ln = LayerNormConfig::new(d).with_epsilon(1e-5).init(&device);
        ln.gamma = Param::from_tensor(Tensor::random([d], Distribution::Normal(1.0, 0.5), &device));
        ln.beta = Some(Param::from_tensor(Tensor::random(
            [d],
            Distribution::Normal(0.0, 0.5),
            &device,
        )));
        let x = Tensor::<3>::random([3, 150, d], Distribution::Normal(4.0, 2.0), &device);
        let w = Tensor::<3>::random([3, 150, d], Distribution::Normal(0.0, 1.0), &device);
        assert!(super::autodiff_flex::layer_norm(&ln, 1e-5, &x.clone().autodiff()).is_some());
        let run = |fused: bool| {
            let xa = x.clone().autodiff().require_grad();
            let y = if fused {
                super::layer_norm(&ln, 1e-5, xa.clone())
            } else {
                ln.forward(xa.clone())
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            (values(y), values(xa.grad(&grads).unwrap()))
        };
        let ((y, dx), (y_burn, dx_burn)) = (run(true), run(false));
        for (a, b) in y.iter().zip(&y_burn).chain(dx.iter().zip(&dx_burn)) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        assert!(dx.iter().any(|g| g.abs() > 1e-2));
        // A trained γ (full fine-tuning) keeps burn's.
        let mut tracked = ln.clone();
        tracked.gamma = Param::from_tensor(ln.gamma.val().autodiff().require_grad());
        assert!(super::autodiff_flex::layer_norm(&tracked, 1e-5, &x.autodiff()).is_none());
    }
}

#[cfg(all(test, feature = "train"))]
mod gelu_tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::test_support::values;

    /// The GELU op against burn's (libm's `erff`) on the autodiff CPU device, values and
    /// gradients, over [−7, 7] (both tails of the clamp), with the host's parallel hook set
    /// (chunks over 4 threads).
    #[test]
    fn gelu_matches_burn() {
        fn threads(n: usize, f: &(dyn Fn(usize) + Sync)) {
            std::thread::scope(|s| {
                for t in 0..4 {
                    s.spawn(move || (t..n).step_by(4).for_each(f));
                }
            });
        }
        super::use_host_parallel(threads);
        let device = Device::flex();
        let x = Tensor::<3>::random([3, 70, 1000], Distribution::Uniform(-7.0, 7.0), &device);
        let w = Tensor::<3>::random([3, 70, 1000], Distribution::Normal(0.0, 1.0), &device);
        let xa = x.clone().autodiff();
        assert!(
            super::autodiff_flex::gelu(&xa).is_some(),
            "the op runs, not burn's"
        );
        let run = |op: fn(Tensor<3>) -> Tensor<3>| {
            let xa = x.clone().autodiff().require_grad();
            let y = op(xa.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            (values(y), values(xa.grad(&grads).unwrap()))
        };
        let (y, dx) = run(super::gelu);
        let (y_burn, dx_burn) = run(burn::tensor::activation::gelu);
        // Absolute: in the far left tail both compute `1 + erf` ≈ 1e-6 in f32 by cancellation,
        // where any two erf implementations differ by ~1e-7 of 1 (measured: up to 1.1e-6).
        let worst = y
            .iter()
            .zip(&y_burn)
            .chain(dx.iter().zip(&dx_burn))
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst <= 2e-6, "worst difference {worst}");
        // Inference (no graph) keeps burn's.
        assert_eq!(
            values(super::gelu(x.clone())),
            values(burn::tensor::activation::gelu(x))
        );
    }
}

#[cfg(all(test, feature = "train"))]
mod host_tests {
    use super::Sgemm;
    use burn::tensor::{DType, Device, Distribution, Tensor};

    /// The textbook triple loop, in f64: what a host routine must compute.
    fn naive(g: Sgemm<'_>) {
        let at = |o: usize, i: usize, p: usize| {
            if g.a.trans {
                g.a.data[o + p * g.a.ld + i]
            } else {
                g.a.data[o + i * g.a.ld + p]
            }
        };
        let bt = |o: usize, p: usize, j: usize| {
            if g.b.trans {
                g.b.data[o + j * g.b.ld + p]
            } else {
                g.b.data[o + p * g.b.ld + j]
            }
        };
        for (x, (&oa, &ob)) in g.a.offsets.iter().zip(g.b.offsets).enumerate() {
            for i in 0..g.m {
                for j in 0..g.n {
                    let sum: f64 = (0..g.k)
                        .map(|p| at(oa, i, p) as f64 * bt(ob, p, j) as f64)
                        .sum();
                    g.c[(x * g.m + i) * g.n + j].write(sum as f32);
                }
            }
        }
    }

    use super::test_support::values;

    fn close_within(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// `y = a b` through the host op and through burn's matmul, on the autodiff CPU device with
    /// gradients required for the operands `track` says: values and those gradients (of
    /// `Σ y ⊙ u`), plus the plain (no graph) path.
    fn compare<const D: usize>(a: Tensor<D>, b: Tensor<D>, track: [bool; 2]) {
        compare_in(a, b, track, None, 1e-4);
    }

    /// [`compare`] of `matmul_in(a, b, dtype)` on the host op against burn's
    /// `a.cast(dtype).matmul(b.cast(dtype)).cast(f32)` (`round`: `Some(dtype)`), results within
    /// `tol` relative (one rounding: the two sum in different orders).
    fn compare_in<const D: usize>(
        a: Tensor<D>,
        b: Tensor<D>,
        track: [bool; 2],
        round: Option<DType>,
        tol: f32,
    ) {
        let close = |x: &[f32], y: &[f32]| close_within(x, y, tol);
        let device = Device::flex();
        let shape = a.clone().matmul(b.clone().cast(DType::F32)).dims();
        let u = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let burn_product = |a: Tensor<D>, b: Tensor<D>| match round {
            Some(dtype) => a.cast(dtype).matmul(b.cast(dtype)).cast(DType::F32),
            None => a.matmul(b),
        };
        let run = |host: bool| {
            let prep = |t: Tensor<D>, on: bool| {
                if on {
                    t.autodiff().require_grad()
                } else {
                    t
                }
            };
            let (ga, gb) = (prep(a.clone(), track[0]), prep(b.clone(), track[1]));
            let y = if host {
                super::host::matmul(ga.clone(), gb.clone(), naive, round)
            } else {
                burn_product(ga.clone(), gb.clone())
            };
            assert!(y.is_autodiff());
            assert_eq!(y.dtype(), DType::F32);
            let grads = (y.clone() * u.clone()).sum().backward();
            let grad =
                |t: &Tensor<D>, on: bool| on.then(|| values(t.grad(&grads).expect("a gradient")));
            (values(y), grad(&ga, track[0]), grad(&gb, track[1]))
        };
        let (host, burn) = (run(true), run(false));
        close(&host.0, &burn.0);
        if let Some(dtype) = round {
            // Rounded once to `dtype`, and mostly to the same value: a product not rounded
            // (or from unrounded operands) would agree nowhere.
            let rounding = |x: f32| match dtype {
                DType::BF16 => half::bf16::from_f32(x).to_f32(),
                _ => half::f16::from_f32(x).to_f32(),
            };
            assert!(host.0.iter().all(|&x| rounding(x) == x));
            let same = host.0.iter().zip(&burn.0).filter(|(x, y)| x == y).count();
            assert!(same * 10 >= host.0.len() * 9, "{same} of {}", host.0.len());
        }
        for (h, b) in [(host.1, burn.1), (host.2, burn.2)] {
            if let (Some(h), Some(b)) = (h, b) {
                close(&h, &b);
                assert!(h.iter().any(|g| g.abs() > 1e-3));
            }
        }
        let plain = super::host::matmul(a, b, naive, round);
        assert!(!plain.is_autodiff());
        close(&values(plain), &burn.0);
    }

    /// Mixed precision's products ([`super::matmul_in`]): f32 activations times a weight held
    /// in f16/bf16 ([`crate::models::Model::hold_matrices_in`]), and attention's two f32 operands, on
    /// the host routine against burn's casts and half-precision matmul (both: operands
    /// rounded, f32 sums rounded once), within one rounding (bf16: 2⁻⁸ relative, f16: 2⁻¹¹),
    /// gradients too.
    #[test]
    fn half_precision_products_match_burn() {
        let device = Device::flex();
        let random =
            |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        for (dtype, tol) in [(DType::BF16, 1.0 / 128.0), (DType::F16, 1.0 / 1024.0)] {
            let (m, k, n) = (9, 6, 5);
            for w in [random([k, n]), random([n, k]).transpose()] {
                let round = Some(dtype);
                compare_in(
                    random([m, k]),
                    w.clone().cast(dtype),
                    [true, false],
                    round,
                    tol,
                );
                compare_in(random([m, k]), w, [true, false], round, tol);
            }
            let split = |len: usize| {
                Tensor::<4>::random([2, len, 3, 4], Distribution::Normal(0.0, 1.0), &device)
                    .swap_dims(1, 2)
            };
            let (q, k) = (split(5), split(6).swap_dims(2, 3));
            compare_in(q, k, [true, true], Some(dtype), tol);
        }
    }

    /// A frozen weight: stored `[k, n]`, or the transposed view of `[n, k]` (HF's layout, the
    /// tied embedding); `x` contiguous or itself a transposed view.
    #[test]
    fn frozen_weight_products_match_burn() {
        let device = Device::flex();
        let (m, k, n) = (7, 5, 3);
        let random =
            |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        for w in [random([k, n]), random([n, k]).transpose()] {
            for x in [random([m, k]), random([k, m]).transpose()] {
                compare(x, w.clone(), [true, false]);
            }
        }
    }

    /// Attention's products: heads split from `[b, len, heads, d]` (a permuted view), keys
    /// transposed in place, both operands taking gradients (or either alone).
    #[test]
    fn attention_products_match_burn() {
        let device = Device::flex();
        let (b, len, kv_len, heads, d) = (2, 5, 6, 3, 4);
        let split = |len: usize| {
            Tensor::<4>::random([b, len, heads, d], Distribution::Normal(0.0, 1.0), &device)
                .swap_dims(1, 2)
        };
        let (q, k, v) = (split(len), split(kv_len), split(kv_len));
        for track in [[true, true], [true, false], [false, true]] {
            compare(q.clone(), k.clone().swap_dims(2, 3), track);
        }
        let weights = Tensor::<4>::random([b, heads, len, kv_len], Distribution::Default, &device);
        compare(weights, v, [true, true]);
    }
}
