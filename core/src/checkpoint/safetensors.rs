//! The safetensors codec every model and format shares: reading (one or several shards; f32,
//! f16 or bf16 tensors read as f32) and writing (a dtype per tensor).

use super::{Params, Slot};
use crate::{Error, Result};
use burn::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};

/// The tensors of a checkpoint (one or several safetensors shards), by their stored names.
/// Which names a model reads (and their aliases) is the model's `params.rs` business.
pub struct Checkpoint<'a> {
    tensors: HashMap<String, (String, TensorView<'a>)>,
}

/// Which tensor of a safetensors file that fails to parse is at fault, when its header can be
/// read: the first whose byte range disagrees with its shape and dtype, or lies past the data.
fn first_bad_tensor(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let data_len = (bytes.len() - 8 - n) as u64;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    let mut entries: Vec<(&String, &serde_json::Value)> =
        map.iter().filter(|(k, _)| *k != "__metadata__").collect();
    entries.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap_or(0));
    for (name, v) in entries {
        let size = match v["dtype"].as_str()? {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
            other => return Some(format!("tensor {name} has dtype {other}")),
        };
        let numel = v["shape"]
            .as_array()?
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(d.as_u64()?))?;
        let (begin, end) = (
            v["data_offsets"][0].as_u64()?,
            v["data_offsets"][1].as_u64()?,
        );
        let want = numel.checked_mul(size)?;
        if end < begin || end - begin != want {
            return Some(format!(
                "tensor {name}: shape {} × {size} bytes needs {want} bytes, its offsets give {}",
                v["shape"],
                end.saturating_sub(begin)
            ));
        }
        if end > data_len {
            return Some(format!(
                "tensor {name} ends at byte {end} of the data, which has {data_len}: the file is truncated"
            ));
        }
    }
    None
}

impl<'a> Checkpoint<'a> {
    /// Parses safetensors shards given as `(file name, bytes)`.
    pub fn from_shards(shards: &[(&str, &'a [u8])]) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (file, bytes) in shards {
            let st = SafeTensors::deserialize(bytes).map_err(|e| {
                let which = first_bad_tensor(bytes)
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default();
                Error::Weights(format!("{file}: not a valid safetensors file: {e}{which}"))
            })?;
            for (name, view) in st.tensors() {
                if tensors
                    .insert(name.clone(), (file.to_string(), view))
                    .is_some()
                {
                    return Err(Error::Weights(format!(
                        "{file}: tensor {name} appears twice"
                    )));
                }
            }
        }
        Ok(Self { tensors })
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor stored as `name`, with the file it is in.
    pub fn get(&self, name: &str) -> Option<&(String, TensorView<'a>)> {
        self.tensors.get(name)
    }

    /// Every stored tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

/// Reads a tensor as f32, whatever its stored float type (f32, f16, bf16).
pub fn read_f32(file: &str, name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::Weights(format!(
                "{file}: tensor {name} has dtype {other:?}; expected F32, F16 or BF16"
            )))
        }
    })
}

/// Storage type of float tensors written by a model's `save_safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    F16,
    BF16,
}

impl SaveDtype {
    /// `values` stored as this type: its safetensors dtype and little-endian bytes.
    pub fn encode(self, values: &[f32]) -> (Dtype, Vec<u8>) {
        match self {
            SaveDtype::F32 => (
                Dtype::F32,
                values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            SaveDtype::F16 => (
                Dtype::F16,
                values
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            SaveDtype::BF16 => (
                Dtype::BF16,
                values
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
        }
    }
}

/// A safetensors file of `tensors` (name → dtype, shape, bytes; written in name order) with
/// `metadata` in its header.
pub fn encode_safetensors(
    tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, (dtype, shape, bytes))| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Weights(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Weights(e.to_string()))?;
    Ok(sorted_header(bytes))
}

/// The same file with its header's keys in sorted order: the library writes `__metadata__` from
/// a `HashMap`, whose order changes from run to run — a bundle must be byte-for-byte
/// reproducible (its sha256 is in the manifest). Offsets are relative to the data, so only the
/// header (re-padded to 8 bytes) and its length change.
fn sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n]) else {
        return bytes;
    };
    // serde_json's map is a BTreeMap here (no `preserve_order`): keys come out sorted.
    let mut text = serde_json::to_string(&header).expect("a JSON value serializes");
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    if text.len() == n {
        // The same keys and values in another order: rewritten in place (no second copy of
        // gigabytes of weights).
        bytes[8..8 + n].copy_from_slice(text.as_bytes());
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Serializes a model as transformers' `save_pretrained` writes `model.safetensors` (its own
/// names and layouts, `[out, in]` linear weights, tied copies omitted), floats as `dtype`.
pub fn save_safetensors<M: Params>(model: &M, dtype: SaveDtype) -> Result<Vec<u8>> {
    let mut tensors = BTreeMap::new();
    visit_f32(model, &mut |name, shape, data| {
        let (st_dtype, bytes) = dtype.encode(&data);
        tensors.insert(name, (st_dtype, shape, bytes));
        Ok(())
    })?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    encode_safetensors(&tensors, metadata)
}

/// Every parameter of `model` in transformers' names, shapes and layouts (`[out, in]` linear
/// weights, tied copies omitted) as f32 values, one tensor at a time
/// ([`super::visit_materialized`]: host-held weights widened only for their own call).
pub fn visit_f32<M: Params>(
    model: &M,
    f: &mut dyn FnMut(String, Vec<usize>, Vec<f32>) -> Result<()>,
) -> Result<()> {
    let vector_shape = model.vector_shapes();
    let read = |t: Tensor<2>| -> Result<Vec<f32>> {
        t.into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Device(format!("{e:?}")))
    };
    super::visit_materialized(model, &mut |name, slot| {
        let (data, shape) = match slot {
            Slot::Matrix(p) => {
                let dims = p.val().dims();
                (read(p.val())?, dims.to_vec())
            }
            Slot::LinearWeight(p) => {
                let [d_in, d_out] = p.val().dims();
                (read(p.val().transpose())?, vec![d_out, d_in])
            }
            Slot::Vector(p) => {
                let [n] = p.val().dims();
                (read(p.val().unsqueeze::<2>())?, vector_shape(&name, n))
            }
        };
        f(name, shape, data)
    })
}
