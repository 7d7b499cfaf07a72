//! `bartleby train`'s configuration: the TOML file `--config` reads and `runs/NAME/config.toml`
//! holds — also what `bartleby plan` writes for each recommended model.

use burn::tensor::DType;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Everything a run needs; read from `--config` (TOML), overridden by flags, written to
/// `RUN_DIR/config.toml`. Defaults are the seed pipeline's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub model: String,
    pub data: Vec<String>,
    /// Validation data; default: the `val_split` of each `data` source.
    pub val_data: Vec<String>,
    pub train_split: String,
    pub val_split: String,
    pub train_size: usize,
    pub val_size: usize,
    pub seed: u64,
    pub max_source_tokens: usize,
    pub max_target_tokens: usize,
    pub method: Method,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// Overrides the model's `dropout` (config.json) for training; unset = the model's own.
    pub dropout: Option<f64>,
    /// The projections to adapt; empty: the architecture's PEFT default (BART `q_proj`,
    /// `v_proj`; T5 `q`, `v`).
    pub target_modules: Vec<String>,
    pub rslora: bool,
    /// QLoRA: hold the frozen base projections quantized (q8 or q4, per block of
    /// `quant_block` input features); the LoRA factors stay f32.
    pub base_quant: BaseQuant,
    pub quant_block: u8,
    pub micro_batch: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    pub epochs: usize,
    /// Stop after this many optimizer steps (0 = train all epochs).
    pub max_steps: usize,
    pub max_grad_norm: f64,
    /// Validate every N optimizer steps (0 = at the end of each epoch).
    pub eval_every: usize,
    /// Metric that picks the best checkpoint: loss (lower is better), rouge1, rouge2, rougeL.
    pub metric_for_best: String,
    /// Stop after this many validations without improvement (0 = never).
    pub patience: usize,
    /// Write a resumable checkpoint every N optimizer steps (0 = only at the end of an epoch).
    pub save_every: usize,
    pub log_every: usize,
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: "facebook/bart-large-cnn".into(),
            data: Vec::new(),
            val_data: Vec::new(),
            train_split: "train".into(),
            val_split: "validation".into(),
            train_size: 2000,
            val_size: 200,
            seed: 42,
            max_source_tokens: 768,
            max_target_tokens: 192,
            method: Method::Lora,
            lora_r: 8,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            dropout: None,
            target_modules: Vec::new(),
            rslora: false,
            base_quant: BaseQuant::None,
            quant_block: 32,
            micro_batch: 4,
            grad_accum: 2,
            lr: 2e-4,
            weight_decay: 0.0,
            warmup_steps: 0,
            epochs: 3,
            max_steps: 0,
            max_grad_norm: 1.0,
            eval_every: 0,
            metric_for_best: "rougeL".into(),
            patience: 0,
            save_every: 0,
            log_every: 1,
            precision: Precision::F32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// LoRA adapters on `target_modules`; the base stays frozen.
    Lora,
    /// Every weight (small models).
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BaseQuant {
    None,
    Q8,
    Q4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl Precision {
    /// The dtype the frozen base's matrices are held and multiplied in (`None`: f32).
    pub fn half(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some(DType::F16),
            Precision::Bf16 => Some(DType::BF16),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

impl TrainConfig {
    /// A run directory's `config.toml` (what `train` saved), for `train --resume` and `card`;
    /// errors name the file, on one line.
    pub fn read_run(dir: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = dir.join("config.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read (is it a run directory?)", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.to_string();
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
    }
}
