//! The summarization pipeline that the CLI, the server and the web app share:
//! text → token ids → encoder → generation → token ids → text — and the one assembler that
//! builds it from a model's files as bytes ([`Summarizer::assemble`]: a directory, a hub
//! download, a web bundle or files a browser fetched), with the device's [`LoadOptions`]
//! passed in.

use crate::checkpoint::bundle::{Manifest, MANIFEST_FILE, WEIGHTS_FILE};
use crate::checkpoint::{Checkpoint, LoadOptions, LoadReport};
use crate::generate::{generate_until, GenerationConfig};
use crate::long::{join_partials, split, LongInfo, LongMode, LongOptions, TokenCounter};
use crate::models::{Model, ModelConfig, ModelStep};
use crate::tokenizer::BartTokenizer;
use crate::{Error, Result};
use burn::tensor::{Int, Tensor, TensorData};
use std::collections::BTreeMap;

/// One file of a model: its name (as errors should show it) and bytes.
#[derive(Debug, Clone, Copy)]
pub struct NamedBytes<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// The tokenizer files of a model.
#[derive(Debug, Clone, Copy)]
pub enum TokenizerBytes<'a> {
    /// `tokenizer.json`.
    Json(NamedBytes<'a>),
    /// `vocab.json` + `merges.txt` (older BART repositories).
    VocabMerges(NamedBytes<'a>, NamedBytes<'a>),
}

/// Everything a summarizer is built from, as bytes.
#[derive(Debug, Clone)]
pub struct ModelBytes<'a> {
    pub config: NamedBytes<'a>,
    pub generation_config: Option<NamedBytes<'a>>,
    /// The safetensors shards.
    pub weights: Vec<NamedBytes<'a>>,
    pub tokenizer: TokenizerBytes<'a>,
    pub tokenizer_config: Option<&'a [u8]>,
    /// `chat_template.jinja` (decoder-only models; transformers ≥ 4.43 saves the template there).
    pub chat_template: Option<NamedBytes<'a>>,
}

fn parse_json(file: NamedBytes<'_>) -> Result<serde_json::Value> {
    serde_json::from_slice(file.bytes).map_err(|e| Error::Config {
        file: file.name.into(),
        message: format!("invalid JSON: {e}"),
    })
}

/// One generated summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub summary: String,
    /// Encoder-decoder: the full decoder sequence as transformers' `generate` returns it
    /// (decoder start token first). Decoder-only: the generated tokens only
    /// (`generate(...)[:, prompt_len:]`, up to and including the eos). Without padding.
    pub token_ids: Vec<u32>,
}

/// The default prompt of decoder-only models (`summarize --prompt` replaces it).
pub const DEFAULT_PROMPT: &str =
    "Summarize the following dialogue in one or two sentences.\n\n{dialogue}";

/// How a decoder-only model is prompted: the template (with `{dialogue}`) filled with each
/// input; with a chat template, that text is the single user message (after an optional
/// system message), rendered with `add_generation_prompt = true` and tokenized without adding
/// special tokens again (`apply_chat_template(..., add_generation_prompt=True)`); without one,
/// the text is tokenized as it is (with the special tokens the tokenizer adds, e.g. BOS).
#[derive(Debug, Clone, PartialEq)]
pub struct Prompting {
    pub template: String,
    pub system: Option<String>,
    /// The model's chat template, if it has one.
    pub chat: Option<crate::chat::ChatTemplate>,
    /// Use [`Self::chat`] (`--no-chat-template` turns it off).
    pub use_chat: bool,
    /// More variables for the chat template (`--chat-template-kwargs`, e.g. `date_string`).
    pub chat_kwargs: serde_json::Map<String, serde_json::Value>,
    /// What the template's `strftime_now` formats (UTC seconds; set by the native side).
    pub now_unix_seconds: Option<i64>,
}

impl Prompting {
    /// Checks a `--prompt` template: it must contain `{dialogue}`.
    pub fn check_template(template: &str) -> Result<()> {
        if !template.contains("{dialogue}") {
            return Err(Error::Input(format!(
                "the prompt template must contain {{dialogue}}: {template:?}"
            )));
        }
        Ok(())
    }

    /// The prompt text of one dialogue (the rendered chat template, or the filled template).
    pub fn text(&self, dialogue: &str) -> Result<String> {
        Self::check_template(&self.template)?;
        let filled = self.template.replace("{dialogue}", dialogue);
        match (&self.chat, self.use_chat) {
            (Some(chat), true) => {
                let mut messages = Vec::new();
                if let Some(system) = &self.system {
                    messages.push(crate::chat::Message::new("system", system));
                }
                messages.push(crate::chat::Message::new("user", &filled));
                chat.render(&messages, true, &self.chat_kwargs, self.now_unix_seconds)
            }
            _ => Ok(match &self.system {
                Some(system) => format!("{system}\n\n{filled}"),
                None => filled,
            }),
        }
    }

    /// Whether the prompt is rendered by a chat template (then tokenized without special
    /// tokens).
    pub fn chat_rendered(&self) -> bool {
        self.chat.is_some() && self.use_chat
    }
}

/// A loaded model with its tokenizer and default generation settings.
pub struct Summarizer {
    pub model: Model,
    pub tokenizer: BartTokenizer,
    pub config: ModelConfig,
    /// Put before every input: transformers' summarization pipeline takes it from
    /// `task_specific_params.summarization.prefix` (`summarize: ` for T5); empty otherwise.
    pub prefix: String,
    /// What `model.generate()` would use (generation_config.json, else config.json).
    pub generation: GenerationConfig,
    /// Whether the checkpoint has a generation_config.json.
    pub has_generation_config_file: bool,
    /// Decoder-only models: how inputs become prompts. `None` for encoder-decoders.
    pub prompting: Option<Prompting>,
    /// The checkpoint's generation config asks for sampling (`do_sample: true`, as the Instruct
    /// models' do); Bartleby decodes deterministically unless told to sample.
    pub config_asks_sampling: bool,
    /// What sampling uses when asked for: the generation config's `temperature` / `top_k` /
    /// `top_p` over transformers' defaults.
    pub sampling_defaults: crate::generate::Sampling,
}

/// `[batch, width]` int tensor from rows of ids.
pub fn ids_tensor(rows: &[Vec<u32>], device: &burn::tensor::Device) -> Tensor<2, Int> {
    let width = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), width]), device)
}

impl Summarizer {
    /// Builds the summarizer from a model's files: config, generation settings (what
    /// `model.generate()` would use: `generation_config.json`, else `config.json`), weights
    /// (held on `device` as `options` say; `converted(bytes)` is called with each tensor's stored
    /// bytes once copied, so a memory-mapped caller can release those pages) and tokenizer.
    /// The report lists tensors the model did not use.
    pub fn assemble(
        files: &ModelBytes<'_>,
        device: &burn::tensor::Device,
        options: LoadOptions,
        converted: &mut dyn FnMut(&[u8]),
    ) -> Result<(Self, LoadReport)> {
        let config = ModelConfig::from_json(files.config.bytes, files.config.name)?;
        let config_json = parse_json(files.config)?;
        let mut gen_json = files.generation_config.map(parse_json).transpose()?;
        // The Instruct models' generation configs ask for sampling; summaries are deterministic
        // (greedy / beam search) unless sampling is asked for (the caller says so once).
        let mut config_asks_sampling = false;
        let sampling_defaults = crate::generate::Sampling::from_generation_json(gen_json.as_ref());
        if config.is_decoder_only() {
            for json in gen_json.iter_mut() {
                if let Some(obj) = json.as_object_mut() {
                    config_asks_sampling |=
                        obj.remove("do_sample") == Some(serde_json::Value::Bool(true));
                }
            }
        }
        // Errors name the file the settings came from.
        let generation = GenerationConfig::from_transformers_json(gen_json.as_ref(), &config_json)
            .map_err(|e| match e {
                Error::Generation(message) => Error::Config {
                    file: files.generation_config.unwrap_or(files.config).name.into(),
                    message,
                },
                other => other,
            })?;
        let shards: Vec<(&str, &[u8])> = files.weights.iter().map(|f| (f.name, f.bytes)).collect();
        let checkpoint = Checkpoint::from_shards(&shards)?;
        let tokenizer = match files.tokenizer {
            TokenizerBytes::Json(t) => {
                BartTokenizer::from_tokenizer_json(t.bytes, files.tokenizer_config)
            }
            TokenizerBytes::VocabMerges(v, m) => {
                BartTokenizer::from_vocab_merges(v.bytes, m.bytes, files.tokenizer_config)
            }
        }?;
        if let (ModelConfig::T5(_), "BPE" | "WordPiece" | "WordLevel") =
            (&config, tokenizer.model_kind())
        {
            let name = match files.tokenizer {
                TokenizerBytes::Json(t) => t.name,
                TokenizerBytes::VocabMerges(v, _) => v.name,
            };
            return Err(Error::Config {
                file: name.into(),
                message: format!(
                    "T5 expects a SentencePiece Unigram tokenizer, found {}",
                    tokenizer.model_kind()
                ),
            });
        }
        let prompting = if config.is_decoder_only() {
            let chat = crate::chat::ChatTemplate::from_files(
                files.chat_template.map(|f| (f.name, f.bytes)),
                files.tokenizer_config,
            )?;
            Some(Prompting {
                template: DEFAULT_PROMPT.into(),
                system: None,
                chat,
                use_chat: true,
                chat_kwargs: Default::default(),
                now_unix_seconds: None,
            })
        } else {
            None
        };
        let (model, report) = config.load(&checkpoint, device, options, converted)?;
        let summarizer = Summarizer {
            model,
            tokenizer,
            prefix: config.summarization_prefix().unwrap_or_default(),
            config,
            generation,
            has_generation_config_file: files.generation_config.is_some(),
            prompting,
            config_asks_sampling,
            sampling_defaults,
        };
        Ok((summarizer, report))
    }

    /// The longest input the model reads by default: BART's learned position table; for T5
    /// (relative positions) the tokenizer's `model_max_length`, as transformers truncates, or
    /// 512 without one.
    pub fn max_input_tokens(&self) -> usize {
        match self.config.max_position_embeddings() {
            Some(n) => n,
            None => self.tokenizer.model_max_length().unwrap_or(512),
        }
    }

    /// Checks settings against the model before any work is done.
    pub fn validate(&self, gen: &GenerationConfig, max_input_tokens: usize) -> Result<()> {
        let max_pos = self.config.max_position_embeddings();
        if let Some(max_pos) = max_pos.filter(|&m| max_input_tokens > m) {
            return Err(Error::Input(format!(
                "max input tokens {max_input_tokens} exceeds the model's max_position_embeddings {max_pos}"
            )));
        }
        if max_input_tokens < 2 {
            return Err(Error::Input(format!(
                "max input tokens must be at least 2, got {max_input_tokens}"
            )));
        }
        gen.validate()?;
        const MAX_BEAMS: usize = 256;
        if gen.num_beams > MAX_BEAMS {
            return Err(Error::Generation(format!(
                "num_beams {} is more than {MAX_BEAMS}",
                gen.num_beams
            )));
        }
        let vocab = self.config.vocab_size();
        let ids = [
            ("decoder_start_token_id", Some(gen.decoder_start_token_id)),
            ("pad_token_id", Some(gen.pad_token_id)),
            ("eos_token_id", gen.eos_token_id),
            ("forced_bos_token_id", gen.forced_bos_token_id),
            ("forced_eos_token_id", gen.forced_eos_token_id),
        ];
        for (name, id) in ids {
            if let Some(id) = id.filter(|&id| id as usize >= vocab) {
                return Err(Error::Generation(format!(
                    "{name} {id} is outside the model's vocabulary (vocab_size {vocab})"
                )));
            }
        }
        let max_len = gen.effective_max_length();
        let seq2seq = !self.config.is_decoder_only();
        if let Some(max_pos) = max_pos.filter(|&m| seq2seq && max_len > m + 1) {
            return Err(Error::Generation(format!(
                "max length {max_len} would feed the decoder more positions than max_position_embeddings {max_pos}"
            )));
        }
        Ok(())
    }

    /// The settings for summarization, as transformers' summarization pipeline makes them:
    /// [`Self::generation`] with config.json's `task_specific_params.summarization` (minus its
    /// `prefix`, which goes before every input: [`Self::prefix`]) on top, as if passed to
    /// `generate(**params)`. Returns the settings and whether task parameters were used.
    pub fn summarization_generation(&self) -> Result<(GenerationConfig, bool)> {
        let mut gen = self.generation.clone();
        let params = self
            .config
            .raw()
            .get("task_specific_params")
            .and_then(|t| t.get("summarization"));
        match params {
            Some(params) => {
                let mut params = params.clone();
                if let Some(obj) = params.as_object_mut() {
                    obj.remove("prefix");
                }
                gen.apply_kwargs(&params)?;
                Ok((gen, true))
            }
            _ => Ok((gen, false)),
        }
    }

    /// A decoder-only model's end of an answer: the tokenizer's `eos_token` (tokenizer_config.json;
    /// Llama 3.2 Instruct's `<|eot_id|>`, which its chat template ends turns with), else the first
    /// eos id of the generation settings. What fine-tuning appends to each summary.
    pub fn answer_eos(&self) -> Option<u32> {
        self.prompting
            .as_ref()
            .and_then(|p| p.chat.as_ref())
            .and_then(|c| c.special_tokens.get("eos_token"))
            .and_then(|t| self.tokenizer.token_id(t))
            .or(self.generation.eos_token_id)
    }

    /// Tokenizes one text as [`Self::summarize`] would and checks that the model can read it.
    pub fn check_input(&self, text: &str, max_input_tokens: usize) -> Result<()> {
        let ids = self.encode(text, max_input_tokens)?;
        self.check_ids(&ids)
    }

    /// A text's input ids as [`Self::summarize`] feeds them: [`Self::prefix`] first, truncated
    /// to `max_input_tokens` with the tokenizer's special tokens kept.
    /// A decoder-only model's prompt ids ([`Prompting`]): when the prompt is longer than
    /// `max_input_tokens`, the dialogue (not the instruction or the template around it) is cut
    /// at a token boundary to the longest start that fits; a prompt that does not fit even
    /// without the dialogue is an error.
    pub fn encode(&self, text: &str, max_input_tokens: usize) -> Result<Vec<u32>> {
        if let Some(prompting) = &self.prompting {
            let ids = self.prompt_ids(prompting, text)?;
            if ids.len() <= max_input_tokens {
                return Ok(ids);
            }
            let empty = self.prompt_ids(prompting, "")?;
            if empty.len() > max_input_tokens {
                return Err(Error::Input(format!(
                    "the prompt is {} tokens without the dialogue, longer than the {max_input_tokens} \
                     the model reads (max input tokens)",
                    empty.len()
                )));
            }
            // The longest prefix of the dialogue's tokens whose prompt fits (binary search).
            let starts = self.tokenizer.token_starts(text)?;
            let (mut lo, mut hi) = (0usize, starts.len());
            let mut best = empty;
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                let cut = &text[..starts.get(mid).copied().unwrap_or(text.len())];
                let ids = self.prompt_ids(prompting, cut.trim_end())?;
                if ids.len() <= max_input_tokens {
                    lo = mid;
                    best = ids;
                } else {
                    hi = mid - 1;
                }
            }
            return Ok(best);
        }
        self.tokenizer
            .encode(&self.prefixed(text), Some(max_input_tokens))
    }

    fn prompt_ids(&self, prompting: &Prompting, text: &str) -> Result<Vec<u32>> {
        let prompt = prompting.text(text)?;
        self.tokenizer
            .encode_prompt(&prompt, !prompting.chat_rendered())
    }

    fn prefixed(&self, text: &str) -> String {
        format!("{}{text}", self.prefix)
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some(&bad) = ids
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size())
        {
            return Err(Error::Input(format!(
                "token {bad} ({:?}) is outside the model's vocabulary (vocab_size {})",
                self.tokenizer.decode(&[bad], false).unwrap_or_default(),
                self.config.vocab_size()
            )));
        }
        Ok(())
    }

    /// Summarizes a batch of texts; returns `num_return_sequences` summaries per text, best first.
    /// `on_step` is [`crate::generate::generate`]'s progress callback. Blocks until done (see
    /// [`Self::summarize_async`] for WebGPU in a browser).
    pub fn summarize(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    ) -> Result<Vec<Vec<Summary>>> {
        block_on(self.summarize_async(texts, gen, max_input_tokens, on_step))
    }

    /// [`Self::summarize`] as a future.
    pub async fn summarize_async(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    ) -> Result<Vec<Vec<Summary>>> {
        self.summarize_until_async(texts, gen, max_input_tokens, on_step, &|| false)
            .await
    }

    /// [`Self::summarize`] that stops with [`crate::Error::Cancelled`] once `stop()` says so
    /// (asked after every decoding step): what a server does when its clients have left.
    pub fn summarize_until(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<Summary>>> {
        block_on(self.summarize_until_async(texts, gen, max_input_tokens, on_step, stop))
    }

    /// [`Self::summarize_until`] as a future.
    pub async fn summarize_until_async(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<Summary>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.validate(gen, max_input_tokens)?;
        if self.prompting.is_some() {
            return self
                .summarize_prompted(texts, gen, max_input_tokens, on_step, stop)
                .await;
        }
        let texts: Vec<String> = texts.iter().map(|t| self.prefixed(t)).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let batch = self.tokenizer.encode_batch(
            &texts,
            Some(max_input_tokens),
            self.config.pad_token_id(),
        )?;
        for ids in &batch.input_ids {
            self.check_ids(ids)?;
        }
        let sequences = self
            .generate_ids_until(&batch.input_ids, &batch.attention_mask, gen, on_step, stop)
            .await?;
        self.summaries(sequences, gen.num_return_sequences, None)
    }

    /// Generated sequences, `per_input` per input, as [`Summary`]s: the whole decoder sequence
    /// (encoder-decoder), or after a decoder-only model's `prompt_width` (padded) prompt tokens —
    /// the generated ids only, their text trimmed.
    fn summaries(
        &self,
        sequences: Vec<Vec<u32>>,
        per_input: usize,
        prompt_width: Option<usize>,
    ) -> Result<Vec<Vec<Summary>>> {
        sequences
            .chunks(per_input)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|ids| {
                        let token_ids = match prompt_width {
                            Some(width) => ids[width.min(ids.len())..].to_vec(),
                            None => ids.clone(),
                        };
                        let text = self.tokenizer.decode(&token_ids, true)?;
                        let summary = match prompt_width {
                            Some(_) => text.trim().to_string(),
                            None => text,
                        };
                        Ok(Summary { summary, token_ids })
                    })
                    .collect()
            })
            .collect()
    }

    /// [`Self::summarize_until_async`] for a decoder-only model: prompts left-padded with the
    /// pad id (the first eos when the model has none, as `generate` pads), generation after
    /// them, the generated tokens returned.
    async fn summarize_prompted(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<Summary>>> {
        let mut prompts = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let ids = self.encode(text, max_input_tokens).map_err(|e| match e {
                Error::Input(message) => Error::InputAt { index, message },
                other => other,
            })?;
            self.check_ids(&ids)?;
            prompts.push(ids);
        }
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let pad = gen.pad_token_id;
        let mut padded = Vec::with_capacity(prompts.len());
        let mut mask = Vec::with_capacity(prompts.len());
        for p in &prompts {
            let n = width - p.len();
            padded.push([vec![pad; n], p.clone()].concat());
            mask.push([vec![0u32; n], vec![1u32; p.len()]].concat());
        }
        let model = self
            .model
            .as_llama()
            .ok_or_else(|| Error::Input("a prompted model must be decoder-only".into()))?;
        let mut step = crate::models::CausalStep::new(
            model,
            padded.clone(),
            mask,
            gen.num_beams,
            self.config.vocab_size(),
        );
        let sequences = crate::generate::generate_prompted(
            &mut step,
            &padded,
            gen,
            self.config.max_position_embeddings(),
            on_step,
            stop,
        )
        .await?;
        self.summaries(sequences, gen.num_return_sequences, Some(width))
    }

    /// Generation from already tokenized, right-padded inputs.
    pub fn generate_ids(
        &self,
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<u32>],
        gen: &GenerationConfig,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    ) -> Result<Vec<Vec<u32>>> {
        block_on(self.generate_ids_async(input_ids, attention_mask, gen, on_step))
    }

    /// [`Self::generate_ids`] as a future.
    pub async fn generate_ids_async(
        &self,
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<u32>],
        gen: &GenerationConfig,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    ) -> Result<Vec<Vec<u32>>> {
        self.generate_ids_until(input_ids, attention_mask, gen, on_step, &|| false)
            .await
    }

    /// [`Self::generate_ids_async`] that stops with [`crate::Error::Cancelled`] once `stop()`
    /// says so (asked after every decoding step).
    pub async fn generate_ids_until(
        &self,
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<u32>],
        gen: &GenerationConfig,
        on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<u32>>> {
        let device = self.model.device();
        let encoded = self.model.encode(
            ids_tensor(input_ids, &device),
            ids_tensor(attention_mask, &device),
        );
        let cache = self.model.start_decoding(&encoded, gen.num_beams);
        let mut step = ModelStep::new(&self.model, cache, self.config.vocab_size());
        generate_until(&mut step, input_ids.len(), gen, on_step, stop).await
    }
}

/// Progress of [`Summarizer::summarize_long_async`].
#[derive(Debug)]
pub enum LongEvent<'a> {
    /// A generation step of a batch at `level` (1: the inputs, or their first windows):
    /// [`crate::generate::generate`]'s progress.
    Step {
        level: usize,
        step: usize,
        sequences: &'a [Vec<u32>],
    },
    /// `done` of the `total` generations of `level` are finished.
    Windows {
        level: usize,
        done: usize,
        total: usize,
    },
}

impl TokenCounter for Summarizer {
    fn input_tokens(&self, text: &str) -> Result<usize> {
        if let Some(prompting) = &self.prompting {
            return Ok(self.prompt_ids(prompting, text)?.len());
        }
        Ok(self.tokenizer.encode(&self.prefixed(text), None)?.len())
    }
    fn token_starts(&self, text: &str) -> Result<Vec<usize>> {
        self.tokenizer.token_starts(text)
    }
}

/// One input of [`Summarizer::summarize_long_async`] on its way through the levels.
struct LongState {
    /// The text of the current level (the input, then joined partial summaries).
    source: String,
    /// Tokens of `source` as a whole input.
    tokens: usize,
    info: LongInfo,
    done: Option<Vec<Summary>>,
}

impl Summarizer {
    /// Summarizes texts of any length as `long` says (see [`crate::long`]): `truncate` is
    /// [`Self::summarize_async`] in batches of `batch_size`; `chunk` summarizes the windows of
    /// every input that does not fit (batched together across inputs), then their joined
    /// summaries, level by level. Inputs that fit are summarized exactly as `truncate` would.
    /// Returns each input's summaries (best first) and how they were made.
    pub async fn summarize_long_async(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        long: &LongOptions,
        batch_size: usize,
        on_event: &mut dyn FnMut(LongEvent<'_>),
    ) -> Result<Vec<(Vec<Summary>, LongInfo)>> {
        long.validate(max_input_tokens)?;
        self.validate(gen, max_input_tokens)?;
        let batch_size = batch_size.max(1);
        let mut states = Vec::with_capacity(texts.len());
        for text in texts {
            let tokens = self.input_tokens(text)?;
            states.push(LongState {
                source: text.to_string(),
                tokens,
                info: LongInfo {
                    input_tokens: tokens,
                    truncated: long.mode == LongMode::Truncate && tokens > max_input_tokens,
                    chunks: 1,
                    levels: 1,
                },
                done: None,
            });
        }
        if long.mode == LongMode::Truncate {
            let all: Vec<&str> = texts.to_vec();
            let out = self
                .summarize_batches(&all, gen, max_input_tokens, batch_size, 1, on_event)
                .await?;
            return Ok(out
                .into_iter()
                .zip(states)
                .map(|(s, st)| (s, st.info))
                .collect());
        }
        let mut partial_gen = gen.clone();
        partial_gen.num_return_sequences = 1;
        if let Some(n) = long.partial_max_new_tokens {
            partial_gen.max_new_tokens = Some(n);
            partial_gen.min_new_tokens = None;
            partial_gen.min_length = partial_gen.min_length.min(n);
        }
        for level in 1..=crate::long::MAX_LEVELS {
            // Inputs whose text fits: their final summary. The others: their windows.
            let mut finals: Vec<usize> = Vec::new();
            let mut windows: Vec<(usize, String)> = Vec::new();
            for (i, st) in states.iter_mut().enumerate() {
                if st.done.is_some() {
                    continue;
                }
                if st.tokens <= max_input_tokens {
                    finals.push(i);
                    continue;
                }
                let ranges = split(&st.source, self, max_input_tokens, long.overlap_tokens)?;
                if level == 1 {
                    st.info.chunks = ranges.len();
                }
                windows.extend(ranges.into_iter().map(|r| (i, st.source[r].to_string())));
            }
            let total = finals.len() + windows.len();
            let texts: Vec<&str> = finals.iter().map(|&i| states[i].source.as_str()).collect();
            let mut counted = |event: LongEvent<'_>| match event {
                LongEvent::Windows { done, .. } => {
                    on_event(LongEvent::Windows { level, done, total })
                }
                other => on_event(other),
            };
            let out = self
                .summarize_batches(
                    &texts,
                    gen,
                    max_input_tokens,
                    batch_size,
                    level,
                    &mut counted,
                )
                .await?;
            for (&i, summaries) in finals.iter().zip(out) {
                states[i].info.levels = level;
                states[i].done = Some(summaries);
            }
            if windows.is_empty() {
                break;
            }
            let window_texts: Vec<&str> = windows.iter().map(|(_, t)| t.as_str()).collect();
            let mut shifted = |event: LongEvent<'_>| match event {
                LongEvent::Windows { done, .. } => on_event(LongEvent::Windows {
                    level,
                    done: finals.len() + done,
                    total,
                }),
                other => on_event(other),
            };
            let out = self
                .summarize_batches(
                    &window_texts,
                    &partial_gen,
                    max_input_tokens,
                    batch_size,
                    level,
                    &mut shifted,
                )
                .await?;
            let mut partials: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for ((i, _), mut summaries) in windows.iter().zip(out) {
                partials
                    .entry(*i)
                    .or_default()
                    .push(summaries.swap_remove(0).summary);
            }
            for (i, parts) in partials {
                let st = &mut states[i];
                let source = join_partials(&parts);
                let tokens = self.input_tokens(&source)?;
                if tokens >= st.tokens {
                    return Err(Error::InputAt {
                        index: i,
                        message: format!(
                            "an input window of {max_input_tokens} tokens is too small to make \
                         progress: the partial summaries of level {level} ({tokens} tokens) are \
                         no shorter than their input ({} tokens); ask for shorter partial summaries or a larger window",
                            st.tokens
                        ),
                    });
                }
                st.source = source;
                st.tokens = tokens;
            }
        }
        states
            .into_iter()
            .map(|st| match st.done {
                Some(s) => Ok((s, st.info)),
                None => Err(Error::Input(format!(
                    "still longer than the window after {} levels of summaries",
                    crate::long::MAX_LEVELS
                ))),
            })
            .collect()
    }

    /// [`Self::summarize_long_async`], blocking (native, and the CPU backend in wasm).
    pub fn summarize_long(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        long: &LongOptions,
        batch_size: usize,
        on_event: &mut dyn FnMut(LongEvent<'_>),
    ) -> Result<Vec<(Vec<Summary>, LongInfo)>> {
        block_on(self.summarize_long_async(
            texts,
            gen,
            max_input_tokens,
            long,
            batch_size,
            on_event,
        ))
    }

    /// [`Self::summarize_async`] over `texts` in batches of `batch_size`, reporting each step and
    /// each finished batch as events of `level`.
    async fn summarize_batches(
        &self,
        texts: &[&str],
        gen: &GenerationConfig,
        max_input_tokens: usize,
        batch_size: usize,
        level: usize,
        on_event: &mut dyn FnMut(LongEvent<'_>),
    ) -> Result<Vec<Vec<Summary>>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(batch_size) {
            let mut on_step = |step: usize, sequences: &[Vec<u32>]| {
                on_event(LongEvent::Step {
                    level,
                    step,
                    sequences,
                })
            };
            out.extend(
                self.summarize_async(batch, gen, max_input_tokens, &mut on_step)
                    .await?,
            );
            on_event(LongEvent::Windows {
                level,
                done: out.len(),
                total: texts.len(),
            });
        }
        Ok(out)
    }
}

/// Runs a future to completion where the device reads synchronously (native, and the CPU
/// backend in wasm); an error where it cannot (WebGPU in a browser: use the `_async` form).
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    burn::tensor::try_read_sync(f).unwrap_or_else(|| {
        Err(Error::Device(
            "this device reads results asynchronously (WebGPU in a browser): use the async form"
                .into(),
        ))
    })
}

/// A bundle's files by path (as fetched by the browser app or read from disk).
pub type BundleFiles = BTreeMap<String, Vec<u8>>;

/// Loads a web bundle from its files: checks each against the manifest (size and sha256), then
/// [`Summarizer::assemble`]s it on `device` — the browser app's one way to get a model.
/// `sha256_checked`: the caller compared every file's sha256 with the manifest already (the
/// browser does it with its native SubtleCrypto); sizes are still checked here.
pub fn load_bundle(
    files: &BundleFiles,
    device: &burn::tensor::Device,
    options: LoadOptions,
    sha256_checked: bool,
) -> Result<(Manifest, Summarizer)> {
    let get = |name: &'static str| {
        files
            .get(name)
            .map(|bytes| NamedBytes { name, bytes })
            .ok_or_else(|| Error::Config {
                file: name.into(),
                message: "missing from the bundle".into(),
            })
    };
    let manifest = Manifest::from_json(get(MANIFEST_FILE)?.bytes)?;
    for entry in &manifest.files {
        let bytes = files.get(&entry.path).ok_or_else(|| Error::Config {
            file: entry.path.clone(),
            message: "missing from the bundle".into(),
        })?;
        if sha256_checked {
            manifest.verify_size(&entry.path, bytes)?;
        } else {
            manifest.verify(&entry.path, bytes)?;
        }
    }
    let model = ModelBytes {
        config: get("config.json")?,
        generation_config: get("generation_config.json").ok(),
        weights: vec![get(WEIGHTS_FILE)?],
        tokenizer: TokenizerBytes::Json(get("tokenizer.json")?),
        tokenizer_config: files.get("tokenizer_config.json").map(Vec::as_slice),
        chat_template: get("chat_template.jinja").ok(),
    };
    let (summarizer, _) = Summarizer::assemble(&model, device, options, &mut |_| {})?;
    Ok((manifest, summarizer))
}
