//! T5 (`T5ForConditionalGeneration`, model_type `t5`): t5-small/base/large and
//! google/flan-t5-small/base/large.
//!
//! - [`config`]: `config.json` → [`T5Config`]; [`T5Config::init`] builds the model.
//! - [`model`]: the math, top-down: [`T5`] → encoder / decoder stacks → blocks → attention and
//!   feed-forward; the relative position buckets.
//! - [`params`]: the one walk over Hugging Face weight names, and the loader.

pub mod config;
pub mod model;
pub mod params;

pub use config::T5Config;
pub use model::T5;
