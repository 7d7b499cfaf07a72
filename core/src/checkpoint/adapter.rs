//! LoRA adapters in PEFT's format: `adapter_config.json` + `adapter_model.safetensors`, read
//! into the model's [`Proj`] branches, written back with PEFT's key names, and merged.
//!
//! PEFT names a tensor `base_model.model.<module>.lora_A.weight` (`[r, in]`) and
//! `...lora_B.weight` (`[out, r]`), where `<module>` is the transformers module name
//! ([`crate::checkpoint::Params::visit_projections`]). The branch adds `s · B A x` with
//! `s = lora_alpha / r` (`lora_alpha / sqrt(r)` with rsLoRA).

use super::{read_f32, Params, Slot};
use crate::ops::{LoraBranch, Proj};
use crate::{Error, Result};
use burn::module::Param;
use burn::nn::DropoutConfig;
use burn::tensor::{Distribution, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The file names PEFT's `save_pretrained` writes.
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// PEFT's key prefix for a `PeftModelForSeq2SeqLM` around `BartForConditionalGeneration`.
const KEY_PREFIX: &str = "base_model.model.";

/// `target_modules`: a list of module-name suffixes or one regular expression (full match).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Regex(String),
}

/// The fields of PEFT's `LoraConfig` that change what the adapter computes. Unknown fields are
/// kept (and written back) so a config round-trips.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoraConfig {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: Option<TargetModules>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub lora_bias: bool,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    pub layers_to_transform: Option<Value>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn default_bias() -> String {
    "none".into()
}

impl LoraConfig {
    /// PEFT's defaults for BART summarization (`TaskType.SEQ_2_SEQ_LM`), with the given targets.
    pub fn new(r: usize, lora_alpha: f64, lora_dropout: f64, targets: Vec<String>) -> Self {
        let other = BTreeMap::from([
            ("inference_mode".to_string(), Value::Bool(true)),
            ("init_lora_weights".to_string(), Value::Bool(true)),
            ("peft_version".to_string(), Value::String("0.21.2".into())),
            ("revision".to_string(), Value::Null),
        ]);
        Self {
            peft_type: "LORA".into(),
            task_type: Some("SEQ_2_SEQ_LM".into()),
            r,
            lora_alpha,
            lora_dropout,
            target_modules: Some(TargetModules::List(targets)),
            use_rslora: false,
            bias: default_bias(),
            fan_in_fan_out: false,
            use_dora: false,
            lora_bias: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            layers_to_transform: None,
            modules_to_save: None,
            base_model_name_or_path: None,
            other,
        }
    }

    /// Parses `adapter_config.json` and rejects what Bartleby does not compute.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let err = |message: String| Error::Config {
            file: CONFIG_FILE.into(),
            message,
        };
        let config: Self =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not a LoRA config: {e}")))?;
        if config.peft_type != "LORA" {
            return Err(err(format!(
                "peft_type is {:?}; only LORA adapters are supported",
                config.peft_type
            )));
        }
        let unsupported = [
            (config.use_dora, "use_dora (DoRA)"),
            (config.lora_bias, "lora_bias"),
            (
                config.fan_in_fan_out,
                "fan_in_fan_out (BART's layers are nn.Linear)",
            ),
            (
                config
                    .modules_to_save
                    .as_ref()
                    .is_some_and(|m| !m.is_empty()),
                "modules_to_save",
            ),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
            return Err(err(format!("{what} is not supported")));
        }
        if config.r == 0 {
            return Err(err("r must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&config.lora_dropout) {
            return Err(err(format!(
                "lora_dropout {} is outside [0, 1)",
                config.lora_dropout
            )));
        }
        Ok(config)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("LoraConfig serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Rank and alpha of `module` (PEFT's `rank_pattern` / `alpha_pattern`, first matching key).
    pub fn rank_alpha(&self, module: &str) -> Result<(usize, f64)> {
        let r = match pattern_key(self.rank_pattern.keys(), module)? {
            Some(key) => self.rank_pattern[key],
            None => self.r,
        };
        let alpha = match pattern_key(self.alpha_pattern.keys(), module)? {
            Some(key) => self.alpha_pattern[key],
            None => self.lora_alpha,
        };
        Ok((r, alpha))
    }

    /// `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub fn scaling(&self, r: usize, alpha: f64) -> f64 {
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }

    /// Whether PEFT would put an adapter on `module` (`check_target_module_exists`).
    pub fn targets(&self, module: &str) -> Result<bool> {
        let found = match &self.target_modules {
            None => false,
            Some(TargetModules::Regex(pattern)) => full_match(pattern, module)?,
            Some(TargetModules::List(names)) => {
                let suffix = names
                    .iter()
                    .any(|n| module == n || module.ends_with(&format!(".{n}")));
                suffix && self.in_transformed_layer(module)
            }
        };
        Ok(found)
    }

    /// `layers_to_transform`: an index or a list of indices of the first numbered segment.
    fn in_transformed_layer(&self, module: &str) -> bool {
        let wanted: Vec<u64> = match &self.layers_to_transform {
            None | Some(Value::Null) => return true,
            Some(Value::Array(list)) if list.is_empty() => return true,
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_u64).collect(),
            Some(v) => v.as_u64().into_iter().collect(),
        };
        let index = module.split('.').find_map(|part| part.parse::<u64>().ok());
        index.is_some_and(|i| wanted.contains(&i))
    }
}

/// PEFT's `get_pattern_key`: the first key with `re.match(rf"(.*\.)?({key})$", module)`.
fn pattern_key<'a>(
    keys: impl Iterator<Item = &'a String>,
    module: &str,
) -> Result<Option<&'a String>> {
    for key in keys {
        if matches(&format!(r"^(?:.*\.)?(?:{key})$"), module)? {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

fn full_match(pattern: &str, text: &str) -> Result<bool> {
    matches(&format!("^(?:{pattern})$"), text)
}

fn matches(pattern: &str, text: &str) -> Result<bool> {
    let re = regex::Regex::new(pattern).map_err(|e| Error::Config {
        file: CONFIG_FILE.into(),
        message: format!("bad pattern {pattern:?}: {e}"),
    })?;
    Ok(re.is_match(text))
}

/// What [`load_adapter`] changed.
#[derive(Debug, Default)]
pub struct AdapterReport {
    /// Module names that received a branch, in model order.
    pub adapted: Vec<String>,
    /// Base tensors replaced by the adapter (trained biases: `bias = "all"` / `"lora_only"`).
    pub biases: Vec<String>,
}

/// Adds the adapter's branches to `model`. Every tensor of the file must belong to a projection
/// of this model with matching shapes (an adapter for another model shape is an error).
pub fn load_adapter<M: Params>(
    model: &mut M,
    config: &LoraConfig,
    weights: &[u8],
) -> Result<AdapterReport> {
    let st = SafeTensors::deserialize(weights)
        .map_err(|e| weights_err(format!("not a valid safetensors file: {e}")))?;
    let mut tensors: HashMap<String, TensorView<'_>> = st.tensors().into_iter().collect();
    let device = model.device();
    let mut report = AdapterReport::default();
    model.visit_projections(&mut |name, proj| {
        let key = |part: &str| format!("{KEY_PREFIX}{name}.{part}");
        let a = tensors.remove(&key("lora_A.weight"));
        let b = tensors.remove(&key("lora_B.weight"));
        let (a, b) = match (a, b) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(weights_err(format!(
                    "{name} has only one of lora_A / lora_B"
                )))
            }
        };
        if !config.targets(&name)? {
            // PEFT builds LoRA layers from target_modules only: these weights would be ignored.
            return Err(Error::Config {
                file: CONFIG_FILE.into(),
                message: format!(
                    "target_modules does not name {name}, which has LoRA weights in {WEIGHTS_FILE} \
                     (PEFT would ignore them): the config and the weights disagree"
                ),
            });
        }
        let [d_in, d_out] = proj.linear.weight.val().dims();
        let r = a.shape().first().copied().unwrap_or(0);
        let (config_r, alpha) = config.rank_alpha(&name)?;
        if r != config_r {
            return Err(weights_err(format!(
                "{} has rank {r} but {CONFIG_FILE} says r = {config_r}",
                key("lora_A.weight")
            )));
        }
        let a = checked(&key("lora_A.weight"), &a, &[r, d_in])?;
        let b = checked(&key("lora_B.weight"), &b, &[d_out, r])?;
        let a = Tensor::<2>::from_data(TensorData::new(a, [r, d_in]), &device).transpose();
        let b = Tensor::<2>::from_data(TensorData::new(b, [d_out, r]), &device).transpose();
        proj.lora = Some(branch(a, b, config.scaling(r, alpha), config.lora_dropout));
        report.adapted.push(name);
        Ok(())
    })?;
    // Trained base biases (`bias = "all"` or `"lora_only"`) replace the model's.
    model.visit(&mut |name, slot| {
        // PEFT spells an adapted layer's own tensors `<module>.base_layer.<tensor>`.
        let wrapped = match name.rsplit_once('.') {
            Some((module, tensor)) => format!("{KEY_PREFIX}{module}.base_layer.{tensor}"),
            None => name.clone(),
        };
        let plain = format!("{KEY_PREFIX}{name}");
        let (key, view) = match (tensors.remove(&plain), tensors.remove(&wrapped)) {
            (Some(v), None) => (plain, v),
            (None, Some(v)) => (wrapped, v),
            (None, None) => return Ok(()),
            (Some(_), Some(_)) => {
                return Err(weights_err(format!(
                    "both {plain} and {wrapped} are present"
                )))
            }
        };
        let Slot::Vector(p) = slot else {
            return Err(weights_err(format!(
                "tensor {key} replaces a base weight; only biases are supported"
            )));
        };
        let n = p.val().dims()[0];
        let data = checked(&key, &view, &[n])?;
        *p = Param::from_tensor(Tensor::from_data(TensorData::new(data, [n]), &device));
        report.biases.push(name);
        Ok(())
    })?;
    if let Some(extra) = tensors.keys().min() {
        return Err(weights_err(format!(
            "tensor {extra} does not belong to any projection of this model \
             ({} unmatched; is the adapter for another model?)",
            tensors.len()
        )));
    }
    if report.adapted.is_empty() {
        return Err(weights_err(
            "the adapter has no lora_A/lora_B tensors".into(),
        ));
    }
    Ok(report)
}

fn branch(a: Tensor<2>, b: Tensor<2>, scaling: f64, dropout: f64) -> LoraBranch {
    LoraBranch {
        a: Param::from_tensor(a),
        b: Param::from_tensor(b),
        scaling,
        dropout: DropoutConfig::new(dropout).init(),
    }
}

fn weights_err(message: String) -> Error {
    Error::Weights(format!("{WEIGHTS_FILE}: {message}"))
}

fn checked(name: &str, view: &TensorView<'_>, expected: &[usize]) -> Result<Vec<f32>> {
    if view.shape() != expected {
        return Err(weights_err(format!(
            "tensor {name} has shape {:?}, expected {expected:?} (adapter for another model shape?)",
            view.shape()
        )));
    }
    read_f32(WEIGHTS_FILE, name, view)
}

/// Attaches fresh branches to every projection `config` targets, initialized like PEFT's
/// `init_lora_weights=True`: A ~ kaiming-uniform(a = √5) (bound 1/√in), B = 0, so the model
/// computes what it computed before. Returns the adapted module names.
pub fn attach_new<M: Params>(model: &mut M, config: &LoraConfig) -> Result<Vec<String>> {
    let device = model.device();
    let mut adapted = Vec::new();
    model.visit_projections(&mut |name, proj| {
        if !config.targets(&name)? {
            return Ok(());
        }
        let [d_in, d_out] = proj.linear.weight.val().dims();
        let (r, alpha) = config.rank_alpha(&name)?;
        let bound = 1.0 / (d_in as f64).sqrt();
        let a = Tensor::<2>::random([d_in, r], Distribution::Uniform(-bound, bound), &device);
        let b = Tensor::<2>::zeros([r, d_out], &device);
        proj.lora = Some(branch(a, b, config.scaling(r, alpha), config.lora_dropout));
        adapted.push(name);
        Ok(())
    })?;
    if adapted.is_empty() {
        return Err(Error::Config {
            file: CONFIG_FILE.into(),
            message: format!(
                "target_modules {} match no projection of this model (BART has q_proj, k_proj, \
                 v_proj, out_proj, fc1, fc2; T5 q, k, v, o, wi, wi_0, wi_1, wo)",
                match &config.target_modules {
                    Some(t) => serde_json::to_string(t).unwrap_or_default(),
                    None => "(none)".into(),
                }
            ),
        });
    }
    Ok(adapted)
}

/// `adapter_model.safetensors` with PEFT's key names and layouts (f32).
pub fn save_adapter<M: Params>(model: &M) -> Result<Vec<u8>> {
    let mut model = model.clone();
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    model.visit_projections(&mut |name, proj: &mut Proj| {
        let Some(lora) = &proj.lora else {
            return Ok(());
        };
        for (part, t) in [("lora_A", lora.a.val()), ("lora_B", lora.b.val())] {
            let t = t.transpose(); // burn [in, r] / [r, out] → PEFT [r, in] / [out, r]
            let shape = t.dims().to_vec();
            let data = t
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| Error::Device(format!("{e:?}")))?;
            let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.insert(
                format!("{KEY_PREFIX}{name}.{part}.weight"),
                (Dtype::F32, shape, bytes),
            );
        }
        Ok(())
    })?;
    if tensors.is_empty() {
        return Err(Error::Weights(
            "the model has no LoRA branches to save".into(),
        ));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    super::encode_safetensors(&tensors, metadata)
}

/// Folds every branch into its weight (PEFT's `merge_and_unload`); the model is then a plain
/// BART again. Returns how many projections were merged.
pub fn merge<M: Params>(model: &mut M) -> Result<usize> {
    let mut merged = 0;
    model.visit_projections(&mut |_, proj| {
        if proj.lora.is_some() {
            proj.merge();
            merged += 1;
        }
        Ok(())
    })?;
    Ok(merged)
}
