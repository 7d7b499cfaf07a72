//! One folder per architecture, each with the same parts: `config.rs` (the Hugging Face
//! config), `model.rs` (the math only, calling [`crate::ops`]), `params.rs` (the one walk over
//! its Hugging Face weight names, [`crate::checkpoint::Params`], and its loader).
//!
//! - [`bart`]: BART (`BartForConditionalGeneration`).
//! - [`t5`]: T5 and FLAN-T5 (`T5ForConditionalGeneration`).
//! - [`llama`]: decoder-only Llama 3.2, Phi-3 and Qwen2 (`LlamaForCausalLM`,
//!   `Phi3ForCausalLM`, `Qwen2ForCausalLM`): prompted, generating after the prompt.
//! - [`bert`]: the BERT-family encoders BERTScore embeds text with.
//!
//! [`Model`] and [`ModelConfig`] are the summarizers of every architecture behind one type:
//! what the pipeline, training, merging and export work with. Adding an architecture means a
//! folder and one arm in each `match` below.

pub mod bart;
pub mod bert;
pub mod llama;
pub mod step;
pub mod t5;

pub use step::{CausalStep, ModelStep};

use crate::checkpoint::{Checkpoint, LoadOptions, LoadReport, Params, Slot};
use crate::ops::attention::{DecoderCache, Encoded};
use crate::ops::Proj;
use crate::{Error, Result};
use bart::{Bart, BartConfig};
use burn::module::Param;
use burn::tensor::{DType, Device, Int, Tensor};
use llama::{Llama, LlamaConfig};
use serde_json::Value;
use t5::{T5Config, T5};

/// The config of a supported sequence-to-sequence checkpoint, by its `model_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Bart(BartConfig),
    T5(T5Config),
    Llama(LlamaConfig),
}

/// A loaded sequence-to-sequence model of any supported architecture.
#[derive(Debug, Clone)]
pub enum Model {
    Bart(Bart),
    T5(T5),
    Llama(Llama),
}

/// The `model_type`s Bartleby runs.
pub const SUPPORTED: &str = "\"bart\", \"t5\", \"llama\", \"phi3\", \"qwen2\"";

impl ModelConfig {
    /// Parses `config.json` by its `model_type`. `file` names the source in error messages.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let err = |message: String| Error::Config {
            file: file.to_string(),
            message,
        };
        let raw: Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
        match raw.get("model_type").and_then(Value::as_str) {
            Some("bart") => Ok(Self::Bart(BartConfig::from_json(bytes, file)?)),
            Some("t5") => Ok(Self::T5(T5Config::from_json(bytes, file)?)),
            Some("llama" | "phi3" | "qwen2") => {
                Ok(Self::Llama(LlamaConfig::from_json(bytes, file)?))
            }
            Some(other) => Err(err(format!(
                "unsupported model_type {other:?} (Bartleby runs model_type {SUPPORTED})"
            ))),
            None if raw.is_object() => Err(err("missing required key \"model_type\"".into())),
            None => Err(err("expected a JSON object".into())),
        }
    }

    /// config.json's `model_type` (`bart`, `t5`, `llama`, `phi3`, `qwen2`).
    pub fn model_type(&self) -> &'static str {
        match self {
            Self::Bart(_) => "bart",
            Self::T5(_) => "t5",
            Self::Llama(c) => c.family.model_type(),
        }
    }

    pub fn architecture(&self) -> &'static str {
        self.model_type()
    }

    /// Whether the model is decoder-only (prompted; it generates after its prompt).
    pub fn is_decoder_only(&self) -> bool {
        matches!(self, Self::Llama(_))
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bart(c) => c.vocab_size,
            Self::T5(c) => c.vocab_size,
            Self::Llama(c) => c.vocab_size,
        }
    }

    pub fn pad_token_id(&self) -> u32 {
        match self {
            Self::Bart(c) => c.pad_token_id,
            Self::T5(c) => c.pad_token_id,
            // None in Llama 3's config: generation pads with the first eos, as transformers does.
            Self::Llama(c) => c
                .pad_token_id
                .or(c.eos_token_ids.first().copied())
                .unwrap_or(0),
        }
    }

    /// The longest input the model's positions allow: BART's learned table; none for T5
    /// (relative positions: the tokenizer's `model_max_length` is the limit transformers uses).
    pub fn max_position_embeddings(&self) -> Option<usize> {
        match self {
            Self::Bart(c) => Some(c.max_position_embeddings),
            Self::T5(_) => None,
            Self::Llama(c) => Some(c.max_position_embeddings),
        }
    }

    /// The training dropout of attention weights and activations besides the main one (BART's
    /// `attention_dropout`, `activation_dropout`; T5 has only `dropout_rate`).
    pub fn attention_activation_dropout(&self) -> (f64, f64) {
        match self {
            Self::Bart(c) => (c.attention_dropout, c.activation_dropout),
            Self::T5(c) => (c.dropout_rate, c.dropout_rate),
            Self::Llama(_) => (0.0, 0.0),
        }
    }

    /// The projections PEFT adapts when `target_modules` is not given
    /// (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`: BART `q_proj`, `v_proj`; T5 `q`, `v`).
    pub fn lora_default_targets(&self) -> Vec<String> {
        let names: &[&str] = match self {
            Self::Bart(_) => &["q_proj", "v_proj"],
            Self::T5(_) => &["q", "v"],
            Self::Llama(c) if c.family == llama::Family::Phi3 => &["qkv_proj"],
            Self::Llama(_) => &["q_proj", "v_proj"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Things in the file that transformers ignores and so do we.
    pub fn warnings(&self) -> &[String] {
        match self {
            Self::Bart(c) => &c.warnings,
            Self::T5(_) | Self::Llama(_) => &[],
        }
    }

    /// The parsed file, to be written back unchanged (merge, export).
    pub fn raw(&self) -> &Value {
        match self {
            Self::Bart(c) => &c.raw,
            Self::T5(c) => &c.raw,
            Self::Llama(c) => &c.raw,
        }
    }

    pub fn num_parameters(&self) -> usize {
        match self {
            Self::Bart(c) => c.num_parameters(),
            Self::T5(c) => c.num_parameters(),
            Self::Llama(c) => c.num_parameters(),
        }
    }

    /// The summarization prefix transformers' pipeline puts before every input
    /// (`task_specific_params.summarization.prefix`, e.g. `summarize: ` for T5), if any.
    pub fn summarization_prefix(&self) -> Option<String> {
        self.raw()
            .get("task_specific_params")?
            .get("summarization")?
            .get("prefix")?
            .as_str()
            .map(str::to_string)
    }

    /// The model's structure with zero-memory placeholder weights (nothing to compute with:
    /// what a caller puts in place of a model it is done with before loading the next).
    pub fn placeholder(&self, device: &Device) -> Model {
        match self {
            Self::Bart(c) => Model::Bart(c.init(device)),
            Self::T5(c) => Model::T5(c.init(device)),
            Self::Llama(c) => Model::Llama(c.init(device)),
        }
    }

    /// Builds the model on `device` from a checkpoint (see [`crate::checkpoint::load`]).
    pub fn load(
        &self,
        checkpoint: &Checkpoint<'_>,
        device: &Device,
        options: LoadOptions,
        converted: &mut dyn FnMut(&[u8]),
    ) -> Result<(Model, LoadReport)> {
        // Before anything is allocated: a config describing far more parameters than the
        // weights hold (e.g. `decoder_layers: 1000000`) cannot load, however it is stored
        // (q4 packs two values per byte, hence the slack).
        let stored: u64 = checkpoint
            .names()
            .filter_map(|n| checkpoint.get(n))
            .map(|(_, view)| view.shape().iter().map(|&d| d as u64).product::<u64>())
            .sum();
        let wanted = self.num_parameters() as u64;
        if wanted > stored.saturating_mul(8).saturating_add(1 << 24) {
            return Err(Error::Config {
                file: "config.json".into(),
                message: format!(
                    "describes a model of {wanted} parameters, but the weights hold {stored} values: \
                     the config does not belong to these weights"
                ),
            });
        }
        Ok(match self {
            Self::Bart(c) => {
                let (m, r) =
                    bart::params::load_bart_opts(c, checkpoint, device, options, converted)?;
                (Model::Bart(m), r)
            }
            Self::T5(c) => {
                let (m, r) = t5::params::load_t5(c, checkpoint, device, options, converted)?;
                (Model::T5(m), r)
            }
            Self::Llama(c) => {
                let (m, r) = llama::params::load_llama(c, checkpoint, device, options, converted)?;
                (Model::Llama(m), r)
            }
        })
    }
}

/// `match` on the architecture with the same expression for every arm.
macro_rules! each {
    ($model:expr, $m:ident => $e:expr) => {
        match $model {
            Model::Bart($m) => $e,
            Model::T5($m) => $e,
            Model::Llama($m) => $e,
        }
    };
}

impl Model {
    pub fn device(&self) -> Device {
        each!(self, m => m.device())
    }

    /// Encodes `input_ids` `[batch, src_len]`; `attention_mask` is 1 for tokens, 0 for padding.
    /// Encoder-decoder models only (callers check [`ModelConfig::is_decoder_only`] first).
    pub fn encode(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Encoded {
        match self {
            Model::Bart(m) => m.encode(input_ids, attention_mask),
            Model::T5(m) => m.encode(input_ids, attention_mask),
            Model::Llama(_) => seq2seq_only("encode"),
        }
    }

    /// Starts decoding `rows_per_input` rows (beams) for each input of `encoded`.
    pub fn start_decoding(&self, encoded: &Encoded, rows_per_input: usize) -> DecoderCache {
        match self {
            Model::Bart(m) => m.start_decoding(encoded, rows_per_input),
            Model::T5(m) => m.start_decoding(encoded, rows_per_input),
            Model::Llama(_) => seq2seq_only("start_decoding"),
        }
    }

    /// Feeds `tokens` `[rows, new_len]` and returns the logits `[rows, new_len, vocab]`.
    pub fn decode(&self, tokens: Tensor<2, Int>, cache: &mut DecoderCache) -> Tensor<3> {
        match self {
            Model::Bart(m) => m.decode(tokens, cache),
            Model::T5(m) => m.decode(tokens, cache),
            Model::Llama(_) => seq2seq_only("decode"),
        }
    }

    /// Teacher-forced forward pass, as `model(input_ids, attention_mask, decoder_input_ids)`.
    /// Encoder-decoder models only.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        decoder_input_ids: Tensor<2, Int>,
    ) -> (Encoded, Tensor<3>) {
        match self {
            Model::Bart(m) => m.forward(input_ids, attention_mask, decoder_input_ids),
            Model::T5(m) => m.forward(input_ids, attention_mask, decoder_input_ids),
            Model::Llama(_) => seq2seq_only("forward"),
        }
    }

    /// The decoder-only model, if this is one.
    pub fn as_llama(&self) -> Option<&Llama> {
        match self {
            Model::Llama(m) => Some(m),
            _ => None,
        }
    }

    /// Puts every weight back into its plain f32 tensor.
    pub fn materialize(&mut self) {
        each!(self, m => m.materialize())
    }

    /// Training mode: activations on the autodiff device from the embeddings on.
    pub fn set_training(&mut self, on: bool) {
        each!(self, m => m.training = on)
    }

    /// The training dropout probabilities: BART's `dropout`, `attention_dropout`,
    /// `activation_dropout`; T5 has one (`dropout_rate`, the first).
    pub fn set_dropout(&mut self, dropout: f64, attention: f64, activation: f64) {
        match self {
            Model::Bart(m) => m.set_dropout(dropout, attention, activation),
            Model::T5(m) => m.set_dropout(dropout),
            // Llama-family checkpoints train without dropout (`attention_dropout` 0).
            Model::Llama(_) => {}
        }
    }

    /// The BART model, if this is one.
    pub fn as_bart(&self) -> Option<&Bart> {
        match self {
            Model::Bart(m) => Some(m),
            _ => None,
        }
    }

    /// The T5 model, if this is one.
    pub fn as_t5(&self) -> Option<&T5> {
        match self {
            Model::T5(m) => Some(m),
            _ => None,
        }
    }

    /// How many row blocks the embedding table is held in (0: one tensor).
    pub fn table_parts(&self) -> usize {
        each!(self, m => m.shared_parts.len())
    }

    /// Mixed precision, as PyTorch's autocast runs a model loaded with `torch_dtype=bfloat16`
    /// (or float16) under `bf16=True`: every weight matrix (projections, embeddings, positions,
    /// position-bias tables) is held in `dtype` and takes its products in it (on the CPU with
    /// f32 accumulation, rounded once: [`crate::ops::matmul_in`]); activations, norms, softmax,
    /// residual sums, biases, LoRA branches and the loss stay in f32. LoRA factors and 1-D
    /// parameters are not touched; int8 weights neither. Returns how many matrices were cast.
    pub fn hold_matrices_in(&mut self, dtype: DType) -> usize {
        let cast = |p: &mut Param<Tensor<2>>| {
            let t = p.val();
            if matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) && t.dtype() != dtype {
                *p = Param::from_tensor(t.cast(dtype));
                1
            } else {
                0
            }
        };
        let mut n = 0;
        each!(self, m => for part in &mut m.shared_parts {
            n += cast(part);
        });
        let _ = self.visit(&mut |_, slot| {
            if let Slot::Matrix(p) = slot {
                n += cast(p);
            }
            Ok(())
        });
        let _ = self.visit_projections(&mut |_, proj| {
            if proj.host.is_none() {
                n += cast(&mut proj.linear.weight);
            }
            Ok(())
        });
        n
    }
}

impl Params for Model {
    fn embedding_table(&self) -> &'static str {
        each!(self, m => m.embedding_table())
    }

    fn vector_shapes(&self) -> fn(&str, usize) -> Vec<usize> {
        each!(self, m => m.vector_shapes())
    }

    fn visit(&mut self, f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>) -> Result<()> {
        each!(self, m => Params::visit(m, f))
    }

    fn visit_projections(
        &mut self,
        f: &mut dyn FnMut(String, &mut Proj) -> Result<()>,
    ) -> Result<()> {
        each!(self, m => Params::visit_projections(m, f))
    }

    fn device(&self) -> Device {
        Model::device(self)
    }

    fn materialize(&mut self) {
        Model::materialize(self)
    }
}

/// The encoder-decoder entry points called on a decoder-only model: a caller's bug (every
/// command checks [`ModelConfig::is_decoder_only`] before it gets here).
fn seq2seq_only(what: &str) -> ! {
    panic!("Model::{what} is for encoder-decoder models; this one is decoder-only")
}
