//! `bartleby export`: a web bundle (quantized weights + config + tokenizer + manifest.json) for
//! the browser app; `bartleby summarize --model BUNDLE_DIR` reads it too.

use crate::checkpoint_files::{config_json, generation_config_json, DtypeArg};
use crate::device::{self, DeviceArg};
use crate::generation_args::GenerationArgs;
use crate::input::check_inputs;
use crate::model_files;
use crate::output;
use anyhow::{bail, Context, Result};
use bartleby_core::checkpoint::adapter;
use bartleby_core::checkpoint::bundle::{self, Check, FileEntry, Manifest, Quant, Source};
use bartleby_core::checkpoint::{Checkpoint, LoadOptions};
use bartleby_core::metrics::rouge;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model directory or hub id.
    #[arg(long)]
    pub model: String,
    /// LoRA adapter (PEFT format) merged into the model before export.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Weight storage: f32/f16 (plain transformers checkpoints) or q8/q4 (burn's symmetric
    /// per-block quantization of every projection; embeddings f16).
    #[arg(long, value_enum, default_value_t = QuantArg::Q8)]
    pub quant: QuantArg,
    /// Input features per quantization scale (q8/q4); must divide every projection's input width.
    #[arg(long, default_value_t = 32)]
    pub block_size: usize,
    /// Output directory (created atomically; must not exist unless --force).
    #[arg(long)]
    pub output: PathBuf,
    /// Generation settings written into generation_config.json (default: the model's
    /// summarization settings).
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Inputs for the quality check against the f32 model (.jsonl/.csv/text, like `summarize
    /// --input`); default: built-in dialogues.
    #[arg(long)]
    pub check_input: Option<PathBuf>,
    /// How many inputs the quality check summarizes (0: no check).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=10000))]
    pub check_n: u64,
    /// Fail (and write nothing) when the token agreement with the f32 model is below this.
    #[arg(long, value_parser = parse_fraction, allow_hyphen_values = true)]
    pub min_token_agreement: Option<f64>,
    /// Replace --output if it exists.
    #[arg(long)]
    pub force: bool,
    /// `bundle` (a directory: transformers files + manifest, for the web app and `summarize`) or
    /// `gguf` (one file for llama.cpp / Ollama / LM Studio, as llama.cpp's convert_hf_to_gguf.py
    /// writes it; `--quant f32|f16|q8|q4|q4_k_m` = GGUF f32 / f16 / q8_0 / q4_0 / llama-quantize's
    /// Q4_K_M; Llama, Phi-3 and Qwen2 models).
    #[arg(long, value_enum, default_value_t = FormatArg::Bundle)]
    pub format: FormatArg,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Bundle,
    Gguf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QuantArg {
    F32,
    F16,
    Q8,
    Q4,
    /// GGUF only: llama-quantize's Q4_K_M mix.
    #[value(name = "q4_k_m")]
    Q4KM,
}

impl QuantArg {
    fn quant(self) -> Result<Quant> {
        Ok(match self {
            Self::F32 => Quant::F32,
            Self::F16 => Quant::F16,
            Self::Q8 => Quant::Q8,
            Self::Q4 => Quant::Q4,
            Self::Q4KM => bail!(
                "--quant q4_k_m is a GGUF type (llama-quantize's Q4_K_M): use it with --format gguf; bundles take f32, f16, q8 or q4"
            ),
        })
    }
}

pub fn run(args: ExportArgs) -> Result<()> {
    if args.format == FormatArg::Gguf {
        return run_gguf(&args);
    }
    let quant = args.quant.quant()?;
    output::check_out_dir(&args.output, args.force)?;
    let target = device::init_export(args.device)?;
    let device = target.device.clone();
    let files = model_files::resolve(&args.model)?;
    let mut summarizer = model_files::load(&files, &device, target.options)
        .with_context(|| format!("loading {}", args.model))?;
    if let Some(adapter) = &args.adapter {
        let adapter_files = model_files::resolve_adapter(adapter)?;
        model_files::apply_adapter(&mut summarizer, &adapter_files)
            .with_context(|| format!("applying adapter {adapter} to {}", args.model))?;
        adapter::merge(&mut summarizer.model)?;
    }
    let gen = args
        .generation
        .apply(&summarizer.summarization_generation()?.0)?;
    let max_input = summarizer.max_input_tokens();
    summarizer.validate(&gen, max_input)?;

    let weights = bartleby_core::checkpoint::quantized::encode_weights(
        &summarizer.model,
        quant,
        args.block_size,
    )
    .with_context(|| format!("exporting {} as {}", args.model, quant.name()))?;
    let (parameters, requires) = bundle::model_stats(&summarizer.model)?;

    // The check runs on the bundle's weights as written and reloaded: computed in f32 (as on a
    // GPU) and, for q8/q4 on the CPU, also in int8 (as `summarize --device cpu` and the
    // browser's CPU path compute them).
    let (check, check_int8) = if args.check_n > 0 {
        let checkpoint = Checkpoint::from_shards(&[(bundle::WEIGHTS_FILE, &weights)])?;
        let docs = check_inputs(args.check_input.as_deref(), args.check_n as usize)?;
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        let reference = summarizer.summarize(&texts, &gen, max_input, &mut |_, _| {})?;
        // From here on the source model is not needed: each check's model replaces the one
        // before it only after that one is gone (a 3.8 B-parameter model's source in bf16, its
        // q8 weights and their f32 expansion do not fit 24 GB together).
        let mut check = |int8_matmul| {
            let options = LoadOptions {
                int8_matmul,
                ..LoadOptions::default()
            };
            summarizer.model = summarizer.config.placeholder(&device);
            summarizer.model = summarizer
                .config
                .load(&checkpoint, &device, options, &mut |_| {})?
                .0;
            let ours = summarizer.summarize(&texts, &gen, max_input, &mut |_, _| {});
            let check = compare(&reference, &ours?, gen.num_beams);
            report_check(&check, int8_matmul, args.min_token_agreement)?;
            anyhow::Ok(check)
        };
        let f32_check = check(false)?;
        let int8 = matches!(quant, Quant::Q8 | Quant::Q4) && args.device == DeviceArg::Cpu;
        let int8_check = if int8 { Some(check(true)?) } else { None };
        (Some(f32_check), int8_check)
    } else {
        (None, None)
    };

    let dtype = match quant {
        Quant::F16 => DtypeArg::F16,
        _ => DtypeArg::F32,
    };
    let tokenizer_json = match &files.tokenizer_json {
        Some(p) => std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?,
        None => summarizer.tokenizer.to_tokenizer_json()?,
    };
    let mut contents: Vec<(&str, Vec<u8>)> = vec![
        ("config.json", config_json(&files, dtype)?),
        (
            "generation_config.json",
            generation_config_json(&files, &gen)?,
        ),
        ("tokenizer.json", tokenizer_json),
    ];
    if let Some(p) = &files.tokenizer_config {
        let bytes = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
        contents.push(("tokenizer_config.json", bytes));
    }
    if let Some(p) = &files.chat_template {
        let bytes = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
        contents.push(("chat_template.jinja", bytes));
    }
    contents.push((bundle::WEIGHTS_FILE, weights));
    let manifest = Manifest {
        format: bundle::FORMAT.into(),
        format_version: bundle::FORMAT_VERSION,
        quantization: quant,
        block_size: matches!(quant, Quant::Q8 | Quant::Q4).then_some(args.block_size),
        parameters,
        source: Source {
            model: args.model.clone(),
            adapter: args.adapter.clone(),
        },
        requires,
        files: contents
            .iter()
            .map(|(name, bytes)| FileEntry {
                path: name.to_string(),
                bytes: bytes.len() as u64,
                sha256: bundle::sha256_hex(bytes),
            })
            .collect(),
        check,
        check_int8,
        created_by: format!("bartleby {}", env!("CARGO_PKG_VERSION")),
    };
    output::write_dir(&args.output, args.force, |dir| {
        for (name, bytes) in &contents {
            output::write_file(dir, name, bytes)?;
        }
        output::write_file(dir, bundle::MANIFEST_FILE, &manifest.to_json())
    })?;
    let total: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    println!(
        "wrote {} ({} bundle, {:.1} MB, {} parameters; needs buffers of {:.1} MB)",
        args.output.display(),
        quant.name(),
        total as f64 / 1e6,
        parameters,
        manifest.requires.max_buffer_bytes as f64 / 1e6
    );
    Ok(())
}

/// The bundle's summaries against the f32 model's.
/// A share from 0 to 1 (NaN and values past 1 would disable or always fail the gate).
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("expected a share from 0 to 1, got {s:?}")),
    }
}

/// Prints a bundle check; below `min_token_agreement` it is an error (nothing is written).
fn report_check(check: &Check, int8_matmul: bool, min_token_agreement: Option<f64>) -> Result<()> {
    println!(
        "check on {} inputs against the f32 model{}: identical sequences {}/{}, token \
         agreement {:.4}, ROUGE-L {:.4}",
        check.inputs,
        if int8_matmul {
            " (int8 products, as on a CPU)"
        } else {
            ""
        },
        check.identical_sequences,
        check.inputs,
        check.token_agreement,
        check.rouge_l
    );
    if let Some(min) = min_token_agreement {
        if check.token_agreement < min {
            anyhow::bail!(
                "token agreement {:.4} is below --min-token-agreement {min}; nothing written",
                check.token_agreement
            );
        }
    }
    Ok(())
}

fn compare(
    reference: &[Vec<bartleby_core::Summary>],
    ours: &[Vec<bartleby_core::Summary>],
    num_beams: usize,
) -> Check {
    let (mut identical, mut agree, mut positions, mut rouge_sum) = (0, 0usize, 0usize, 0.0);
    for (r, o) in reference.iter().zip(ours) {
        let (r, o) = (&r[0], &o[0]);
        identical += usize::from(r.token_ids == o.token_ids);
        positions += r.token_ids.len().max(o.token_ids.len());
        agree += r
            .token_ids
            .iter()
            .zip(&o.token_ids)
            .filter(|(a, b)| a == b)
            .count();
        // Identical output agrees fully (rouge_score gives 0 for two empty summaries).
        rouge_sum += if r.token_ids == o.token_ids {
            1.0
        } else {
            rouge::score(&o.summary, &[r.summary.as_str()], true)
                .rougeL
                .fmeasure
        };
    }
    let n = reference.len();
    Check {
        inputs: n,
        identical_sequences: identical,
        token_agreement: if positions == 0 {
            1.0
        } else {
            agree as f64 / positions as f64
        },
        rouge_l: if n == 0 { 1.0 } else { rouge_sum / n as f64 },
        num_beams,
    }
}

/// `--format gguf`: the model (with any adapter merged) as one GGUF file, written atomically.
fn run_gguf(args: &ExportArgs) -> Result<()> {
    use bartleby_core::checkpoint::gguf::{
        bpe_tokenizer_metadata, spm_tokenizer_metadata, GgufValue,
    };
    use bartleby_core::models::llama::gguf::{to_gguf, GgufQuant};
    let quant = match args.quant {
        QuantArg::F32 => GgufQuant::F32,
        QuantArg::F16 => GgufQuant::F16,
        QuantArg::Q8 => GgufQuant::Q8_0,
        QuantArg::Q4 => GgufQuant::Q4_0,
        QuantArg::Q4KM => GgufQuant::Q4_K_M,
    };
    let files = model_files::resolve(&args.model)?;
    let target = device::init_export(args.device)?;
    let device = target.device.clone();
    let mut summarizer = model_files::load(&files, &device, target.options)
        .with_context(|| format!("loading {}", args.model))?;
    if let Some(adapter) = &args.adapter {
        let adapter_files = model_files::resolve_adapter(adapter)?;
        model_files::apply_adapter(&mut summarizer, &adapter_files)
            .with_context(|| format!("applying adapter {adapter} to {}", args.model))?;
        adapter::merge(&mut summarizer.model)?;
    }
    let bartleby_core::models::ModelConfig::Llama(config) = &summarizer.config else {
        bail!(
            "--format gguf: {} has no llama.cpp architecture in Bartleby (GGUF export writes Llama, Phi-3 and Qwen2 models); \
             use the default --format bundle",
            summarizer.config.model_type()
        );
    };
    let Some(llama) = summarizer.model.as_llama() else {
        bail!("--format gguf: not a decoder-only model");
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))
    };
    let tokenizer_json = match &files.tokenizer_json {
        Some(p) => read(p)?,
        None => bail!("--format gguf needs the model's tokenizer.json"),
    };
    let tokenizer_config = files.tokenizer_config.as_deref().map(read).transpose()?;
    let chat_template = summarizer
        .prompting
        .as_ref()
        .and_then(|p| p.chat.as_ref())
        .map(|c| c.source.clone());
    let tokenizer = if config.family == bartleby_core::models::llama::Family::Phi3 {
        // Phi-3's convert reads the SentencePiece model (real Phi-3 ships it beside tokenizer.json).
        let Some(model_file) = &files.tokenizer_model else {
            bail!("--format gguf: a Phi-3 GGUF needs the model's tokenizer.model (SentencePiece), as llama.cpp's convert_hf_to_gguf.py reads it; {} has none", args.model)
        };
        let added = files.added_tokens.as_deref().map(read).transpose()?;
        spm_tokenizer_metadata(
            &read(model_file)?,
            Some(&tokenizer_json),
            tokenizer_config.as_deref(),
            Some(&config.raw),
            added.as_deref(),
            chat_template.as_deref(),
            config.vocab_size,
        )
        .with_context(|| model_file.display().to_string())?
    } else {
        bpe_tokenizer_metadata(
            &tokenizer_json,
            tokenizer_config.as_deref(),
            Some(&config.raw),
            chat_template.as_deref(),
            config.vocab_size,
            // convert's name for the pre-tokenizer (it recognizes the real ones by hash).
            if config.family == bartleby_core::models::llama::Family::Qwen2 {
                "qwen2"
            } else {
                "llama-bpe"
            },
        )?
    };
    // general.*: sampling settings from generation_config.json (as convert's Metadata reads
    // them), the name from the model's directory.
    let mut general = Vec::new();
    if let Some(p) = &files.generation_config {
        let gen: serde_json::Value = serde_json::from_slice(&read(p)?)
            .with_context(|| format!("{}: not valid JSON", p.display()))?;
        if let Some(k) = gen.get("top_k").and_then(|v| v.as_i64()) {
            general.push((
                "general.sampling.top_k".to_string(),
                GgufValue::I32(k as i32),
            ));
        }
        if let Some(p) = gen.get("top_p").and_then(|v| v.as_f64()) {
            general.push((
                "general.sampling.top_p".to_string(),
                GgufValue::F32(p as f32),
            ));
        }
        if let Some(t) = gen.get("temperature").and_then(|v| v.as_f64()) {
            general.push((
                "general.sampling.temp".to_string(),
                GgufValue::F32(t as f32),
            ));
        }
    }
    let base_name = std::path::Path::new(args.model.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.model.clone());
    let title: Vec<String> = base_name
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        })
        .collect();
    general.push(("general.name".to_string(), GgufValue::Str(title.join(" "))));
    general.push((
        "general.size_label".to_string(),
        GgufValue::Str(size_label(config.num_parameters())),
    ));
    let bytes = to_gguf(llama, config, quant, general, tokenizer)?;
    if args.output.exists() && !args.force {
        bail!("{}: exists (--force replaces it)", args.output.display());
    }
    output::write_file_atomically(&args.output, &bytes)?;
    println!(
        "wrote {} (GGUF {}, {:.1} MB)",
        args.output.display(),
        match quant {
            GgufQuant::F32 => "f32",
            GgufQuant::F16 => "f16",
            GgufQuant::Q8_0 => "q8_0",
            GgufQuant::Q4_0 => "q4_0 (tables q8_0)",
            GgufQuant::Q4_K_M => "q4_k_m",
        },
        bytes.len() as f64 / 1e6
    );
    Ok(())
}

/// gguf-py's `model_weight_count_rounded_notation`: `40K`, `1.2B`, `3.8B`, `124M`.
fn size_label(parameters: usize) -> String {
    let n = parameters as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round() as u64)
        .trim_start_matches('0')
        .len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}
