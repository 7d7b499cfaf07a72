//! Generation settings: transformers' `GenerationConfig`, resolved from
//! `generation_config.json` / `config.json` and `generate(**kwargs)` exactly as transformers does.

use crate::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `early_stopping` of a transformers `GenerationConfig`: `true`, `false` or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    True,
    False,
    Never,
}

impl EarlyStopping {
    pub(super) fn from_json(v: &Value) -> Result<Self, String> {
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
    /// BART: a single eos, 2. The first of several (Llama 3: `[128001, 128008, 128009]`).
    pub eos_token_id: Option<u32>,
    /// The other eos ids of a list (transformers' `eos_token_id: [a, b, ...]`): any of them ends
    /// a sequence, as `EosTokenCriteria` and `MinLengthLogitsProcessor` treat the list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_eos_token_ids: Vec<u32>,
    pub pad_token_id: u32,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Option<u32>,
    /// `do_sample=True` with its warpers (greedy search only); `None`: deterministic. Never read
    /// from a model's files: asked for by the caller (`--do-sample`).
    #[serde(skip)]
    pub sampling: Option<Sampling>,
}

/// Multinomial sampling as `GenerationMixin._sample` does it with `do_sample=True`: the logits
/// processors, then `TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper` (in that
/// order, each only when it changes something), softmax, one draw. The draws come from
/// [`crate::sampling::SplitMix64`] seeded with `seed` (not torch's generator: the same seed gives
/// the same summaries on every machine, not the ids PyTorch would draw).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Sampling {
    /// transformers' `GenerationConfig()` defaults: temperature 1.0, top_k 50, top_p 1.0.
    fn default() -> Self {
        Sampling {
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    /// The defaults with a generation config's `temperature` / `top_k` / `top_p` on top (what
    /// `generate(do_sample=True)` would use).
    pub fn from_generation_json(json: Option<&Value>) -> Self {
        let mut s = Sampling::default();
        if let Some(obj) = json.and_then(Value::as_object) {
            if let Some(t) = obj.get("temperature").and_then(Value::as_f64) {
                s.temperature = t as f32;
            }
            if let Some(k) = obj.get("top_k").and_then(Value::as_u64) {
                s.top_k = k as usize;
            }
            if let Some(p) = obj.get("top_p").and_then(Value::as_f64) {
                s.top_p = p as f32;
            }
        }
        s
    }

    pub fn validate(&self) -> Result<(), Error> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(gen_err(format!(
                "`temperature` has to be a strictly positive float, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(gen_err(format!(
                "`top_p` has to be a float > 0 and <= 1, got {}",
                self.top_p
            )));
        }
        Ok(())
    }

    /// The warpers on one row of processed scores, in place (removed tokens at -inf).
    pub fn warp(&self, row: &mut [f32]) {
        // TemperatureLogitsWarper
        if self.temperature != 1.0 {
            for x in row.iter_mut() {
                *x /= self.temperature;
            }
        }
        // TopKLogitsWarper: below the k-th largest score → -inf (ties at it kept).
        let k = self.top_k.min(row.len());
        if self.top_k != 0 && k < row.len() {
            let mut sorted: Vec<f32> = row.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            for x in row.iter_mut() {
                if *x < kth {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        // TopPLogitsWarper: ascending sort, cumulative softmax; drop those with cumulative
        // probability <= 1 - top_p, always keeping the most likely token.
        if self.top_p < 1.0 {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
            let probs = softmax(row);
            let mut cumulative = 0f32;
            let last = order.len() - 1;
            let mut remove = Vec::new();
            for (rank, &i) in order.iter().enumerate() {
                cumulative += probs[i];
                if cumulative <= 1.0 - self.top_p && rank != last {
                    remove.push(i);
                }
            }
            for i in remove {
                row[i] = f32::NEG_INFINITY;
            }
        }
    }

    /// One draw from `softmax(row)`.
    pub fn draw(&self, row: &[f32], rng: &mut crate::sampling::SplitMix64) -> usize {
        let probs = softmax(row);
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut cumulative = 0f64;
        let mut last = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                cumulative += p as f64;
                last = i;
                if u < cumulative {
                    return i;
                }
            }
        }
        last
    }
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
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
            more_eos_token_ids: Vec::new(),
            pad_token_id: 1,
            forced_bos_token_id: None,
            forced_eos_token_id: Some(2),
            sampling: None,
        }
    }
}

/// Fields of [`GenerationConfig`], by their transformers names.
pub(super) const FIELDS: &[&str] = &[
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
pub(super) fn unsupported_default(key: &str) -> Option<Value> {
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
pub(super) const INERT_KEYS: &[&str] = &[
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
pub(super) const MODEL_CONFIG_GENERATION_KEYS: &[&str] = &[
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

pub(super) fn gen_err(msg: impl Into<String>) -> Error {
    Error::Generation(msg.into())
}

pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

pub(super) fn as_usize(key: &str, v: &Value) -> Result<usize, Error> {
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

/// Token ids: an integer or a list of them (transformers allows lists of eos ids).
pub(super) fn as_tokens(key: &str, v: &Value) -> Result<Vec<u32>, Error> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::Array(_) | Value::Null => {
                    Err(gen_err(format!("`{key}` must be token ids, got {v}")))
                }
                x => as_token(key, x).map(|t| t.unwrap_or(0)),
            })
            .collect(),
        v => Ok(as_token(key, v)?.into_iter().collect()),
    }
}

/// A token id: an integer, or a one-element list (transformers allows lists of eos ids).
pub(super) fn as_token(key: &str, v: &Value) -> Result<Option<u32>, Error> {
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
pub(super) fn py_float(x: f32) -> f64 {
    format!("{x}").parse::<f64>().unwrap_or(x as f64)
}

/// `(len ** length_penalty)` in Python (C `pow` on doubles), then the float32 the
/// torch scalar becomes when it divides a float32 tensor.
pub(super) fn length_denominator(len: usize, length_penalty: f64) -> f32 {
    (len as f64).powf(length_penalty) as f32
}

/// A flat key -> JSON value view of a transformers `GenerationConfig`, restricted to
/// the keys this module knows about.
pub(super) type RawConfig = std::collections::BTreeMap<String, Value>;

/// `GenerationConfig()` defaults of transformers 4.57 (special ids all None).
pub(super) fn hf_generation_defaults() -> RawConfig {
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
pub(super) fn bart_config_default(key: &str) -> Option<Value> {
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
pub(super) fn bart_config_value(config: &Value, key: &str) -> Option<Value> {
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
pub(super) fn hf_from_model_config(config: &Value) -> RawConfig {
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
pub(super) fn has_non_default_generation_parameters(config: &Value) -> bool {
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
        self.max_length_after(1, None)
    }

    /// The `min_length` generation actually runs with: `1 + min_new_tokens` when set,
    /// else `min_length`.
    pub fn effective_min_length(&self) -> usize {
        self.min_length_after(1)
    }

    /// `_prepare_generated_length` for a prompt of `prompt_len` tokens (the decoder start token
    /// of an encoder-decoder, 1; a decoder-only model's whole left-padded prompt): the total
    /// length generation stops at — `prompt_len + max_new_tokens`, or a default `max_length`
    /// of 20 read as 20 new tokens (capped at `max_positions`, the model's
    /// `max_position_embeddings`), or `max_length` as configured.
    pub fn max_length_after(&self, prompt_len: usize, max_positions: Option<usize>) -> usize {
        match self.max_new_tokens {
            Some(m) => prompt_len + m,
            None if self.max_length == 20 => {
                let n = 20 + prompt_len;
                max_positions.map_or(n, |m| n.min(m))
            }
            None => self.max_length,
        }
    }

    /// The `min_length` for a prompt of `prompt_len` tokens: `prompt_len + min_new_tokens` when
    /// set, else `min_length` (which counts the prompt).
    pub fn min_length_after(&self, prompt_len: usize) -> usize {
        match self.min_new_tokens {
            Some(m) => prompt_len + m,
            None => self.min_length,
        }
    }

    /// Every eos id (the first, then the others of a list).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .into_iter()
            .chain(self.more_eos_token_ids.iter().copied())
            .collect()
    }

    /// Whether `token` is one of the eos ids.
    pub fn is_eos(&self, token: u32) -> bool {
        self.eos_token_id == Some(token) || self.more_eos_token_ids.contains(&token)
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
        if let Some(sampling) = &self.sampling {
            sampling.validate()?;
            if self.num_beams > 1 {
                return Err(gen_err(
                    "sampling with beam search (do_sample with num_beams > 1) is not supported",
                ));
            }
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
    pub(super) fn set_json(&mut self, key: &str, v: &Value) -> Result<bool, Error> {
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
            "eos_token_id" => {
                let ids = as_tokens(key, v)?;
                self.eos_token_id = ids.first().copied();
                self.more_eos_token_ids = ids.into_iter().skip(1).collect();
            }
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
    pub(super) fn from_raw(raw: &RawConfig) -> Result<GenerationConfig, Error> {
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
