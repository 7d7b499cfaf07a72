//! Greedy and beam-search generation for BART, reproducing Hugging Face
//! transformers 4.57.6 `generate()` for `BartForConditionalGeneration`.
//!
//! Pure Rust, no tensor library: the model side implements [`StepModel`].
//!
//! What is reproduced, and where it lives in transformers 4.57.6:
//! - `GenerationMixin._sample` (greedy, `do_sample=False`): raw float32 logits ->
//!   logits processors -> `torch.argmax` (first maximal index, NaN counts as maximal);
//!   finished rows get `pad_token_id`; stop when every row is finished or `max_length`
//!   is reached.
//! - `GenerationMixin._beam_search` and its helpers `_get_top_k_continuations`,
//!   `_get_running_beams_for_next_iteration`, `_update_finished_beams`,
//!   `_check_early_stop_heuristic`, `_beam_search_has_unfinished_sequences`:
//!   float32 `log_softmax` (emulating torch's AVX-512 CPU kernel: 16-lane sum of a
//!   port of SLEEF `expf_u10`), processors applied to the log-probs, running beam
//!   scores added, `torch.topk` of `beams_to_keep = max(2, 1 + n_eos) * num_beams`
//!   over `num_beams * vocab`, the -1e9 masking arithmetic in float32, the length
//!   penalty `score / (generated_len ** length_penalty)` where
//!   `generated_len = cur_len + 1 - decoder_prompt_len` (decoder prompt = the single
//!   `decoder_start_token_id`, so it counts the new tokens INCLUDING the eos), and the
//!   batch-global stopping rule.
//! - `torch.topk` on CPU is `std::partial_sort` (when `k * 64 <= n`) or
//!   `std::nth_element` + `std::sort` of the first `k - 1` elements (libstdc++), with
//!   the comparator `x > y || (isnan(x) && !isnan(y))`. Its ordering of ties is an
//!   artefact of those algorithms, so they are ported here verbatim (see `topk`).
//! - Logits processors, in the order of `_get_logits_processor`:
//!   `NoRepeatNGramLogitsProcessor`, `MinLengthLogitsProcessor`,
//!   `MinNewTokensLengthLogitsProcessor`, `ForcedBOSTokenLogitsProcessor`,
//!   `ForcedEOSTokenLogitsProcessor`. Stopping criteria: `MaxLengthCriteria`,
//!   `EosTokenCriteria`.
//! - `_prepare_generated_length`: `max_new_tokens` overrides `max_length`
//!   (`max_length = 1 + max_new_tokens`), and the quirk that a *default* `max_length`
//!   of exactly 20 becomes 21 for encoder-decoder models (see
//!   [`GenerationConfig::effective_max_length`]); `min_new_tokens` overrides
//!   `min_length` (`min_length = 1 + min_new_tokens`).

mod numerics;
mod processors;
mod search;
mod settings;
#[cfg(test)]
mod tests;

use numerics::*;
pub(crate) use numerics::{log_softmax_in_place, topk, Elem};
use processors::*;
pub use search::{generate, generate_async, generate_prompted, generate_until, pad_like_hf};
use settings::*;
pub use settings::{from_hf_json, EarlyStopping, GenerationConfig, Sampling};

use crate::Error;

/// One decoding step of a seq2seq model over `rows` sequences (rows = batch_size * num_beams).
/// `step` is async because a browser's WebGPU device can only read results back
/// asynchronously; natively (and on the CPU in wasm) it completes at once.
#[allow(async_fn_in_trait)] // single-threaded use; no Send bound wanted
pub trait StepModel {
    /// Append `tokens[r]` to row r's decoder sequence (position = number of tokens fed
    /// so far for that row, same for all rows) and return the next-token LOGITS for
    /// every row, flattened row-major: len = rows * vocab_size.
    async fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>, Error>;
    /// Reorder the decoder cache: new row i continues old row `src[i]` (beam search).
    /// len(src) == rows.
    fn reorder(&mut self, src: &[usize]) -> Result<(), Error>;
    fn vocab_size(&self) -> usize;
}
