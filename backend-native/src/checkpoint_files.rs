//! The files of a checkpoint directory that `merge`, `export` and `train` write besides the
//! weights: config.json with the stored dtype, generation_config.json with the settings used,
//! and the base model's tokenizer files.

use crate::model_files::ModelFiles;
use anyhow::{bail, Context, Result};
use bartleby_core::checkpoint::SaveDtype;
use bartleby_core::GenerationConfig;
use clap::ValueEnum;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Storage type of a written model.safetensors.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

impl DtypeArg {
    /// How model.safetensors stores the weights.
    pub fn save(self) -> SaveDtype {
        match self {
            Self::F32 => SaveDtype::F32,
            Self::F16 => SaveDtype::F16,
            Self::Bf16 => SaveDtype::BF16,
        }
    }

    /// transformers' name, for config.json's `dtype` / `torch_dtype`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::Bf16 => "bfloat16",
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// The base's config.json with the stored dtype updated.
pub fn config_json(files: &ModelFiles, dtype: DtypeArg) -> Result<Vec<u8>> {
    let mut config = read_json(&files.config)?;
    let obj = config
        .as_object_mut()
        .with_context(|| format!("{}: not a JSON object", files.config.display()))?;
    obj.insert("dtype".into(), dtype.torch_name().into());
    if obj.contains_key("torch_dtype") {
        obj.insert("torch_dtype".into(), dtype.torch_name().into());
    }
    Ok(pretty(&config))
}

/// The base's generation_config.json (or an empty one) with every setting summarization uses
/// written out explicitly: the merged model generates with exactly the settings the base+adapter
/// evaluation used, whatever defaults a loader would otherwise fill in.
pub fn generation_config_json(files: &ModelFiles, gen: &GenerationConfig) -> Result<Vec<u8>> {
    let mut json = match &files.generation_config {
        Some(path) => read_json(path)?,
        None => serde_json::json!({ "_from_model_config": false }),
    };
    let obj = json
        .as_object_mut()
        .context("generation_config.json: not a JSON object")?;
    let Value::Object(mut settings) = serde_json::to_value(gen)? else {
        bail!("generation settings did not serialize to an object");
    };
    // Several eos ids are one list in transformers' files.
    if settings.remove("more_eos_token_ids").is_some() {
        settings.insert("eos_token_id".into(), serde_json::json!(gen.eos_ids()));
    }
    for (key, value) in settings {
        // f32 fields (length_penalty) as their shortest decimal, e.g. 0.8 and not 0.800000011920929.
        let value = match (&value, key.as_str()) {
            (Value::Number(_), "length_penalty") => {
                let shortest: f64 = format!("{}", gen.length_penalty).parse()?;
                serde_json::json!(shortest)
            }
            _ => value,
        };
        obj.insert(key, value);
    }
    obj.entry("transformers_version")
        .or_insert_with(|| "4.57.6".into());
    Ok(pretty(&json))
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("JSON serializes");
    bytes.push(b'\n');
    bytes
}

/// Tokenizer files of the base (whichever exist beside its config.json or were resolved).
pub fn copy_tokenizer_files(files: &ModelFiles, dir: &Path) -> Result<()> {
    let mut sources: Vec<PathBuf> = Vec::new();
    sources.extend(files.tokenizer_json.clone());
    sources.extend(files.tokenizer_config.clone());
    sources.extend(files.chat_template.clone());
    if let Some((vocab, merges)) = &files.vocab_merges {
        sources.extend([vocab.clone(), merges.clone()]);
    }
    if let Some(base_dir) = files.config.parent() {
        for extra in ["special_tokens_map.json", "added_tokens.json"] {
            let p = base_dir.join(extra);
            if p.is_file() {
                sources.push(p);
            }
        }
    }
    for src in sources {
        let name = src.file_name().context("tokenizer file without a name")?;
        std::fs::copy(&src, dir.join(name))
            .with_context(|| format!("{}: cannot copy", src.display()))?;
    }
    Ok(())
}
