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

use burn::tensor::Tensor;

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
