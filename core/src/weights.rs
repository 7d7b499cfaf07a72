//! Hugging Face checkpoint ⇄ [`Bart`]: the one place that knows how transformers names each
//! weight, reads `model.safetensors` (single or sharded; f32, f16 or bf16) and writes it back in
//! the same layout.

use crate::config::BartConfig;
use crate::int8::Int8Weight;
use crate::model::{skeleton, Attention, Bart, Proj};
use crate::{Error, Result};
use burn::module::Param;
use burn::nn::LayerNorm;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};

/// How a Hugging Face tensor maps onto a burn parameter.
pub enum Slot<'a> {
    /// Same layout on both sides (embeddings): `[rows, cols]`.
    Matrix(&'a mut Param<Tensor<2>>),
    /// `nn.Linear` weight: HF stores `[out, in]`, burn `[in, out]`.
    LinearWeight(&'a mut Param<Tensor<2>>),
    /// A vector; HF may store it as `[1, n]` (`final_logits_bias`).
    Vector(&'a mut Param<Tensor<1>>),
}

/// A parameter tensor, or a whole projection (its weight, bias and any LoRA branch).
pub enum Node<'a> {
    Tensor(Slot<'a>),
    Proj(&'a mut Proj),
}

type Visitor<'f> = dyn FnMut(String, Slot<'_>) -> Result<()> + 'f;
type Walker<'f> = dyn FnMut(String, Node<'_>) -> Result<()> + 'f;

/// Calls `f` for every parameter with its canonical transformers name
/// (`BartForConditionalGeneration`'s state dict, tied copies omitted).
pub fn visit(model: &mut Bart, f: &mut Visitor<'_>) -> Result<()> {
    walk(model, &mut |name, node| match node {
        Node::Tensor(slot) => f(name, slot),
        Node::Proj(p) => {
            f(
                format!("{name}.weight"),
                Slot::LinearWeight(&mut p.linear.weight),
            )?;
            match p.linear.bias.as_mut() {
                Some(bias) => f(format!("{name}.bias"), Slot::Vector(bias)),
                None => Ok(()),
            }
        }
    })
}

/// Calls `f` for every projection (`nn.Linear` in transformers) with its module name, e.g.
/// `model.encoder.layers.0.self_attn.q_proj` — the names PEFT's `target_modules` match.
pub fn visit_projections(
    model: &mut Bart,
    f: &mut dyn FnMut(String, &mut Proj) -> Result<()>,
) -> Result<()> {
    walk(model, &mut |name, node| match node {
        Node::Tensor(_) => Ok(()),
        Node::Proj(p) => f(name, p),
    })
}

/// The one walk over the model in transformers' naming.
fn walk(model: &mut Bart, f: &mut Walker<'_>) -> Result<()> {
    f(
        "model.shared.weight".into(),
        Node::Tensor(Slot::Matrix(&mut model.shared)),
    )?;
    f(
        "final_logits_bias".into(),
        Node::Tensor(Slot::Vector(&mut model.final_logits_bias)),
    )?;
    let enc = &mut model.encoder;
    f(
        "model.encoder.embed_positions.weight".into(),
        Node::Tensor(Slot::Matrix(&mut enc.embed_positions)),
    )?;
    layer_norm(
        "model.encoder.layernorm_embedding",
        &mut enc.layernorm_embedding,
        f,
    )?;
    for (i, layer) in enc.layers.iter_mut().enumerate() {
        let p = format!("model.encoder.layers.{i}");
        attention(&format!("{p}.self_attn"), &mut layer.self_attn, f)?;
        layer_norm(
            &format!("{p}.self_attn_layer_norm"),
            &mut layer.self_attn_layer_norm,
            f,
        )?;
        linear(&format!("{p}.fc1"), &mut layer.fc1, f)?;
        linear(&format!("{p}.fc2"), &mut layer.fc2, f)?;
        layer_norm(
            &format!("{p}.final_layer_norm"),
            &mut layer.final_layer_norm,
            f,
        )?;
    }
    let dec = &mut model.decoder;
    f(
        "model.decoder.embed_positions.weight".into(),
        Node::Tensor(Slot::Matrix(&mut dec.embed_positions)),
    )?;
    layer_norm(
        "model.decoder.layernorm_embedding",
        &mut dec.layernorm_embedding,
        f,
    )?;
    for (i, layer) in dec.layers.iter_mut().enumerate() {
        let p = format!("model.decoder.layers.{i}");
        attention(&format!("{p}.self_attn"), &mut layer.self_attn, f)?;
        layer_norm(
            &format!("{p}.self_attn_layer_norm"),
            &mut layer.self_attn_layer_norm,
            f,
        )?;
        attention(&format!("{p}.encoder_attn"), &mut layer.encoder_attn, f)?;
        layer_norm(
            &format!("{p}.encoder_attn_layer_norm"),
            &mut layer.encoder_attn_layer_norm,
            f,
        )?;
        linear(&format!("{p}.fc1"), &mut layer.fc1, f)?;
        linear(&format!("{p}.fc2"), &mut layer.fc2, f)?;
        layer_norm(
            &format!("{p}.final_layer_norm"),
            &mut layer.final_layer_norm,
            f,
        )?;
    }
    Ok(())
}

fn attention(prefix: &str, a: &mut Attention, f: &mut Walker<'_>) -> Result<()> {
    linear(&format!("{prefix}.q_proj"), &mut a.q_proj, f)?;
    linear(&format!("{prefix}.k_proj"), &mut a.k_proj, f)?;
    linear(&format!("{prefix}.v_proj"), &mut a.v_proj, f)?;
    linear(&format!("{prefix}.out_proj"), &mut a.out_proj, f)
}

fn linear(prefix: &str, p: &mut Proj, f: &mut Walker<'_>) -> Result<()> {
    f(prefix.to_string(), Node::Proj(p))
}

fn layer_norm(prefix: &str, ln: &mut LayerNorm, f: &mut Walker<'_>) -> Result<()> {
    f(
        format!("{prefix}.weight"),
        Node::Tensor(Slot::Vector(&mut ln.gamma)),
    )?;
    if let Some(beta) = ln.beta.as_mut() {
        f(format!("{prefix}.bias"), Node::Tensor(Slot::Vector(beta)))?;
    }
    Ok(())
}

/// The tensors of a checkpoint (one or several safetensors shards), by canonical name.
pub struct Checkpoint<'a> {
    tensors: HashMap<String, (String, TensorView<'a>)>,
}

/// Other spellings transformers accepts for the tied shared embedding, in order of preference.
const SHARED_ALIASES: [&str; 3] = [
    "model.encoder.embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
    "lm_head.weight",
];

impl<'a> Checkpoint<'a> {
    /// Parses safetensors shards given as `(file name, bytes)`.
    pub fn from_shards(shards: &[(&str, &'a [u8])]) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (file, bytes) in shards {
            let st = SafeTensors::deserialize(bytes).map_err(|e| {
                Error::Weights(format!("{file}: not a valid safetensors file: {e}"))
            })?;
            for (name, view) in st.tensors() {
                let canonical = canonical_name(&name);
                if tensors
                    .insert(canonical, (file.to_string(), view))
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

    fn get(&self, name: &str) -> Option<&(String, TensorView<'a>)> {
        self.tensors.get(name).or_else(|| {
            (name == "model.shared.weight")
                .then(|| {
                    SHARED_ALIASES
                        .iter()
                        .find_map(|alias| self.tensors.get(*alias))
                })
                .flatten()
        })
    }
}

/// `encoder.layers.0...` (a `BartModel` state dict) → `model.encoder.layers.0...`.
fn canonical_name(name: &str) -> String {
    if name.starts_with("encoder.") || name.starts_with("decoder.") || name.starts_with("shared.") {
        format!("model.{name}")
    } else {
        name.to_string()
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

/// What loading found besides the model: tensors it did not use, defaults it filled in.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub unused: Vec<String>,
    pub defaulted: Vec<String>,
}

/// Builds a [`Bart`] on `device` from a checkpoint. Every tensor must be present with the shape
/// the config implies (except `final_logits_bias`, zero when absent, as in transformers).
pub fn load_bart(
    config: &BartConfig,
    checkpoint: &Checkpoint<'_>,
    device: &Device,
) -> Result<(Bart, LoadReport)> {
    load_bart_with(config, checkpoint, device, &mut |_| {})
}

/// [`load_bart`], calling `converted(bytes)` with each tensor's stored bytes once they have
/// been copied into the model (a memory-mapped caller can release those pages then, which
/// keeps peak memory near the model's own size).
pub fn load_bart_with(
    config: &BartConfig,
    checkpoint: &Checkpoint<'_>,
    device: &Device,
    converted: &mut dyn FnMut(&[u8]),
) -> Result<(Bart, LoadReport)> {
    load_bart_opts(
        config,
        checkpoint,
        device,
        LoadOptions::default(),
        converted,
    )
}

/// How the weights are held on the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The largest single tensor the device can hold, in bytes (WebGPU: the smaller of the
    /// adapter's `maxStorageBufferBindingSize` and `maxBufferSize`). A larger shared embedding
    /// table is held as blocks of rows under it ([`Bart::shared_parts`]); any other tensor over
    /// it is an error naming the tensor. `None`: no limit.
    pub max_tensor_bytes: Option<u64>,
    /// Keep a q8/q4 bundle's projection weights as int8 and compute them in integers
    /// ([`crate::int8`], as ONNX Runtime's and CTranslate2's int8 CPU paths do) instead of
    /// expanding them to f32. CPU devices only (the activations are read back on every
    /// projection); for inference, not training.
    pub int8_matmul: bool,
}

/// [`load_bart_with`] with [`LoadOptions`].
pub fn load_bart_opts(
    config: &BartConfig,
    checkpoint: &Checkpoint<'_>,
    device: &Device,
    options: LoadOptions,
    converted: &mut dyn FnMut(&[u8]),
) -> Result<(Bart, LoadReport)> {
    let mut model = skeleton(config, device);
    let mut report = LoadReport::default();
    let mut used = std::collections::HashSet::new();
    let mut shared_parts = Vec::new();
    let mut int8 = HashMap::new();
    visit(&mut model, &mut |name, slot| {
        let Some((file, view)) = checkpoint.get(&name) else {
            if name == "final_logits_bias" {
                report.defaulted.push(name);
                return Ok(());
            }
            return Err(Error::Weights(format!(
                "missing tensor {name} (checkpoint has {} tensors)",
                checkpoint.len()
            )));
        };
        used.insert(name.clone());
        let found = view.shape().to_vec();
        let mismatch = |expected: &[usize]| {
            Error::Weights(format!(
                "{file}: tensor {name} has shape {found:?}, expected {expected:?}"
            ))
        };
        // Held in f32 on the device, whatever the file stores.
        let elements = match &slot {
            Slot::Matrix(p) | Slot::LinearWeight(p) => p.val().shape().num_elements(),
            Slot::Vector(p) => p.val().shape().num_elements(),
        };
        let bytes = 4 * elements as u64;
        let limit = options.max_tensor_bytes;
        let split = name == "model.shared.weight" && limit.is_some_and(|l| bytes > l);
        if let Some(limit) = limit.filter(|&l| bytes > l && !split) {
            return Err(Error::Weights(format!(
                "{file}: tensor {name} needs {bytes} bytes on the device, over its limit of \
                 {limit} bytes per buffer"
            )));
        }
        match slot {
            Slot::Matrix(p) if split => {
                let [rows, cols] = p.val().dims();
                if found != [rows, cols] {
                    return Err(mismatch(&[rows, cols]));
                }
                let limit = limit.unwrap_or(u64::MAX);
                let per_part = (limit / (4 * cols as u64)) as usize;
                if per_part == 0 {
                    return Err(Error::Weights(format!(
                        "{file}: tensor {name}: one row needs {} bytes, over the device's limit \
                         of {limit} bytes per buffer",
                        4 * cols
                    )));
                }
                let data = read_f32(file, &name, view)?;
                for block in data.chunks(per_part * cols) {
                    let n = block.len() / cols;
                    let t = Tensor::from_data(TensorData::new(block.to_vec(), [n, cols]), device);
                    shared_parts.push(Param::from_tensor(t));
                }
                // A one-row stand-in: a full-size placeholder can end up allocated in full.
                *p = Param::from_tensor(Tensor::zeros([1, cols], device));
            }
            Slot::Matrix(p) => {
                let expected = p.val().dims();
                if found != expected {
                    return Err(mismatch(&expected));
                }
                let data = read_f32(file, &name, view)?;
                *p = Param::from_tensor(Tensor::from_data(TensorData::new(data, expected), device));
            }
            Slot::LinearWeight(p) => {
                let [d_in, d_out] = p.val().dims();
                if matches!(view.dtype(), Dtype::I8 | Dtype::U8) {
                    // A quantized bundle (crate::bundle): values + per-block scales. Either kept
                    // as int8 (`int8_matmul`, attached to the projection below) or expanded to
                    // f32 (value × scale, exactly what burn's dequantize computes) and computed
                    // in f32: burn 0.22's CPU backend re-quantizes a block-quantized weight on
                    // every transpose and dequantizes it element by element on every matmul (28×
                    // slower than f32 on distilbart-6-6, docs/benchmarks.md), so burn's quantized
                    // tensors are not used for inference.
                    let scale_name = format!("{name}_scale");
                    let Some((_, scales)) = checkpoint.get(&scale_name) else {
                        return Err(Error::Weights(format!(
                            "{file}: quantized tensor {name} has no {scale_name}"
                        )));
                    };
                    used.insert(scale_name);
                    let (weight, _bits) =
                        crate::bundle::read_quantized(file, &name, view, scales, d_out, d_in)?;
                    if options.int8_matmul {
                        // A zero-memory placeholder of the right shape; the int8 weight is it.
                        *p = Param::from_tensor(
                            Tensor::<2>::zeros([1, 1], device).expand([d_in, d_out]),
                        );
                        int8.insert(name.trim_end_matches(".weight").to_string(), weight);
                    } else {
                        let data = TensorData::new(weight.dequantize(), [d_out, d_in]);
                        let stored = Tensor::<2>::from_data(data, device);
                        *p = Param::from_tensor(stored.transpose());
                    }
                    converted(view.data());
                    return Ok(());
                }
                if found != [d_out, d_in] {
                    return Err(mismatch(&[d_out, d_in]));
                }
                // Kept in HF's [out, in] memory order; burn sees the transposed view (no copy).
                let data = read_f32(file, &name, view)?;
                let stored = Tensor::<2>::from_data(TensorData::new(data, [d_out, d_in]), device);
                *p = Param::from_tensor(stored.transpose());
            }
            Slot::Vector(p) => {
                let [n] = p.val().dims();
                let ok = found == [n] || (name == "final_logits_bias" && found == [1, n]);
                if !ok {
                    return Err(mismatch(&[n]));
                }
                let data = read_f32(file, &name, view)?;
                *p = Param::from_tensor(Tensor::from_data(TensorData::new(data, [n]), device));
            }
        }
        converted(view.data());
        Ok(())
    })?;
    model.shared_parts = shared_parts;
    if !int8.is_empty() {
        // The output projection joins the int8 products, with the projections' block size (it
        // is most of a decoding step's bytes: 50,265 × 1,024 for bart-large).
        let block = int8.values().next().map(|w| w.block()).unwrap_or(1);
        if model.shared_parts.is_empty() {
            let read = |t: Tensor<1>| t.into_data().try_to_vec::<f32>();
            let table = model.shared.val();
            let [vocab, d_model] = table.dims();
            let values = read(table.reshape([vocab * d_model]))
                .map_err(|e| Error::Weights(format!("model.shared.weight: {e:?}")))?;
            let bias = read(model.final_logits_bias.val())
                .map_err(|e| Error::Weights(format!("final_logits_bias: {e:?}")))?;
            model.lm_head_int8 = Int8Weight::quantize(&values, vocab, d_model, block)
                .and_then(|w| w.with_bias(bias))
                .map(std::sync::Arc::new);
        }
        visit_projections(&mut model, &mut |name, proj| {
            let Some(weight) = int8.remove(&name) else {
                return Ok(());
            };
            let weight = match &proj.linear.bias {
                Some(b) => {
                    let bias = b
                        .val()
                        .into_data()
                        .try_to_vec::<f32>()
                        .map_err(|e| Error::Weights(format!("{name}.bias: {e:?}")))?;
                    weight.with_bias(bias).ok_or_else(|| {
                        Error::Weights(format!(
                            "{name}.bias: length differs from the weight's rows"
                        ))
                    })?
                }
                None => weight,
            };
            proj.int8 = Some(std::sync::Arc::new(weight));
            Ok(())
        })?;
    }
    let mut unused: Vec<String> = checkpoint
        .tensors
        .keys()
        .filter(|k| !used.contains(*k) && !SHARED_ALIASES.contains(&k.as_str()))
        .cloned()
        .collect();
    unused.sort();
    report.unused = unused;
    Ok((model, report))
}

/// Storage type for [`save_safetensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    F16,
    BF16,
}

/// Serializes the model as a transformers `model.safetensors` (BartForConditionalGeneration
/// names; `final_logits_bias` as `[1, vocab]`; tied copies omitted like `save_pretrained`).
pub fn save_safetensors(model: &Bart, dtype: SaveDtype) -> Result<Vec<u8>> {
    let mut model = model.clone();
    model.materialize();
    let mut tensors: BTreeMap<String, (Vec<u8>, Vec<usize>)> = BTreeMap::new();
    let read = |t: Tensor<2>| -> Result<Vec<f32>> {
        t.into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Device(format!("{e:?}")))
    };
    visit(&mut model, &mut |name, slot| {
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
                let shape = if name == "final_logits_bias" {
                    vec![1, n]
                } else {
                    vec![n]
                };
                (read(p.val().unsqueeze::<2>())?, shape)
            }
        };
        let bytes = match dtype {
            SaveDtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            SaveDtype::F16 => data
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            SaveDtype::BF16 => data
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
        };
        tensors.insert(name, (bytes, shape));
        Ok(())
    })?;
    let st_dtype = match dtype {
        SaveDtype::F32 => Dtype::F32,
        SaveDtype::F16 => Dtype::F16,
        SaveDtype::BF16 => Dtype::BF16,
    };
    let views = tensors
        .iter()
        .map(|(name, (bytes, shape))| {
            TensorView::new(st_dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Weights(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Weights(e.to_string()))
}
