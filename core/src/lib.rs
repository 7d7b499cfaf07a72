//! `bartleby-core`: summarization models on burn, computing what Hugging Face transformers
//! computes for them — BART today (`BartForConditionalGeneration`), with the BERT-family encoders
//! BERTScore uses.
//!
//! The crate is pure: no filesystem, no network, no threads of its own. Callers hand it bytes
//! (config.json, safetensors, tokenizer.json) and get values back. It compiles for native targets
//! and for `wasm32-unknown-unknown`.
//!
//! Layout (a request's path through it: [`pipeline`] → [`tokenizer`] → `models::<family>` →
//! [`ops`] → [`generate`] → [`tokenizer`]):
//! - [`models`]: one folder per architecture — `config.rs`, `model.rs` (the math), `params.rs`
//!   (the one walk over its Hugging Face weight names).
//! - [`ops`]: every op model code calls; each chooses its kernel inside (burn, GPU kernels, int8,
//!   the host BLAS hook).
//! - [`checkpoint`]: safetensors in/out, the quantized codec, web bundle manifests, PEFT adapters.
//! - [`generate`]: generation settings, logits processors, greedy and beam search, torch-exact
//!   numerics, over the tensor-free [`generate::StepModel`] every architecture implements.
//! - [`pipeline`]: the one assembler (files as bytes + [`checkpoint::LoadOptions`] → a
//!   [`Summarizer`]) and text → summary.
//! - [`metrics`]: ROUGE, BLEU, BERTScore, failure analysis, and the report types the CLI writes.
//! - `train` (feature `train`): training steps (loss, AdamW, schedules).

pub mod chat;
pub mod checkpoint;
pub mod generate;
pub mod long;
pub mod metrics;
pub mod models;
pub mod ops;
pub mod pipeline;
pub mod sampling;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;

pub use generate::{EarlyStopping, GenerationConfig};
pub use long::{LongInfo, LongMode, LongOptions};
pub use models::bart::{Bart, BartConfig};
pub use pipeline::{LongEvent, Summarizer, Summary};
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
    /// One input of a batch could not be summarized (`index` into the batch's texts).
    #[error("input: {message}")]
    InputAt { index: usize, message: String },
    /// A tensor could not be read back from the device.
    #[error("device: {0}")]
    Device(String),
    /// Generation was stopped by its caller (`generate_until`'s `stop`).
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
