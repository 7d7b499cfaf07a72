//! The generation flags (`--num-beams`, `--max-length`, ...) of `summarize`, `eval`, `merge` and
//! `export`, and how they override a model's generation settings.

use anyhow::{bail, Result};
use bartleby_core::{EarlyStopping, GenerationConfig};
use clap::Args;

/// Generation settings; each overrides the model's generation_config.json when given.
#[derive(Args, Debug, Default)]
pub struct GenerationArgs {
    #[arg(long)]
    pub num_beams: Option<usize>,
    #[arg(long)]
    pub max_length: Option<usize>,
    #[arg(long)]
    pub min_length: Option<usize>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long, allow_hyphen_values = true)]
    pub length_penalty: Option<f64>,
    #[arg(long)]
    pub no_repeat_ngram_size: Option<usize>,
    /// true, false or never.
    #[arg(long, value_parser = parse_early_stopping)]
    pub early_stopping: Option<EarlyStopping>,
    /// Sample instead of greedy search (`do_sample=True`; greedy only, not with beams): the
    /// logits processors, then temperature, top-k and top-p, then one draw per token. Defaults:
    /// the model's generation_config.json (Llama 3.2 Instruct: temperature 0.6, top-p 0.9), else
    /// transformers' (1.0, 50, 1.0). Without it summaries are deterministic.
    #[arg(long)]
    pub do_sample: bool,
    /// With --do-sample: divide the scores by this (> 0).
    #[arg(long, requires = "do_sample")]
    pub temperature: Option<f32>,
    /// With --do-sample: keep the K most likely tokens (0: all).
    #[arg(long, requires = "do_sample")]
    pub top_k: Option<usize>,
    /// With --do-sample: keep the smallest set of most likely tokens whose probability reaches P.
    #[arg(long, requires = "do_sample")]
    pub top_p: Option<f32>,
    /// With --do-sample: the seed of Bartleby's own generator (same seed, same summaries, on every
    /// machine; not PyTorch's draws). Default 0.
    #[arg(long, requires = "do_sample")]
    pub sample_seed: Option<u64>,
}

fn parse_early_stopping(s: &str) -> Result<EarlyStopping, String> {
    match s {
        "true" => Ok(EarlyStopping::True),
        "false" => Ok(EarlyStopping::False),
        "never" => Ok(EarlyStopping::Never),
        _ => Err(format!("expected true, false or never, got {s:?}")),
    }
}

impl GenerationArgs {
    /// The flags as `generate(**kwargs)` keyword arguments (generation_config.json names).
    pub fn kwargs(&self) -> serde_json::Value {
        let mut kw = serde_json::Map::new();
        let mut set = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                kw.insert(k.to_string(), v);
            }
        };
        set("num_beams", self.num_beams.map(Into::into));
        set("max_length", self.max_length.map(Into::into));
        set("min_length", self.min_length.map(Into::into));
        set("max_new_tokens", self.max_new_tokens.map(Into::into));
        set(
            "length_penalty",
            self.length_penalty.map(|p| serde_json::json!(p)),
        );
        set(
            "no_repeat_ngram_size",
            self.no_repeat_ngram_size.map(Into::into),
        );
        set(
            "early_stopping",
            self.early_stopping
                .map(|e| serde_json::to_value(e).expect("serializable")),
        );
        serde_json::Value::Object(kw)
    }

    /// `--do-sample` and its warpers over `defaults` (the model's), or `None`.
    pub fn sampling(
        &self,
        defaults: bartleby_core::generate::Sampling,
    ) -> Option<bartleby_core::generate::Sampling> {
        self.do_sample.then(|| bartleby_core::generate::Sampling {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            seed: self.sample_seed.unwrap_or(0),
        })
    }

    /// Overrides `base` with the flags that were given, exactly as `generate(**kwargs)` would.
    pub fn apply(&self, base: &GenerationConfig) -> Result<GenerationConfig> {
        if self.num_beams == Some(0) {
            bail!("--num-beams must be at least 1");
        }
        if self.length_penalty.is_some_and(|p| !p.is_finite()) {
            bail!("--length-penalty must be a finite number");
        }
        let mut base = base.clone();
        if self.max_length.is_some() && self.max_new_tokens.is_none() {
            // --max-length replaces a max_new_tokens that came from the model's config.
            base.max_new_tokens = None;
        }
        let mut gen = base.with_overrides(&self.kwargs())?;
        if gen.num_return_sequences > gen.num_beams {
            gen.num_return_sequences = gen.num_beams;
        }
        Ok(gen)
    }
}
