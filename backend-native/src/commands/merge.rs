//! `bartleby merge`: folds a LoRA adapter into its base model and writes a standalone
//! transformers checkpoint, after checking that the merge changed nothing it should not.

use crate::checkpoint_files::{
    config_json, copy_tokenizer_files, generation_config_json, DtypeArg,
};
use crate::device::{self, DeviceArg};
use crate::generation_args::GenerationArgs;
use crate::input::check_inputs;
use crate::model_files;
use crate::output;
use anyhow::{bail, Context, Result};
use bartleby_core::checkpoint::adapter;
use bartleby_core::checkpoint::{save_safetensors, Checkpoint, LoadOptions};
use bartleby_core::pipeline::ids_tensor;
use bartleby_core::{GenerationConfig, Summarizer};
use clap::Args;
use std::path::PathBuf;

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
    /// Largest allowed |logit difference| between base+adapter and the written checkpoint,
    /// relative to the logits' scale (max |logit|, at least 1): default 5e-4 for f32 — PEFT's
    /// own merge_and_unload moves logits by about 1.2e-4 of their scale in float32 — and 5e-2 for
    /// f16/bf16.
    #[arg(long)]
    pub tolerance: Option<f32>,
    /// Replace --output if it exists.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

pub fn run(args: MergeArgs) -> Result<()> {
    output::check_out_dir(&args.output, args.force)?;
    if args.tolerance.is_some_and(|t| !(t.is_finite() && t >= 0.0)) {
        bail!("--tolerance must be a non-negative number");
    }
    let target = device::init(args.device)?;
    let device = target.device.clone();
    let files = model_files::resolve(&args.model)?;
    let mut summarizer = model_files::load(&files, &device, target.options)
        .with_context(|| format!("loading {}", args.model))?;
    let adapter_files = model_files::resolve_adapter(&args.adapter)?;
    model_files::apply_adapter(&mut summarizer, &adapter_files)
        .with_context(|| format!("applying adapter {} to {}", args.adapter, args.model))?;
    let gen = args
        .generation
        .apply(&summarizer.summarization_generation()?.0)?;
    let max_input = summarizer.max_input_tokens();
    summarizer.validate(&gen, max_input)?;
    let docs = check_inputs(args.check_input.as_deref(), args.check_n as usize)?;
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let batch = summarizer.tokenizer.encode_batch(
        &texts,
        Some(max_input),
        summarizer.config.pad_token_id(),
    )?;

    let before = Outputs::of(
        &summarizer,
        &texts,
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
        &texts,
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
    let relative = args.tolerance.unwrap_or(match args.dtype {
        DtypeArg::F32 => 5e-4,
        _ => 5e-2,
    });
    let scale = before.logits.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let tolerance = relative * scale;
    println!(
        "merged {merged} LoRA projections; lossless check on {n} inputs: logits max abs diff \
         {diff:.3e} (tolerance {relative:.0e} × scale {scale:.2} = {tolerance:.3e}), generated \
         ids identical {same}/{n}"
    );
    if !(diff <= tolerance) {
        bail!(
            "lossless check failed: logits differ by {diff:.3e} > {tolerance:.3e} \
             ({relative:.0e} of their scale {scale:.2}); nothing written"
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
        texts: &[&str],
        ids: &[Vec<u32>],
        mask: &[Vec<u32>],
        gen: &GenerationConfig,
        along: Option<&[Vec<u32>]>,
    ) -> Result<Self> {
        if s.prompting.is_some() {
            return Self::of_prompted(s, texts, gen, along);
        }
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

    /// [`Self::of`] for a decoder-only model: the generated ids of each prompt, and the logits
    /// of each prompt followed by the ids it is checked along (one row at a time: no padding).
    fn of_prompted(
        s: &Summarizer,
        texts: &[&str],
        gen: &GenerationConfig,
        along: Option<&[Vec<u32>]>,
    ) -> Result<Self> {
        let max_input = s.max_input_tokens();
        let summaries = s.summarize(texts, gen, max_input, &mut |_, _| {})?;
        let sequences: Vec<Vec<u32>> = summaries.iter().map(|v| v[0].token_ids.clone()).collect();
        let model = s
            .model
            .as_llama()
            .ok_or_else(|| anyhow::anyhow!("a prompted model must be decoder-only"))?;
        let device = s.model.device();
        let mut logits = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let mut row = s.encode(text, max_input)?;
            row.extend_from_slice(&along.unwrap_or(&sequences)[i]);
            let mask = vec![vec![1u32; row.len()]];
            let out = model.forward(ids_tensor(&[row], &device), &mask);
            logits.extend(
                out.into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?,
            );
        }
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
