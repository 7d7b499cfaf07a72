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

use burn::tensor::Tensor;

/// One row-major single-precision product `c = a · op(b)`, `a` `[m, k]` and `c` `[m, n]`
/// contiguous; `op(b)` is `[k, n]`, read from `b` with leading dimension `ldb` — as stored
/// (`b_trans == false`, `b` holds `[k, n]`) or transposed (`b` holds `[n, k]`). The arguments of
/// CBLAS' `sgemm` with `alpha = 1`, `beta = 0`.
pub struct Sgemm<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub ldb: usize,
    pub b_trans: bool,
    pub c: &'a mut [f32],
}

/// A host-supplied implementation of [`Sgemm`].
pub type SgemmFn = fn(Sgemm<'_>);

static HOST_SGEMM: std::sync::OnceLock<SgemmFn> = std::sync::OnceLock::new();

/// Routes products with frozen weights on the CPU through `f` from now on (first call wins;
/// returns whether this one did). Only training builds use it.
pub fn use_host_sgemm(f: SgemmFn) -> bool {
    HOST_SGEMM.set(f).is_ok()
}

/// `x w` for a weight `w` `[k, n]` that takes no gradient (a frozen base weight, the tied
/// embedding); `x` `[m, k]` may be on the autodiff device. With a host routine on the CPU it is
/// one op ([`use_host_sgemm`]), otherwise burn's matmul.
pub fn matmul_frozen(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "train")]
    {
        if let Some(sgemm) = HOST_SGEMM.get() {
            return host::matmul_frozen(x, w, *sgemm);
        }
    }
    x.matmul(w)
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
    burn::tensor::activation::softmax(x, D - 1)
}

#[cfg(feature = "train")]
mod autodiff_flex {
    use burn::tensor::Tensor;
    use burn_autodiff::checkpoint::base::Checkpointer;
    use burn_autodiff::checkpoint::strategy::NoCheckpointing;
    use burn_autodiff::grads::Gradients;
    use burn_autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn_autodiff::Autodiff;
    use burn_backend::ops::ActivationOps;
    use burn_backend::tensor::FloatTensor;
    use burn_backend::{Backend, TensorMetadata};
    use burn_flex::Flex;

    pub(super) type Ad = Autodiff<Flex, NoCheckpointing>;

    /// The op in the autodiff graph; its state is the output `y`.
    #[derive(Debug)]
    struct SoftmaxLast;

    impl<B: Backend> Backward<B, 1> for SoftmaxLast {
        type State = FloatTensor<B>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let y = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |dy| {
                let last = dy.shape().num_dims() - 1;
                let dot = B::float_sum_dim(B::float_mul(dy.clone(), y.clone()), last);
                B::float_mul(y, B::float_sub(dy, dot))
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
        let out = match op
            .prepare::<NoCheckpointing>([guard])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Some(Tensor::from_primitive::<Ad>(out))
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

/// [`matmul_frozen`] through a host routine on the CPU backend.
#[cfg(feature = "train")]
mod host {
    use super::{autodiff_flex::Ad, Sgemm, SgemmFn};
    use burn::tensor::{Tensor, TensorData};
    use burn_autodiff::checkpoint::base::Checkpointer;
    use burn_autodiff::checkpoint::strategy::NoCheckpointing;
    use burn_autodiff::grads::Gradients;
    use burn_autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn_backend::{DType, TensorMetadata};
    use burn_flex::{Flex, FlexTensor};

    /// A weight `[k, n]` as the `b` operand: its storage, and how to read it.
    #[derive(Debug, Clone)]
    pub(super) struct Weight {
        t: FlexTensor,
        k: usize,
        n: usize,
        trans: bool,
        ld: usize,
    }

    impl Weight {
        /// `None` unless an f32 CPU tensor.
        fn new(t: FlexTensor) -> Option<Self> {
            if t.dtype() != DType::F32 {
                return None;
            }
            let dims = t.shape().dims::<2>();
            let [k, n] = dims;
            let strides = t.layout().strides().to_vec();
            let (t, trans, ld) = match strides[..] {
                [s0, 1] if s0 >= n as isize && n > 0 => (t, false, s0 as usize),
                [1, s1] if s1 >= k as isize && k > 0 => (t, true, s1 as usize),
                _ => (t.to_contiguous(), false, n),
            };
            Some(Self { t, k, n, trans, ld })
        }

        fn storage(&self) -> &[f32] {
            &self.t.storage::<f32>()[self.t.layout().start_offset()..]
        }

        /// `a · op(self)`, or `a · op(self)ᵀ` with `transposed`, `a` contiguous `[m, ·]`.
        fn times(&self, a: &FlexTensor, transposed: bool, sgemm: SgemmFn) -> FlexTensor {
            let a = contiguous(a);
            let values = a.as_slice::<f32>().expect("contiguous f32");
            let (k, n) = if transposed {
                (self.n, self.k)
            } else {
                (self.k, self.n)
            };
            let m = values.len() / k.max(1);
            let mut c = vec![0.0f32; m * n];
            if m > 0 && n > 0 && k > 0 {
                sgemm(Sgemm {
                    m,
                    n,
                    k,
                    a: values,
                    b: self.storage(),
                    ldb: self.ld,
                    b_trans: self.trans != transposed,
                    c: &mut c,
                });
            }
            FlexTensor::from_data(TensorData::new(c, [m, n]))
        }
    }

    fn contiguous(t: &FlexTensor) -> FlexTensor {
        if t.as_slice::<f32>().is_some() {
            t.clone()
        } else {
            t.to_contiguous()
        }
    }

    /// The op in the autodiff graph; its state is the weight (`dx = dy Wᵀ`).
    #[derive(Debug)]
    struct MatmulFrozen(SgemmFn);

    impl Backward<Flex, 1> for MatmulFrozen {
        type State = Weight;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let w = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
                w.times(&dy, true, self.0)
            });
        }
    }

    pub(super) fn matmul_frozen(x: Tensor<2>, w: Tensor<2>, sgemm: SgemmFn) -> Tensor<2> {
        let weight = match w
            .clone()
            .try_into_primitive::<Flex>()
            .ok()
            .and_then(Weight::new)
        {
            Some(weight) => weight,
            None => return x.matmul(w),
        };
        if x.dtype() != burn::tensor::DType::F32 {
            return x.matmul(w);
        }
        if x.is_autodiff() {
            let Ok(x) = x.clone().try_into_primitive::<Ad>() else {
                return x.matmul(w);
            };
            let (primitive, guard) = x.into_parts();
            let y = weight.times(&primitive, false, sgemm);
            let out = match MatmulFrozen(sgemm)
                .prepare::<NoCheckpointing>([guard])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(weight, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            return Tensor::from_primitive::<Ad>(out);
        }
        match x.clone().try_into_primitive::<Flex>() {
            Ok(x) => Tensor::from_primitive::<Flex>(weight.times(&x, false, sgemm)),
            Err(_) => x.matmul(w),
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
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 3.0), &device);
        let mask = Tensor::<4>::random([2, 1, 1, 7], Distribution::Uniform(0.0, 1.0), &device)
            .lower_elem(0.3)
            .float()
            .mul_scalar(f32::MIN);
        let w = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), &device);
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
mod host_tests {
    use super::Sgemm;
    use burn::tensor::{Device, Distribution, Tensor};

    /// The textbook triple loop, in f64: what a host routine must compute.
    fn naive(g: Sgemm<'_>) {
        for i in 0..g.m {
            for j in 0..g.n {
                let mut sum = 0.0f64;
                for p in 0..g.k {
                    let b = if g.b_trans {
                        g.b[j * g.ldb + p]
                    } else {
                        g.b[p * g.ldb + j]
                    };
                    sum += g.a[i * g.k + p] as f64 * b as f64;
                }
                g.c[i * g.n + j] = sum as f32;
            }
        }
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.inner().into_data().try_to_vec::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// Values and the gradient of `x` against burn's matmul on the autodiff CPU device, for a
    /// weight stored `[k, n]`, a weight that is the transposed view of `[n, k]` (HF's layout,
    /// the tied embedding), and an `x` that is itself a transposed view; and the plain path.
    #[test]
    fn host_matmul_matches_burn() {
        let device = Device::flex();
        let (m, k, n) = (7, 5, 3);
        let stored = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), &device);
        let hf = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &device);
        let upstream = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);
        let x0 = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let x_t = Tensor::<2>::random([k, m], Distribution::Normal(0.0, 1.0), &device);
        for w in [stored, hf.transpose()] {
            for x in [x0.clone(), x_t.clone().transpose()] {
                let run = |host: bool| {
                    let xa = x.clone().autodiff().require_grad();
                    let y = if host {
                        super::host::matmul_frozen(xa.clone(), w.clone(), naive)
                    } else {
                        xa.clone().matmul(w.clone())
                    };
                    let grads = (y.clone() * upstream.clone()).sum().backward();
                    (
                        values(y),
                        values(xa.grad(&grads).expect("x has a gradient")),
                    )
                };
                let ((y_host, dx_host), (y_burn, dx_burn)) = (run(true), run(false));
                close(&y_host, &y_burn);
                close(&dx_host, &dx_burn);
                assert!(dx_host.iter().any(|g| g.abs() > 1e-3));
                let plain = super::host::matmul_frozen(x.clone(), w.clone(), naive);
                assert!(!plain.is_autodiff());
                close(&values(plain), &y_burn);
            }
        }
    }
}
