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
//! Loading expands them to f32 (`q × scale`, see [`crate::weights::load_bart`]): the quantization
//! shrinks the download and the cache, the model computes in f32. f32/f16 bundles are plain
//! transformers checkpoints.

use crate::int8::Int8Weight;
use crate::model::Bart;
use crate::quant::{scheme, QuantBits};
use crate::weights::{save_safetensors, visit, SaveDtype, Slot};
use crate::{Error, Result};
use burn::tensor::quantization::QuantizedBytes;
use burn::tensor::{DType, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT: &str = "bartleby-bundle";
pub const FORMAT_VERSION: u32 = 1;
/// The files a bundle always has (besides the manifest), in download order.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// How the weights of a bundle are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quant {
    F32,
    F16,
    Q8,
    Q4,
}

impl Quant {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8" => Ok(Self::Q8),
            "q4" => Ok(Self::Q4),
            other => Err(Error::Input(format!(
                "quantization {other:?}: expected f32, f16, q8 or q4"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        }
    }

    fn bits(self) -> Option<QuantBits> {
        match self {
            Self::Q8 => Some(QuantBits::Q8),
            Self::Q4 => Some(QuantBits::Q4),
            _ => None,
        }
    }
}

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
    /// int8 products with per-row activation scales ([`crate::int8`]). `check` is the f32
    /// computation of the same weights (as on a GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_int8: Option<Check>,
    pub created_by: String,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
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
        let entry = self.sized_entry(path, bytes)?;
        let sha = sha256_hex(bytes);
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
pub fn model_stats(model: &Bart) -> Result<(u64, Requirements)> {
    let mut model = model.clone();
    model.materialize();
    let (mut params, mut largest, mut total, mut largest_other) = (0u64, 0u64, 0u64, 0u64);
    visit(&mut model, &mut |name, slot| {
        let n = match slot {
            Slot::Matrix(p) | Slot::LinearWeight(p) => p.val().shape().num_elements() as u64,
            Slot::Vector(p) => p.val().shape().num_elements() as u64,
        };
        params += n;
        let bytes = 4 * n;
        largest = largest.max(bytes);
        if name != "model.shared.weight" {
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

/// The bundle's model.safetensors for `quant` (see the module docs for the layout).
pub fn encode_weights(model: &Bart, quant: Quant, block_size: usize) -> Result<Vec<u8>> {
    let bits = match quant {
        Quant::F32 => return save_safetensors(model, SaveDtype::F32),
        Quant::F16 => return save_safetensors(model, SaveDtype::F16),
        q => q.bits().expect("quantized"),
    };
    let block = u8::try_from(block_size)
        .ok()
        .filter(|&b| b >= 2 && b % 2 == 0)
        .ok_or_else(|| {
            Error::Input(format!(
                "block size {block_size}: expected an even number from 2 to 254"
            ))
        })?;
    let qscheme = scheme(bits, block);
    let mut model = model.clone();
    model.materialize();
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let read = |t: Tensor<2>| -> Result<Vec<f32>> {
        t.into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Device(format!("{e:?}")))
    };
    visit(&mut model, &mut |name, slot| {
        match slot {
            Slot::Matrix(p) => {
                let dims = p.val().dims();
                let bytes = read(p.val())?
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect();
                tensors.insert(name, (Dtype::F16, dims.to_vec(), bytes));
            }
            Slot::Vector(p) => {
                let [n] = p.val().dims();
                let shape = if name == "final_logits_bias" {
                    vec![1, n]
                } else {
                    vec![n]
                };
                let bytes = read(p.val().unsqueeze::<2>())?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                tensors.insert(name, (Dtype::F32, shape, bytes));
            }
            Slot::LinearWeight(p) => {
                let [d_in, d_out] = p.val().dims();
                if d_in % block_size != 0 {
                    return Err(Error::Input(format!(
                        "{name}: block size {block_size} does not divide its input width {d_in} \
                         (pick a block size that divides every projection's input width)"
                    )));
                }
                // burn's quantization of the HF-layout [out, in] matrix, blocks along `in`.
                let w = p.val().transpose().quantize_dynamic(&qscheme);
                let data = w.into_data();
                // The backend may store the values differently from the requested scheme
                // (flex keeps one byte per value): read them with the scheme it reports.
                let DType::QFloat(stored) = data.dtype() else {
                    return Err(Error::Weights(format!(
                        "{name}: the quantizer returned {:?}",
                        data.dtype()
                    )));
                };
                let q = QuantizedBytes {
                    bytes: data.into_bytes(),
                    scheme: stored,
                    shape: [d_out, d_in].into(),
                };
                let (values, scales) = q.into_vec_i8();
                let (dtype, shape, bytes) = match bits {
                    QuantBits::Q8 => (
                        Dtype::I8,
                        vec![d_out, d_in],
                        values.iter().map(|&v| v as u8).collect(),
                    ),
                    QuantBits::Q4 => (
                        Dtype::U8,
                        vec![d_out, d_in / 2],
                        values
                            .chunks_exact(2)
                            .map(|pair| (pair[0] as u8 & 0x0f) | ((pair[1] as u8 & 0x0f) << 4))
                            .collect(),
                    ),
                };
                let n_blocks = d_in / block_size;
                if scales.block.len() != d_out * n_blocks {
                    return Err(Error::Weights(format!(
                        "{name}: {} scales from the quantizer, expected {}",
                        scales.block.len(),
                        d_out * n_blocks
                    )));
                }
                let scale_bytes = scales.block.iter().flat_map(|s| s.to_le_bytes()).collect();
                tensors.insert(name.clone(), (dtype, shape, bytes));
                tensors.insert(
                    format!("{name}_scale"),
                    (Dtype::F32, vec![d_out, n_blocks], scale_bytes),
                );
            }
        }
        Ok(())
    })?;
    let views = tensors
        .iter()
        .map(|(name, (dtype, shape, bytes))| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Weights(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("quantization".to_string(), quant.name().to_string()),
        ("block_size".to_string(), block_size.to_string()),
    ]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Weights(e.to_string()))
}

/// One stored quantized projection weight (`[out, in]` values and their per-block scales),
/// with the scheme it was quantized with.
pub(crate) fn read_quantized(
    file: &str,
    name: &str,
    values: &TensorView<'_>,
    scales: &TensorView<'_>,
    d_out: usize,
    d_in: usize,
) -> Result<(Int8Weight, QuantBits)> {
    let err = |m: String| Error::Weights(format!("{file}: tensor {name}: {m}"));
    let (bits, q): (QuantBits, Vec<i8>) = match values.dtype() {
        Dtype::I8 => {
            if values.shape() != [d_out, d_in] {
                return Err(err(format!(
                    "shape {:?}, expected {:?}",
                    values.shape(),
                    [d_out, d_in]
                )));
            }
            (
                QuantBits::Q8,
                values.data().iter().map(|&b| b as i8).collect(),
            )
        }
        Dtype::U8 => {
            if d_in % 2 != 0 || values.shape() != [d_out, d_in / 2] {
                return Err(err(format!(
                    "shape {:?}, expected {:?} (q4, two values per byte)",
                    values.shape(),
                    [d_out, d_in / 2]
                )));
            }
            let nibble = |b: u8| ((b << 4) as i8) >> 4;
            (
                QuantBits::Q4,
                values
                    .data()
                    .iter()
                    .flat_map(|&b| [nibble(b & 0x0f), nibble(b >> 4)])
                    .collect(),
            )
        }
        other => return Err(err(format!("dtype {other:?} is not a quantized layout"))),
    };
    if scales.dtype() != Dtype::F32 || scales.shape().len() != 2 || scales.shape()[0] != d_out {
        return Err(err(format!(
            "scale tensor has dtype {:?} shape {:?}, expected F32 [{d_out}, in / block]",
            scales.dtype(),
            scales.shape()
        )));
    }
    let n_blocks = scales.shape()[1];
    if n_blocks == 0 || d_in % n_blocks != 0 {
        return Err(err(format!(
            "{n_blocks} scales per row do not divide {d_in} inputs"
        )));
    }
    let s: Vec<f32> = scales
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let weight = Int8Weight::new(q, s, d_out, d_in).ok_or_else(|| err("sizes disagree".into()))?;
    Ok((weight, bits))
}

/// A bundle's files by path (as fetched by the browser app or read from disk).
pub type BundleFiles = BTreeMap<String, Vec<u8>>;

/// Loads a bundle from its files: checks each against the manifest (size and sha256), then
/// builds the [`crate::Summarizer`] on `device` — the browser app's one way to get a model.
pub fn load_summarizer(
    files: &BundleFiles,
    device: &burn::tensor::Device,
) -> Result<(Manifest, crate::Summarizer)> {
    load_summarizer_with(files, device, crate::weights::LoadOptions::default(), false)
}

/// [`load_summarizer`] for a device with limits (the browser passes its WebGPU adapter's).
/// `sha256_checked`: the caller compared every file's sha256 with the manifest already (the
/// browser does it with its native SubtleCrypto); sizes are still checked here.
pub fn load_summarizer_with(
    files: &BundleFiles,
    device: &burn::tensor::Device,
    options: crate::weights::LoadOptions,
    sha256_checked: bool,
) -> Result<(Manifest, crate::Summarizer)> {
    let get = |name: &str| {
        files.get(name).ok_or_else(|| Error::Config {
            file: name.into(),
            message: "missing from the bundle".into(),
        })
    };
    let manifest = Manifest::from_json(get(MANIFEST_FILE)?)?;
    for entry in &manifest.files {
        let bytes = get(&entry.path)?;
        if sha256_checked {
            manifest.verify_size(&entry.path, bytes)?;
        } else {
            manifest.verify(&entry.path, bytes)?;
        }
    }
    let config_bytes = get("config.json")?;
    let config = crate::BartConfig::from_json(config_bytes, "config.json")?;
    let config_json: serde_json::Value =
        serde_json::from_slice(config_bytes).map_err(|e| Error::Config {
            file: "config.json".into(),
            message: e.to_string(),
        })?;
    let gen_json = files
        .get("generation_config.json")
        .map(|b| {
            serde_json::from_slice::<serde_json::Value>(b).map_err(|e| Error::Config {
                file: "generation_config.json".into(),
                message: e.to_string(),
            })
        })
        .transpose()?;
    let generation =
        crate::GenerationConfig::from_transformers_json(gen_json.as_ref(), &config_json)?;
    let checkpoint =
        crate::weights::Checkpoint::from_shards(&[(WEIGHTS_FILE, get(WEIGHTS_FILE)?.as_slice())])?;
    let (model, _) =
        crate::weights::load_bart_opts(&config, &checkpoint, device, options, &mut |_| {})?;
    let tokenizer = crate::BartTokenizer::from_tokenizer_json(
        get("tokenizer.json")?,
        files.get("tokenizer_config.json").map(Vec::as_slice),
    )?;
    Ok((
        manifest,
        crate::Summarizer {
            model,
            tokenizer,
            config,
            generation,
            has_generation_config_file: gen_json.is_some(),
        },
    ))
}
