//! The summarization pipeline that the CLI, the server and the web app share:
//! text → token ids → encoder → generation → token ids → text.

use crate::config::BartConfig;
use crate::generate::{generate_async, GenerationConfig, StepModel};
use crate::model::{Bart, DecoderCache};
use crate::tokenizer::BartTokenizer;
use crate::{Error, Result};
use burn::tensor::{Int, Tensor, TensorData};

/// One generated summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub summary: String,
    /// The full decoder sequence as transformers' `generate` returns it (decoder start token
    /// first), without padding.
    pub token_ids: Vec<u32>,
}

/// A loaded model with its tokenizer and default generation settings.
pub struct Summarizer {
    pub model: Bart,
    pub tokenizer: BartTokenizer,
    pub config: BartConfig,
    /// What `model.generate()` would use (generation_config.json, else config.json).
    pub generation: GenerationConfig,
    /// Whether the checkpoint has a generation_config.json.
    pub has_generation_config_file: bool,
}

/// [`StepModel`] over a [`Bart`] decoder cache.
pub struct BartStep<'m> {
    model: &'m Bart,
    cache: DecoderCache,
    vocab_size: usize,
}

impl<'m> BartStep<'m> {
    pub fn new(model: &'m Bart, cache: DecoderCache, vocab_size: usize) -> Self {
        Self {
            model,
            cache,
            vocab_size,
        }
    }
}

impl StepModel for BartStep<'_> {
    async fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let rows = tokens.len();
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, 1]), &self.model.device());
        let logits = self.model.decode(ids, &mut self.cache);
        logits
            .into_data_async()
            .await
            .map_err(|e| Error::Device(format!("reading logits: {e:?}")))?
            .try_to_vec::<f32>()
            .map_err(|e| Error::Device(format!("reading logits: {e:?}")))
    }

    fn reorder(&mut self, src: &[usize]) -> Result<()> {
        if src.iter().enumerate().any(|(i, &s)| i != s) {
            self.cache.reorder(src)?;
        }
        Ok(())
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

/// `[batch, width]` int tensor from rows of ids.
pub fn ids_tensor(rows: &[Vec<u32>], device: &burn::tensor::Device) -> Tensor<2, Int> {
    let width = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), width]), device)
}

impl Summarizer {
    /// The longest input the model can read (its learned position table).
    pub fn max_input_tokens(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Checks settings against the model before any work is done.
    pub fn validate(&self, gen: &GenerationConfig, max_input_tokens: usize) -> Result<()> {
        let max_pos = self.config.max_position_embeddings;
        if max_input_tokens > max_pos {
            return Err(Error::Input(format!(
                "max input tokens {max_input_tokens} exceeds the model's max_position_embeddings {max_pos}"
            )));
        }
        if max_input_tokens < 2 {
            return Err(Error::Input(format!(
                "max input tokens must be at least 2, got {max_input_tokens}"
            )));
        }
        gen.validate()?;
        const MAX_BEAMS: usize = 256;
        if gen.num_beams > MAX_BEAMS {
            return Err(Error::Generation(format!(
                "num_beams {} is more than {MAX_BEAMS}",
                gen.num_beams
            )));
        }
        let vocab = self.config.vocab_size;
        let ids = [
            ("decoder_start_token_id", Some(gen.decoder_start_token_id)),
            ("pad_token_id", Some(gen.pad_token_id)),
            ("eos_token_id", gen.eos_token_id),
            ("forced_bos_token_id", gen.forced_bos_token_id),
            ("forced_eos_token_id", gen.forced_eos_token_id),
        ];
        for (name, id) in ids {
            if let Some(id) = id.filter(|&id| id as usize >= vocab) {
                return Err(Error::Generation(format!(
                    "{name} {id} is outside the model's vocabulary (vocab_size {vocab})"
                )));
            }
        }
        let max_len = gen.effective_max_length();
        if max_len > max_pos + 1 {
            return Err(Error::Generation(format!(
                "max length {max_len} would feed the decoder more positions than max_position_embeddings {max_pos}"
            )));
        }
        Ok(())
    }

    /// The settings for summarization: [`Self::generation`], except that a checkpoint without
    /// generation_config.json takes config.json's `task_specific_params.summarization` (minus
    /// its `prefix`) on top, as if passed to `generate(**params)` — the old-style hub configs
    /// that keep their summarization settings only there. Returns the settings and whether
    /// the task parameters were used.
    pub fn summarization_generation(&self) -> Result<(GenerationConfig, bool)> {
        let mut gen = self.generation.clone();
        let params = self
            .config
            .raw
            .get("task_specific_params")
            .and_then(|t| t.get("summarization"));
        match params {
            Some(params) if !self.has_generation_config_file => {
                let mut params = params.clone();
                if let Some(obj) = params.as_object_mut() {
                    obj.remove("prefix");
                }
                gen.apply_kwargs(&params)?;
                Ok((gen, true))
            }
            _ => Ok((gen, false)),
        }
    }

    /// Tokenizes one text as [`Self::summarize`] would and checks that the model can read it.
    pub fn check_input(&self, text: &str, max_input_tokens: usize) -> Result<()> {
        let ids = self.tokenizer.encode(text, Some(max_input_tokens))?;
        self.check_ids(&ids)
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::Input(format!(
                "token {bad} ({:?}) is outside the model's vocabulary (vocab_size {})",
                self.tokenizer.decode(&[bad], false).unwrap_or_default(),
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// Summarizes a batch of texts; returns `num_return_sequences` summaries per text, best first.
    /// `on_step` is [`crate::generate::generate`]'s progress callback. Blocks until done (see
    /// [`Self::summarize_async`] for WebGPU in a browser).
    pub fn summarize(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    ) -> Result<Vec<Vec<Summary>>> {
        block_on(self.summarize_async(texts, gen, max_input_tokens, on_step))
    }

    /// [`Self::summarize`] as a future.
    pub async fn summarize_async(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    ) -> Result<Vec<Vec<Summary>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.validate(gen, max_input_tokens)?;
        let batch =
            self.tokenizer
                .encode_batch(texts, Some(max_input_tokens), self.config.pad_token_id)?;
        for ids in &batch.input_ids {
            self.check_ids(ids)?;
        }
        let sequences = self
            .generate_ids_async(&batch.input_ids, &batch.attention_mask, gen, on_step)
            .await?;
        let per_input = gen.num_return_sequences;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in sequences.chunks(per_input) {
            let summaries = chunk
                .iter()
                .map(|ids| {
                    Ok(Summary {
                        summary: self.tokenizer.decode(ids, true)?,
                        token_ids: ids.clone(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(summaries);
        }
        Ok(out)
    }

    /// Generation from already tokenized, right-padded inputs.
    pub fn generate_ids(
        &self,
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<u32>],
        gen: &GenerationConfig,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    ) -> Result<Vec<Vec<u32>>> {
        block_on(self.generate_ids_async(input_ids, attention_mask, gen, on_step))
    }

    /// [`Self::generate_ids`] as a future.
    pub async fn generate_ids_async(
        &self,
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<u32>],
        gen: &GenerationConfig,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    ) -> Result<Vec<Vec<u32>>> {
        let device = self.model.device();
        let encoded = self.model.encode(
            ids_tensor(input_ids, &device),
            ids_tensor(attention_mask, &device),
        );
        let cache = self.model.start_decoding(&encoded, gen.num_beams);
        let mut step = BartStep::new(&self.model, cache, self.config.vocab_size);
        generate_async(&mut step, input_ids.len(), gen, on_step).await
    }
}

/// Runs a future to completion where the device reads synchronously (native, and the CPU
/// backend in wasm); an error where it cannot (WebGPU in a browser: use the `_async` form).
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    burn::tensor::try_read_sync(f).unwrap_or_else(|| {
        Err(Error::Device(
            "this device reads results asynchronously (WebGPU in a browser): use the async form"
                .into(),
        ))
    })
}
