//! GGUF (llama.cpp's file format, version 3): the writer, a reader (for checks), `Q8_0` / `Q4_0` blocks
//! bit-exact with ggml's reference quantizer (the K-quants are in `kquants`), and the tokenizer metadata llama.cpp's
//! `convert_hf_to_gguf.py` writes for a byte-level BPE (`tokenizer.ggml.*`). Which tensors and
//! hyperparameters an architecture has is its own business (`models/<family>/gguf.rs`).

use crate::{Error, Result};
use half::f16;
use serde_json::Value;

/// A metadata value (the types convert_hf_to_gguf.py writes).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
}

/// ggml tensor types written here (ggml's names).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q5_0 = 6,
    Q8_0 = 8,
    Q4_K = 12,
    Q6_K = 14,
}

impl GgmlType {
    fn from_u32(t: u32) -> Option<Self> {
        Some(match t {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            6 => Self::Q5_0,
            8 => Self::Q8_0,
            12 => Self::Q4_K,
            14 => Self::Q6_K,
            _ => return None,
        })
    }

    /// Values per block and bytes per block.
    pub fn block(self) -> (usize, usize) {
        use super::kquants::{Q4_K_BYTES, Q5_0_BYTES, Q6_K_BYTES, QK_K};
        match self {
            Self::F32 => (1, 4),
            Self::F16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q5_0 => (32, Q5_0_BYTES),
            Self::Q8_0 => (32, 34),
            Self::Q4_K => (QK_K, Q4_K_BYTES),
            Self::Q6_K => (QK_K, Q6_K_BYTES),
        }
    }
}

/// One tensor: `dims` in ggml order (innermost first: a row-major `[rows, cols]` matrix is
/// `[cols, rows]`) and its encoded bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub kind: GgmlType,
    pub data: Vec<u8>,
}

const ALIGNMENT: usize = 32;
const MAGIC: &[u8; 4] = b"GGUF";

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    let ty = |out: &mut Vec<u8>, t: u32| out.extend_from_slice(&t.to_le_bytes());
    match v {
        GgufValue::U32(x) => {
            ty(out, 4);
            out.extend_from_slice(&x.to_le_bytes());
        }
        GgufValue::I32(x) => {
            ty(out, 5);
            out.extend_from_slice(&x.to_le_bytes());
        }
        GgufValue::F32(x) => {
            ty(out, 6);
            out.extend_from_slice(&x.to_le_bytes());
        }
        GgufValue::Bool(x) => {
            ty(out, 7);
            out.push(u8::from(*x));
        }
        GgufValue::Str(s) => {
            ty(out, 8);
            put_str(out, s);
        }
        GgufValue::StrArray(a) => {
            ty(out, 9);
            ty(out, 8);
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for s in a {
                put_str(out, s);
            }
        }
        GgufValue::I32Array(a) => {
            ty(out, 9);
            ty(out, 5);
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        GgufValue::F32Array(a) => {
            ty(out, 9);
            ty(out, 6);
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
}

fn pad_to(out: &mut Vec<u8>, alignment: usize) {
    while out.len() % alignment != 0 {
        out.push(0);
    }
}

/// The file: header, metadata, tensor infos, then the tensors' data (each aligned to 32 bytes).
pub fn write(metadata: &[(String, GgufValue)], tensors: &[GgufTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        put_value(&mut out, value);
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.kind as u32).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += t.data.len().div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    pad_to(&mut out, ALIGNMENT);
    for t in tensors {
        out.extend_from_slice(&t.data);
        pad_to(&mut out, ALIGNMENT);
    }
    out
}

/// Reads a file this module can write (metadata of the types above, F32/F16/Q8_0 tensors).
pub fn read(bytes: &[u8]) -> Result<(Vec<(String, GgufValue)>, Vec<GgufTensor>)> {
    let err = |m: &str| Error::Weights(format!("gguf: {m}"));
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let s = bytes.get(*at..*at + n).ok_or_else(|| err("truncated"))?;
        *at += n;
        Ok(s)
    };
    let u32_ = |at: &mut usize| -> Result<u32> {
        Ok(u32::from_le_bytes(take(at, 4)?.try_into().unwrap()))
    };
    let u64_ = |at: &mut usize| -> Result<u64> {
        Ok(u64::from_le_bytes(take(at, 8)?.try_into().unwrap()))
    };
    let string = |at: &mut usize| -> Result<String> {
        let n = u64_(at)? as usize;
        String::from_utf8(take(at, n)?.to_vec()).map_err(|_| err("a string is not UTF-8"))
    };
    if take(&mut at, 4)? != MAGIC {
        return Err(err("not a GGUF file"));
    }
    if u32_(&mut at)? != 3 {
        return Err(err("only version 3 is read"));
    }
    let (n_tensors, n_kv) = (u64_(&mut at)? as usize, u64_(&mut at)? as usize);
    let mut metadata = Vec::with_capacity(n_kv.min(1 << 16));
    for _ in 0..n_kv {
        let key = string(&mut at)?;
        let value = match u32_(&mut at)? {
            4 => GgufValue::U32(u32_(&mut at)?),
            5 => GgufValue::I32(u32_(&mut at)? as i32),
            6 => GgufValue::F32(f32::from_bits(u32_(&mut at)?)),
            7 => GgufValue::Bool(take(&mut at, 1)?[0] != 0),
            8 => GgufValue::Str(string(&mut at)?),
            9 => {
                let ty = u32_(&mut at)?;
                let n = u64_(&mut at)? as usize;
                match ty {
                    8 => {
                        GgufValue::StrArray((0..n).map(|_| string(&mut at)).collect::<Result<_>>()?)
                    }
                    5 => GgufValue::I32Array(
                        (0..n)
                            .map(|_| u32_(&mut at).map(|x| x as i32))
                            .collect::<Result<_>>()?,
                    ),
                    6 => GgufValue::F32Array(
                        (0..n)
                            .map(|_| u32_(&mut at).map(f32::from_bits))
                            .collect::<Result<_>>()?,
                    ),
                    t => return Err(err(&format!("{key}: array of type {t} not read"))),
                }
            }
            t => return Err(err(&format!("{key}: value type {t} not read"))),
        };
        metadata.push((key, value));
    }
    let mut infos = Vec::with_capacity(n_tensors.min(1 << 16));
    for _ in 0..n_tensors {
        let name = string(&mut at)?;
        let n_dims = u32_(&mut at)? as usize;
        let dims: Vec<u64> = (0..n_dims).map(|_| u64_(&mut at)).collect::<Result<_>>()?;
        let kind = GgmlType::from_u32(u32_(&mut at)?)
            .ok_or_else(|| err(&format!("{name}: type not read")))?;
        let offset = u64_(&mut at)? as usize;
        infos.push((name, dims, kind, offset));
    }
    let data_start = at.div_ceil(ALIGNMENT) * ALIGNMENT;
    let tensors = infos
        .into_iter()
        .map(|(name, dims, kind, offset)| {
            let n: u64 = dims.iter().product();
            let (values, bytes_per_block) = kind.block();
            let size = (n as usize / values) * bytes_per_block;
            let start = data_start + offset;
            let data = bytes
                .get(start..start + size)
                .ok_or_else(|| err(&format!("{name}: data past the end")))?
                .to_vec();
            Ok(GgufTensor {
                name,
                dims,
                kind,
                data,
            })
        })
        .collect::<Result<_>>()?;
    Ok((metadata, tensors))
}

/// `roundf` (half away from zero), as ggml and gguf-py's `np_roundf` compute it in f32.
fn roundf(x: f32) -> f32 {
    let a = x.abs();
    let floored = a.floor();
    let b = floored + (2.0 * (a - floored)).floor();
    b.copysign(x) * if x == 0.0 { 0.0 } else { 1.0 }
}

/// `Q8_0` blocks of 32 values (f16 scale `max|x| / 127`, then `round(x / scale)` as int8),
/// bit-exact with ggml's `quantize_row_q8_0_ref` / gguf-py's `Q8_0.quantize_blocks`.
/// `values.len()` must be a multiple of 32.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        for &x in block {
            out.push(roundf(x * id) as i8 as u8);
        }
    }
    out
}

/// `Q4_0` blocks of 32 values (f16 scale `d = m / -8` with `m` the value of largest magnitude,
/// the first one on ties; then `min(15, trunc(x / d + 8.5))`, the first 16 values in the low
/// nibbles and the last 16 in the high ones), bit-exact with ggml's `quantize_row_q4_0_ref` /
/// gguf-py's `Q4_0.quantize_blocks`. `values.len()` must be a multiple of 32.
pub fn quantize_q4_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 18);
    for block in values.chunks_exact(32) {
        let d = largest_magnitude(block) / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        let q = |x: f32| ((x * id + 8.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            out.push(q(block[j]) | (q(block[16 + j]) << 4));
        }
    }
    out
}

/// The value of largest magnitude in `block` (the first one on ties; 0 for none), as ggml's
/// `q4_0` / `q5_0` reference quantizers pick their scale's sign and size.
pub(crate) fn largest_magnitude(block: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &x in block {
        if amax < x.abs() {
            amax = x.abs();
            max = x;
        }
    }
    max
}

/// f32 values as ggml F16 (round to nearest even).
pub fn encode_f16(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
        .collect()
}

/// f32 values as ggml F32.
pub fn encode_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The `tokenizer.*` metadata convert_hf_to_gguf.py writes for a byte-level BPE `tokenizer.json`
/// (`gpt2` model; `pre` names llama.cpp's pre-tokenizer, e.g. `llama-bpe` for Llama 3): the tokens
/// by id (`[PAD{i}]` for ids the tokenizer lacks, up to `vocab_size`), their types (1 normal,
/// 3 control = special added tokens, 4 user-defined, 5 unused), the merges, the special ids of
/// tokenizer_config.json, the `add_bos/eos/sep_token` flags of the post-processor, and the chat
/// template.
pub fn bpe_tokenizer_metadata(
    tokenizer_json: &[u8],
    tokenizer_config: Option<&[u8]>,
    config_json: Option<&Value>,
    chat_template: Option<&str>,
    vocab_size: usize,
    pre: &str,
) -> Result<Vec<(String, GgufValue)>> {
    let err = |m: String| Error::Tokenizer(format!("tokenizer.json: {m}"));
    let tok: Value = serde_json::from_slice(tokenizer_json).map_err(|e| err(e.to_string()))?;
    let model = &tok["model"];
    if model["type"] != "BPE" {
        return Err(err(format!(
            "GGUF export reads byte-level BPE tokenizers (Llama 3, Qwen2); this one is {}",
            model["type"]
        )));
    }
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    let mut types = vec![5i32; vocab_size];
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| err("model.vocab missing".into()))?;
    for (t, id) in vocab {
        if let Some(id) = id.as_u64().map(|i| i as usize).filter(|&i| i < vocab_size) {
            tokens[id] = Some(t.clone());
            types[id] = 1;
        }
    }
    for added in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            continue;
        };
        if (id as usize) < vocab_size {
            tokens[id as usize] = Some(content.to_string());
            types[id as usize] = if added["special"].as_bool().unwrap_or(false) {
                3
            } else {
                4
            };
        }
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => Some(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            )),
            _ => None,
        })
        .collect();
    let mut meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::Str("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".to_string(), GgufValue::Str(pre.into())),
        (
            "tokenizer.ggml.tokens".to_string(),
            GgufValue::StrArray(tokens.clone()),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::I32Array(types),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            GgufValue::StrArray(merges),
        ),
    ];
    meta.extend(special_vocab_metadata(
        vocab_size,
        &tok,
        tokenizer_config,
        config_json,
        chat_template,
    ));
    Ok(meta)
}

/// The `tokenizer.*` metadata convert_hf_to_gguf.py writes for Phi-3 (`Phi3MiniModel.set_vocab`):
/// the SentencePiece `tokenizer.model`'s pieces by id with their scores and types (`[PAD{i}]`,
/// score -10000 and type 5 (unused) for ids up to `vocab_size` it lacks), then the added tokens of
/// `added_tokens.json`, tokenizer_config.json's `added_tokens_decoder` and tokenizer.json's
/// `added_tokens` over them (score -1000, type 4 — 3 when special), then what `SpecialVocab` adds.
pub fn spm_tokenizer_metadata(
    tokenizer_model: &[u8],
    tokenizer_json: Option<&[u8]>,
    tokenizer_config: Option<&[u8]>,
    config_json: Option<&Value>,
    added_tokens_json: Option<&[u8]>,
    chat_template: Option<&str>,
    vocab_size: usize,
) -> Result<Vec<(String, GgufValue)>> {
    let pieces = sentencepiece_pieces(tokenizer_model)?;
    if pieces.is_empty() {
        return Err(Error::Tokenizer(
            "tokenizer.model: no pieces (not a SentencePiece model)".into(),
        ));
    }
    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000f32; vocab_size];
    let mut types = vec![5i32; vocab_size];
    for (id, (text, score, kind)) in pieces.into_iter().enumerate().take(vocab_size) {
        tokens[id] = text;
        scores[id] = score;
        types[id] = match kind {
            2 | 3 | 5 | 6 => kind,
            _ => 1,
        };
    }
    let json = |b: Option<&[u8]>, file: &str| -> Result<Value> {
        match b {
            None => Ok(Value::Null),
            Some(b) => {
                serde_json::from_slice(b).map_err(|e| Error::Tokenizer(format!("{file}: {e}")))
            }
        }
    };
    let mut add = |id: u64, text: &str, special: Option<bool>| {
        let id = id as usize;
        if id < vocab_size {
            tokens[id] = text.to_string();
            scores[id] = -1000.0;
            types[id] = if special == Some(true) { 3 } else { 4 };
        }
    };
    if let Value::Object(added) = json(added_tokens_json, "added_tokens.json")? {
        for (text, id) in added {
            if let Some(id) = id.as_u64() {
                add(id, &text, None);
            }
        }
    }
    let config = json(tokenizer_config, "tokenizer_config.json")?;
    if let Some(decoder) = config["added_tokens_decoder"].as_object() {
        for (id, data) in decoder {
            if let (Ok(id), Some(text)) = (id.parse::<u64>(), data["content"].as_str()) {
                add(id, text, data["special"].as_bool());
            }
        }
    }
    let tok = json(tokenizer_json, "tokenizer.json")?;
    for data in tok["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(text)) = (data["id"].as_u64(), data["content"].as_str()) {
            add(id, text, data["special"].as_bool());
        }
    }
    let mut meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::Str("llama".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            GgufValue::Str("default".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            GgufValue::StrArray(tokens.clone()),
        ),
        (
            "tokenizer.ggml.scores".to_string(),
            GgufValue::F32Array(scores),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::I32Array(types),
        ),
    ];
    meta.extend(special_vocab_metadata(
        vocab_size,
        &tok,
        tokenizer_config,
        config_json,
        chat_template,
    ));
    Ok(meta)
}

/// What gguf-py's `SpecialVocab` (`_try_load_from_tokenizer_json`, then `_try_load_from_config_json`)
/// adds after the tokens, in its order of rules:
/// - the special tokens' texts from tokenizer_config.json (`{bos,eos,unk,sep,pad,cls,mask}_token`,
///   a string or `{content}`; cls stands in for a missing bos, sep for a missing eos);
/// - the `add_{bos,eos,sep}_token` flags the post-processor walk sets (ByteLevel: bos/eos false
///   unless set; RobertaProcessing: all three; TemplateProcessing: its single template's leading
///   special token (bos or cls — adopted as bos when bos is unset) and trailing one (which becomes
///   the eos, the old eos kept as `eot`), a separator between `$A` and `$B` of its pair template),
///   then tokenizer_config.json's own `add_{type}_token` for the types the walk left unset;
/// - each type's id: its text looked up among tokenizer.json's `added_tokens`, else config.json's
///   `{type}_token_id` (an integer under the vocabulary size);
/// - the chat template.
pub fn special_vocab_metadata(
    vocab_size: usize,
    tokenizer_json: &Value,
    tokenizer_config: Option<&[u8]>,
    config_json: Option<&Value>,
    chat_template: Option<&str>,
) -> Vec<(String, GgufValue)> {
    let mut meta = Vec::new();
    let config: Option<Value> = tokenizer_config.and_then(|b| serde_json::from_slice(b).ok());
    let mut types: Vec<&'static str> = vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
    let mut text: std::collections::HashMap<&'static str, String> = types
        .iter()
        .filter_map(|&t| {
            let v = config.as_ref().map(|c| &c[format!("{t}_token")])?;
            match v {
                Value::String(s) => Some((t, s.clone())),
                Value::Object(o) => o
                    .get("content")
                    .and_then(Value::as_str)
                    .map(|s| (t, s.to_string())),
                _ => None,
            }
        })
        .collect();
    if config.is_some() {
        if !text.contains_key("bos") {
            if let Some(cls) = text.get("cls").cloned() {
                text.insert("bos", cls);
            }
        }
        if !text.contains_key("eos") {
            if let Some(sep) = text.get("sep").cloned() {
                text.insert("eos", sep);
            }
        }
    }
    // The add_* flags in the order they are first set.
    let mut flags: Vec<(&'static str, bool)> = Vec::new();
    fn set(flags: &mut Vec<(&'static str, bool)>, key: &'static str, v: bool, only_default: bool) {
        match flags.iter_mut().find(|(k, _)| *k == key) {
            Some(f) if !only_default => f.1 = v,
            Some(_) => {}
            None => flags.push((key, v)),
        }
    }
    let post = &tokenizer_json["post_processor"];
    let processors: Vec<&Value> = match post["processors"].as_array() {
        Some(list) => list.iter().collect(),
        None if !post.is_null() => vec![post],
        None => Vec::new(),
    };
    let special_id = |v: &Value| v["SpecialToken"]["id"].as_str().map(str::to_string);
    for p in processors {
        match p["type"].as_str() {
            Some("ByteLevel") => {
                set(&mut flags, "bos", false, true);
                set(&mut flags, "eos", false, true);
            }
            Some("RobertaProcessing") => {
                for k in ["bos", "eos", "sep"] {
                    set(&mut flags, k, true, false);
                }
                if config.is_some() {
                    for (typ, key, fallback) in [("cls", "cls", "bos"), ("sep", "sep", "eos")] {
                        if !text.contains_key(typ) {
                            let from = p[key][0]
                                .as_str()
                                .map(str::to_string)
                                .or_else(|| text.get(fallback).cloned());
                            if let Some(t) = from {
                                text.insert(typ, t);
                            }
                        }
                    }
                }
            }
            Some("TemplateProcessing") => {
                let single: Vec<&Value> = p["single"].as_array().into_iter().flatten().collect();
                let mut first = None;
                let mut last = None;
                if single.len() > 1 {
                    first = special_id(single[0]);
                    if let Some(f) = &first {
                        if config.is_none() {
                            text.insert("bos", f.clone());
                        } else if Some(f) != text.get("bos") && Some(f) != text.get("cls") {
                            if !text.contains_key("bos") {
                                text.insert("bos", f.clone());
                            }
                            if !text.contains_key("cls") {
                                text.insert("cls", f.clone());
                            }
                        }
                        let is_bos = Some(f) == text.get("bos") || Some(f) == text.get("cls");
                        set(&mut flags, "bos", is_bos, false);
                    }
                    last = special_id(single[single.len() - 1]);
                    if let Some(l) = &last {
                        if config.is_none() {
                            text.insert("eos", l.clone());
                        } else if Some(l) != text.get("eos") {
                            // The trailing token becomes the eos; the old one is kept as eot (eom).
                            let fallback = if !types.contains(&"eot") {
                                Some("eot")
                            } else if !types.contains(&"eom") {
                                Some("eom")
                            } else {
                                None
                            };
                            if let Some(kind) = fallback {
                                types.push(kind);
                                if let Some(old) = text.get("eos").cloned() {
                                    text.insert(kind, old);
                                }
                            }
                            text.insert("eos", l.clone());
                        }
                        set(&mut flags, "eos", true, false);
                    }
                }
                let pair: Vec<&Value> = p["pair"].as_array().into_iter().flatten().collect();
                if !pair.is_empty() {
                    let start = usize::from(first.is_some() && special_id(pair[0]) == first);
                    let stop = if last.is_some() && special_id(pair[pair.len() - 1]) == last {
                        pair.len() - 1
                    } else {
                        pair.len()
                    };
                    let pair = &pair[start.min(stop)..stop];
                    let seq = |v: &Value| v["Sequence"]["id"].as_str().map(str::to_string);
                    if pair.len() > 2
                        && seq(pair[0]).as_deref() == Some("A")
                        && seq(pair[pair.len() - 1]).as_deref() == Some("B")
                    {
                        let middle = &pair[1..pair.len() - 1];
                        let is_sep = |v: &Value| {
                            special_id(v).is_some_and(|t| {
                                Some(&t) == text.get("sep") || Some(&t) == text.get("eos")
                            })
                        };
                        let mut add_sep = is_sep(middle[0]) && last.is_none();
                        if middle.len() == 2 && is_sep(middle[1]) {
                            add_sep = true;
                        }
                        set(&mut flags, "sep", add_sep, false);
                        if add_sep && !text.contains_key("sep") && config.is_some() {
                            if let Some(eos) = text.get("eos").cloned() {
                                text.insert("sep", eos);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut ids: Vec<(&'static str, u32)> = Vec::new();
    if let Some(config) = &config {
        for &typ in &types {
            if let Some(Value::Bool(b)) = config.get(format!("add_{typ}_token")) {
                set(&mut flags, typ, *b, true);
            }
        }
        let added: Vec<&Value> = tokenizer_json["added_tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        for &typ in &types {
            let Some(t) = text.get(typ) else { continue };
            let id = added
                .iter()
                .find(|a| a["content"].as_str() == Some(t.as_str()))
                .and_then(|a| a["id"].as_u64());
            if let Some(id) = id.filter(|&i| (i as usize) < vocab_size) {
                if !ids.iter().any(|(k, _)| *k == typ) {
                    ids.push((typ, id as u32));
                }
            }
        }
    }
    if let Some(c) = config_json {
        for &typ in &types {
            let id = c
                .get(format!("{typ}_token_id"))
                .filter(|v| !v.is_null())
                .or_else(|| {
                    c.get("text_config")
                        .and_then(|t| t.get(format!("{typ}_token_id")))
                });
            if let Some(id) = id
                .and_then(Value::as_u64)
                .filter(|&i| (i as usize) < vocab_size)
            {
                if !ids.iter().any(|(k, _)| *k == typ) {
                    ids.push((typ, id as u32));
                }
            }
        }
    }
    // Written where gguf-py's writer has a method for the type (no cls id; flags for bos, eos
    // and sep only), under its key names (`unknown`, `seperator` (sic), `padding`).
    for (typ, id) in ids {
        let name = match typ {
            "unk" => "unknown",
            "sep" => "seperator",
            "pad" => "padding",
            "cls" => continue,
            other => other,
        };
        meta.push((
            format!("tokenizer.ggml.{name}_token_id"),
            GgufValue::U32(id),
        ));
    }
    for (k, v) in flags {
        if matches!(k, "bos" | "eos" | "sep") {
            meta.push((format!("tokenizer.ggml.add_{k}_token"), GgufValue::Bool(v)));
        }
    }
    if let Some(t) = chat_template {
        meta.push((
            "tokenizer.chat_template".into(),
            GgufValue::Str(t.to_string()),
        ));
    }
    meta
}

/// The pieces of a SentencePiece `tokenizer.model` (a `ModelProto`): text, score and type
/// (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) of each, by id.
pub fn sentencepiece_pieces(bytes: &[u8]) -> Result<Vec<(String, f32, i32)>> {
    let err = |m: &str| Error::Tokenizer(format!("tokenizer.model: {m}"));
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// The fields of one message: (number, wire type, varint value or byte range).
    fn fields(b: &[u8]) -> Option<Vec<(u64, u64, u64, std::ops::Range<usize>)>> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < b.len() {
            let key = varint(b, &mut at)?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    let v = varint(b, &mut at)?;
                    out.push((field, wire, v, at..at));
                }
                1 => {
                    out.push((field, wire, 0, at..at.checked_add(8)?));
                    at += 8;
                }
                2 => {
                    let n = varint(b, &mut at)? as usize;
                    let end = at.checked_add(n)?;
                    out.push((field, wire, 0, at..end));
                    at = end;
                }
                5 => {
                    out.push((field, wire, 0, at..at.checked_add(4)?));
                    at += 4;
                }
                _ => return None,
            }
            if at > b.len() {
                return None;
            }
        }
        Some(out)
    }
    let model = fields(bytes).ok_or_else(|| err("not a SentencePiece model (protobuf)"))?;
    let mut pieces = Vec::new();
    for (field, wire, _, range) in model {
        if field != 1 || wire != 2 {
            continue;
        }
        let sub = &bytes[range];
        let piece = fields(sub).ok_or_else(|| err("a piece is not valid protobuf"))?;
        let mut text = None;
        let (mut score, mut kind) = (0f32, 1i32);
        for (f, w, v, r) in piece {
            match (f, w) {
                (1, 2) => {
                    let t =
                        std::str::from_utf8(&sub[r]).map_err(|_| err("a piece is not UTF-8"))?;
                    text = Some(t.to_string());
                }
                (2, 5) => {
                    let b = &sub[r];
                    score = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                (3, 0) => kind = v as i32,
                _ => {}
            }
        }
        pieces.push((text.unwrap_or_default(), score, kind));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let meta = vec![
            ("a.u32".to_string(), GgufValue::U32(7)),
            ("a.f32".to_string(), GgufValue::F32(0.5)),
            ("a.s".to_string(), GgufValue::Str("é".into())),
            ("a.b".to_string(), GgufValue::Bool(true)),
            (
                "a.ss".to_string(),
                GgufValue::StrArray(vec!["x".into(), "y z".into()]),
            ),
            ("a.ii".to_string(), GgufValue::I32Array(vec![1, -3])),
        ];
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 7.0).collect();
        let tensors = vec![
            GgufTensor {
                name: "t.f32".into(),
                dims: vec![3],
                kind: GgmlType::F32,
                data: encode_f32(&[1.0, 2.0, 3.0]),
            },
            GgufTensor {
                name: "t.q8".into(),
                dims: vec![32, 2],
                kind: GgmlType::Q8_0,
                data: quantize_q8_0(&values),
            },
        ];
        let bytes = write(&meta, &tensors);
        let (m, t) = read(&bytes).unwrap();
        assert_eq!(m, meta);
        assert_eq!(t, tensors);
        assert!(read(&bytes[..bytes.len() - 40]).is_err()); // into the last tensor (past its padding)
    }

    #[test]
    fn roundf_is_half_away_from_zero() {
        assert_eq!(
            [
                roundf(2.5),
                roundf(-2.5),
                roundf(0.49),
                roundf(-0.0),
                roundf(1.5)
            ],
            [3.0, -3.0, 0.0, 0.0, 2.0]
        );
    }
}
