//! BART (`BartForConditionalGeneration`, model_type `bart`): bart-base/large, bart-large-cnn,
//! distilbart.
//!
//! - [`config`]: `config.json` → [`BartConfig`]; [`BartConfig::init`] builds the model.
//! - [`model`]: the math, top-down: [`Bart`] → encoder / decoder → layers → attention.
//! - [`params`]: the one walk over Hugging Face weight names (load, save, LoRA, merge,
//!   quantization all go through it).

pub mod config;
pub mod model;
pub mod params;

pub use config::BartConfig;
pub use model::Bart;
