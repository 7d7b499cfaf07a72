//! `bartleby plan`: the fine-tuning plan for the winners of a `benchmark` — per model a method
//! (LoRA or QLoRA), its settings, the input and summary lengths the data needs, and the memory
//! and step time that justify them on the target device — as `recommendations.json`, a readable
//! `finetune_plan.md`, and one `bartleby train --config` TOML per model.
//!
//! The estimates are arithmetic on the model's shape, not measurements: weights (at the
//! precision or quantization chosen), LoRA factors with their AdamW state, and the activations
//! a training step keeps for its backward pass (every layer's hidden states and attention
//! probabilities, the logits), plus a margin; step time is the step's FLOPs (forward + backward:
//! 4 × parameters × tokens for LoRA, which needs no weight gradients) at `--device-tflops`.

use crate::dataset;
use crate::model_files;
use crate::output::{prepare_out_dir, write_atomically};
use crate::train_config::{BaseQuant, Method, Precision, TrainConfig};
use anyhow::{bail, Context, Result};
use bartleby_core::metrics::report::{rows_from_json, RankingRow};
use bartleby_core::metrics::rouge::percentile;
use bartleby_core::models::ModelConfig;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_long_help = PLAN_HELP)]
pub struct PlanArgs {
    /// `final_ranking.json` of `bartleby benchmark`.
    #[arg(long)]
    pub ranking: PathBuf,
    /// Plan for the best N models that ran.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub top: u64,
    /// Training data (file, folder of split files or hub dataset id); repeat to mix sources.
    #[arg(long, required = true)]
    pub data: Vec<String>,
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Rows sampled (seeded) to measure lengths.
    #[arg(long, default_value_t = 2000)]
    pub sample: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Memory of the device that will train, e.g. 16GB (a T4), 24GB, 80GB.
    #[arg(long, default_value = "16GB")]
    pub device_memory: String,
    /// The device computes bf16 (A100, H100, recent CPUs). Without it (a T4): f16.
    #[arg(long)]
    pub device_bf16: bool,
    /// Sustained half-precision TFLOPS of the device for the step-time estimate (a T4: ~20).
    #[arg(long, default_value_t = 20.0)]
    pub device_tflops: f64,
    /// Output folder.
    #[arg(long, default_value = "plan")]
    pub out: PathBuf,
}

const PLAN_HELP: &str = "\
Writes in --out: recommendations.json, finetune_plan.md and NN-NAME.toml per model, a
`bartleby train --config` file (flags such as --name still apply).
Method: LoRA with the frozen base in half precision (f16, or bf16 with --device-bf16) when it
fits in 90% of --device-memory at some micro-batch (16, 8, 4, 2, 1), else QLoRA with a q8, then
q4 base; gradient accumulation keeps the effective batch at 16. Lengths: the p95 of the sampled
rows' token counts (with the model's tokenizer and prefix), rounded up to a multiple of 8 and
capped by the model's window.
";

/// Effective batch (micro-batch × accumulation) the plan keeps.
const EFFECTIVE_BATCH: usize = 16;
/// Share of the device memory a plan may use.
const MEMORY_SHARE: f64 = 0.9;

/// One model's plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recommendation {
    pub rank: usize,
    pub model_id: String,
    pub architecture: String,
    pub parameters: u64,
    pub benchmark_rouge_l: Option<f64>,
    pub method: String,
    pub base_quant: String,
    pub precision: String,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    pub learning_rate: f64,
    pub epochs: usize,
    pub micro_batch: usize,
    pub grad_accum: usize,
    pub max_source_tokens: usize,
    pub max_target_tokens: usize,
    pub source_tokens_p50: f64,
    pub source_tokens_p95: f64,
    pub target_tokens_p95: f64,
    /// Of the sampled rows, how many are cut by the max lengths.
    pub truncated_sources: usize,
    pub truncated_targets: usize,
    pub sampled_rows: usize,
    pub estimated_peak_memory_gb: f64,
    pub estimated_step_seconds: f64,
    pub device_memory_gb: f64,
    pub reasons: Vec<String>,
    pub config_file: String,
}

pub fn run(args: PlanArgs) -> Result<()> {
    let device_bytes = parse_memory(&args.device_memory)?;
    if !(args.device_tflops.is_finite() && args.device_tflops > 0.0) {
        bail!(
            "--device-tflops must be a positive number, got {}",
            args.device_tflops
        );
    }
    let path = args.ranking.display().to_string();
    let bytes = std::fs::read(&args.ranking).with_context(|| format!("{path}: cannot read"))?;
    let ranking: Vec<RankingRow> =
        rows_from_json(&bytes, &path, "a final_ranking.json").map_err(anyhow::Error::msg)?;
    let mut winners: Vec<&RankingRow> = ranking.iter().filter(|r| r.rank.is_some()).collect();
    winners.sort_by_key(|r| r.rank);
    winners.truncate(args.top as usize);
    if winners.is_empty() {
        bail!("{path}: no model in the ranking ran (every row has an error)");
    }
    let mut rows = Vec::new();
    for source in &args.data {
        rows.extend(dataset::load_rows(source, &args.split)?);
    }
    let rows = dataset::select(rows, Some(args.sample), Some(args.seed));
    if rows.is_empty() {
        bail!("--data: no rows in split {}", args.split);
    }
    let _out = prepare_out_dir(&args.out)?;

    let mut recommendations = Vec::new();
    let mut files = Vec::new();
    for (i, w) in winners.iter().enumerate() {
        let rec = plan_one(i, w, &rows, &args, device_bytes)
            .with_context(|| format!("planning {}", w.model_id))?;
        let config = train_config(&rec, &args);
        files.push((
            rec.config_file.clone(),
            toml::to_string(&config)
                .context("serializing a train config")?
                .into_bytes(),
        ));
        recommendations.push(rec);
    }
    files.push((
        "recommendations.json".into(),
        (serde_json::to_string_pretty(&recommendations)? + "\n").into_bytes(),
    ));
    files.push((
        "finetune_plan.md".into(),
        plan_md(&recommendations, &args, &path).into_bytes(),
    ));
    for p in write_atomically(&args.out, files)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// `16GB`, `16G`, `16GiB`, `16384MB` → bytes.
pub fn parse_memory(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let scale = match unit.as_str() {
        "GB" | "G" | "GIB" => (1u64 << 30) as f64,
        "MB" | "M" | "MIB" => (1u64 << 20) as f64,
        "TB" | "T" | "TIB" => (1u64 << 40) as f64,
        _ => bail!("--device-memory {text:?}: expected a size such as 16GB or 24576MB"),
    };
    match num.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok((n * scale) as u64),
        _ => bail!("--device-memory {text:?}: expected a size such as 16GB or 24576MB"),
    }
}

/// The shape numbers the estimates need.
struct Shape {
    parameters: f64,
    d_model: f64,
    d_ff: f64,
    heads: f64,
    encoder_layers: f64,
    decoder_layers: f64,
    vocab: f64,
}

fn shape(config: &ModelConfig) -> Shape {
    match config {
        ModelConfig::Bart(c) => Shape {
            parameters: c.num_parameters() as f64,
            d_model: c.d_model as f64,
            d_ff: c.encoder_ffn_dim.max(c.decoder_ffn_dim) as f64,
            heads: c.encoder_attention_heads.max(c.decoder_attention_heads) as f64,
            encoder_layers: c.encoder_layers as f64,
            decoder_layers: c.decoder_layers as f64,
            vocab: c.vocab_size as f64,
        },
        ModelConfig::T5(c) => Shape {
            parameters: c.num_parameters() as f64,
            d_model: c.d_model as f64,
            d_ff: c.d_ff as f64 * if c.gated { 2.0 } else { 1.0 },
            heads: c.num_heads as f64,
            encoder_layers: c.num_layers as f64,
            decoder_layers: c.num_decoder_layers as f64,
            vocab: c.vocab_size as f64,
        },
        // Decoder-only: the prompt and the summary run through one stack (counted as the
        // "decoder" over source + target tokens by the estimate's cross term).
        ModelConfig::Llama(c) => Shape {
            parameters: c.num_parameters() as f64,
            d_model: c.hidden_size as f64,
            d_ff: c.intermediate_size as f64 * 1.5,
            heads: c.num_attention_heads as f64,
            encoder_layers: 0.0,
            decoder_layers: c.num_hidden_layers as f64,
            vocab: c.vocab_size as f64,
        },
    }
}

/// Bytes a training step holds: weights at `weight_bytes` each, LoRA factors with gradients
/// and AdamW moments (16 bytes each), the kept activations (f32) of `micro` sequences, and a
/// 20% margin for the allocator and workspace.
fn estimate_bytes(
    s: &Shape,
    weight_bytes: f64,
    lora: f64,
    micro: usize,
    src: usize,
    tgt: usize,
) -> f64 {
    let (m, src, tgt) = (micro as f64, src as f64, tgt as f64);
    let per_token_layer = 4.0 * (10.0 * s.d_model + 2.0 * s.d_ff);
    let encoder = s.encoder_layers * src * (per_token_layer + 4.0 * 2.0 * s.heads * src);
    let decoder = s.decoder_layers * tgt * (per_token_layer + 4.0 * 2.0 * s.heads * (tgt + src));
    let logits = 3.0 * 4.0 * tgt * s.vocab;
    let activations = m * (encoder + decoder + logits);
    1.2 * (s.parameters * weight_bytes + 16.0 * lora + activations)
}

fn round_up(x: f64, to: usize) -> usize {
    ((x / to as f64).ceil() as usize * to).max(to)
}

fn plan_one(
    i: usize,
    w: &RankingRow,
    rows: &[dataset::Row],
    args: &PlanArgs,
    device_bytes: u64,
) -> Result<Recommendation> {
    let files = model_files::resolve(&w.model_id)?;
    let config_bytes = std::fs::read(&files.config)
        .with_context(|| format!("{}: cannot read", files.config.display()))?;
    let config = ModelConfig::from_json(&config_bytes, &files.config.display().to_string())?;
    let tokenizer = model_files::load_tokenizer(&files)?;
    let prefix = config.summarization_prefix().unwrap_or_default();
    let window = config
        .max_position_embeddings()
        .or(tokenizer.model_max_length())
        .unwrap_or(512);
    let mut source = Vec::with_capacity(rows.len());
    let mut target = Vec::with_capacity(rows.len());
    for r in rows {
        source.push(
            tokenizer
                .encode(&format!("{prefix}{}", r.dialogue), None)?
                .len() as f64,
        );
        target.push(tokenizer.encode(&r.summary, None)?.len() as f64);
    }
    let (src_p95, tgt_p95) = (percentile(&source, 95.0), percentile(&target, 95.0));
    let max_source = round_up(src_p95, 8).min(window);
    let max_target = round_up(tgt_p95, 8).min(window);
    let s = shape(&config);
    let targets = config.lora_default_targets();
    let (r, alpha) = (16usize, 32.0);
    // LoRA factors: r × (d_in + d_out) per adapted projection (q and v: d_model → inner).
    let adapted = 2.0 * (s.encoder_layers + 2.0 * s.decoder_layers);
    let lora = adapted * r as f64 * 2.0 * s.d_model;
    let half = if args.device_bf16 {
        Precision::Bf16
    } else {
        Precision::F16
    };
    let options = [
        (BaseQuant::None, half, 2.0),
        (BaseQuant::Q8, Precision::F32, 1.0 + 4.0 / 32.0),
        (BaseQuant::Q4, Precision::F32, 0.5 + 4.0 / 32.0),
    ];
    let budget = MEMORY_SHARE * device_bytes as f64;
    let mut choice = None;
    'search: for (quant, precision, bytes) in options {
        for micro in [16, 8, 4, 2, 1] {
            let need = estimate_bytes(&s, bytes, lora, micro, max_source, max_target);
            if need <= budget {
                choice = Some((quant, precision, micro, need));
                break 'search;
            }
        }
    }
    let Some((quant, precision, micro, need)) = choice else {
        bail!(
            "even QLoRA with a q4 base and micro-batch 1 needs {:.1} GB at {max_source}/{max_target} \
             tokens, over 90% of --device-memory {}",
            estimate_bytes(&s, 0.625, lora, 1, max_source, max_target) / 1e9,
            args.device_memory
        );
    };
    let grad_accum = (EFFECTIVE_BATCH / micro).max(1);
    let tokens = (micro * grad_accum * (max_source + max_target)) as f64;
    let step_seconds = 4.0 * s.parameters * tokens / (args.device_tflops * 1e12);
    let method = if quant == BaseQuant::None {
        "lora"
    } else {
        "qlora"
    };
    let quant_name = match quant {
        BaseQuant::None => "none",
        BaseQuant::Q8 => "q8",
        BaseQuant::Q4 => "q4",
    };
    let lr = match config {
        ModelConfig::Bart(_) => 2e-4,
        ModelConfig::T5(_) => 3e-4,
        ModelConfig::Llama(_) => 2e-4,
    };
    let truncated_sources = source.iter().filter(|&&n| n > max_source as f64).count();
    let truncated_targets = target.iter().filter(|&&n| n > max_target as f64).count();
    let gb = |b: f64| (b / (1u64 << 30) as f64 * 100.0).round() / 100.0;
    let mut reasons = vec![
        format!(
            "{} parameters: {} needs an estimated {:.2} GB at micro-batch {micro} ({:.0}% of {})",
            millions(s.parameters),
            match quant {
                BaseQuant::None => format!("LoRA with the base in {}", precision.name()),
                _ => format!("QLoRA with a {quant_name} base"),
            },
            gb(need),
            100.0 * need / device_bytes as f64,
            args.device_memory
        ),
        format!(
            "lengths: p95 {src_p95:.0} source / {tgt_p95:.0} target tokens → max {max_source} / \
             {max_target} (window {window}); {truncated_sources} of {} sampled sources and \
             {truncated_targets} targets get cut",
            rows.len()
        ),
        format!(
            "effective batch {EFFECTIVE_BATCH}: micro-batch {micro} × {grad_accum} accumulated"
        ),
    ];
    if !args.device_bf16 && quant == BaseQuant::None {
        reasons.push("f16, not bf16: the device has no bf16 (a T4); loss scaling guards it".into());
    }
    if quant != BaseQuant::None {
        reasons.push("LoRA with a half-precision base does not fit: the base is quantized".into());
    }
    Ok(Recommendation {
        rank: w.rank.unwrap_or(i + 1),
        model_id: w.model_id.clone(),
        architecture: config.architecture().into(),
        parameters: s.parameters as u64,
        benchmark_rouge_l: w.rouge_l,
        method: method.into(),
        base_quant: quant_name.into(),
        precision: precision.name().into(),
        lora_r: r,
        lora_alpha: alpha,
        lora_dropout: 0.05,
        target_modules: targets,
        learning_rate: lr,
        epochs: 3,
        micro_batch: micro,
        grad_accum,
        max_source_tokens: max_source,
        max_target_tokens: max_target,
        source_tokens_p50: percentile(&source, 50.0),
        source_tokens_p95: src_p95,
        target_tokens_p95: tgt_p95,
        truncated_sources,
        truncated_targets,
        sampled_rows: rows.len(),
        estimated_peak_memory_gb: gb(need),
        estimated_step_seconds: (step_seconds * 1000.0).round() / 1000.0,
        device_memory_gb: gb(device_bytes as f64),
        reasons,
        config_file: format!("{:02}-{}.toml", i + 1, slug(&w.model)),
    })
}

/// `406 M`, `3.8 B`, `0.12 M`.
fn millions(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.1} B", n / 1e9),
        n if n >= 1e7 => format!("{:.0} M", n / 1e6),
        n => format!("{:.2} M", n / 1e6),
    }
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `bartleby train --config` file of a recommendation.
fn train_config(rec: &Recommendation, args: &PlanArgs) -> TrainConfig {
    TrainConfig {
        model: rec.model_id.clone(),
        data: args.data.clone(),
        train_split: args.split.clone(),
        max_source_tokens: rec.max_source_tokens,
        max_target_tokens: rec.max_target_tokens,
        method: Method::Lora,
        lora_r: rec.lora_r,
        lora_alpha: rec.lora_alpha,
        lora_dropout: rec.lora_dropout,
        target_modules: rec.target_modules.clone(),
        base_quant: match rec.base_quant.as_str() {
            "q8" => BaseQuant::Q8,
            "q4" => BaseQuant::Q4,
            _ => BaseQuant::None,
        },
        micro_batch: rec.micro_batch,
        grad_accum: rec.grad_accum,
        lr: rec.learning_rate,
        epochs: rec.epochs,
        precision: match rec.precision.as_str() {
            "f16" => Precision::F16,
            "bf16" => Precision::Bf16,
            _ => Precision::F32,
        },
        ..TrainConfig::default()
    }
}

fn plan_md(recs: &[Recommendation], args: &PlanArgs, ranking: &str) -> String {
    let mut md = format!(
        "# Fine-tuning plan\n\nFrom `{ranking}` (the best {} that ran), for a device with {} \
         ({}; ~{} TFLOPS), training data {} (split `{}`, {} rows sampled for lengths).\n\n\
         | rank | model | method | precision | r / alpha | micro × accum | max tokens | est. memory | est. step |\n\
         |---:|---|---|---|---|---|---|---:|---:|\n",
        recs.len(),
        args.device_memory,
        if args.device_bf16 { "bf16" } else { "no bf16" },
        args.device_tflops,
        args.data.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", "),
        args.split,
        recs.first().map_or(0, |r| r.sampled_rows),
    );
    for r in recs {
        md += &format!(
            "| {} | `{}` | {}{} | {} | {} / {} | {} × {} | {} / {} | {:.2} GB | {:.2} s |\n",
            r.rank,
            r.model_id,
            r.method,
            if r.base_quant == "none" {
                String::new()
            } else {
                format!(" ({} base)", r.base_quant)
            },
            r.precision,
            r.lora_r,
            r.lora_alpha,
            r.micro_batch,
            r.grad_accum,
            r.max_source_tokens,
            r.max_target_tokens,
            r.estimated_peak_memory_gb,
            r.estimated_step_seconds
        );
    }
    for r in recs {
        let name = r.config_file.trim_end_matches(".toml");
        md += &format!(
            "\n## {}. `{}` ({}, {} parameters)\n\n",
            r.rank,
            r.model_id,
            r.architecture,
            millions(r.parameters as f64)
        );
        if let Some(rl) = r.benchmark_rouge_l {
            md += &format!("Benchmark ROUGE-L {rl:.2}. ");
        }
        md += &format!(
            "LoRA on {} (PEFT's default for {}), lr {}, {} epochs.\n\n",
            r.target_modules.join(", "),
            r.architecture,
            r.learning_rate,
            r.epochs
        );
        for reason in &r.reasons {
            md += &format!("- {reason}\n");
        }
        md += &format!(
            "\n```sh\nbartleby train --config {out}/{file} --name {name}\n\
             bartleby eval --model {model} --adapter runs/{name}/adapter --data {data} --limit 200 --seed 42 --name {name} --out metrics\n\
             bartleby merge --model {model} --adapter runs/{name}/adapter --output merged/{name}\n\
             bartleby compare metrics/{name}_metrics.json ...   # against the base model's eval\n```\n",
            out = args.out.display(),
            file = r.config_file,
            model = r.model_id,
            data = args.data.first().map(String::as_str).unwrap_or(""),
        );
    }
    md +=
        "\nEstimates are arithmetic on the model's shape (weights, LoRA state, the activations a \
           step keeps, a 20% margin) and the device's stated speed, not measurements; see \
           `bartleby plan --help` and docs/results.md for how they compare with `train`'s \
           measured peak memory.\n";
    md
}
