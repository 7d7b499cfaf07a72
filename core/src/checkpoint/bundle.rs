//! Web bundles: a checkpoint in the layout transformers uses (config.json,
//! generation_config.json, model.safetensors, tokenizer.json) whose projection weights may be
//! quantized, plus `manifest.json` (what is in it, sha256 of every file, what a device needs to
//! run it). `bartleby export` writes them; the browser app and `bartleby summarize` read them.
//!
//! Quantized weights (`q8`, `q4`) are burn's symmetric per-block quantization of every
//! projection (`nn.Linear`) weight, blocks of `block_size` consecutive input features of one
//! output row, one f32 scale per block. In model.safetensors a quantized `X.weight` (HF layout
//! `[out, in]`) is stored as
//! - q8: `X.weight` I8 `[out, in]`, the quantized values;
//! - q4: `X.weight` U8 `[out, in / 2]`, two values per byte (low nibble first, two's complement);
//! - and `X.weight_scale` F32 `[out, in / block_size]`.
//!
//! so value = q × scale. Embedding tables are stored as f16, vectors (biases, LayerNorm) as f32.
//! Loading expands them to f32 (`q × scale`) or keeps them int8 for the CPU's integer products
//! ([`crate::checkpoint::LoadOptions`]); the codec is [`crate::checkpoint::quantized`]. f32/f16
//! bundles are plain transformers checkpoints.

pub use super::quantized::{Quant, FORMAT};
use super::{Params, Slot};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;
/// The files a bundle always has (besides the manifest), in download order.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Where the bundle came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub model: String,
    pub adapter: Option<String>,
}

/// What a device must grant to run the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// The largest tensor as held on the device, in bytes (the embedding table in f32): WebGPU's
    /// `maxStorageBufferBindingSize` and `maxBufferSize` must be at least this.
    pub max_buffer_bytes: u64,
    /// The smallest per-buffer limit the bundle still runs under on WebGPU: the largest tensor
    /// other than the embedding table, which is then held as several blocks of rows (older
    /// manifests lack it: read it as `max_buffer_bytes`).
    #[serde(default)]
    pub min_buffer_bytes: Option<u64>,
    /// Every weight held on the device, in bytes.
    pub device_bytes: u64,
}

/// Quality of the quantized bundle against the f32 model it came from (filled by
/// `bartleby export --check`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub inputs: usize,
    /// Generated sequences identical to the f32 model's.
    pub identical_sequences: usize,
    /// Position-wise token agreement over all generated tokens (longer sequence's length).
    pub token_agreement: f64,
    /// Mean ROUGE-L F1 (rouge_score, stemmed) of the bundle's summaries against the f32 model's
    /// (1 for an identical sequence).
    pub rouge_l: f64,
    /// The generation settings the check used (generation_config.json's).
    pub num_beams: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub quantization: Quant,
    /// Block size of q8/q4 (input features per scale); null for f32/f16.
    pub block_size: Option<usize>,
    pub parameters: u64,
    pub source: Source,
    pub requires: Requirements,
    pub files: Vec<FileEntry>,
    pub check: Option<Check>,
    /// The same check computed as q8/q4 bundles run on a CPU (natively and in the browser):
    /// int8 products with per-row activation scales ([`crate::ops::int8`]). `check` is the f32
    /// computation of the same weights (as on a GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_int8: Option<Check>,
    pub created_by: String,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::Config {
            file: MANIFEST_FILE.into(),
            message: e.to_string(),
        })?;
        if m.format != FORMAT {
            return Err(Error::Config {
                file: MANIFEST_FILE.into(),
                message: format!("format {:?} is not {FORMAT:?}", m.format),
            });
        }
        if m.format_version != FORMAT_VERSION {
            return Err(Error::Config {
                file: MANIFEST_FILE.into(),
                message: format!(
                    "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                    m.format_version
                ),
            });
        }
        for f in &m.files {
            if f.path.contains("..") || f.path.starts_with('/') || f.path.contains('\\') {
                return Err(Error::Config {
                    file: MANIFEST_FILE.into(),
                    message: format!("file path {:?} leaves the bundle", f.path),
                });
            }
        }
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Checks one downloaded/read file against its entry (size, then sha256).
    pub fn verify(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.verify_with(path, bytes, &mut |_| {})
    }

    /// [`Self::verify`], hashing 16 MiB at a time and calling `hashed` with each part once it
    /// is hashed (a caller reading a mapped file drops the pages behind it).
    pub fn verify_with(
        &self,
        path: &str,
        bytes: &[u8],
        hashed: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        let entry = self.sized_entry(path, bytes)?;
        let mut hasher = Sha256::new();
        for part in bytes.chunks(16 << 20) {
            hasher.update(part);
            hashed(part);
        }
        let sha = hex(&hasher.finalize());
        if sha != entry.sha256 {
            return Err(Error::Weights(format!(
                "{path}: sha256 {sha} does not match the manifest's {}",
                entry.sha256
            )));
        }
        Ok(())
    }

    /// Checks one file's size against its entry (for a caller that checked the sha256 itself).
    pub fn verify_size(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.sized_entry(path, bytes).map(|_| ())
    }

    /// The file's entry, once its size matches.
    fn sized_entry(&self, path: &str, bytes: &[u8]) -> Result<&FileEntry> {
        let entry = self.file(path).ok_or_else(|| Error::Config {
            file: MANIFEST_FILE.into(),
            message: format!("no entry for {path}"),
        })?;
        if entry.bytes != bytes.len() as u64 {
            return Err(Error::Weights(format!(
                "{path}: {} bytes, the manifest says {} (incomplete or replaced file)",
                bytes.len(),
                entry.bytes
            )));
        }
        Ok(entry)
    }
}

/// Parameter count and what a device needs to hold the model once loaded from a bundle: every
/// weight is held in f32 once loaded, whatever the bundle stores.
pub fn model_stats<M: Params>(model: &M) -> Result<(u64, Requirements)> {
    // Shapes only: host-held projections keep their placeholders.
    let (mut model, _) = super::materialized_but_projections(model)?;
    let table = model.embedding_table();
    let (mut params, mut largest, mut total, mut largest_other) = (0u64, 0u64, 0u64, 0u64);
    model.visit(&mut |name, slot| {
        let n = match slot {
            Slot::Matrix(p) | Slot::LinearWeight(p) => p.val().shape().num_elements() as u64,
            Slot::Vector(p) => p.val().shape().num_elements() as u64,
        };
        params += n;
        let bytes = 4 * n;
        largest = largest.max(bytes);
        if name != table {
            largest_other = largest_other.max(bytes);
        }
        total += bytes;
        Ok(())
    })?;
    Ok((
        params,
        Requirements {
            max_buffer_bytes: largest,
            min_buffer_bytes: Some(largest_other),
            device_bytes: total,
        },
    ))
}
