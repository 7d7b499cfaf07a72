//! `bartleby train`: LoRA (or full) fine-tuning of BART on dialogue/summary pairs, with
//! validation, best-checkpoint selection, early stopping, exact resume and a PEFT-format
//! adapter as output. The math is `bartleby_core::train`; this file is the loop and the files.

use crate::checkpoint_files;
use crate::dataset::{self, Row};
use crate::device::{self, DeviceArg};
use crate::mlflow;
use crate::model_files::{self, ModelFiles};
use crate::output;
use crate::progress;
use crate::tensorboard;
use crate::train_config::{BaseQuant, Method, Precision, TrainConfig};
use anyhow::{bail, Context, Result};
use bartleby_core::checkpoint::adapter::{self, LoraConfig};
use bartleby_core::checkpoint::quantized::{quantize_projections, QuantBits};
use bartleby_core::checkpoint::{save_safetensors, LoadOptions, SaveDtype};
use bartleby_core::metrics::rouge;
use bartleby_core::models::ModelConfig;
use bartleby_core::train::{self, AdamW, Batch, Example, GradAccumulator, LossScaler, Trainable};
use bartleby_core::Summarizer;
use burn::tensor::{DType, Device, Tensor, TensorData};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
#[command(after_long_help = TRAIN_HELP)]
pub struct TrainArgs {
    /// TOML file with any TrainConfig field (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (its config.toml is used;
    /// other flags are not allowed).
    #[arg(long, conflicts_with_all = ["config", "name"])]
    pub resume: Option<PathBuf>,
    /// Run name: outputs go to RUNS_DIR/NAME.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Testing aid: exit with status 3 right after optimizer step N, as if the process had been
    /// killed there (checkpoints written so far stay).
    #[arg(long, hide = true)]
    pub stop_after_step: Option<usize>,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// One flag per [`TrainConfig`] field.
#[derive(Args, Debug, Default)]
pub struct Overrides {
    #[arg(long)]
    pub model: Option<String>,
    /// Training data (file, folder of split files or hub dataset id); repeat to mix sources.
    #[arg(long)]
    pub data: Vec<String>,
    #[arg(long)]
    pub val_data: Vec<String>,
    #[arg(long)]
    pub train_split: Option<String>,
    #[arg(long)]
    pub val_split: Option<String>,
    #[arg(long)]
    pub train_size: Option<usize>,
    #[arg(long)]
    pub val_size: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub max_source_tokens: Option<usize>,
    #[arg(long)]
    pub max_target_tokens: Option<usize>,
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    #[arg(long)]
    pub lora_r: Option<usize>,
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// The model's dropout while training (default: its config.json `dropout`).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Comma-separated module names (q_proj,k_proj,v_proj,out_proj,fc1,fc2; a dotted prefix
    /// such as encoder.layers.0.fc1 narrows it).
    #[arg(long, value_delimiter = ',')]
    pub target_modules: Option<Vec<String>>,
    #[arg(long)]
    pub rslora: Option<bool>,
    /// QLoRA: quantize the frozen base (none, q8, q4).
    #[arg(long, value_enum)]
    pub base_quant: Option<BaseQuant>,
    #[arg(long)]
    pub quant_block: Option<u8>,
    #[arg(long)]
    pub micro_batch: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long)]
    pub metric_for_best: Option<String>,
    #[arg(long)]
    pub patience: Option<usize>,
    #[arg(long)]
    pub save_every: Option<usize>,
    #[arg(long)]
    pub log_every: Option<usize>,
    /// f32, or bf16/f16 mixed precision for LoRA: the frozen base held and multiplied in half
    /// precision, the rest f32 (f16 with dynamic loss scaling).
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
}

const TRAIN_HELP: &str = "\
Run directory RUNS_DIR/NAME:
  config.toml      the resolved configuration
  metrics.jsonl    one line per logged step (step, epoch, loss, lr, grad_norm, tokens_per_s,
                   elapsed_s) and per validation (val_loss, rouge1, rouge2, rougeL: mean F, 0-1)
  loss.png         training (and validation) loss curve
  checkpoint/      the last resumable state (adapter or model, optimizer moments, step)
  adapter/         the final PEFT adapter (adapter_config.json, adapter_model.safetensors,
                   tokenizer files): PeftModel.from_pretrained(base, dir) loads it
  best/            the adapter of the best validation (metric_for_best)
With --method full, adapter/ and best/ hold a full checkpoint (model.safetensors + config).";

macro_rules! apply_overrides {
    ($cfg:expr, $o:expr, $($field:ident),*) => {
        $(if let Some(v) = $o.$field.clone() { $cfg.$field = v; })*
    };
}

impl TrainConfig {
    fn resolve(args: &TrainArgs) -> Result<Self> {
        let mut cfg = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                toml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("{}: {}", path.display(), one_line(&e.to_string()))
                })?
            }
            None => TrainConfig::default(),
        };
        let o = &args.overrides;
        apply_overrides!(
            cfg,
            o,
            model,
            train_split,
            val_split,
            train_size,
            val_size,
            seed,
            max_source_tokens,
            max_target_tokens,
            method,
            lora_r,
            lora_alpha,
            lora_dropout,
            target_modules,
            rslora,
            base_quant,
            quant_block,
            micro_batch,
            grad_accum,
            lr,
            weight_decay,
            warmup_steps,
            epochs,
            max_steps,
            max_grad_norm,
            eval_every,
            metric_for_best,
            patience,
            save_every,
            log_every,
            precision
        );
        if o.dropout.is_some() {
            cfg.dropout = o.dropout;
        }
        if !o.data.is_empty() {
            cfg.data = o.data.clone();
        }
        if !o.val_data.is_empty() {
            cfg.val_data = o.val_data.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("train_size", self.train_size),
            ("micro_batch", self.micro_batch),
            ("grad_accum", self.grad_accum),
            ("max_source_tokens", self.max_source_tokens),
            ("max_target_tokens", self.max_target_tokens),
            ("lora_r", self.lora_r),
            ("log_every", self.log_every),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            bail!("{name} must be at least 1");
        }
        if self.data.is_empty() {
            bail!("no training data: give --data (or `data` in the config file)");
        }
        if self.epochs == 0 && self.max_steps == 0 {
            bail!("epochs and max_steps are both 0: nothing to train");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("lr must be a positive number, got {}", self.lr);
        }
        let finite = [
            ("lora_alpha", self.lora_alpha, false),
            ("weight_decay", self.weight_decay, true),
            ("max_grad_norm", self.max_grad_norm, true),
        ];
        for (name, v, zero_ok) in finite {
            if !(v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0))) {
                let want = if zero_ok { "0 or more" } else { "more than 0" };
                bail!("{name} must be a finite number, {want}; got {v}");
            }
        }
        if let Some(p) = self.dropout.filter(|p| !(0.0..1.0).contains(p)) {
            bail!("dropout must be in [0, 1), got {p}");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            bail!("lora_dropout must be in [0, 1), got {}", self.lora_dropout);
        }
        if !["loss", "rouge1", "rouge2", "rougeL"].contains(&self.metric_for_best.as_str()) {
            bail!(
                "metric_for_best must be loss, rouge1, rouge2 or rougeL, got {:?}",
                self.metric_for_best
            );
        }
        if self.base_quant != BaseQuant::None && self.method != Method::Lora {
            bail!("base_quant (QLoRA) needs method = lora: a quantized base cannot be trained");
        }
        if self.precision != Precision::F32 && self.method != Method::Lora {
            bail!(
                "precision {}: needs method = lora (in mixed precision the frozen base is held \
                 in half precision; full fine-tuning trains every weight in f32)",
                self.precision.name()
            );
        }
        if self.precision != Precision::F32 && self.base_quant != BaseQuant::None {
            bail!(
                "precision {} with base_quant {:?}: not supported (a quantized base is computed \
                 in f32); use one or the other",
                self.precision.name(),
                self.base_quant
            );
        }
        Ok(())
    }

    fn trainable(&self) -> Trainable {
        match self.method {
            Method::Lora => Trainable::Lora,
            Method::Full => Trainable::All,
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a checkpoint records besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    /// Optimizer steps completed.
    step: usize,
    adam_step: u64,
    best_metric: Option<f64>,
    best_step: Option<usize>,
    evals_without_improvement: usize,
    /// f16 only: the dynamic loss scale ([`LossScaler`]).
    #[serde(default)]
    loss_scaler: Option<LossScaler>,
    /// f16 only: steps skipped for non-finite gradients.
    #[serde(default)]
    skipped_steps: usize,
}

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const TRAINABLE_FILE: &str = "trainable.safetensors";

/// A metrics.jsonl line as TensorBoard scalars: `train/...` for a step's, `val/...` for a
/// validation's.
fn line_scalars(line: &serde_json::Value) -> Vec<tensorboard::Scalar> {
    let prefix = if line.get("val_loss").is_some() {
        "val"
    } else {
        "train"
    };
    tensorboard::scalars_of(line, prefix, &[])
}

/// Whether `dir` holds only what a run writes before its first checkpoint.
fn only_run_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).all(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            matches!(
                name.as_ref(),
                "config.toml"
                    | "metrics.jsonl"
                    | ".lock"
                    | mlflow::RUN_FILE
                    | tensorboard::FILE_NAME
            ) || name.starts_with(".bartleby-")
        })
    })
}

/// Locks `dir/.lock` for this process (released when the returned file closes, at exit too).
fn lock_run_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("{}: cannot open the run's lock file", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{}: the run is in use by another bartleby process (wait for it to end)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("{}: cannot lock the run", path.display()))
        }
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let (run_dir, cfg, resume) = match &args.resume {
        Some(dir) => (dir.clone(), TrainConfig::read_run(dir)?, true),
        None => {
            let cfg = TrainConfig::resolve(&args)?;
            let name = args
                .name
                .clone()
                .context("give --name (the run directory's name)")?;
            // A plain name: no path separators, `..` or absolute paths out of --runs-dir.
            output::check_name(&name)?;
            (args.runs_dir.join(name), cfg, false)
        }
    };
    let target = device::init(args.device)?;
    let device = target.device.clone();
    if args.device == device::DeviceArg::Cpu {
        let blas = std::env::var("BARTLEBY_BLAS").unwrap_or_default();
        eprintln!("matmul: {}", crate::host::lend(&blas)?);
    }
    let mut trainer = Trainer::new(cfg, run_dir, &device, target.options, resume)?;
    trainer.train(args.stop_after_step)
}

struct Trainer {
    cfg: TrainConfig,
    dir: PathBuf,
    /// The run directory's lock, held while training.
    _lock: std::fs::File,
    files: ModelFiles,
    s: Summarizer,
    what: Trainable,
    train: Vec<Example>,
    val: Vec<Example>,
    val_rows: Vec<Row>,
    opt: AdamW,
    state: TrainerState,
    metrics: std::fs::File,
    history: Vec<(f64, f64)>,
    val_history: Vec<(f64, f64)>,
    /// metrics.jsonl as TensorBoard scalars (rewritten with it).
    scalars: Vec<tensorboard::Scalar>,
    /// The MLflow run, with MLFLOW_TRACKING_URI set (its ids kept in `mlflow_run.json`).
    mlflow: Option<mlflow::Run>,
    mlflow_saved: bool,
}

impl Trainer {
    fn new(
        cfg: TrainConfig,
        dir: PathBuf,
        device: &Device,
        options: LoadOptions,
        resume: bool,
    ) -> Result<Self> {
        let files = model_files::resolve(&cfg.model)?;
        let mut s = model_files::load(&files, device, options)
            .with_context(|| format!("loading {}", cfg.model))?;
        if let Some(prompting) = s.prompting.as_mut() {
            // The default prompt through the chat template, as `summarize` builds it (today's
            // date where the template prints one, as transformers renders it).
            prompting.now_unix_seconds = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs() as i64);
        }
        let what = cfg.trainable();
        if let Some(p) = cfg.dropout {
            let (attention, activation) = s.config.attention_activation_dropout();
            s.model.set_dropout(p, attention, activation);
        }
        if what == Trainable::Lora {
            // The adapter's initial A depends only on the seed.
            device.seed(cfg.seed);
            let lora_cfg = lora_config(&cfg, &s.config);
            let adapted = adapter::attach_new(&mut s.model, &lora_cfg)?;
            tracing::info!("LoRA on {} projections", adapted.len());
        }
        let bits = match cfg.base_quant {
            BaseQuant::None => None,
            BaseQuant::Q8 => Some(QuantBits::Q8),
            BaseQuant::Q4 => Some(QuantBits::Q4),
        };
        if let Some(bits) = bits {
            let n = quantize_projections(&mut s.model, bits, cfg.quant_block)?;
            tracing::info!("QLoRA: {n} base projections held as {:?}", cfg.base_quant);
        }
        match cfg.precision.half() {
            None => eprintln!("precision: f32"),
            Some(dtype) => {
                let name = cfg.precision.name();
                if !device.supports_dtype(dtype) {
                    bail!(
                        "precision {name}: this device does not compute in {name} \
                         (nothing was run; use --precision f32{})",
                        if dtype == DType::F16 { " or bf16" } else { "" }
                    );
                }
                let n = s.model.hold_matrices_in(dtype);
                eprintln!(
                    "precision: {name} mixed — {n} frozen weight matrices held and multiplied \
                     in {name}; activations, LayerNorm, softmax, LoRA, optimizer and loss in \
                     f32{}",
                    if dtype == DType::F16 {
                        " (dynamic loss scaling)"
                    } else {
                        ""
                    }
                );
            }
        }
        let trainable = train::make_trainable(&mut s.model, what)?;
        let (train_rows, mut val_rows) = load_data(&cfg)?;
        if s.prompting.is_some() {
            // The validation summaries read the same prompts: rows left out of the validation
            // loss (prompts over --max-source-tokens) are left out of its ROUGE too.
            let max_source = cfg.max_source_tokens.min(s.max_input_tokens());
            val_rows.retain(|r| {
                s.encode(&r.dialogue, usize::MAX)
                    .is_ok_and(|p| p.len() <= max_source)
            });
        }
        let train = tokenize_rows(&s, &train_rows, &cfg, "train")?;
        let val = tokenize_rows(&s, &val_rows, &cfg, "validation")?;
        eprintln!(
            "training {trainable} values ({:?}) on {} examples, validating on {}",
            cfg.method,
            train.len(),
            val.len()
        );
        let opt = AdamW::new(0.9, 0.999, 1e-8, cfg.weight_decay);
        let state = TrainerState {
            step: 0,
            adam_step: 0,
            best_metric: None,
            best_step: None,
            evals_without_improvement: 0,
            loss_scaler: (cfg.precision == Precision::F16).then(LossScaler::default),
            skipped_steps: 0,
        };
        // A run that stopped before its first checkpoint (killed at start, disk full, diverged)
        // has nothing to resume: it starts again, from its saved config with --resume, or from
        // the new flags under the same --name.
        // One process per run directory: a second `train` on it stops here. Then what a process
        // killed while replacing a checkpoint left moved aside is put back.
        // (A fresh start on a run that has progress is refused before anything is written in
        // its directory, the lock file included.)
        let has_progress =
            dir.join("checkpoint").exists() || dir.join(".bartleby-old-checkpoint").exists();
        if !resume && dir.is_dir() && (has_progress || !only_run_files(&dir)) {
            bail!(
                "{}: run directory already exists (use --resume to continue it)",
                dir.display()
            );
        }
        let mut held = if dir.is_dir() {
            Some(lock_run_dir(&dir)?)
        } else {
            None
        };
        if held.is_some() {
            for sub in ["checkpoint", "best", "adapter"] {
                output::recover_dir(&dir.join(sub))?;
            }
        }
        let restart = dir.exists() && !dir.join("checkpoint").exists() && only_run_files(&dir);
        let mut resume = resume;
        if resume && !dir.join("checkpoint").exists() {
            if !restart {
                bail!(
                    "{}: no checkpoint to resume from, and files other than a run's are there",
                    dir.display()
                );
            }
            tracing::warn!(
                "{}: no checkpoint yet: starting the run again",
                dir.display()
            );
            resume = false;
        }
        let lock = if !resume {
            if dir.exists() && !restart {
                bail!(
                    "{}: run directory already exists (use --resume to continue it)",
                    dir.display()
                );
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create run directory", dir.display()))?;
            let lock = match held.take() {
                Some(lock) => lock,
                None => lock_run_dir(&dir)?,
            };
            if restart {
                let _ = std::fs::remove_file(dir.join("metrics.jsonl"));
                let _ = std::fs::remove_file(dir.join(tensorboard::FILE_NAME));
            }
            let toml = toml::to_string(&cfg).context("config does not serialize")?;
            output::write_file_atomically(&dir.join("config.toml"), toml.as_bytes())?;
            lock
        } else {
            match held.take() {
                Some(lock) => lock,
                None => lock_run_dir(&dir)?,
            }
        };
        let metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("metrics.jsonl"))
            .with_context(|| format!("{}: cannot open metrics.jsonl", dir.display()))?;
        let mut trainer = Self {
            cfg,
            dir,
            _lock: lock,
            files,
            s,
            what,
            train,
            val,
            val_rows,
            opt,
            state,
            metrics,
            history: Vec::new(),
            val_history: Vec::new(),
            scalars: Vec::new(),
            mlflow: None,
            mlflow_saved: false,
        };
        if resume {
            trainer.restore()?;
        }
        trainer.start_mlflow(resume);
        Ok(trainer)
    }

    fn steps_per_epoch(&self) -> usize {
        self.train
            .len()
            .div_ceil(self.cfg.micro_batch)
            .div_ceil(self.cfg.grad_accum)
    }

    fn total_steps(&self) -> usize {
        let by_epochs = self.cfg.epochs * self.steps_per_epoch();
        match self.cfg.max_steps {
            0 => by_epochs,
            m if self.cfg.epochs == 0 => m,
            m => m.min(by_epochs),
        }
    }

    fn train(&mut self, stop_after: Option<usize>) -> Result<()> {
        let total = self.total_steps();
        let start_step = self.state.step;
        let per_epoch = self.steps_per_epoch();
        let lengths: Vec<usize> = self.train.iter().map(|e| e.input_ids.len()).collect();
        let bar =
            progress::bar_with_message(total as u64, self.state.step as u64, "training", "steps");
        let started = Instant::now();
        let mut acc = GradAccumulator::default();
        let mut stopped_early = false;
        'epochs: for epoch in 0.. {
            if epoch * per_epoch >= total {
                break;
            }
            let batches =
                train::epoch_batches(&lengths, self.cfg.micro_batch, self.cfg.seed, epoch as u64);
            for (k, group) in batches.chunks(self.cfg.grad_accum).enumerate() {
                let step = epoch * per_epoch + k; // 0-based optimizer step
                if step >= total {
                    break 'epochs;
                }
                if step < self.state.step {
                    continue; // done before the resumed checkpoint
                }
                let t0 = Instant::now();
                // Dropout's randomness depends only on (seed, step): a resumed run repeats it.
                self.s.model.device().seed(
                    self.cfg
                        .seed
                        .wrapping_mul(1_000_003)
                        .wrapping_add(step as u64),
                );
                let mut loss_sum = 0.0;
                let mut tokens = 0;
                let loss_scale = self.state.loss_scaler.map_or(1.0, |s| s.scale);
                for ids in group {
                    let refs: Vec<&Example> = ids.iter().map(|&i| &self.train[i]).collect();
                    let batch = collate(&self.s, &refs);
                    tokens += batch.tokens();
                    let loss = train::loss(&self.s.model, &batch)?;
                    loss_sum += train::scalar(loss.clone().inner())?;
                    let loss = loss.div_scalar(group.len() as f64);
                    let loss = if loss_scale != 1.0 {
                        loss.mul_scalar(loss_scale)
                    } else {
                        loss
                    };
                    acc.backward(&mut self.s.model, self.what, loss)?;
                }
                let outcome = train::optimizer_step(
                    &mut self.s.model,
                    self.what,
                    &mut self.opt,
                    self.state.loss_scaler.as_mut(),
                    acc.take(),
                    self.cfg.max_grad_norm,
                    |updates| {
                        train::linear_schedule(self.cfg.lr, updates, self.cfg.warmup_steps, total)
                    },
                )?;
                let (grad_norm, lr) = (outcome.grad_norm, outcome.lr);
                if outcome.skipped {
                    self.state.skipped_steps += 1;
                    let scale = self.state.loss_scaler.map_or(1.0, |s| s.scale);
                    bar.suspend(|| {
                        tracing::warn!(
                            "step {}: gradients overflowed f16; step skipped, loss scale now {scale}",
                            step + 1
                        )
                    });
                }
                self.state.step = step + 1;
                self.state.adam_step = self.opt.step;
                let loss = loss_sum / group.len() as f64;
                if !loss.is_finite() && step == start_step {
                    // Before any update of this run: nothing the learning rate did.
                    bail!(
                        "loss {loss} at step {}, before any update of this run: the model's \
                         weights (check the checkpoint for NaN/inf) or the data give non-finite values",
                        step + 1
                    );
                }
                if !loss.is_finite() {
                    bail!(
                        "training diverged: loss {loss} at step {} (try a lower --lr)",
                        step + 1
                    );
                }
                let tok_s = tokens as f64 / t0.elapsed().as_secs_f64();
                bar.set_position(self.state.step as u64);
                bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {tok_s:.0} tok/s"));
                let epoch_f = epoch as f64 + (k + 1) as f64 / per_epoch as f64;
                self.history.push((self.state.step as f64, loss));
                if self.state.step % self.cfg.log_every == 0 || self.state.step == total {
                    self.log(serde_json::json!({
                        "step": self.state.step, "epoch": epoch_f, "loss": loss, "lr": lr,
                        "grad_norm": grad_norm, "tokens_per_s": tok_s,
                        "elapsed_s": started.elapsed().as_secs_f64(),
                        "peak_rss_bytes": crate::memory::peak_rss_bytes(),
                        "loss_scale": self.state.loss_scaler.map(|s| s.scale),
                        "skipped": outcome.skipped,
                    }))?;
                }
                let end_of_epoch = k + 1 == per_epoch || self.state.step == total;
                let eval_now = match self.cfg.eval_every {
                    0 => end_of_epoch,
                    n => self.state.step % n == 0 || self.state.step == total,
                };
                if eval_now && !self.val.is_empty() {
                    bar.suspend(|| eprintln!("validating at step {}", self.state.step));
                    stopped_early = self.validate(epoch_f)?;
                }
                let save_now = match self.cfg.save_every {
                    0 => end_of_epoch,
                    n => self.state.step % n == 0 || end_of_epoch,
                };
                if save_now {
                    self.checkpoint()?;
                }
                if stop_after == Some(self.state.step) {
                    bar.abandon();
                    std::process::exit(3);
                }
                if stopped_early {
                    bar.suspend(|| {
                        eprintln!(
                            "early stopping: no improvement in {} validations",
                            self.cfg.patience
                        )
                    });
                    break 'epochs;
                }
            }
        }
        bar.finish_and_clear();
        self.write_trained("adapter")?;
        self.plot_loss()?;
        self.finish_mlflow("adapter");
        let skipped = match self.state.skipped_steps {
            0 => String::new(),
            n => format!(" ({n} skipped: f16 gradients overflowed)"),
        };
        eprintln!(
            "trained {} steps{skipped} in {:.1}s; adapter in {}",
            self.state.step,
            started.elapsed().as_secs_f64(),
            self.dir.join("adapter").display()
        );
        Ok(())
    }

    fn log(&mut self, mut line: serde_json::Value) -> Result<()> {
        line["time"] = tensorboard::now().into();
        writeln!(self.metrics, "{line}")
            .and_then(|_| self.metrics.flush())
            .with_context(|| format!("{}: cannot write metrics.jsonl", self.dir.display()))?;
        let scalars = line_scalars(&line);
        if let Some(run) = &mut self.mlflow {
            // The line's own (f64) values, under the TensorBoard tags.
            let values: Vec<(String, f64)> = scalars
                .iter()
                .filter_map(|sc| {
                    let key = sc.tag.split_once('/').map_or(sc.tag.as_str(), |(_, k)| k);
                    line[key].as_f64().map(|v| (sc.tag.clone(), v))
                })
                .collect();
            let step = line["step"].as_i64().unwrap_or(0);
            let ms = (line["time"].as_f64().unwrap_or(0.0) * 1e3) as i64;
            run.log_metrics(step, ms, &values);
        }
        self.save_mlflow_ids();
        self.scalars.extend(scalars);
        self.write_events()
    }

    /// With MLFLOW_TRACKING_URI set: a new MLflow run with every resolved setting as a param,
    /// or (`--resume`) the run of `mlflow_run.json` again.
    fn start_mlflow(&mut self, resume: bool) {
        let saved: Option<(String, String)> = resume
            .then(|| std::fs::read(self.dir.join(mlflow::RUN_FILE)).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                Some((
                    v["experiment_id"].as_str()?.to_string(),
                    v["run_id"].as_str()?.to_string(),
                ))
            });
        let name = self
            .dir
            .file_name()
            .map_or_else(|| "train".into(), |n| n.to_string_lossy().into_owned());
        let mut tags = vec![
            (
                "mlflow.source.name".to_string(),
                "bartleby train".to_string(),
            ),
            ("mlflow.source.type".to_string(), "LOCAL".to_string()),
            ("bartleby.command".to_string(), "train".to_string()),
            ("model".to_string(), self.cfg.model.clone()),
            ("data".to_string(), self.cfg.data.join(",")),
        ];
        if let Some(commit) = mlflow::git_commit() {
            tags.push(("mlflow.source.git.commit".to_string(), commit));
        }
        let Some(mut run) = mlflow::Run::start(
            &name,
            &name,
            &tags,
            saved.as_ref().map(|(e, r)| (e.as_str(), r.as_str())),
        ) else {
            return;
        };
        if saved.is_none() {
            let mut params = Vec::new();
            if let Ok(v) = serde_json::to_value(&self.cfg) {
                mlflow::flatten("", &v, &mut params);
            }
            run.log_params(&params);
        }
        self.mlflow_saved = saved.is_some();
        self.mlflow = Some(run);
        self.save_mlflow_ids();
    }

    /// Writes `mlflow_run.json` once the MLflow run exists (for `--resume`).
    fn save_mlflow_ids(&mut self) {
        if self.mlflow_saved {
            return;
        }
        if let Some((experiment_id, run_id)) = self.mlflow.as_ref().and_then(|r| r.ids()) {
            let doc = serde_json::json!({"experiment_id": experiment_id, "run_id": run_id,
                "tracking_uri": mlflow::tracking_uri()});
            if output::write_file_atomically(
                &self.dir.join(mlflow::RUN_FILE),
                doc.to_string().as_bytes(),
            )
            .is_ok()
            {
                self.mlflow_saved = true;
            }
        }
    }

    /// The run's files as MLflow artifacts, and the run marked finished.
    fn finish_mlflow(&mut self, trained: &str) {
        let Some(run) = &mut self.mlflow else { return };
        run.log_artifact_dir(&self.dir.join(trained), trained);
        for f in [
            "config.toml",
            "metrics.jsonl",
            "loss.png",
            tensorboard::FILE_NAME,
        ] {
            let path = self.dir.join(f);
            if path.is_file() {
                run.log_artifact(&path, "");
            }
        }
        // The model card of what was trained (when the base is a local folder the card can read).
        let (model, adapter) = match self.what {
            Trainable::Lora => (PathBuf::from(&self.cfg.model), Some(self.dir.join(trained))),
            _ => (self.dir.join(trained), None),
        };
        if model.join("config.json").is_file() {
            let source = crate::model_card::CardSource {
                model,
                adapter,
                metrics: Vec::new(),
                train_run: Some(self.dir.clone()),
                name: None,
                license: None,
                base_model: None,
                repo: None,
            };
            match crate::model_card::build(&source) {
                Ok(card) => run.log_artifact_bytes("README.md", card.into_bytes()),
                Err(e) => tracing::warn!("MLflow: no model card artifact: {e:#}"),
            }
        }
        run.finish(true);
        self.save_mlflow_ids();
    }

    /// The run's TensorBoard event file (`tensorboard --logdir runs/`, `wandb sync`), rewritten
    /// from everything logged so far.
    fn write_events(&self) -> Result<()> {
        let start = self
            .scalars
            .first()
            .map_or_else(tensorboard::now, |s| s.wall_time);
        // The resolved settings on TensorBoard's HParams dashboard (trial: the run's name).
        let name = self
            .dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let hparams = serde_json::to_value(&self.cfg)
            .ok()
            .map(|v| tensorboard::HParams::from_json(&name, start, &v));
        let bytes = tensorboard::event_file_full(start, hparams.as_ref(), &self.scalars, &[]);
        output::write_file_atomically(&self.dir.join(tensorboard::FILE_NAME), &bytes)
    }

    /// Validation loss and ROUGE; records the best; returns whether to stop early.
    fn validate(&mut self, epoch: f64) -> Result<bool> {
        let inference = train::detached(&self.s.model, self.what)?;
        let trained = std::mem::replace(&mut self.s.model, inference);
        let result = self.validation_metrics();
        self.s.model = trained;
        let (val_loss, rouge) = result?;
        let [r1, r2, rl] = rouge;
        self.val_history.push((self.state.step as f64, val_loss));
        self.log(serde_json::json!({
            "step": self.state.step, "epoch": epoch, "val_loss": val_loss,
            "rouge1": r1, "rouge2": r2, "rougeL": rl,
        }))?;
        let metric = match self.cfg.metric_for_best.as_str() {
            "loss" => -val_loss,
            "rouge1" => r1,
            "rouge2" => r2,
            _ => rl,
        };
        if self.state.best_metric.is_none_or(|best| metric > best) {
            self.state.best_metric = Some(metric);
            self.state.best_step = Some(self.state.step);
            self.state.evals_without_improvement = 0;
            self.write_trained("best")?;
        } else {
            self.state.evals_without_improvement += 1;
        }
        Ok(self.cfg.patience > 0 && self.state.evals_without_improvement >= self.cfg.patience)
    }

    fn validation_metrics(&self) -> Result<(f64, [f64; 3])> {
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for chunk in self.val.chunks(self.cfg.micro_batch) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let batch: Batch = collate(&self.s, &refs);
            loss_sum += train::scalar(train::loss(&self.s.model, &batch)?)?;
            batches += 1;
        }
        let (gen, _) = self.s.summarization_generation()?;
        let mut sums = [0.0; 3];
        for chunk in self.val_rows.chunks(self.cfg.micro_batch.max(8)) {
            let texts: Vec<&str> = chunk.iter().map(|r| r.dialogue.as_str()).collect();
            let summaries =
                self.s
                    .summarize(&texts, &gen, self.cfg.max_source_tokens, &mut |_, _| {})?;
            for (row, out) in chunk.iter().zip(summaries) {
                let scores = rouge::score(&out[0].summary, &[row.summary.as_str()], true);
                sums[0] += scores.rouge1.fmeasure;
                sums[1] += scores.rouge2.fmeasure;
                sums[2] += scores.rougeL.fmeasure;
            }
        }
        let n = self.val_rows.len() as f64;
        Ok((loss_sum / batches as f64, sums.map(|x| x / n)))
    }

    /// Writes the trained weights as a loadable directory: a PEFT adapter, or (full
    /// fine-tuning) a transformers checkpoint; tokenizer files included.
    fn write_trained(&self, name: &str) -> Result<()> {
        let model = train::detached(&self.s.model, self.what)?;
        let cfg = &self.cfg;
        let files = &self.files;
        let what = self.what;
        output::write_dir(&self.dir.join(name), true, |dir| {
            match what {
                Trainable::Lora => {
                    let mut lora_cfg = lora_config(cfg, &self.s.config);
                    lora_cfg.base_model_name_or_path = Some(cfg.model.clone());
                    output::write_file(dir, adapter::CONFIG_FILE, &lora_cfg.to_json())?;
                    output::write_file(
                        dir,
                        adapter::WEIGHTS_FILE,
                        &adapter::save_adapter(&model)?,
                    )?;
                }
                Trainable::All => {
                    output::write_file(
                        dir,
                        "model.safetensors",
                        &save_safetensors(&model, SaveDtype::F32)?,
                    )?;
                    std::fs::copy(&files.config, dir.join("config.json"))
                        .context("config.json: copy failed")?;
                    if let Some(g) = &files.generation_config {
                        std::fs::copy(g, dir.join("generation_config.json"))
                            .context("generation_config.json: copy failed")?;
                    }
                }
            }
            checkpoint_files::copy_tokenizer_files(files, dir)
        })
    }

    /// A resumable state: trainable values, optimizer moments, step, best-so-far.
    fn checkpoint(&mut self) -> Result<()> {
        // Names start with the position, so sorting them restores the model order.
        let mut tensors: Vec<(String, Tensor<1>)> =
            train::trainable_values(&mut self.s.model, self.what)?
                .into_iter()
                .enumerate()
                .map(|(i, (name, t))| (format!("{i:06}.{name}"), t))
                .collect();
        for (i, (m, v)) in self.opt.moments.iter().enumerate() {
            tensors.push((format!("adam.{i:06}.m"), m.clone()));
            tensors.push((format!("adam.{i:06}.v"), v.clone()));
        }
        let (weights, moments): (Vec<_>, Vec<_>) = tensors
            .into_iter()
            .partition(|(n, _)| !n.starts_with("adam."));
        let weights = flat_safetensors(weights)?;
        let moments = flat_safetensors(moments)?;
        let state = serde_json::to_vec_pretty(&self.state)?;
        output::write_dir(&self.dir.join("checkpoint"), true, |dir| {
            output::write_file(dir, TRAINABLE_FILE, &weights)?;
            output::write_file(dir, OPTIMIZER_FILE, &moments)?;
            output::write_file(dir, STATE_FILE, &state)
        })
    }

    fn restore(&mut self) -> Result<()> {
        let dir = self.dir.join("checkpoint");
        let read = |f: &str| {
            std::fs::read(dir.join(f)).with_context(|| {
                format!(
                    "{}: cannot read {f} (no checkpoint to resume from?)",
                    dir.display()
                )
            })
        };
        let state: TrainerState = serde_json::from_slice(&read(STATE_FILE)?)
            .with_context(|| format!("{}: invalid {STATE_FILE}", dir.display()))?;
        // A state that this run could not have written (edited, or from another run).
        let bad = |why: String| anyhow::anyhow!("{}: {why}", dir.join(STATE_FILE).display());
        let total = self.total_steps();
        if state.step == 0 || state.step > total {
            return Err(bad(format!(
                "step {} is outside this run's 1..={total} steps",
                state.step
            )));
        }
        if state.adam_step as usize + state.skipped_steps != state.step {
            return Err(bad(format!(
                "adam_step {} + skipped_steps {} does not equal step {}",
                state.adam_step, state.skipped_steps, state.step
            )));
        }
        if state.best_step.is_some_and(|b| b == 0 || b > state.step)
            || state.best_metric.is_some_and(|m| !m.is_finite())
            || state.best_step.is_some() != state.best_metric.is_some()
        {
            return Err(bad("best_step / best_metric are inconsistent".into()));
        }
        self.state = state;
        let device = self.s.model.device();
        let values = read_flat_safetensors(&read(TRAINABLE_FILE)?, &device)
            .with_context(|| format!("{}", dir.join(TRAINABLE_FILE).display()))?;
        let trainable = values.len();
        train::set_trainable_values(
            &mut self.s.model,
            self.what,
            values.into_iter().map(|(_, t)| t).collect(),
        )
        .with_context(|| format!("{}", dir.join(TRAINABLE_FILE).display()))?;
        let moments = read_flat_safetensors(&read(OPTIMIZER_FILE)?, &device)
            .with_context(|| format!("{}", dir.join(OPTIMIZER_FILE).display()))?;
        let mut pairs = Vec::new();
        for chunk in moments.chunks(2) {
            if let [(_, m), (_, v)] = chunk {
                pairs.push((m.clone(), v.clone()));
            }
        }
        let fresh = moments.is_empty() && self.state.adam_step == 0;
        if !fresh && (pairs.len() != trainable || moments.len() != 2 * trainable) {
            bail!(
                "{}: {} moment tensors for {trainable} trainable tensors (expected {})",
                dir.join(OPTIMIZER_FILE).display(),
                moments.len(),
                2 * trainable
            );
        }
        self.opt.moments = pairs;
        self.opt.step = self.state.adam_step;
        // The log keeps only what the checkpoint's run had written up to its step.
        let path = self.dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s as usize <= self.state.step)
            })
            .collect();
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        output::write_file_atomically(&path, body.as_bytes())?;
        self.metrics = std::fs::OpenOptions::new().append(true).open(&path)?;
        for line in kept {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let step = v["step"].as_f64().unwrap_or(0.0);
            if let Some(loss) = v["loss"].as_f64() {
                self.history.push((step, loss));
            }
            if let Some(loss) = v["val_loss"].as_f64() {
                self.val_history.push((step, loss));
            }
            self.scalars.extend(line_scalars(&v));
        }
        self.write_events()?;
        eprintln!(
            "resuming {} from step {}",
            self.dir.display(),
            self.state.step
        );
        Ok(())
    }

    fn plot_loss(&self) -> Result<()> {
        crate::plots::loss_curve(&self.dir.join("loss.png"), &self.history, &self.val_history)
    }
}

fn lora_config(cfg: &TrainConfig, model: &ModelConfig) -> LoraConfig {
    let targets = match cfg.target_modules.is_empty() {
        true => model.lora_default_targets(),
        false => cfg.target_modules.clone(),
    };
    let mut c = LoraConfig::new(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, targets);
    c.use_rslora = cfg.rslora;
    c
}

/// The training and validation subsets: every source's split concatenated, then a seeded
/// sample of train_size / val_size rows (kept in source order).
fn load_data(cfg: &TrainConfig) -> Result<(Vec<Row>, Vec<Row>)> {
    let mut train_rows = Vec::new();
    for spec in &cfg.data {
        train_rows.extend(dataset::load_rows(spec, &cfg.train_split)?);
    }
    let mut val_rows = Vec::new();
    let val_sources = if cfg.val_data.is_empty() {
        &cfg.data
    } else {
        &cfg.val_data
    };
    if cfg.val_size > 0 {
        for spec in val_sources {
            val_rows.extend(dataset::load_rows(spec, &cfg.val_split)?);
        }
    }
    if cfg.train_size > train_rows.len() {
        bail!(
            "train_size {} is larger than the {} training rows of {}",
            cfg.train_size,
            train_rows.len(),
            cfg.data.join(", ")
        );
    }
    if cfg.val_size > val_rows.len() {
        bail!(
            "val_size {} is larger than the {} validation rows of {}",
            cfg.val_size,
            val_rows.len(),
            val_sources.join(", ")
        );
    }
    let train_rows = dataset::select(train_rows, Some(cfg.train_size), Some(cfg.seed));
    let val_rows = dataset::select(val_rows, Some(cfg.val_size), Some(cfg.seed));
    Ok((train_rows, val_rows))
}

/// A micro-batch as the model trains on it: encoder inputs + shifted decoder inputs, or a
/// decoder-only model's right-padded prompt + summary sequences.
fn collate(s: &Summarizer, refs: &[&Example]) -> Batch {
    if s.prompting.is_some() {
        return train::collate_causal(refs, s.config.pad_token_id());
    }
    train::collate(
        refs,
        s.config.pad_token_id(),
        s.generation.decoder_start_token_id,
    )
}

fn tokenize_rows(
    s: &Summarizer,
    rows: &[Row],
    cfg: &TrainConfig,
    what: &str,
) -> Result<Vec<Example>> {
    let max_source = cfg.max_source_tokens.min(s.max_input_tokens());
    let max_target = cfg.max_target_tokens.min(s.max_input_tokens());
    // Room for at least one token of text besides the special tokens, before any row.
    let special = s.tokenizer.encode("", None)?.len();
    for (flag, max) in [
        ("--max-source-tokens", max_source),
        ("--max-target-tokens", max_target),
    ] {
        if max <= special {
            bail!(
                "{flag} {max} leaves no room for text after the model's {special} special tokens"
            );
        }
    }
    if s.prompting.is_some() {
        // Decoder-only: the whole prompt, never truncated (a row whose prompt is longer than
        // --max-source-tokens is left out, with a warning), then the summary cut to
        // --max-target-tokens, with the eos.
        let eos = s
            .answer_eos()
            .context("the model's tokenizer and generation config name no eos token")?;
        let mut examples = Vec::with_capacity(rows.len());
        let mut left_out = 0;
        for r in rows {
            let prompt = s
                .encode(&r.dialogue, usize::MAX)
                .with_context(|| format!("{what} row {}", r.id))?;
            if prompt.len() > max_source {
                left_out += 1;
                continue;
            }
            examples.push(
                train::tokenize_causal(&s.tokenizer, prompt, &r.summary, eos, max_target)
                    .with_context(|| format!("{what} row {}", r.id))?,
            );
        }
        if left_out > 0 {
            tracing::warn!(
                "{left_out} of {} {what} rows left out: their prompts are longer than \
                 --max-source-tokens {max_source}",
                rows.len()
            );
        }
        if examples.is_empty() && !rows.is_empty() {
            bail!("every {what} row's prompt is longer than --max-source-tokens {max_source}");
        }
        return Ok(examples);
    }
    rows.iter()
        .map(|r| {
            train::tokenize(
                &s.tokenizer,
                // The model's summarization prefix (T5: "summarize: ") before every source, as
                // at inference.
                &format!("{}{}", s.prefix, r.dialogue),
                &r.summary,
                max_source,
                max_target,
            )
            .with_context(|| format!("{what} row {}", r.id))
        })
        .collect()
}

fn flat_safetensors(tensors: Vec<(String, Tensor<1>)>) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    for (name, t) in tensors {
        let n = t.dims()[0];
        let values = t
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading {name}: {e:?}"))?;
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        data.push((name, bytes, n));
    }
    let views = data
        .iter()
        .map(|(name, bytes, n)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*n], bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| anyhow::anyhow!("checkpoint: {e}"))
}

fn read_flat_safetensors(bytes: &[u8], device: &Device) -> Result<Vec<(String, Tensor<1>)>> {
    let st =
        safetensors::SafeTensors::deserialize(bytes).context("not a valid safetensors file")?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort(); // written in order; names sort the same way
    names
        .into_iter()
        .map(|name| {
            let view = st.tensor(&name)?;
            let values = bartleby_core::checkpoint::read_f32("checkpoint", &name, &view)?;
            let n = values.len();
            Ok((
                name,
                Tensor::from_data(TensorData::new(values, [n]), device),
            ))
        })
        .collect()
}
