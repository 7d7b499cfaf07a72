//! BERT and RoBERTa encoders as transformers' `BertModel` / `RobertaModel` compute them (post-LN,
//! learned absolute positions, token type 0), cut after their first `L` layers the way bert_score
//! truncates them: [`BertEncoder::hidden_states`] is `output_hidden_states[L]` (`L = 0`: the
//! embedding output).
//!
//! Pure like the rest of the core: `config.json` and safetensors bytes in, tensors out, on any
//! burn device.

pub mod config;
pub mod model;
pub mod params;

pub use config::{BertConfig, BertKind};
pub use model::{BertEncoder, BertLayer};
pub use params::load_encoder;
