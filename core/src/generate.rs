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

use crate::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// `early_stopping` of a transformers `GenerationConfig`: `true`, `false` or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    True,
    False,
    Never,
}

impl EarlyStopping {
    fn from_json(v: &Value) -> Result<Self, String> {
        match v {
            Value::Bool(true) => Ok(EarlyStopping::True),
            Value::Bool(false) => Ok(EarlyStopping::False),
            Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
            other => Err(format!(
                "`early_stopping` must be a boolean or 'never', but is {other}"
            )),
        }
    }
}

impl Serialize for EarlyStopping {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EarlyStopping::True => s.serialize_bool(true),
            EarlyStopping::False => s.serialize_bool(false),
            EarlyStopping::Never => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EarlyStopping;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a boolean or the string \"never\"")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<EarlyStopping, E> {
                Ok(if b {
                    EarlyStopping::True
                } else {
                    EarlyStopping::False
                })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<EarlyStopping, E> {
                if s == "never" {
                    Ok(EarlyStopping::Never)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(s), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The generation settings that matter for BART greedy / beam search.
///
/// Field semantics follow transformers' `GenerationConfig`. `max_length` holds the
/// *configured* value; the length actually used is
/// [`effective_max_length`](GenerationConfig::effective_max_length).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    /// HF default 20. See [`GenerationConfig::effective_max_length`] for the 20 -> 21 quirk.
    pub max_length: usize,
    /// When set, overrides `max_length` (`max_length = 1 + max_new_tokens`).
    pub max_new_tokens: Option<usize>,
    /// HF default 0.
    pub min_length: usize,
    /// When set, overrides `min_length` (`min_length = 1 + min_new_tokens`).
    pub min_new_tokens: Option<usize>,
    /// 1 = greedy.
    pub num_beams: usize,
    /// HF default 1.0.
    pub length_penalty: f32,
    /// HF default False.
    pub early_stopping: EarlyStopping,
    /// 0 = off.
    pub no_repeat_ngram_size: usize,
    /// Default 1.
    pub num_return_sequences: usize,
    pub decoder_start_token_id: u32,
    pub bos_token_id: Option<u32>,
    /// BART: a single eos, 2.
    pub eos_token_id: Option<u32>,
    pub pad_token_id: u32,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Option<u32>,
}

impl Default for GenerationConfig {
    /// transformers' `GenerationConfig()` defaults, with the special ids of a default
    /// `BartConfig()` (decoder start 2, bos 0, eos 2, pad 1, and `forced_eos_token_id`
    /// 2 — what `GenerationConfig.from_model_config(BartConfig())` yields).
    fn default() -> Self {
        GenerationConfig {
            max_length: 20,
            max_new_tokens: None,
            min_length: 0,
            min_new_tokens: None,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
            no_repeat_ngram_size: 0,
            num_return_sequences: 1,
            decoder_start_token_id: 2,
            bos_token_id: Some(0),
            eos_token_id: Some(2),
            pad_token_id: 1,
            forced_bos_token_id: None,
            forced_eos_token_id: Some(2),
        }
    }
}

/// Fields of [`GenerationConfig`], by their transformers names.
const FIELDS: &[&str] = &[
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "num_return_sequences",
    "decoder_start_token_id",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
];

/// transformers `GenerationConfig` keys this module does not implement, with the
/// values that make them inert. Any other value is refused rather than ignored.
fn unsupported_default(key: &str) -> Option<Value> {
    use serde_json::json;
    Some(match key {
        "do_sample" => json!(false),
        "num_beam_groups" => json!(1),
        "diversity_penalty" => json!(0.0),
        "repetition_penalty" => json!(1.0),
        "encoder_repetition_penalty" => json!(1.0),
        "encoder_no_repeat_ngram_size" => json!(0),
        "bad_words_ids" => Value::Null,
        "suppress_tokens" => Value::Null,
        "begin_suppress_tokens" => Value::Null,
        "sequence_bias" => Value::Null,
        "exponential_decay_length_penalty" => Value::Null,
        "remove_invalid_values" => json!(false),
        "renormalize_logits" => json!(false),
        "guidance_scale" => Value::Null,
        "force_words_ids" => Value::Null,
        "constraints" => Value::Null,
        "max_time" => Value::Null,
        "stop_strings" => Value::Null,
        "low_memory" => Value::Null,
        "penalty_alpha" => Value::Null,
        "dola_layers" => Value::Null,
        "prompt_lookup_num_tokens" => Value::Null,
        "watermarking_config" => Value::Null,
        "token_healing" => json!(false),
        _ => return None,
    })
}

/// Keys that are accepted in kwargs / configs but do not affect the produced ids
/// (sampling-only knobs while `do_sample` is false, output / cache flags, metadata).
const INERT_KEYS: &[&str] = &[
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "use_cache",
    "cache_implementation",
    "cache_config",
    "return_legacy_cache",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
    "transformers_version",
    "_from_model_config",
    "_commit_hash",
    "disable_compile",
    "compile_config",
    "prefill_chunk_size",
];

/// Global generation defaults a `PretrainedConfig` carries
/// (`PretrainedConfig._get_global_generation_defaults` in 4.57).
const MODEL_CONFIG_GENERATION_KEYS: &[&str] = &[
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "num_beam_groups",
    "diversity_penalty",
];

fn gen_err(msg: impl Into<String>) -> Error {
    Error::Generation(msg.into())
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn as_usize(key: &str, v: &Value) -> Result<usize, Error> {
    if let Some(u) = v.as_u64() {
        return Ok(u as usize);
    }
    if let Some(f) = v.as_f64() {
        if f >= 0.0 && f.fract() == 0.0 {
            return Ok(f as usize);
        }
    }
    Err(gen_err(format!(
        "`{key}` must be a non-negative integer, got {v}"
    )))
}

/// A token id: an integer, or a one-element list (transformers allows lists of eos ids).
fn as_token(key: &str, v: &Value) -> Result<Option<u32>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::Array(a) if a.is_empty() => Ok(None),
        Value::Array(a) if a.len() == 1 => as_token(key, &a[0]),
        Value::Array(_) => Err(gen_err(format!(
            "`{key}` with several token ids is not supported: {v}"
        ))),
        _ => {
            let u = as_usize(key, v)?;
            u32::try_from(u)
                .map(Some)
                .map_err(|_| gen_err(format!("`{key}` out of range: {v}")))
        }
    }
}

/// Python's float for a value that was stored as f32 after being parsed from a short
/// decimal (e.g. JSON `0.8`): the shortest decimal that round-trips the f32, read as f64.
fn py_float(x: f32) -> f64 {
    format!("{x}").parse::<f64>().unwrap_or(x as f64)
}

/// `(len ** length_penalty)` in Python (C `pow` on doubles), then the float32 the
/// torch scalar becomes when it divides a float32 tensor.
fn length_denominator(len: usize, length_penalty: f64) -> f32 {
    (len as f64).powf(length_penalty) as f32
}

/// A flat key -> JSON value view of a transformers `GenerationConfig`, restricted to
/// the keys this module knows about.
type RawConfig = std::collections::BTreeMap<String, Value>;

/// `GenerationConfig()` defaults of transformers 4.57 (special ids all None).
fn hf_generation_defaults() -> RawConfig {
    use serde_json::json;
    let mut m = RawConfig::new();
    for (k, v) in [
        ("max_length", json!(20)),
        ("max_new_tokens", Value::Null),
        ("min_length", json!(0)),
        ("min_new_tokens", Value::Null),
        ("num_beams", json!(1)),
        ("length_penalty", json!(1.0)),
        ("early_stopping", json!(false)),
        ("no_repeat_ngram_size", json!(0)),
        ("num_return_sequences", json!(1)),
        ("decoder_start_token_id", Value::Null),
        ("bos_token_id", Value::Null),
        ("eos_token_id", Value::Null),
        ("pad_token_id", Value::Null),
        ("forced_bos_token_id", Value::Null),
        ("forced_eos_token_id", Value::Null),
    ] {
        m.insert(k.to_string(), v);
    }
    m
}

/// What a default `BartConfig()` holds for a key (before `from_model_config` drops
/// None values): the BART special ids, `forced_eos_token_id=2`, and the global
/// generation defaults for the rest. `None` = the attribute does not exist.
fn bart_config_default(key: &str) -> Option<Value> {
    use serde_json::json;
    Some(match key {
        "bos_token_id" => json!(0),
        "pad_token_id" => json!(1),
        "eos_token_id" => json!(2),
        "decoder_start_token_id" => json!(2),
        "forced_eos_token_id" => json!(2),
        "forced_bos_token_id" => Value::Null,
        "max_length" => json!(20),
        "min_length" => json!(0),
        "do_sample" => json!(false),
        "early_stopping" => json!(false),
        "num_beams" => json!(1),
        "temperature" => json!(1.0),
        "top_k" => json!(50),
        "top_p" => json!(1.0),
        "typical_p" => json!(1.0),
        "repetition_penalty" => json!(1.0),
        "length_penalty" => json!(1.0),
        "no_repeat_ngram_size" => json!(0),
        "encoder_no_repeat_ngram_size" => json!(0),
        "bad_words_ids" => Value::Null,
        "num_return_sequences" => json!(1),
        "output_scores" => json!(false),
        "return_dict_in_generate" => json!(false),
        "remove_invalid_values" => json!(false),
        "exponential_decay_length_penalty" => Value::Null,
        "suppress_tokens" => Value::Null,
        "begin_suppress_tokens" => Value::Null,
        "num_beam_groups" => json!(1),
        "diversity_penalty" => json!(0.0),
        _ => return None,
    })
}

/// The value a `BartConfig` loaded from `config` holds for `key` (config.json value,
/// else the `BartConfig()` default), including BART's legacy
/// `force_bos_token_to_be_generated` handling.
fn bart_config_value(config: &Value, key: &str) -> Option<Value> {
    let v = config
        .get(key)
        .cloned()
        .or_else(|| bart_config_default(key));
    if key == "forced_bos_token_id"
        && v.as_ref().is_none_or(Value::is_null)
        && config.get("force_bos_token_to_be_generated") == Some(&Value::Bool(true))
    {
        return Some(bart_config_value(config, "bos_token_id").unwrap_or(Value::Null));
    }
    v
}

/// `GenerationConfig.from_model_config(BartConfig(**config))` of transformers 4.57.
fn hf_from_model_config(config: &Value) -> RawConfig {
    let mut m = hf_generation_defaults();
    let mut keys: Vec<String> = FIELDS.iter().map(|s| s.to_string()).collect();
    if let Some(obj) = config.as_object() {
        keys.extend(obj.keys().cloned());
    }
    keys.extend(MODEL_CONFIG_GENERATION_KEYS.iter().map(|s| s.to_string()));
    for key in keys {
        let known = FIELDS.contains(&key.as_str()) || unsupported_default(&key).is_some();
        if !known {
            continue;
        }
        // `from_model_config` drops None values so that GenerationConfig defaults apply...
        if let Some(v) = bart_config_value(config, &key) {
            if !v.is_null() {
                m.insert(key, v);
            } else if config.get(&key).is_some()
                && !key.starts_with("encoder")
                && !key.starts_with("decoder")
            {
                // ...but then copies every attribute still at its GenerationConfig
                // default from `config.get_text_config(decoder=True)` (for BART a
                // flattened copy of the same config, encoder_*/decoder_* keys
                // removed/renamed), so an explicit null in config.json ends up as None.
                m.insert(key, Value::Null);
            }
        }
    }
    m
}

/// `PretrainedConfig._get_non_default_generation_parameters` is non-empty.
fn has_non_default_generation_parameters(config: &Value) -> bool {
    MODEL_CONFIG_GENERATION_KEYS.iter().any(|key| {
        match (bart_config_value(config, key), bart_config_default(key)) {
            (Some(v), Some(d)) => !v.is_null() && !json_eq(&v, &d),
            _ => false,
        }
    })
}

impl GenerationConfig {
    /// The `max_length` generation actually runs with (`generation_config.max_length`
    /// after `_prepare_generated_length`), for a decoder prompt of one token:
    /// `1 + max_new_tokens` when `max_new_tokens` is set; otherwise `max_length`,
    /// except that a value of exactly 20 (transformers' global default) becomes 21,
    /// as transformers does whenever `max_length` was not passed explicitly to
    /// `generate()` (it then reads 20 as "20 new tokens"). An explicit
    /// `max_length=20` kwarg is represented as `max_new_tokens = Some(19)` by
    /// [`apply_kwargs`](GenerationConfig::apply_kwargs). (transformers also clamps
    /// that 21 to `max_position_embeddings`; irrelevant for BART's 1024.)
    pub fn effective_max_length(&self) -> usize {
        match self.max_new_tokens {
            Some(m) => 1 + m,
            None if self.max_length == 20 => 21,
            None => self.max_length,
        }
    }

    /// The `min_length` generation actually runs with: `1 + min_new_tokens` when set,
    /// else `min_length`.
    pub fn effective_min_length(&self) -> usize {
        match self.min_new_tokens {
            Some(m) => 1 + m,
            None => self.min_length,
        }
    }

    /// The token transformers pads `generate()` output rows with:
    /// greedy pads finished rows with `pad_token_id`; beam search fills its output
    /// buffer with `pad_token_id or eos_token_id[0]`, i.e. eos when pad is 0.
    pub fn hf_output_pad_token_id(&self) -> u32 {
        match (self.num_beams > 1, self.pad_token_id, self.eos_token_id) {
            (true, 0, Some(eos)) => eos,
            _ => self.pad_token_id,
        }
    }

    /// The checks transformers makes (`GenerationConfig.validate`,
    /// `_validate_generated_length`) that would make `generate()` raise.
    pub fn validate(&self) -> Result<(), Error> {
        if self.num_beams == 0 {
            return Err(gen_err("`num_beams` must be at least 1"));
        }
        if self.max_new_tokens == Some(0) {
            return Err(gen_err("`max_new_tokens` must be greater than 0, but is 0"));
        }
        if self.num_return_sequences == 0 {
            return Err(gen_err("`num_return_sequences` must be at least 1"));
        }
        if self.num_beams == 1 && self.num_return_sequences != 1 {
            return Err(gen_err(format!(
                "Greedy methods without beam search do not support `num_return_sequences` different than 1 (got {}).",
                self.num_return_sequences
            )));
        }
        if self.num_return_sequences > self.num_beams {
            return Err(gen_err(format!(
                "`num_return_sequences` ({}) has to be smaller or equal to `num_beams` ({}).",
                self.num_return_sequences, self.num_beams
            )));
        }
        if self.effective_max_length() <= 1 {
            return Err(gen_err(format!(
                "Input length of decoder_input_ids is 1, but `max_length` is set to {}.",
                self.effective_max_length()
            )));
        }
        Ok(())
    }

    /// Sets one field from its transformers name and JSON value. Returns false if
    /// `key` is not a field. `null` sets an optional field to None and resets a
    /// required one to its default.
    fn set_json(&mut self, key: &str, v: &Value) -> Result<bool, Error> {
        let d = GenerationConfig::default();
        let opt = |v: &Value| -> Result<Option<usize>, Error> {
            if v.is_null() {
                Ok(None)
            } else {
                as_usize(key, v).map(Some)
            }
        };
        let req = |v: &Value, default: usize| -> Result<usize, Error> {
            if v.is_null() {
                Ok(default)
            } else {
                as_usize(key, v)
            }
        };
        match key {
            "max_length" => self.max_length = req(v, 20)?,
            "max_new_tokens" => self.max_new_tokens = opt(v)?,
            "min_length" => self.min_length = req(v, 0)?,
            "min_new_tokens" => self.min_new_tokens = opt(v)?,
            "num_beams" => self.num_beams = req(v, 1)?,
            "length_penalty" => {
                self.length_penalty = if v.is_null() {
                    1.0
                } else {
                    v.as_f64().ok_or_else(|| {
                        gen_err(format!("`length_penalty` must be a number, got {v}"))
                    })? as f32
                }
            }
            "early_stopping" => {
                self.early_stopping = if v.is_null() {
                    EarlyStopping::False
                } else {
                    EarlyStopping::from_json(v).map_err(gen_err)?
                }
            }
            "no_repeat_ngram_size" => self.no_repeat_ngram_size = req(v, 0)?,
            "num_return_sequences" => self.num_return_sequences = req(v, 1)?,
            "decoder_start_token_id" => {
                self.decoder_start_token_id = as_token(key, v)?.unwrap_or(d.decoder_start_token_id)
            }
            "bos_token_id" => self.bos_token_id = as_token(key, v)?,
            "eos_token_id" => self.eos_token_id = as_token(key, v)?,
            "pad_token_id" => self.pad_token_id = as_token(key, v)?.unwrap_or(d.pad_token_id),
            "forced_bos_token_id" => self.forced_bos_token_id = as_token(key, v)?,
            "forced_eos_token_id" => self.forced_eos_token_id = as_token(key, v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Builds the config from a resolved transformers-style dict: special-token
    /// fallbacks of `_prepare_special_tokens` (decoder start <- bos, pad <- eos) and
    /// refusal of features this module does not implement.
    fn from_raw(raw: &RawConfig) -> Result<GenerationConfig, Error> {
        for (k, v) in raw {
            if let Some(d) = unsupported_default(k) {
                let inert = v.is_null()
                    || json_eq(v, &d)
                    || (k == "guidance_scale" && json_eq(v, &serde_json::json!(1.0)))
                    || (k == "low_memory" && v == &Value::Bool(false));
                if !inert {
                    return Err(gen_err(format!(
                        "generation option `{k}` = {v} is not supported"
                    )));
                }
            }
        }
        let get = |k: &str| raw.get(k).cloned().unwrap_or(Value::Null);
        let mut cfg = GenerationConfig::default();
        for key in FIELDS {
            let v = get(key);
            match *key {
                "decoder_start_token_id" | "pad_token_id" => {}
                // None disables these processors, like 0
                "min_length" | "no_repeat_ngram_size" if v.is_null() => {
                    cfg.set_json(key, &serde_json::json!(0))?;
                }
                "max_length"
                | "min_length"
                | "num_beams"
                | "length_penalty"
                | "early_stopping"
                | "no_repeat_ngram_size"
                | "num_return_sequences"
                    if v.is_null() =>
                {
                    return Err(gen_err(format!(
                        "generation config has `{key}` = None, which transformers cannot generate with"
                    )));
                }
                _ => {
                    cfg.set_json(key, &v)?;
                }
            }
        }
        cfg.decoder_start_token_id = match as_token("decoder_start_token_id", &get("decoder_start_token_id"))?
            .or(cfg.bos_token_id)
        {
            Some(t) => t,
            None => {
                return Err(gen_err(
                    "`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder generation.",
                ))
            }
        };
        // pad: `_prepare_special_tokens` falls back to eos. With neither, pad is never
        // written to an output (no row can finish before max_length), 0 is a placeholder.
        cfg.pad_token_id = as_token("pad_token_id", &get("pad_token_id"))?
            .or(cfg.eos_token_id)
            .unwrap_or(0);
        Ok(cfg)
    }

    /// The effective generation config exactly as transformers 4.57.6
    /// `BartForConditionalGeneration.from_pretrained(dir).generate(...)` builds it
    /// (no pipeline):
    /// - with `generation_config.json`: `GenerationConfig(**generation_config_json)`;
    ///   keys it lacks take `GenerationConfig()` defaults (NOT config.json values; ids
    ///   None -> decoder start falls back to bos and pad to eos). Legacy exception
    ///   (`_prepare_generation_config`): if that file has `"_from_model_config": true`
    ///   and config.json holds generation parameters that differ from `BartConfig()`'s
    ///   defaults, the whole config is rebuilt from config.json as below.
    /// - without it: `GenerationConfig.from_model_config(config)`: config.json's
    ///   top-level generation keys, `BartConfig()` defaults for keys config.json lacks
    ///   (bos 0, pad 1, eos 2, decoder start 2, forced eos 2); an explicit `null` ends
    ///   up as None (copied back from `get_text_config(decoder=True)`), which is an
    ///   error for `max_length`/`num_beams`/`length_penalty`/`early_stopping`/
    ///   `num_return_sequences` and means 0 for `min_length`/`no_repeat_ngram_size`; BART's legacy
    ///   `force_bos_token_to_be_generated: true` sets `forced_bos_token_id = bos`.
    /// - `task_specific_params` is never used by `generate()` (only the
    ///   `summarization` pipeline applies it, as overrides).
    pub fn from_transformers_json(
        generation_config: Option<&Value>,
        config: &Value,
    ) -> Result<GenerationConfig, Error> {
        let raw = match generation_config {
            Some(gc) => {
                let legacy = gc.get("_from_model_config") == Some(&Value::Bool(true))
                    && has_non_default_generation_parameters(config);
                if legacy {
                    hf_from_model_config(config)
                } else {
                    let mut m = hf_generation_defaults();
                    if let Some(obj) = gc.as_object() {
                        for (k, v) in obj {
                            m.insert(k.clone(), v.clone());
                        }
                    }
                    m
                }
            }
            None => hf_from_model_config(config),
        };
        GenerationConfig::from_raw(&raw)
    }

    /// The project's resolution rule, per key: `generation_config.json` if it has the
    /// key, else config.json's top-level key, else
    /// `config.task_specific_params.summarization`'s key, else
    /// [`GenerationConfig::default`] (BART ids). A `null` stops the cascade for an
    /// optional id (it means "unset") and is skipped for a required value. BART's
    /// legacy `force_bos_token_to_be_generated: true` in config.json applies when no
    /// level sets `forced_bos_token_id`.
    ///
    /// Differences from transformers ([`from_transformers_json`](Self::from_transformers_json)):
    /// transformers never falls back from generation_config.json to config.json
    /// key by key (missing keys take `GenerationConfig()` defaults, except the
    /// `_from_model_config` legacy rule which swaps in config.json wholesale), and
    /// `generate()` never reads `task_specific_params` (the summarization pipeline
    /// applies them as overrides, not fallbacks).
    pub fn from_hf_json(
        generation_config: Option<&Value>,
        config: &Value,
    ) -> Result<GenerationConfig, Error> {
        let tsp = config
            .get("task_specific_params")
            .and_then(|t| t.get("summarization"));
        let levels: Vec<&Value> = [generation_config, Some(config), tsp]
            .into_iter()
            .flatten()
            .collect();
        let optional_ids = [
            "bos_token_id",
            "eos_token_id",
            "forced_bos_token_id",
            "forced_eos_token_id",
            "max_new_tokens",
            "min_new_tokens",
        ];
        let defaults = serde_json::to_value(GenerationConfig::default())
            .map_err(|e| gen_err(e.to_string()))?;
        let mut raw = RawConfig::new();
        let mut forced_bos_set = false;
        let mut keys: Vec<String> = FIELDS.iter().map(|s| s.to_string()).collect();
        for level in &levels {
            if let Some(obj) = level.as_object() {
                keys.extend(
                    obj.keys()
                        .filter(|k| unsupported_default(k).is_some())
                        .cloned(),
                );
            }
        }
        keys.sort();
        keys.dedup();
        for key in &keys {
            let mut found = None;
            for level in &levels {
                if let Some(v) = level.get(key) {
                    if v.is_null() && !optional_ids.contains(&key.as_str()) {
                        continue;
                    }
                    found = Some(v.clone());
                    break;
                }
            }
            if key == "forced_bos_token_id" {
                forced_bos_set = found.is_some();
            }
            let v = found
                .or_else(|| defaults.get(key).cloned())
                .unwrap_or(Value::Null);
            raw.insert(key.clone(), v);
        }
        if !forced_bos_set
            && config.get("force_bos_token_to_be_generated") == Some(&Value::Bool(true))
        {
            let bos = raw.get("bos_token_id").cloned().unwrap_or(Value::Null);
            raw.insert("forced_bos_token_id".into(), bos);
        }
        GenerationConfig::from_raw(&raw)
    }

    /// Applies `generate(**kwargs)` keyword arguments the way
    /// `GenerationConfig.update(**kwargs)` + `_prepare_generated_length` do. An
    /// explicit `max_length` of 20 (which transformers does not bump to 21) is stored
    /// as `max_new_tokens = Some(19)` unless `max_new_tokens` is set (which wins).
    /// Unknown keys and unsupported features are refused.
    pub fn apply_kwargs(&mut self, kwargs: &Value) -> Result<(), Error> {
        self.update(kwargs)?;
        if let Some(v) = kwargs.get("max_length") {
            if !v.is_null() && self.max_length == 20 && self.max_new_tokens.is_none() {
                self.max_new_tokens = Some(19);
            }
        }
        Ok(())
    }

    /// `GenerationConfig.update(**params)`: sets the given keys (generation_config.json
    /// names) without the explicit-`max_length` rule of [`apply_kwargs`](Self::apply_kwargs).
    /// Unknown keys and unsupported features are refused.
    pub fn update(&mut self, params: &Value) -> Result<(), Error> {
        let obj = params
            .as_object()
            .ok_or_else(|| gen_err("generation options must be a JSON object"))?;
        for (k, v) in obj {
            if self.set_json(k, v)? {
                continue;
            }
            if let Some(d) = unsupported_default(k) {
                if json_eq(v, &d) {
                    continue;
                }
                return Err(gen_err(format!(
                    "generation option `{k}` = {v} is not supported"
                )));
            }
            if INERT_KEYS.contains(&k.as_str()) {
                continue;
            }
            return Err(gen_err(format!("unknown generation option `{k}`")));
        }
        Ok(())
    }
}

impl GenerationConfig {
    /// A copy with `generate(**kwargs)` applied; see
    /// [`apply_kwargs`](GenerationConfig::apply_kwargs).
    pub fn with_overrides(&self, kwargs: &Value) -> Result<GenerationConfig, Error> {
        let mut c = self.clone();
        c.apply_kwargs(kwargs)?;
        Ok(c)
    }
}

/// See [`GenerationConfig::from_hf_json`].
pub fn from_hf_json(
    generation_config: Option<&Value>,
    config: &Value,
) -> Result<GenerationConfig, Error> {
    GenerationConfig::from_hf_json(generation_config, config)
}

// ---------------------------------------------------------------------------
// Model interface
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// torch numerics
// ---------------------------------------------------------------------------

const NEG_1E9: f32 = -1.0e9;

/// `fma` for f32 through f64 (the product is exact in f64; the sum rounds twice,
/// which differs from a true fused multiply-add only in rare ties).
#[inline(always)]
fn fma32(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

#[inline(always)]
fn pow2i(q: i32) -> f32 {
    f32::from_bits((q.wrapping_add(0x7f) as u32) << 23)
}

/// SLEEF `xexpf` (the 1.0-ULP single-precision exp torch's CPU `Vectorized<float>::exp`
/// uses), scalar port.
#[inline(always)]
#[allow(clippy::excessive_precision)] // SLEEF's constants, verbatim
fn sleef_expf_u10(d: f32) -> f32 {
    const R_LN2F: f32 = std::f32::consts::LOG2_E;
    const L2UF: f32 = 0.693_145_751_953_125;
    const L2LF: f32 = 1.428_606_765_330_187e-6;
    // round-half-even of d * log2(e) (exact for |x| < 2^22; larger |d| is masked below)
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let t = d * R_LN2F + MAGIC;
    let qf = t - MAGIC;
    let q = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let mut s = fma32(qf, -L2UF, d);
    s = fma32(qf, -L2LF, s);
    let mut u = 0.000_198_527_617_612_853_646_278_381_f32;
    u = fma32(u, s, 0.001_393_043_552_525_341_510_772_71);
    u = fma32(u, s, 0.008_333_360_776_305_198_669_433_59);
    u = fma32(u, s, 0.041_666_485_369_205_474_853_515_6);
    u = fma32(u, s, 0.166_666_671_633_720_397_949_219);
    u = fma32(u, s, 0.5);
    u = 1.0 + fma32(s * s, u, s);
    let h = q >> 1;
    u = u * pow2i(h) * pow2i(q.wrapping_sub(h));
    let u = if d < -104.0 { 0.0 } else { u };
    if d > 104.0 {
        f32::INFINITY
    } else {
        u
    }
}

/// In-place float32 `torch.nn.functional.log_softmax` over one row, following
/// torch's CPU kernel (`_vec_log_softmax_lastdim`, AVX-512: 16 lanes):
/// max; `sum(exp(x - max))` accumulated in 16 lanes then tree-reduced (sequentially
/// for rows shorter than 16); `out = (x - max) - log(sum)`.
pub(crate) fn log_softmax_in_place(row: &mut [f32]) {
    const LANES: usize = 16;
    if row.is_empty() {
        return;
    }
    let mut max = row[0];
    for &x in row.iter() {
        // vec::maximum propagates NaN
        if x.is_nan() || max.is_nan() {
            max = f32::NAN;
        } else if x > max {
            max = x;
        }
    }
    let n = row.len();
    let sum = if n < LANES {
        let mut acc = sleef_expf_u10(row[0] - max);
        for &x in &row[1..] {
            acc += sleef_expf_u10(x - max);
        }
        acc
    } else {
        let mut acc = [0f32; LANES];
        for (a, &x) in acc.iter_mut().zip(&row[..LANES]) {
            *a = sleef_expf_u10(x - max);
        }
        let full = n - n % LANES;
        for chunk in row[LANES..full].chunks_exact(LANES) {
            let mut e = [0f32; LANES];
            for (e, &x) in e.iter_mut().zip(chunk) {
                *e = sleef_expf_u10(x - max);
            }
            for (a, e) in acc.iter_mut().zip(e) {
                *a += e;
            }
        }
        for (a, &x) in acc.iter_mut().zip(&row[full..]) {
            *a += sleef_expf_u10(x - max);
        }
        let mut s = LANES / 2;
        while s >= 1 {
            let prev = acc;
            for (i, a) in acc.iter_mut().enumerate() {
                *a = prev[i] + prev[i ^ s];
            }
            s /= 2;
        }
        acc[0]
    };
    let log_sum = sum.ln();
    for x in row.iter_mut() {
        *x = (*x - max) - log_sum;
    }
}

/// `torch.argmax` over a row: the first maximal index; NaN counts as maximal.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0usize;
    let mut bv = row[0];
    for (i, &x) in row.iter().enumerate().skip(1) {
        if bv.is_nan() {
            break;
        }
        if x.is_nan() || x > bv {
            best = i;
            bv = x;
        }
    }
    best
}

// ---------------------------------------------------------------------------
// torch.topk (CPU) = libstdc++ partial_sort / nth_element + sort, ported verbatim
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Elem {
    pub v: f32,
    pub i: usize,
}

/// torch's comparator for `largest=True`: NaN first, then descending.
#[inline(always)]
fn gt(x: f32, y: f32) -> bool {
    (x.is_nan() && !y.is_nan()) || x > y
}

#[inline(always)]
fn comp(a: &Elem, b: &Elem) -> bool {
    gt(a.v, b.v)
}

fn push_heap(a: &mut [Elem], mut hole: usize, top: usize, value: Elem) {
    while hole > top {
        let parent = (hole - 1) / 2;
        if comp(&a[parent], &value) {
            a[hole] = a[parent];
            hole = parent;
        } else {
            break;
        }
    }
    a[hole] = value;
}

fn adjust_heap(a: &mut [Elem], mut hole: usize, len: usize, value: Elem) {
    let top = hole;
    let mut second = hole;
    if len == 0 {
        return;
    }
    while second < (len - 1) / 2 {
        second = 2 * (second + 1);
        if comp(&a[second], &a[second - 1]) {
            second -= 1;
        }
        a[hole] = a[second];
        hole = second;
    }
    if len & 1 == 0 && len >= 2 && second == (len - 2) / 2 {
        second = 2 * (second + 1);
        a[hole] = a[second - 1];
        hole = second - 1;
    }
    push_heap(a, hole, top, value);
}

fn make_heap(a: &mut [Elem]) {
    let len = a.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let v = a[parent];
        adjust_heap(a, parent, len, v);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

/// `__pop_heap(first, last, result)`: the value at `result` replaces the top.
fn pop_heap(a: &mut [Elem], last: usize, result: usize) {
    let value = a[result];
    a[result] = a[0];
    adjust_heap(a, 0, last, value);
}

fn heap_select(a: &mut [Elem], middle: usize) {
    make_heap(&mut a[..middle]);
    for i in middle..a.len() {
        if comp(&a[i], &a[0]) {
            pop_heap(a, middle, i);
        }
    }
}

fn sort_heap(a: &mut [Elem]) {
    let mut last = a.len();
    while last > 1 {
        last -= 1;
        pop_heap(a, last, last);
    }
}

fn move_median_to_first(a: &mut [Elem], result: usize, x: usize, y: usize, z: usize) {
    if comp(&a[x], &a[y]) {
        if comp(&a[y], &a[z]) {
            a.swap(result, y);
        } else if comp(&a[x], &a[z]) {
            a.swap(result, z);
        } else {
            a.swap(result, x);
        }
    } else if comp(&a[x], &a[z]) {
        a.swap(result, x);
    } else if comp(&a[y], &a[z]) {
        a.swap(result, z);
    } else {
        a.swap(result, y);
    }
}

fn unguarded_partition(a: &mut [Elem], mut first: usize, mut last: usize, pivot: usize) -> usize {
    loop {
        while comp(&a[first], &a[pivot]) {
            first += 1;
        }
        last -= 1;
        while comp(&a[pivot], &a[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        a.swap(first, last);
        first += 1;
    }
}

fn unguarded_partition_pivot(a: &mut [Elem], first: usize, last: usize) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(a, first, first + 1, mid, last - 1);
    unguarded_partition(a, first + 1, last, first)
}

fn unguarded_linear_insert(a: &mut [Elem], mut last: usize) {
    let val = a[last];
    let mut next = last - 1;
    while comp(&val, &a[next]) {
        a[last] = a[next];
        last = next;
        if next == 0 {
            break;
        }
        next -= 1;
    }
    a[last] = val;
}

fn insertion_sort(a: &mut [Elem], first: usize, last: usize) {
    if first == last {
        return;
    }
    for i in first + 1..last {
        if comp(&a[i], &a[first]) {
            let val = a[i];
            a.copy_within(first..i, first + 1);
            a[first] = val;
        } else {
            unguarded_linear_insert(a, i);
        }
    }
}

#[inline]
fn lg(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

fn introselect(a: &mut [Elem], mut first: usize, nth: usize, mut last: usize, mut depth: usize) {
    while last - first > 3 {
        if depth == 0 {
            heap_select(&mut a[first..last], nth + 1 - first);
            a.swap(first, nth);
            return;
        }
        depth -= 1;
        let cut = unguarded_partition_pivot(a, first, last);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort(a, first, last);
}

fn nth_element(a: &mut [Elem], nth: usize) {
    let n = a.len();
    if n == 0 || nth == n {
        return;
    }
    introselect(a, 0, nth, n, lg(n) * 2);
}

const S_THRESHOLD: usize = 16;

fn introsort_loop(a: &mut [Elem], first: usize, mut last: usize, mut depth: usize) {
    while last - first > S_THRESHOLD {
        if depth == 0 {
            // __partial_sort(first, last, last)
            heap_select(&mut a[first..last], last - first);
            sort_heap(&mut a[first..last]);
            return;
        }
        depth -= 1;
        let cut = unguarded_partition_pivot(a, first, last);
        introsort_loop(a, cut, last, depth);
        last = cut;
    }
}

fn std_sort(a: &mut [Elem]) {
    let n = a.len();
    if n == 0 {
        return;
    }
    introsort_loop(a, 0, n, lg(n) * 2);
    if n > S_THRESHOLD {
        insertion_sort(a, 0, S_THRESHOLD);
        for i in S_THRESHOLD..n {
            unguarded_linear_insert(a, i);
        }
    } else {
        insertion_sort(a, 0, n);
    }
}

/// `torch.topk(values, k, largest=True, sorted=True)` on CPU, in place: afterwards
/// `q[..k]` holds the result (value, original position) in torch's order.
pub(crate) fn topk(q: &mut [Elem], k: usize) {
    let n = q.len();
    if k == 0 {
        return;
    }
    assert!(k <= n, "topk: k out of range");
    if k * 64 <= n {
        heap_select(q, k);
        sort_heap(&mut q[..k]);
    } else {
        nth_element(q, k - 1);
        std_sort(&mut q[..k - 1]);
    }
}

/// `topk` over the virtual array `x[j] = rows[j] + offset[j / width]` (length
/// `offset.len() * width`), streaming when torch takes the `partial_sort` path so
/// the array is never materialised. `out` receives the k elements; `scratch` is reused.
fn topk_offset_rows(
    rows: &[f32],
    offset: &[f32],
    width: usize,
    k: usize,
    out: &mut Vec<Elem>,
    scratch: &mut Vec<Elem>,
) {
    let n = offset.len() * width;
    out.clear();
    if k * 64 <= n {
        // std::partial_sort = __heap_select + __sort_heap; the tail elements are only
        // read once each, so they are produced on the fly.
        for j in 0..k {
            out.push(Elem {
                v: rows[j] + offset[j / width],
                i: j,
            });
        }
        make_heap(out);
        let mut top = out[0].v;
        let mut j = k;
        while j < n {
            let r = j / width;
            let end = (r + 1) * width;
            let o = offset[r];
            let seg = &rows[j..end];
            for (t, &x) in seg.iter().enumerate() {
                let v = x + o;
                if gt(v, top) {
                    adjust_heap(out, 0, k, Elem { v, i: j + t });
                    top = out[0].v;
                }
            }
            j = end;
        }
        sort_heap(out);
    } else {
        scratch.clear();
        for j in 0..n {
            scratch.push(Elem {
                v: rows[j] + offset[j / width],
                i: j,
            });
        }
        topk(scratch, k);
        out.extend_from_slice(&scratch[..k]);
    }
}

// ---------------------------------------------------------------------------
// Logits processors
// ---------------------------------------------------------------------------

struct Processors {
    no_repeat_ngram_size: usize,
    min_length: usize,
    eos: Option<u32>,
    forced_bos: Option<u32>,
    forced_eos: Option<u32>,
    max_length: usize,
}

impl Processors {
    fn new(cfg: &GenerationConfig, vocab: usize) -> Result<Self, Error> {
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
            min_length: cfg.effective_min_length(),
            eos: cfg.eos_token_id,
            forced_bos: cfg.forced_bos_token_id,
            forced_eos: cfg.forced_eos_token_id,
            max_length: cfg.effective_max_length(),
        })
    }

    /// Applies the processors, in `_get_logits_processor` order, to one row of scores
    /// whose decoder sequence so far is `seq` (its length is `cur_len`).
    fn apply(&self, row: &mut [f32], seq: &[u32]) {
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
            if let Some(e) = self.eos {
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

// ---------------------------------------------------------------------------
// generate
// ---------------------------------------------------------------------------

/// Generates for `batch_size` inputs whose encoder states the model already holds,
/// expanded to batch_size * num_beams rows (row = b * num_beams + k, i.e.
/// repeat_interleave like HF).
/// Returns batch_size * num_return_sequences sequences in HF order, each the full
/// decoder sequence starting with decoder_start_token_id, with its TRUE length (no pad
/// appended). `on_step(cur_len, sequences)` is called after every decoding step with the new
/// sequence length (start token included) and, for greedy search, the sequences so far (one per
/// row; finished rows are padded) — what a streaming UI shows; beam search passes `&[]`.
///
/// Blocks until done; for a model whose reads are truly asynchronous (WebGPU in a browser)
/// use [`generate_async`].
pub fn generate(
    model: &mut impl StepModel,
    batch_size: usize,
    cfg: &GenerationConfig,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
) -> Result<Vec<Vec<u32>>, Error> {
    burn::tensor::try_read_sync(generate_async(model, batch_size, cfg, on_step)).unwrap_or_else(
        || {
            Err(gen_err(
                "this device reads results asynchronously (WebGPU in a browser): use generate_async",
            ))
        },
    )
}

/// [`generate`] as a future: awaits each decoding step's logits.
pub async fn generate_async(
    model: &mut impl StepModel,
    batch_size: usize,
    cfg: &GenerationConfig,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
) -> Result<Vec<Vec<u32>>, Error> {
    cfg.validate()?;
    if batch_size == 0 {
        return Ok(Vec::new());
    }
    let vocab = model.vocab_size();
    if vocab == 0 {
        return Err(gen_err("vocab_size is 0"));
    }
    if cfg.num_beams == 1 {
        greedy(model, batch_size, cfg, vocab, on_step).await
    } else {
        beam_search(model, batch_size, cfg, vocab, on_step).await
    }
}

fn check_logits(logits: &[f32], rows: usize, vocab: usize) -> Result<(), Error> {
    if logits.len() != rows * vocab {
        return Err(gen_err(format!(
            "model returned {} logits, expected {rows} rows x {vocab}",
            logits.len()
        )));
    }
    Ok(())
}

/// `GenerationMixin._sample` with `do_sample=False`.
async fn greedy(
    model: &mut impl StepModel,
    rows: usize,
    cfg: &GenerationConfig,
    vocab: usize,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
) -> Result<Vec<Vec<u32>>, Error> {
    let max_len = cfg.effective_max_length();
    let procs = Processors::new(cfg, vocab)?;
    let eos = cfg.eos_token_id;
    let pad = cfg.pad_token_id;
    let mut seqs: Vec<Vec<u32>> = (0..rows)
        .map(|_| {
            let mut s = Vec::with_capacity(max_len);
            s.push(cfg.decoder_start_token_id);
            s
        })
        .collect();
    let mut unfinished = vec![true; rows];
    let mut lens = vec![0usize; rows];
    let mut tokens = vec![0u32; rows];
    let mut cur_len = 1usize;
    loop {
        for (t, s) in tokens.iter_mut().zip(&seqs) {
            *t = s[cur_len - 1];
        }
        let mut logits = model.step(&tokens).await?;
        check_logits(&logits, rows, vocab)?;
        for r in 0..rows {
            let next = if unfinished[r] || eos.is_none() {
                let row = &mut logits[r * vocab..(r + 1) * vocab];
                procs.apply(row, &seqs[r]);
                argmax(row) as u32
            } else {
                pad
            };
            seqs[r].push(next);
        }
        cur_len += 1;
        for r in 0..rows {
            if unfinished[r] {
                let last = seqs[r][cur_len - 1];
                if cur_len >= max_len || eos == Some(last) {
                    unfinished[r] = false;
                    lens[r] = cur_len;
                }
            }
        }
        on_step(cur_len, &seqs);
        if !unfinished.iter().any(|&u| u) {
            break;
        }
    }
    for (s, &l) in seqs.iter_mut().zip(&lens) {
        s.truncate(l);
    }
    Ok(seqs)
}

/// `GenerationMixin._beam_search` with `do_sample=False`.
#[allow(clippy::needless_range_loop)] // index arithmetic mirrors the [batch, beam] tensors
async fn beam_search(
    model: &mut impl StepModel,
    batch: usize,
    cfg: &GenerationConfig,
    vocab: usize,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
) -> Result<Vec<Vec<u32>>, Error> {
    let nb = cfg.num_beams;
    let max_len = cfg.effective_max_length();
    let rows = batch * nb;
    let procs = Processors::new(cfg, vocab)?;
    let eos = cfg.eos_token_id;
    let n_eos = usize::from(eos.is_some());
    let keep = std::cmp::max(2, 1 + n_eos) * nb; // beams_to_keep
    if keep > nb * vocab {
        return Err(gen_err(format!(
            "beam search needs {keep} candidates but num_beams * vocab_size = {}",
            nb * vocab
        )));
    }
    let lp = py_float(cfg.length_penalty);
    let early = cfg.early_stopping;
    let fill = cfg.hf_output_pad_token_id();
    let l = max_len;

    // running beams [batch][nb]
    let mut run_seq = vec![fill; rows * l];
    for r in 0..rows {
        run_seq[r * l] = cfg.decoder_start_token_id;
    }
    let mut run_score = vec![0f32; rows];
    for b in 0..batch {
        for j in 1..nb {
            run_score[b * nb + j] = NEG_1E9;
        }
    }
    // finished hypotheses [batch][nb]
    let mut fin_seq = run_seq.clone();
    let mut fin_score = vec![NEG_1E9; rows];
    let mut fin_flag = vec![false; rows];
    let mut fin_len = vec![1usize; rows];
    // candidates [batch][keep]
    let mut cand_seq = vec![fill; batch * keep * l];
    let mut cand_score = vec![0f32; batch * keep];
    let mut cand_src = vec![0usize; batch * keep];
    let mut cand_hit = vec![false; batch * keep];
    // double buffers
    let mut run_seq2 = run_seq.clone();
    let mut run_score2 = run_score.clone();
    let mut fin_seq2 = fin_seq.clone();
    let mut fin_score2 = fin_score.clone();
    let mut fin_flag2 = fin_flag.clone();
    let mut fin_len2 = fin_len.clone();

    let mut unsat = vec![true; batch]; // is_early_stop_heuristic_unsatisfied
    let mut tokens = vec![0u32; rows];
    let mut src = vec![0usize; rows];
    let mut top: Vec<Elem> = Vec::with_capacity(keep);
    let mut scratch: Vec<Elem> = Vec::new();
    let mut small: Vec<Elem> = Vec::with_capacity(3 * nb);
    let mut cur_len = 1usize;

    loop {
        // a. forward the last token of every running beam
        for r in 0..rows {
            tokens[r] = run_seq[r * l + cur_len - 1];
        }
        let mut logp = model.step(&tokens).await?;
        check_logits(&logp, rows, vocab)?;
        // b. log-probs, processors
        for r in 0..rows {
            let row = &mut logp[r * vocab..(r + 1) * vocab];
            log_softmax_in_place(row);
            procs.apply(row, &run_seq[r * l..r * l + cur_len]);
        }
        let denom = length_denominator(cur_len, lp); // cur_len + 1 - decoder_prompt_len
        for b in 0..batch {
            // c. top-k continuations over num_beams * vocab
            topk_offset_rows(
                &logp[b * nb * vocab..(b + 1) * nb * vocab],
                &run_score[b * nb..(b + 1) * nb],
                vocab,
                keep,
                &mut top,
                &mut scratch,
            );
            for (c, e) in top.iter().enumerate() {
                let beam = e.i / vocab;
                let tok = (e.i % vocab) as u32;
                let ci = b * keep + c;
                let from = (b * nb + beam) * l;
                let to = ci * l;
                cand_seq[to..to + cur_len].copy_from_slice(&run_seq[from..from + cur_len]);
                cand_seq[to + cur_len] = tok;
                cand_score[ci] = e.v;
                cand_src[ci] = beam;
                // d. stopping criteria on the candidate (MaxLength, Eos)
                cand_hit[ci] = cur_len + 1 >= max_len || eos == Some(tok);
            }
            // e. running beams for the next iteration
            small.clear();
            for c in 0..keep {
                let ci = b * keep + c;
                let v = if cand_hit[ci] {
                    cand_score[ci] + NEG_1E9
                } else {
                    cand_score[ci]
                };
                small.push(Elem { v, i: c });
            }
            topk(&mut small, nb);
            for j in 0..nb {
                let c = small[j].i;
                let ci = b * keep + c;
                let r = b * nb + j;
                run_seq2[r * l..r * l + cur_len + 1]
                    .copy_from_slice(&cand_seq[ci * l..ci * l + cur_len + 1]);
                run_score2[r] = small[j].v;
                src[r] = b * nb + cand_src[ci];
            }
            // f. update finished hypotheses
            let full =
                early == EarlyStopping::True && fin_flag[b * nb..(b + 1) * nb].iter().all(|&f| f);
            small.clear();
            for j in 0..nb {
                small.push(Elem {
                    v: fin_score[b * nb + j],
                    i: j,
                });
            }
            for c in 0..keep {
                let ci = b * keep + c;
                let mut s = cand_score[ci] / denom;
                if full {
                    s += NEG_1E9;
                }
                if !unsat[b] {
                    s += NEG_1E9;
                }
                let did = cand_hit[ci] && c < nb;
                if !did {
                    s += NEG_1E9;
                }
                small.push(Elem { v: s, i: nb + c });
            }
            topk(&mut small, nb);
            for j in 0..nb {
                let m = small[j].i;
                let r = b * nb + j;
                if m < nb {
                    let o = b * nb + m;
                    let len = fin_len[o];
                    fin_seq2[r * l..r * l + len].copy_from_slice(&fin_seq[o * l..o * l + len]);
                    fin_score2[r] = small[j].v;
                    fin_flag2[r] = fin_flag[o];
                    fin_len2[r] = len;
                } else {
                    let c = m - nb;
                    let ci = b * keep + c;
                    let len = cur_len + 1;
                    fin_seq2[r * l..r * l + len].copy_from_slice(&cand_seq[ci * l..ci * l + len]);
                    fin_score2[r] = small[j].v;
                    fin_flag2[r] = cand_hit[ci] && c < nb;
                    fin_len2[r] = len;
                }
            }
        }
        std::mem::swap(&mut run_seq, &mut run_seq2);
        std::mem::swap(&mut run_score, &mut run_score2);
        std::mem::swap(&mut fin_seq, &mut fin_seq2);
        std::mem::swap(&mut fin_score, &mut fin_score2);
        std::mem::swap(&mut fin_flag, &mut fin_flag2);
        std::mem::swap(&mut fin_len, &mut fin_len2);

        // g. stopping condition
        cur_len += 1;
        let hyp_len = if early == EarlyStopping::Never && lp > 0.0 {
            max_len - 1
        } else {
            cur_len - 1
        };
        let hyp_denom = length_denominator(hyp_len, lp);
        for b in 0..batch {
            let best = run_score[b * nb] / hyp_denom;
            let scores = &fin_score[b * nb..(b + 1) * nb];
            let mut worst = scores[0];
            for &s in &scores[1..] {
                if s.is_nan() || worst.is_nan() {
                    worst = f32::NAN;
                } else if s < worst {
                    worst = s;
                }
            }
            let any = (0..nb).any(|j| {
                let w = if fin_flag[b * nb + j] { worst } else { NEG_1E9 };
                best > w
            });
            unsat[b] = unsat[b] && any;
        }
        let improvement_possible = unsat.iter().any(|&u| u);
        let exists_open_beam = !(fin_flag.iter().all(|&f| f) && early == EarlyStopping::True);
        let valid_continuations = !cand_hit.iter().all(|&h| h);
        let done = !(improvement_possible && exists_open_beam && valid_continuations);
        on_step(cur_len, &[]);
        if done {
            break;
        }
        if src.iter().enumerate().any(|(i, &s)| i != s) {
            model.reorder(&src)?;
        }
    }

    let nrs = cfg.num_return_sequences;
    let mut out = Vec::with_capacity(batch * nrs);
    for b in 0..batch {
        for j in 0..nrs {
            let r = b * nb + j;
            out.push(fin_seq[r * l..r * l + fin_len[r]].to_vec());
        }
    }
    Ok(out)
}

/// HF pads outputs to a common length with pad_token_id; this helper does that so
/// tests can compare to HF's raw `generate` output. (Pass
/// [`GenerationConfig::hf_output_pad_token_id`] to match HF in every case.)
pub fn pad_like_hf(seqs: &[Vec<u32>], pad: u32) -> Vec<Vec<u32>> {
    let max = seqs.iter().map(Vec::len).max().unwrap_or(0);
    seqs.iter()
        .map(|s| {
            let mut p = s.clone();
            p.resize(max, pad);
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Expected values come from tests/fixtures/generate/fake_model.json, written by
    //! tools/reference/gen_fake_model_fixture.py with torch 2.15.0 / transformers 4.57.6.
    use super::*;
    use std::sync::OnceLock;

    fn fixture() -> &'static Value {
        static F: OnceLock<Value> = OnceLock::new();
        F.get_or_init(|| {
            serde_json::from_str(include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/generate/fake_model.json"
            )))
            .expect("fixture json")
        })
    }

    /// Mirror of `fake_logits` in tools/reference/gen_fake_model_fixture.py.
    fn fake_logits(seed: u32, seq: &[u32], bias_token: usize, bias: f32, out: &mut [f32]) {
        let n = seq.len();
        let last = seq[n - 1];
        let prev = if n >= 2 { seq[n - 2] } else { 65535 };
        for (v, o) in out.iter_mut().enumerate() {
            let mut h: u32 = 2166136261;
            for w in [seed, prev, last, v as u32] {
                h ^= w;
                h = h.wrapping_mul(16777619);
            }
            h ^= h >> 15;
            h = h.wrapping_mul(0x2C1B3C6D);
            h ^= h >> 12;
            *o = (h % 1024) as f32 / 64.0;
        }
        if bias_token < out.len() {
            out[bias_token] += bias * n.min(24) as f32;
        }
    }

    struct FakeModel {
        seeds: Vec<u32>,
        seqs: Vec<Vec<u32>>,
        vocab: usize,
        bias_token: usize,
        bias: f32,
        reorders: usize,
    }

    impl FakeModel {
        fn new(seeds: &[u32], expand: usize, vocab: usize, bias_token: usize, bias: f32) -> Self {
            let seeds: Vec<u32> = seeds
                .iter()
                .flat_map(|&s| std::iter::repeat_n(s, expand))
                .collect();
            FakeModel {
                seqs: vec![Vec::new(); seeds.len()],
                seeds,
                vocab,
                bias_token,
                bias,
                reorders: 0,
            }
        }
    }

    impl StepModel for FakeModel {
        async fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>, Error> {
            assert_eq!(tokens.len(), self.seqs.len());
            let mut out = vec![0f32; tokens.len() * self.vocab];
            for (r, &t) in tokens.iter().enumerate() {
                self.seqs[r].push(t);
                fake_logits(
                    self.seeds[r],
                    &self.seqs[r],
                    self.bias_token,
                    self.bias,
                    &mut out[r * self.vocab..(r + 1) * self.vocab],
                );
            }
            Ok(out)
        }
        fn reorder(&mut self, src: &[usize]) -> Result<(), Error> {
            assert_eq!(src.len(), self.seqs.len());
            assert!(
                src.iter().enumerate().any(|(i, &s)| i != s),
                "identity reorder"
            );
            let old = self.seqs.clone();
            for (i, &s) in src.iter().enumerate() {
                assert_eq!(self.seeds[i], self.seeds[s], "reorder across batch items");
                self.seqs[i] = old[s].clone();
            }
            self.reorders += 1;
            Ok(())
        }
        fn vocab_size(&self) -> usize {
            self.vocab
        }
    }

    fn u32s(v: &Value) -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    }

    #[test]
    fn generate_matches_transformers_on_fake_model() {
        let f = fixture();
        let bias_token = f["bias_token"].as_u64().unwrap() as usize;
        let cases = f["generate"].as_array().unwrap();
        assert!(cases.len() >= 15);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let vocab = case["vocab"].as_u64().unwrap() as usize;
            let seeds = u32s(&case["seeds"]);
            let cfg = GenerationConfig::from_transformers_json(None, &case["config"])
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let cfg = cfg
                .with_overrides(&case["kwargs"])
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let bias = case["bias"].as_f64().unwrap() as f32;
            let mut model = FakeModel::new(&seeds, cfg.num_beams, vocab, bias_token, bias);
            let mut steps = Vec::new();
            let out = generate(&mut model, seeds.len(), &cfg, &mut |l, _| steps.push(l))
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let expected: Vec<Vec<u32>> = case["sequences"]
                .as_array()
                .unwrap()
                .iter()
                .map(u32s)
                .collect();
            assert_eq!(out.len(), seeds.len() * cfg.num_return_sequences, "{name}");
            for s in &out {
                assert_eq!(s[0], cfg.decoder_start_token_id, "{name}");
                assert!(s.len() <= cfg.effective_max_length(), "{name}");
            }
            let padded = pad_like_hf(&out, cfg.hf_output_pad_token_id());
            assert_eq!(padded, expected, "{name}: cfg {cfg:?}");
            assert_eq!(steps.first(), Some(&2), "{name}");
            assert!(steps.windows(2).all(|w| w[1] == w[0] + 1), "{name}");
            if cfg.num_beams > 1 && steps.len() > 2 {
                assert!(model.reorders > 0, "{name}");
            }
        }
    }

    fn decode_code(c: i64) -> f32 {
        match c {
            1000 => f32::NEG_INFINITY,
            1001 => f32::NAN,
            1002 => -1e9,
            c => c as f32 * 0.5,
        }
    }

    #[test]
    fn topk_matches_torch_tie_order() {
        let cases = fixture()["topk"].as_array().unwrap();
        for (n_case, case) in cases.iter().enumerate() {
            let vals: Vec<f32> = case["codes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| decode_code(c.as_i64().unwrap()))
                .collect();
            let k = case["k"].as_u64().unwrap() as usize;
            let expected: Vec<usize> = case["indices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            let mut q: Vec<Elem> = vals
                .iter()
                .enumerate()
                .map(|(i, &v)| Elem { v, i })
                .collect();
            topk(&mut q, k);
            let got: Vec<usize> = q[..k].iter().map(|e| e.i).collect();
            assert_eq!(got, expected, "case {n_case} n={} k={k}", vals.len());
            // the streaming variant used by beam search, split into rows
            for width in [vals.len(), 1] {
                if !vals.len().is_multiple_of(width) {
                    continue;
                }
                let offsets = vec![0f32; vals.len() / width];
                let (mut out, mut scratch) = (Vec::new(), Vec::new());
                topk_offset_rows(&vals, &offsets, width, k, &mut out, &mut scratch);
                let got: Vec<usize> = out.iter().map(|e| e.i).collect();
                assert_eq!(got, expected, "streamed case {n_case} width {width}");
            }
        }
    }

    #[test]
    fn log_softmax_close_to_torch() {
        let cases = fixture()["log_softmax"].as_array().unwrap();
        let (mut exact_rows, mut max_ulps) = (0usize, 0u32);
        for case in cases {
            let mut row: Vec<f32> = u32s(&case["input_bits"])
                .into_iter()
                .map(f32::from_bits)
                .collect();
            let expected: Vec<f32> = u32s(&case["output_bits"])
                .into_iter()
                .map(f32::from_bits)
                .collect();
            log_softmax_in_place(&mut row);
            if row == expected {
                exact_rows += 1;
            }
            for (a, b) in row.iter().zip(&expected) {
                let d = (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32;
                max_ulps = max_ulps.max(d);
            }
        }
        eprintln!(
            "log_softmax: {exact_rows}/{} rows bit-identical, max {max_ulps} ulp",
            cases.len()
        );
        assert!(
            exact_rows * 100 >= cases.len() * 90,
            "{exact_rows}/{}",
            cases.len()
        );
        assert!(max_ulps <= 4, "max ulp difference {max_ulps}");
    }

    #[test]
    fn config_resolution_matches_transformers() {
        let cases = fixture()["config_resolution"].as_array().unwrap();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let gen = case.get("generation_config").filter(|g| !g.is_null());
            let got = GenerationConfig::from_transformers_json(gen, &case["config"]);
            let r = &case["resolved"];
            let cannot_generate = r.get("error").is_some()
                || [
                    "max_length",
                    "num_beams",
                    "length_penalty",
                    "early_stopping",
                    "num_return_sequences",
                ]
                .iter()
                .any(|k| r[*k].is_null());
            if cannot_generate {
                assert!(got.is_err(), "{name}: expected an error, got {got:?}");
                continue;
            }
            let cfg = got.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let opt = |k: &str| -> Option<u32> {
                match &r[k] {
                    Value::Null => None,
                    Value::Array(a) => Some(a[0].as_u64().unwrap() as u32),
                    v => Some(v.as_u64().unwrap() as u32),
                }
            };
            let num = |k: &str| r[k].as_u64().map(|x| x as usize);
            assert_eq!(Some(cfg.max_length), num("max_length"), "{name}");
            assert_eq!(cfg.max_new_tokens, num("max_new_tokens"), "{name}");
            assert_eq!(cfg.min_length, num("min_length").unwrap_or(0), "{name}");
            assert_eq!(cfg.min_new_tokens, num("min_new_tokens"), "{name}");
            assert_eq!(Some(cfg.num_beams), num("num_beams"), "{name}");
            assert_eq!(
                cfg.length_penalty,
                r["length_penalty"].as_f64().unwrap() as f32,
                "{name}"
            );
            assert_eq!(
                cfg.early_stopping,
                EarlyStopping::from_json(&r["early_stopping"]).unwrap(),
                "{name}"
            );
            assert_eq!(
                cfg.no_repeat_ngram_size,
                num("no_repeat_ngram_size").unwrap_or(0),
                "{name}"
            );
            assert_eq!(
                Some(cfg.num_return_sequences),
                num("num_return_sequences"),
                "{name}"
            );
            assert_eq!(
                Some(cfg.decoder_start_token_id),
                opt("decoder_start_token_id"),
                "{name}"
            );
            assert_eq!(cfg.bos_token_id, opt("bos_token_id"), "{name}");
            assert_eq!(cfg.eos_token_id, opt("eos_token_id"), "{name}");
            assert_eq!(Some(cfg.pad_token_id), opt("pad_token_id"), "{name}");
            assert_eq!(
                cfg.forced_bos_token_id,
                opt("forced_bos_token_id"),
                "{name}"
            );
            assert_eq!(
                cfg.forced_eos_token_id,
                opt("forced_eos_token_id"),
                "{name}"
            );
        }
    }

    /// The project's own resolution rule (no transformers counterpart): per key,
    /// generation_config.json > config.json > task_specific_params.summarization > default.
    #[test]
    fn from_hf_json_cascade() {
        let config = serde_json::json!({
            "num_beams": 4, "max_length": 142, "forced_bos_token_id": 0,
            "task_specific_params": {"summarization": {
                "num_beams": 6, "min_length": 56, "no_repeat_ngram_size": 3,
                "early_stopping": true, "prefix": " "}}
        });
        let gen =
            serde_json::json!({"num_beams": 2, "length_penalty": 2.0, "forced_bos_token_id": null});
        let c = from_hf_json(Some(&gen), &config).unwrap();
        assert_eq!(c.num_beams, 2);
        assert_eq!(c.length_penalty, 2.0);
        assert_eq!(c.forced_bos_token_id, None);
        assert_eq!(c.max_length, 142);
        assert_eq!(c.min_length, 56);
        assert_eq!(c.no_repeat_ngram_size, 3);
        assert_eq!(c.early_stopping, EarlyStopping::True);
        assert_eq!(c.forced_eos_token_id, Some(2));
        assert_eq!((c.decoder_start_token_id, c.pad_token_id), (2, 1));
        let c = from_hf_json(None, &config).unwrap();
        assert_eq!((c.num_beams, c.forced_bos_token_id), (4, Some(0)));
        let bad = serde_json::json!({"do_sample": true});
        assert!(from_hf_json(None, &bad).is_err());
    }

    #[test]
    fn serde_round_trip() {
        for (es, js) in [
            (EarlyStopping::True, "true"),
            (EarlyStopping::False, "false"),
            (EarlyStopping::Never, "\"never\""),
        ] {
            assert_eq!(serde_json::to_string(&es).unwrap(), js);
            assert_eq!(serde_json::from_str::<EarlyStopping>(js).unwrap(), es);
        }
        assert!(serde_json::from_str::<EarlyStopping>("\"always\"").is_err());
        let c = GenerationConfig {
            num_beams: 4,
            early_stopping: EarlyStopping::Never,
            max_new_tokens: Some(60),
            ..Default::default()
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<GenerationConfig>(&s).unwrap(), c);
        let partial: GenerationConfig = serde_json::from_str(r#"{"num_beams": 3}"#).unwrap();
        assert_eq!(partial.num_beams, 3);
        assert_eq!(partial.max_length, 20);
    }

    #[test]
    fn length_rules() {
        let mut c = GenerationConfig::default();
        assert_eq!(c.effective_max_length(), 21);
        c.apply_kwargs(&serde_json::json!({"max_length": 20}))
            .unwrap();
        assert_eq!(c.effective_max_length(), 20);
        c.apply_kwargs(&serde_json::json!({"max_new_tokens": 5, "max_length": 99}))
            .unwrap();
        assert_eq!(c.effective_max_length(), 6);
        c.apply_kwargs(&serde_json::json!({"min_new_tokens": 3, "min_length": 9}))
            .unwrap();
        assert_eq!(c.effective_min_length(), 4);
        assert!(c.apply_kwargs(&serde_json::json!({"top_kk": 3})).is_err());
        assert!(c
            .apply_kwargs(&serde_json::json!({"repetition_penalty": 1.2}))
            .is_err());
        let g = GenerationConfig {
            num_return_sequences: 2,
            ..Default::default()
        };
        assert!(g.validate().is_err());
    }
}
