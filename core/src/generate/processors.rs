//! Logits processors, in the order of transformers' `_get_logits_processor`.

use super::*;
use crate::Error;

pub(super) struct Processors {
    no_repeat_ngram_size: usize,
    min_length: usize,
    eos: Vec<u32>,
    forced_bos: Option<u32>,
    forced_eos: Option<u32>,
    max_length: usize,
}

impl Processors {
    /// The processors for sequences that start with a prompt of `prompt_len` tokens (1 for an
    /// encoder-decoder's decoder start token) and stop at `max_length`.
    pub(super) fn new(
        cfg: &GenerationConfig,
        vocab: usize,
        prompt_len: usize,
        max_length: usize,
    ) -> Result<Self, Error> {
        for (name, id) in [
            ("forced_bos_token_id", cfg.forced_bos_token_id),
            ("forced_eos_token_id", cfg.forced_eos_token_id),
        ] {
            if let Some(t) = id {
                if t as usize >= vocab {
                    return Err(gen_err(format!("`{name}` {t} >= vocab size {vocab}")));
                }
            }
        }
        Ok(Processors {
            no_repeat_ngram_size: cfg.no_repeat_ngram_size,
            min_length: cfg.min_length_after(prompt_len),
            eos: cfg.eos_ids(),
            forced_bos: cfg.forced_bos_token_id,
            forced_eos: cfg.forced_eos_token_id,
            max_length,
        })
    }

    /// Applies the processors, in `_get_logits_processor` order, to one row of scores
    /// whose decoder sequence so far is `seq` (its length is `cur_len`).
    pub(super) fn apply(&self, row: &mut [f32], seq: &[u32]) {
        let cur_len = seq.len();
        let vocab = row.len();
        // NoRepeatNGramLogitsProcessor
        let n = self.no_repeat_ngram_size;
        if n > 0 && cur_len + 1 >= n && cur_len >= n {
            let prefix = &seq[cur_len + 1 - n..cur_len];
            for i in 0..=cur_len - n {
                if &seq[i..i + n - 1] == prefix {
                    let t = seq[i + n - 1] as usize;
                    if t < vocab {
                        row[t] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        // MinLengthLogitsProcessor (+ MinNewTokensLengthLogitsProcessor, identical
        // condition once min_length = 1 + min_new_tokens)
        if self.min_length > 0 && cur_len < self.min_length {
            for &e in &self.eos {
                if (e as usize) < vocab {
                    row[e as usize] = f32::NEG_INFINITY;
                }
            }
        }
        // ForcedBOSTokenLogitsProcessor
        if let Some(b) = self.forced_bos {
            if cur_len == 1 {
                row.fill(f32::NEG_INFINITY);
                row[b as usize] = 0.0;
            }
        }
        // ForcedEOSTokenLogitsProcessor
        if let Some(e) = self.forced_eos {
            if cur_len + 1 == self.max_length {
                row.fill(f32::NEG_INFINITY);
                row[e as usize] = 0.0;
            }
        }
    }
}
