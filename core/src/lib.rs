//! `bartleby-core`: BART (and its LoRA-adapted variants) on burn, computing what Hugging Face
//! transformers' `BartForConditionalGeneration` computes.
//!
//! The crate is pure: no filesystem, no network, no threads of its own. Callers hand it bytes
//! (config.json, safetensors, tokenizer.json) and get values back. It compiles for native targets
//! and for `wasm32-unknown-unknown`.

pub mod bert;
pub mod bundle;
pub mod config;
pub mod fused;
pub mod generate;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod int8;
pub mod lora;
pub mod metrics;
pub mod model;
pub mod quant;
pub mod summarize;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;
pub mod weights;

pub use config::BartConfig;
pub use generate::{EarlyStopping, GenerationConfig};
pub use model::Bart;
pub use summarize::{Summarizer, Summary};
pub use tokenizer::BartTokenizer;

/// Everything that can go wrong in the core. Messages are one line and name the file/field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file is malformed or lacks a required key.
    #[error("{file}: {message}")]
    Config { file: String, message: String },
    /// A checkpoint is unreadable, lacks a tensor or has one of the wrong shape.
    #[error("weights: {0}")]
    Weights(String),
    /// The tokenizer files are unusable.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Invalid generation settings or a failure while generating.
    #[error("generation: {0}")]
    Generation(String),
    /// Invalid input to the model (empty batch, too long, ...).
    #[error("input: {0}")]
    Input(String),
    /// A tensor could not be read back from the device.
    #[error("device: {0}")]
    Device(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
