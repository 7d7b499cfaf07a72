//! One folder per architecture, each with the same parts: `config.rs` (the Hugging Face
//! config), `model.rs` (the math only, calling [`crate::ops`]), `params.rs` (the one walk over
//! its Hugging Face weight names, [`crate::checkpoint::Params`]).
//!
//! - [`bart`]: BART, the summarizers (`BartForConditionalGeneration`).
//! - [`bert`]: the BERT-family encoders BERTScore embeds text with.

pub mod bart;
pub mod bert;
