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
