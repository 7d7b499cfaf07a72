//! GGUF (llama.cpp's file format, version 3): the writer, a reader (for checks), `Q8_0` / `Q4_0` blocks
//! bit-exact with ggml's reference quantizer, and the tokenizer metadata llama.cpp's
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

/// ggml tensor types written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
}

impl GgmlType {
    fn from_u32(t: u32) -> Option<Self> {
        Some(match t {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            8 => Self::Q8_0,
            _ => return None,
        })
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
            let size = match kind {
                GgmlType::F32 => 4 * n as usize,
                GgmlType::F16 => 2 * n as usize,
                GgmlType::Q4_0 => (n as usize / 32) * 18,
                GgmlType::Q8_0 => (n as usize / 32) * 34,
            };
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
        let (mut amax, mut max) = (0f32, 0f32);
        for &x in block {
            if amax < x.abs() {
                amax = x.abs();
                max = x;
            }
        }
        let d = max / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        let q = |x: f32| ((x * id + 8.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            out.push(q(block[j]) | (q(block[16 + j]) << 4));
        }
    }
    out
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
    let config: Option<Value> = tokenizer_config.and_then(|b| serde_json::from_slice(b).ok());
    let id_of = |text: &str| tokens.iter().position(|t| t == text).map(|i| i as u32);
    for (key, name) in [
        ("bos_token", "bos"),
        ("eos_token", "eos"),
        ("unk_token", "unknown"),
        ("sep_token", "seperator"),
        ("pad_token", "padding"),
    ] {
        let text = config.as_ref().and_then(|c| match &c[key] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        });
        if let Some(id) = text.as_deref().and_then(id_of) {
            meta.push((
                format!("tokenizer.ggml.{name}_token_id"),
                GgufValue::U32(id),
            ));
        }
    }
    // add_bos/eos/sep from the post-processor's single-sequence template (SpecialVocab).
    let template = find_template(&tok["post_processor"]);
    if let Some(single) = template {
        let items: Vec<&Value> = single.as_array().into_iter().flatten().collect();
        let special = |v: &Value| v.get("SpecialToken").is_some();
        let add_bos = items.first().is_some_and(|v| special(v));
        let add_eos = items.len() > 1 && items.last().is_some_and(|v| special(v));
        meta.push((
            "tokenizer.ggml.add_bos_token".into(),
            GgufValue::Bool(add_bos),
        ));
        meta.push((
            "tokenizer.ggml.add_eos_token".into(),
            GgufValue::Bool(add_eos),
        ));
        meta.push((
            "tokenizer.ggml.add_sep_token".into(),
            GgufValue::Bool(false),
        ));
    }
    if let Some(t) = chat_template {
        meta.push((
            "tokenizer.chat_template".into(),
            GgufValue::Str(t.to_string()),
        ));
    }
    Ok(meta)
}

/// The `single` template of a TemplateProcessing post-processor (possibly inside a Sequence).
fn find_template(p: &Value) -> Option<&Value> {
    match p["type"].as_str()? {
        "TemplateProcessing" => p.get("single"),
        "Sequence" => p["processors"].as_array()?.iter().find_map(find_template),
        _ => None,
    }
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
