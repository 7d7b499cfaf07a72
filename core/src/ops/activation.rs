//! Feed-forward activations, by their transformers names.

use burn::tensor::activation::{gelu_approximate, relu, silu, tanh};
use burn::tensor::Tensor;

/// Feed-forward activation (`activation_function` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: transformers' "gelu".
    Gelu,
    /// Tanh-approximated GELU: "gelu_new", "gelu_pytorch_tanh", "gelu_fast".
    GeluTanh,
    Relu,
    /// "silu" / "swish".
    Silu,
    Tanh,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            "tanh" => Self::Tanh,
            _ => return None,
        })
    }
}

impl Activation {
    /// Applies the activation (exact GELU through [`crate::ops::gelu`], which picks its kernel).
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Gelu => crate::ops::gelu(x),
            Activation::GeluTanh => gelu_approximate(x),
            Activation::Relu => relu(x),
            Activation::Silu => silu(x),
            Activation::Tanh => tanh(x),
        }
    }
}

/// Exact GELU in place, each value as burn's CPU `gelu` computes it (`0.5 · x · (1 + erf(x /
/// √2))`, libm's `erff`: the same bits), in chunks split over the host's threads
/// ([`crate::ops::int8::Parallel`]) where burn's runs on one.
pub fn gelu_in_place(y: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    let len = y.len();
    let at = crate::ops::int8::SyncPtr(y.as_mut_ptr());
    let at = &at;
    crate::ops::int8::split_jobs(len.div_ceil(CHUNK), 1, len >= 4 * CHUNK, &|chunks| {
        for c in chunks {
            let n = CHUNK.min(len - c * CHUNK);
            // SAFETY: chunk c of `y` (alive and borrowed until every job has returned), disjoint
            // between jobs.
            let part = unsafe { std::slice::from_raw_parts_mut(at.0.add(c * CHUNK), n) };
            for x in part {
                *x = 0.5 * *x * (1.0 + libm::erff(*x / core::f32::consts::SQRT_2));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    /// [`super::gelu_in_place`] gives burn's CPU `gelu` bits (every range of libm's `erff`).
    #[test]
    fn gelu_in_place_is_burns() {
        // burn's CPU backend (the one a host-held model runs beside), whatever the build's default.
        let device = burn::tensor::Device::flex();
        let x: Vec<f32> = (0..200_003)
            .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 2f32.powi(i % 9 - 3))
            .chain([0.0, -0.0, 1e-30, -7.0, 7.0, 100.0, -100.0])
            .collect();
        let n = x.len();
        let want = burn::tensor::activation::gelu(burn::tensor::Tensor::<1>::from_data(
            burn::tensor::TensorData::new(x.clone(), [n]),
            &device,
        ))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
        let mut got = x;
        super::gelu_in_place(&mut got);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
    }
}
