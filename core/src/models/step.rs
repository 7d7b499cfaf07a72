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
