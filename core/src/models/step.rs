//! A model as the generation loop sees it: one decoding step over a decoder cache.

use super::Model;
use crate::generate::StepModel;
use crate::ops::attention::DecoderCache;
use crate::{Error, Result};
use burn::tensor::{Int, Tensor, TensorData};

/// [`StepModel`] over a [`Model`]'s decoder cache.
pub struct ModelStep<'m> {
    model: &'m Model,
    cache: DecoderCache,
    vocab_size: usize,
}

impl<'m> ModelStep<'m> {
    pub fn new(model: &'m Model, cache: DecoderCache, vocab_size: usize) -> Self {
        Self {
            model,
            cache,
            vocab_size,
        }
    }
}

impl StepModel for ModelStep<'_> {
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

/// [`StepModel`] over a decoder-only model: the first step runs the whole left-padded prompt
/// (once per input) and hands each input's last logits to its `rows_per_input` beams; later
/// steps feed one token per row.
pub struct CausalStep<'m> {
    model: &'m crate::models::llama::Llama,
    cache: crate::models::llama::CausalCache,
    /// The prompts and their attention masks, until the first step runs them.
    prompt: Option<(Vec<Vec<u32>>, Vec<Vec<u32>>)>,
    /// Every row's tokens and attention mask so far (for a model that recomputes its cache).
    history: Vec<(Vec<u32>, Vec<u32>)>,
    rows_per_input: usize,
    vocab_size: usize,
}

impl<'m> CausalStep<'m> {
    pub fn new(
        model: &'m crate::models::llama::Llama,
        prompts: Vec<Vec<u32>>,
        attention_mask: Vec<Vec<u32>>,
        rows_per_input: usize,
        vocab_size: usize,
    ) -> Self {
        Self {
            cache: model.start(prompts.len()),
            model,
            prompt: Some((prompts, attention_mask)),
            history: Vec::new(),
            rows_per_input,
            vocab_size,
        }
    }
}

async fn read_logits(logits: Tensor<3>) -> Result<Vec<f32>> {
    logits
        .into_data_async()
        .await
        .map_err(|e| Error::Device(format!("reading logits: {e:?}")))?
        .try_to_vec::<f32>()
        .map_err(|e| Error::Device(format!("reading logits: {e:?}")))
}

impl StepModel for CausalStep<'_> {
    async fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let device = self.model.device();
        if let Some((prompts, mask)) = self.prompt.take() {
            let ids = crate::pipeline::ids_tensor(&prompts, &device);
            let logits = self.model.forward_cached(ids, &mask, &mut self.cache, true);
            let logits = read_logits(logits).await?;
            let g = self.rows_per_input;
            let src: Vec<usize> = (0..prompts.len() * g).map(|r| r / g).collect();
            if self.model.recompute_at.is_some() {
                self.history = src
                    .iter()
                    .map(|&i| (prompts[i].clone(), mask[i].clone()))
                    .collect();
            }
            if g == 1 {
                return Ok(logits);
            }
            self.cache.reorder(&src, &device)?;
            let v = self.vocab_size;
            return Ok(src
                .iter()
                .flat_map(|&i| logits[i * v..(i + 1) * v].iter().copied())
                .collect());
        }
        let rows = tokens.len();
        if let Some(at) = self.model.recompute_at {
            for ((ids, mask), &t) in self.history.iter_mut().zip(tokens) {
                ids.push(t);
                mask.push(1);
            }
            // The sequence reaches `at` tokens with the cache built before it: run it whole.
            if self.cache.len() + 1 == at {
                let (ids, mask): (Vec<Vec<u32>>, Vec<Vec<u32>>) =
                    self.history.iter().cloned().unzip();
                self.cache = self.model.start(rows);
                let logits = self.model.forward_recompute(
                    crate::pipeline::ids_tensor(&ids, &device),
                    &mask,
                    &mut self.cache,
                );
                return read_logits(logits).await;
            }
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, 1]), &device);
        let mask = vec![vec![1u32]; rows];
        let logits = self.model.forward_cached(ids, &mask, &mut self.cache, true);
        read_logits(logits).await
    }

    fn reorder(&mut self, src: &[usize]) -> Result<()> {
        if src.iter().enumerate().any(|(i, &s)| i != s) {
            self.cache.reorder(src, &self.model.device())?;
            if !self.history.is_empty() {
                self.history = src.iter().map(|&i| self.history[i].clone()).collect();
            }
        }
        Ok(())
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}
