//! `bartleby merge`: folds a LoRA adapter into its base model and writes a standalone
//! transformers checkpoint, after checking that the merge changed nothing it should not.

use crate::device::{self, DeviceArg};
use crate::input::{read_documents, Document};
use crate::model_files::{self, ModelFiles};
use crate::output;
use crate::summarize_cmd::GenerationArgs;
use anyhow::{bail, Context, Result};
use bartleby_core::checkpoint::adapter;
use bartleby_core::checkpoint::{save_safetensors, Checkpoint, LoadOptions, SaveDtype};
use bartleby_core::pipeline::ids_tensor;
use bartleby_core::{GenerationConfig, Summarizer};
use clap::{Args, ValueEnum};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Base model directory or hub id.
    #[arg(long)]
    pub model: String,
    /// LoRA adapter (PEFT format) directory or hub id.
    #[arg(long)]
    pub adapter: String,
    /// Output directory (created atomically; must not exist unless --force).
    #[arg(long)]
    pub output: PathBuf,
    /// Storage type of model.safetensors.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Generation settings written into the merged generation_config.json (default: the base
    /// model's summarization settings, so evaluations before and after merging agree).
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Inputs for the lossless check (.jsonl/.csv/text, like `summarize --input`); default:
    /// built-in dialogues.
    #[arg(long)]
    pub check_input: Option<PathBuf>,
    /// How many inputs the lossless check uses.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub check_n: u64,
    /// Largest allowed |logit difference| between base+adapter and the written checkpoint
    /// (default 1e-4 for f32, 5e-2 for f16/bf16).
    #[arg(long)]
    pub tolerance: Option<f32>,
    /// Replace --output if it exists.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

impl DtypeArg {
    fn save(self) -> SaveDtype {
        match self {
            Self::F32 => SaveDtype::F32,
            Self::F16 => SaveDtype::F16,
            Self::Bf16 => SaveDtype::BF16,
        }
    }

    /// transformers' name, for config.json's `dtype` / `torch_dtype`.
    fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::Bf16 => "bfloat16",
        }
    }
}

/// Dialogues for the lossless check when the user gives none.
const BUILT_IN_CHECK: [&str; 4] = [
    "#Person1#: Did you book the table for tonight?\n#Person2#: Yes, at eight, by the window.",
    "Anna: are we still on for Saturday?\nTom: sure, 10am at the station\nAnna: great, see you",
    "Manager: the release slips a week because the tests are red.\nDev: I will fix them by Monday.",
    "#Person1#: How much is the blue coat?\n#Person2#: It's 80 dollars, 20% off this week.",
];

pub fn run(args: MergeArgs) -> Result<()> {
    let device = device::init(args.device)?;
    let files = model_files::resolve(&args.model)?;
    let mut summarizer = model_files::load(&files, &device, device::load_options())
        .with_context(|| format!("loading {}", args.model))?;
    let adapter_files = model_files::resolve_adapter(&args.adapter)?;
    model_files::apply_adapter(&mut summarizer, &adapter_files)
        .with_context(|| format!("applying adapter {} to {}", args.adapter, args.model))?;
    let gen = args
        .generation
        .apply(&summarizer.summarization_generation()?.0)?;
    let max_input = summarizer.max_input_tokens();
    summarizer.validate(&gen, max_input)?;
    let docs = check_documents(args.check_input.as_deref(), args.check_n as usize)?;
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let batch = summarizer.tokenizer.encode_batch(
        &texts,
        Some(max_input),
        summarizer.config.pad_token_id(),
    )?;

    let before = Outputs::of(
        &summarizer,
        &batch.input_ids,
        &batch.attention_mask,
        &gen,
        None,
    )?;
    let merged = adapter::merge(&mut summarizer.model)?;
    let weights = save_safetensors(&summarizer.model, args.dtype.save())?;
    // Check the checkpoint as written (after any f16/bf16 rounding), not the in-memory model.
    let checkpoint = Checkpoint::from_shards(&[("merged model.safetensors", &weights)])?;
    summarizer.model = summarizer
        .config
        .load(&checkpoint, &device, LoadOptions::default(), &mut |_| {})?
        .0;
    let after = Outputs::of(
        &summarizer,
        &batch.input_ids,
        &batch.attention_mask,
        &gen,
        Some(&before.sequences),
    )?;

    let diff = before.max_abs_diff(&after);
    let same = before
        .sequences
        .iter()
        .zip(&after.sequences)
        .filter(|(a, b)| a == b)
        .count();
    let n = docs.len();
    let tolerance = args.tolerance.unwrap_or(match args.dtype {
        DtypeArg::F32 => 1e-4,
        _ => 5e-2,
    });
    println!(
        "merged {merged} LoRA projections; lossless check on {n} inputs: logits max abs diff \
         {diff:.3e} (tolerance {tolerance:.0e}), generated ids identical {same}/{n}"
    );
    if !(diff <= tolerance) {
        bail!(
            "lossless check failed: logits differ by {diff:.3e} > {tolerance:.0e}; nothing written"
        );
    }
    if same != n && matches!(args.dtype, DtypeArg::F32) {
        bail!(
            "lossless check failed: {} of {n} generations changed; nothing written",
            n - same
        );
    }

    let generation_json = generation_config_json(&files, &gen)?;
    let config_json = config_json(&files, args.dtype)?;
    output::write_dir(&args.output, args.force, |dir| {
        output::write_file(dir, "model.safetensors", &weights)?;
        output::write_file(dir, "config.json", &config_json)?;
        output::write_file(dir, "generation_config.json", &generation_json)?;
        copy_tokenizer_files(&files, dir)
    })?;
    println!("wrote {}", args.output.display());
    Ok(())
}

pub(crate) fn check_documents(input: Option<&Path>, n: usize) -> Result<Vec<Document>> {
    let mut docs = match input {
        Some(path) => read_documents(path)?,
        None => BUILT_IN_CHECK
            .iter()
            .enumerate()
            .map(|(i, t)| Document {
                id: i.into(),
                text: t.to_string(),
            })
            .collect(),
    };
    docs.truncate(n);
    Ok(docs)
}

/// Generated ids, and the teacher-forced logits along a fixed decoder sequence.
struct Outputs {
    sequences: Vec<Vec<u32>>,
    logits: Vec<f32>,
}

impl Outputs {
    /// Generates with `gen`; the logits are taken along `along` (the reference model's
    /// generations) or, when `None`, along this model's own.
    fn of(
        s: &Summarizer,
        ids: &[Vec<u32>],
        mask: &[Vec<u32>],
        gen: &GenerationConfig,
        along: Option<&[Vec<u32>]>,
    ) -> Result<Self> {
        let sequences = s.generate_ids(ids, mask, gen, &mut |_, _| {})?;
        let decoder = bartleby_core::generate::pad_like_hf(
            along.unwrap_or(&sequences),
            gen.hf_output_pad_token_id(),
        );
        let device = s.model.device();
        let (_, logits) = s.model.forward(
            ids_tensor(ids, &device),
            ids_tensor(mask, &device),
            ids_tensor(&decoder, &device),
        );
        let logits = logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
        Ok(Self { sequences, logits })
    }

    fn max_abs_diff(&self, other: &Self) -> f32 {
        self.logits
            .iter()
            .zip(&other.logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) })
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// The base's config.json with the stored dtype updated.
pub(crate) fn config_json(files: &ModelFiles, dtype: DtypeArg) -> Result<Vec<u8>> {
    let mut config = read_json(&files.config)?;
    let obj = config
        .as_object_mut()
        .with_context(|| format!("{}: not a JSON object", files.config.display()))?;
    obj.insert("dtype".into(), dtype.torch_name().into());
    if obj.contains_key("torch_dtype") {
        obj.insert("torch_dtype".into(), dtype.torch_name().into());
    }
    Ok(pretty(&config))
}

/// The base's generation_config.json (or an empty one) with every setting summarization uses
/// written out explicitly: the merged model generates with exactly the settings the base+adapter
/// evaluation used, whatever defaults a loader would otherwise fill in.
pub(crate) fn generation_config_json(
    files: &ModelFiles,
    gen: &GenerationConfig,
) -> Result<Vec<u8>> {
    let mut json = match &files.generation_config {
        Some(path) => read_json(path)?,
        None => serde_json::json!({ "_from_model_config": false }),
    };
    let obj = json
        .as_object_mut()
        .context("generation_config.json: not a JSON object")?;
    let Value::Object(settings) = serde_json::to_value(gen)? else {
        bail!("generation settings did not serialize to an object");
    };
    for (key, value) in settings {
        // f32 fields (length_penalty) as their shortest decimal, e.g. 0.8 and not 0.800000011920929.
        let value = match (&value, key.as_str()) {
            (Value::Number(_), "length_penalty") => {
                let shortest: f64 = format!("{}", gen.length_penalty).parse()?;
                serde_json::json!(shortest)
            }
            _ => value,
        };
        obj.insert(key, value);
    }
    obj.entry("transformers_version")
        .or_insert_with(|| "4.57.6".into());
    Ok(pretty(&json))
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("JSON serializes");
    bytes.push(b'\n');
    bytes
}

/// Tokenizer files of the base (whichever exist beside its config.json or were resolved).
pub fn copy_tokenizer_files(files: &ModelFiles, dir: &Path) -> Result<()> {
    let mut sources: Vec<PathBuf> = Vec::new();
    sources.extend(files.tokenizer_json.clone());
    sources.extend(files.tokenizer_config.clone());
    if let Some((vocab, merges)) = &files.vocab_merges {
        sources.extend([vocab.clone(), merges.clone()]);
    }
    if let Some(base_dir) = files.config.parent() {
        for extra in ["special_tokens_map.json", "added_tokens.json"] {
            let p = base_dir.join(extra);
            if p.is_file() {
                sources.push(p);
            }
        }
    }
    for src in sources {
        let name = src.file_name().context("tokenizer file without a name")?;
        std::fs::copy(&src, dir.join(name))
            .with_context(|| format!("{}: cannot copy", src.display()))?;
    }
    Ok(())
}
