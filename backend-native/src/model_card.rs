//! The model card (`bartleby card`, and `bartleby push` for a folder without README.md): as the
//! Hugging Face Hub reads it — YAML front matter
//! (`license`, `base_model`, `library_name`, `pipeline_tag`, `tags`, `datasets`, `language`,
//! `model-index` with one result per `NAME_metrics.json`) and prose filled only from what the
//! files say (config, generation settings, adapter, training run, evaluations).

use crate::train_config::TrainConfig;
use anyhow::{Context, Result};
use bartleby_core::metrics::report::{self, category_name, EvalReport, Interval};
use bartleby_core::models::ModelConfig;
use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct CardSource {
    /// The model directory (a checkpoint, a merged model, or the base of --adapter).
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA adapter directory: the card describes the adapter (library_name: peft).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// `NAME_metrics.json` files of `bartleby eval`: one model-index result each.
    #[arg(long = "metrics")]
    pub metrics: Vec<PathBuf>,
    /// The training run (`runs/NAME` of `bartleby train`): data, settings, steps, losses.
    #[arg(long)]
    pub train_run: Option<PathBuf>,
    /// The model's name in model-index (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// License identifier (default: the model directory's README.md front matter, else the
    /// base model's as the training run names it, else "other").
    #[arg(long)]
    pub license: Option<String>,
    /// The base model's hub id (default: the adapter config's base_model_name_or_path, else the
    /// training run's --model).
    #[arg(long)]
    pub base_model: Option<String>,
    /// The Hub repository the card goes to (NAMESPACE/NAME), used in the usage examples
    /// (default: the local directory).
    #[arg(long)]
    pub repo: Option<String>,
}

struct Sources {
    config: ModelConfig,
    generation: Option<Value>,
    adapter: Option<Value>,
    train: Option<(TrainConfig, Vec<Value>)>,
    evals: Vec<(PathBuf, EvalReport)>,
    readme_license: Option<String>,
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: invalid JSON", path.display()))
}

fn gather(args: &CardSource) -> Result<Sources> {
    // The card describes a model that loads: config, weights and tokenizer checked together
    // (memory-mapped, on the CPU), the adapter applied when given.
    let model = args.model.to_str().context("--model: not valid UTF-8")?;
    let adapter_spec = args
        .adapter
        .as_deref()
        .map(|a| a.to_str().unwrap_or_default());
    let summarizer = crate::model_files::load_model(
        model,
        adapter_spec,
        &burn::tensor::Device::flex(),
        Default::default(),
    )?;
    let config: ModelConfig = summarizer.config.clone();
    drop(summarizer);
    let gen_path = args.model.join("generation_config.json");
    let generation = gen_path
        .exists()
        .then(|| read_json(&gen_path))
        .transpose()?;
    let adapter = match &args.adapter {
        Some(dir) => Some(read_json(&dir.join("adapter_config.json"))?),
        None => None,
    };
    let train = match &args.train_run {
        Some(run) => {
            let cfg = TrainConfig::read_run(run)?;
            let metrics = run.join("metrics.jsonl");
            let lines = std::fs::read_to_string(&metrics)
                .with_context(|| format!("{}: cannot read", metrics.display()))?
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_str(l).with_context(|| {
                        format!("{} line {}: invalid JSON", metrics.display(), i + 1)
                    })
                })
                .collect::<Result<Vec<Value>>>()?;
            Some((cfg, lines))
        }
        None => None,
    };
    let mut evals = Vec::new();
    for path in &args.metrics {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| format!("{file}: cannot read"))?;
        let doc: EvalReport =
            report::from_json(&bytes, &file, "a NAME_metrics.json of bartleby eval")
                .map_err(anyhow::Error::msg)?;
        evals.push((path.clone(), doc));
    }
    let readme_license = std::fs::read_to_string(args.model.join("README.md"))
        .ok()
        .and_then(|t| front_matter_value(&t, "license"));
    Ok(Sources {
        config,
        generation,
        adapter,
        train,
        evals,
        readme_license,
    })
}

/// `key: value` of a README's YAML front matter (plain scalars only).
fn front_matter_value(text: &str, key: &str) -> Option<String> {
    let body = text.strip_prefix("---\n")?;
    let end = body.find("\n---")?;
    body[..end].lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// A dataset's name from what `--data` said: a hub id as is, a local path's last component.
fn dataset_name(data: &str) -> String {
    let p = Path::new(data.trim_end_matches('/'));
    if !data.starts_with('.')
        && !data.starts_with('/')
        && data.matches('/').count() == 1
        && !p.exists()
    {
        return data.to_string();
    }
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    // A split file (…/dialogsum/validation.jsonl) is named by its folder.
    if ["train", "validation", "test"].contains(&stem.as_str()) {
        if let Some(parent) = p.parent().and_then(|d| d.file_name()) {
            return parent.to_string_lossy().to_string();
        }
    }
    stem
}

/// A YAML double-quoted string (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

fn interval(i: &Interval) -> String {
    format!("{} [{}, {}]", pct(i.mid), pct(i.low), pct(i.high))
}

const ROUGE: [(&str, &str); 4] = [
    ("rouge1", "ROUGE-1"),
    ("rouge2", "ROUGE-2"),
    ("rougeL", "ROUGE-L"),
    ("rougeLsum", "ROUGE-Lsum"),
];

fn rouge_of<'a>(e: &'a EvalReport, key: &str) -> Option<&'a Interval> {
    match key {
        "rouge1" => e.corpus.rouge1.as_ref(),
        "rouge2" => e.corpus.rouge2.as_ref(),
        "rougeL" => e.corpus.rougeL.as_ref(),
        _ => e.corpus.rougeLsum.as_ref(),
    }
}

/// The card's text: the model (with the adapter) is loaded first, so no card is written for a
/// model that does not load.
pub fn build(args: &CardSource) -> Result<String> {
    let s = gather(args)?;
    Ok(render(args, &s))
}

fn render(args: &CardSource, s: &Sources) -> String {
    let dir_name = |p: &Path| {
        std::fs::canonicalize(p)
            .ok()
            .and_then(|c| c.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_else(|| p.display().to_string())
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| dir_name(args.adapter.as_deref().unwrap_or(&args.model)));
    let base_model = args
        .base_model
        .clone()
        .or_else(|| {
            s.adapter
                .as_ref()
                .and_then(|a| a["base_model_name_or_path"].as_str().map(str::to_string))
        })
        .or_else(|| s.train.as_ref().map(|(c, _)| c.model.clone()))
        .filter(|m| !m.is_empty());
    let license = args
        .license
        .clone()
        .or_else(|| s.readme_license.clone())
        .unwrap_or_else(|| "other".into());
    let arch = match s.config.model_type() {
        "bart" => "BART (BartForConditionalGeneration)",
        "t5" => "T5 (T5ForConditionalGeneration)",
        other => other,
    }
    .to_string();
    let n = s.config.num_parameters();
    let params = if n >= 1_000_000 {
        format!("{:.1} M", n as f64 / 1e6)
    } else {
        n.to_string()
    };
    let mut datasets: Vec<String> = s.evals.iter().map(|(_, e)| dataset_name(&e.data)).collect();
    if let Some((cfg, _)) = &s.train {
        datasets.extend(cfg.data.iter().map(|d| dataset_name(d)));
    }
    datasets.sort();
    datasets.dedup();

    let mut y = String::from("---\n");
    let _ = writeln!(y, "license: {}", q(&license));
    if let Some(b) = &base_model {
        let _ = writeln!(y, "base_model: {}", q(b));
    }
    let lib = if s.adapter.is_some() {
        "peft"
    } else {
        "transformers"
    };
    let _ = writeln!(y, "library_name: {lib}\npipeline_tag: summarization\ntags:");
    let mut tags = vec![
        "summarization",
        "dialogue-summarization",
        "bartleby",
        s.config.model_type(),
    ];
    if s.adapter.is_some() {
        tags.push("lora");
    }
    for t in tags {
        let _ = writeln!(y, "- {}", q(t));
    }
    if !datasets.is_empty() {
        y += "datasets:\n";
        for d in &datasets {
            let _ = writeln!(y, "- {}", q(d));
        }
    }
    y += "language:\n- en\n";
    if !s.evals.is_empty() {
        let _ = writeln!(y, "model-index:\n- name: {}\n  results:", q(&name));
        for (_, e) in &s.evals {
            let d = dataset_name(&e.data);
            let _ = writeln!(
                y,
                "  - task:\n      type: summarization\n      name: Summarization\n    dataset:\n      name: {}\n      type: {}\n      split: {}\n    metrics:",
                q(&d),
                q(&d),
                q(&e.split)
            );
            for (key, label) in ROUGE {
                if let Some(i) = rouge_of(e, key) {
                    let _ = writeln!(
                        y,
                        "    - type: {key}\n      name: {label}\n      value: {}",
                        pct(i.mid)
                    );
                }
            }
            if let Some(b) = e.corpus.bleu {
                let _ = writeln!(y, "    - type: bleu\n      name: BLEU\n      value: {b:.2}");
            }
            if let Some(b) = &e.corpus.bertscore {
                let _ = writeln!(
                    y,
                    "    - type: bertscore\n      name: BERTScore F1\n      value: {}",
                    pct(b.f1)
                );
            }
        }
    }
    y += "---\n\n";

    // Prose.
    let _ = writeln!(y, "# {name}\n");
    let what = match (&s.adapter, &base_model) {
        (Some(a), Some(b)) => format!(
            "A LoRA adapter (r = {}, α = {}) that makes `{b}` — {arch}, {params} parameters — summarize dialogues.",
            a["r"], a["lora_alpha"]
        ),
        (None, Some(b)) => format!("{arch}, {params} parameters, trained from `{b}` to summarize dialogues."),
        _ => format!("{arch}, {params} parameters, a dialogue summarizer."),
    };
    let _ = writeln!(
        y,
        "{what} Card written by `bartleby card` from the files named below.\n"
    );

    y += "## Model\n\n";
    let _ = writeln!(
        y,
        "- Architecture: {arch}, {params} parameters (`model_type` {}).",
        s.config.model_type()
    );
    if let Some(a) = &s.adapter {
        let _ = writeln!(
            y,
            "- Adapter: PEFT LoRA, r = {}, lora_alpha = {}, lora_dropout = {}, target_modules = {}, bias = {}.",
            a["r"], a["lora_alpha"], a["lora_dropout"], a["target_modules"], a["bias"]
        );
    }
    y += "\n";

    if let Some((cfg, lines)) = &s.train {
        y += "## Training\n\n";
        let _ = writeln!(
            y,
            "- Data: {} (split `{}`), {} training and {} validation dialogues, seed {}.",
            cfg.data
                .iter()
                .map(|d| format!("`{}`", dataset_name(d)))
                .collect::<Vec<_>>()
                .join(", "),
            cfg.train_split,
            cfg.train_size,
            cfg.val_size,
            cfg.seed
        );
        let _ = writeln!(y, "- Method: {}; learning rate {} ({} warm-up steps, linear decay), weight decay {}, micro-batch {} × {} accumulation, gradient clipping {}, {} precision.",
            format!("{:?}", cfg.method).to_lowercase(), cfg.lr, cfg.warmup_steps, cfg.weight_decay, cfg.micro_batch, cfg.grad_accum, cfg.max_grad_norm, format!("{:?}", cfg.precision).to_lowercase());
        let _ = writeln!(
            y,
            "- Lengths: sources cut at {} tokens, summaries at {}.",
            cfg.max_source_tokens, cfg.max_target_tokens
        );
        let steps: Vec<&Value> = lines.iter().filter(|l| l.get("loss").is_some()).collect();
        if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
            let _ = writeln!(
                y,
                "- Steps: {} (epoch {:.2}); training loss {:.4} at step {} → {:.4} at step {}.",
                last["step"],
                last["epoch"].as_f64().unwrap_or(0.0),
                first["loss"].as_f64().unwrap_or(f64::NAN),
                first["step"],
                last["loss"].as_f64().unwrap_or(f64::NAN),
                last["step"]
            );
        }
        for v in lines.iter().filter(|l| l.get("val_loss").is_some()) {
            let _ = writeln!(
                y,
                "- Validation at step {}: loss {:.4}, ROUGE-1/2/L {} / {} / {}.",
                v["step"],
                v["val_loss"].as_f64().unwrap_or(f64::NAN),
                pct(v["rouge1"].as_f64().unwrap_or(0.0)),
                pct(v["rouge2"].as_f64().unwrap_or(0.0)),
                pct(v["rougeL"].as_f64().unwrap_or(0.0))
            );
        }
        y += "\n";
    }

    if let Some(g) = &s.generation {
        y += "## Generation settings\n\n`generation_config.json`: ";
        let keys = [
            "num_beams",
            "max_length",
            "min_length",
            "max_new_tokens",
            "length_penalty",
            "no_repeat_ngram_size",
            "early_stopping",
        ];
        let set: Vec<String> = keys
            .iter()
            .filter(|k| !g[**k].is_null())
            .map(|k| format!("`{k}` = {}", g[*k]))
            .collect();
        y += &set.join(", ");
        y += ".\n\n";
    }

    if !s.evals.is_empty() {
        y += "## Evaluation\n\n`bartleby eval` (ROUGE as rouge_score with its bootstrap: mid F1 × 100 [95% interval]; BLEU as sacrebleu):\n\n";
        y += "| data | split | n | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | BLEU |\n|---|---|---:|---|---|---|---|---:|\n";
        for (_, e) in &s.evals {
            let cell = |k: &str| rouge_of(e, k).map(interval).unwrap_or_else(|| "—".into());
            let _ = writeln!(
                y,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                dataset_name(&e.data),
                e.split,
                e.n,
                cell("rouge1"),
                cell("rouge2"),
                cell("rougeL"),
                cell("rougeLsum"),
                e.corpus.bleu.map_or("—".into(), |b| format!("{b:.2}"))
            );
        }
        for (path, e) in &s.evals {
            if let Some(f) = &e.failures {
                let cats: Vec<String> = f
                    .counts
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(c, n)| {
                        format!(
                            "{} {} ({:.0}%)",
                            category_name(*c),
                            n,
                            100.0 * *n as f64 / f.total.max(1) as f64
                        )
                    })
                    .collect();
                let _ = writeln!(
                    y,
                    "\nFailure analysis of `{}` ({} of {} flagged): {}.",
                    path.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default(),
                    f.flagged,
                    f.total,
                    if cats.is_empty() {
                        "none".to_string()
                    } else {
                        cats.join(", ")
                    }
                );
            }
        }
        y += "\n";
    }

    y += "## How to use\n\n";
    let id = args.repo.clone().unwrap_or_else(|| {
        args.adapter
            .as_deref()
            .unwrap_or(&args.model)
            .display()
            .to_string()
    });
    match &s.adapter {
        Some(_) => {
            let base = base_model
                .clone()
                .unwrap_or_else(|| "the base model".into());
            let _ = writeln!(y, "With Bartleby (CLI, server, web app):\n\n```sh\nbartleby summarize --model {base} --adapter {id} --input dialogues.jsonl\n```\n\nWith transformers + PEFT:\n\n```python\nfrom transformers import AutoModelForSeq2SeqLM, AutoTokenizer\nfrom peft import PeftModel\nmodel = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(\"{base}\"), \"{id}\")\n```\n");
        }
        None => {
            let _ = writeln!(y, "With Bartleby:\n\n```sh\nbartleby summarize --model {id} --input dialogues.jsonl\nbartleby export --model {id} --quant q8 --output bundle/   # the in-browser app\n```\n\nWith transformers:\n\n```python\nfrom transformers import pipeline\nsummarizer = pipeline(\"summarization\", model=\"{id}\")\n```\n");
        }
    }

    y += "## Limitations\n\n";
    let window = s
        .config
        .max_position_embeddings()
        .map_or_else(|| "its tokenizer's".to_string(), |n| n.to_string());
    let _ = writeln!(y, "- English dialogues; inputs longer than the {window}-token window are cut unless summarized with `--long chunk`.");
    if !s.evals.is_empty() {
        let rows: Vec<String> = s
            .evals
            .iter()
            .map(|(_, e)| format!("{} {} rows of {}", e.n, e.split, dataset_name(&e.data)))
            .collect();
        let _ = writeln!(y, "- The scores above come from {} only; summaries can contain names or facts not in the dialogue (see the failure analysis).", rows.join(", "));
    }
    let _ = writeln!(
        y,
        "- License: `{license}`; the training data's own licenses apply to its use."
    );
    let mut files = vec![args.model.join("config.json").display().to_string()];
    if let Some(a) = &args.adapter {
        files.push(a.join("adapter_config.json").display().to_string());
    }
    if let Some(r) = &args.train_run {
        files.push(r.join("config.toml").display().to_string());
        files.push(r.join("metrics.jsonl").display().to_string());
    }
    files.extend(args.metrics.iter().map(|m| m.display().to_string()));
    let _ = writeln!(
        y,
        "\n<sub>Sources: {}.</sub>",
        files
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    y
}
