//! The Llama family of decoder-only models: `LlamaForCausalLM` (Llama 3.2 1B/3B Instruct),
//! `Phi3ForCausalLM` (Phi-3-mini) and `Qwen2ForCausalLM` — one math, three namings.
//!
//! - [`config`]: `config.json` → [`LlamaConfig`] (rope scaling, GQA, biases); [`LlamaConfig::init`]
//!   builds the model.
//! - [`model`]: the math, top-down: [`Llama`] → layers → attention and MLP; [`model::CausalCache`].
//! - [`params`]: the one walk over Hugging Face weight names (Phi-3's fused ones included), and
//!   the loader.

pub mod config;
pub mod gguf;
pub mod model;
pub mod params;

pub use config::{Family, LlamaConfig};
pub use model::{CausalCache, Llama};
