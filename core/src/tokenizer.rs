//! BART's byte-level BPE tokenizer, as `AutoTokenizer` builds it: from `tokenizer.json`, or from
//! the older `vocab.json` + `merges.txt` pair with RoBERTa post-processing.

use crate::{Error, Result};
use std::collections::HashMap;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, PostProcessor, Tokenizer};

/// A tokenizer with BART's conventions (`<s> … </s>`, truncation keeping `</s>`).
#[derive(Clone)]
pub struct BartTokenizer {
    inner: Tokenizer,
    /// transformers' `clean_up_tokenization_spaces` (from tokenizer_config.json; default false).
    clean_up_spaces: bool,
    /// `model_max_length` from tokenizer_config.json, when it sets a real one.
    model_max_length: Option<usize>,
}

/// Token ids with their attention mask, right-padded to a common length.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
    pub width: usize,
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl BartTokenizer {
    /// From `tokenizer.json` bytes and, optionally, `tokenizer_config.json` bytes.
    pub fn from_tokenizer_json(bytes: &[u8], tokenizer_config: Option<&[u8]>) -> Result<Self> {
        // The tokenizers library panics on some malformed files (its decoder helpers unwrap
        // serde errors): check the JSON first, and catch what still panics where unwinding works.
        serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json: invalid JSON: {e}")))?;
        let parsed = std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes)).map_err(|_| {
            Error::Tokenizer(
                "tokenizer.json: malformed (the tokenizers library rejected it)".into(),
            )
        })?;
        let mut inner = parsed.map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        // transformers turns the file's own truncation/padding off and applies its per-call
        // settings instead; so do we (truncation happens in `encode`, padding in `pad_batch`).
        inner.with_truncation(None).map_err(tok_err)?;
        inner.with_padding(None);
        let (clean_up_spaces, model_max_length) = settings(tokenizer_config)?;
        Ok(Self {
            inner,
            clean_up_spaces,
            model_max_length,
        })
    }

    /// From `vocab.json` + `merges.txt` (what `BartTokenizer`, the slow one, reads), built the way
    /// transformers converts it to a fast tokenizer.
    pub fn from_vocab_merges(
        vocab: &[u8],
        merges: &[u8],
        tokenizer_config: Option<&[u8]>,
    ) -> Result<Self> {
        let vocab: HashMap<String, u32> = serde_json::from_slice(vocab)
            .map_err(|e| Error::Tokenizer(format!("vocab.json: {e}")))?;
        let merges_text = std::str::from_utf8(merges)
            .map_err(|_| Error::Tokenizer("merges.txt: not UTF-8".into()))?;
        let mut merge_list = Vec::new();
        for (n, line) in merges_text.lines().enumerate() {
            if (n == 0 && line.starts_with("#version")) || line.trim().is_empty() {
                continue;
            }
            let (a, b) = line.split_once(' ').ok_or_else(|| {
                Error::Tokenizer(format!("merges.txt line {}: expected two tokens", n + 1))
            })?;
            merge_list.push((a.to_string(), b.to_string()));
        }
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| Error::Tokenizer(format!("vocab.json has no {t}")))
        };
        let (bos, eos) = (id("<s>")?, id("</s>")?);
        let mut specials = vec!["<s>", "<pad>", "</s>", "<unk>"];
        let has_mask = vocab.contains_key("<mask>");
        if has_mask {
            specials.push("<mask>");
        }
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merge_list,
            )
            .unk_token("<unk>".into())
            .build()
            .map_err(tok_err)?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true),
        ));
        inner.with_decoder(Some(ByteLevel::default()));
        inner.with_post_processor(Some(
            RobertaProcessing::new(("</s>".into(), eos), ("<s>".into(), bos))
                .trim_offsets(true)
                .add_prefix_space(false),
        ));
        let added: Vec<AddedToken> = specials
            .iter()
            .map(|t| {
                AddedToken::from(t.to_string(), true)
                    .lstrip(*t == "<mask>")
                    .normalized(false)
            })
            .collect();
        inner.add_special_tokens(&added);
        let (clean_up_spaces, model_max_length) = settings(tokenizer_config)?;
        Ok(Self {
            inner,
            clean_up_spaces,
            model_max_length,
        })
    }

    /// The tokenizer as `tokenizer.json` bytes (what a bundle ships, whatever the source files
    /// were); [`Self::from_tokenizer_json`] reads it back to the same tokenizer.
    pub fn to_tokenizer_json(&self) -> Result<Vec<u8>> {
        self.inner
            .to_string(false)
            .map(String::into_bytes)
            .map_err(tok_err)
    }

    /// The tokenizer model's kind: `BPE`, `Unigram`, `WordPiece` or `WordLevel`.
    pub fn model_kind(&self) -> &'static str {
        use tokenizers::models::ModelWrapper;
        match self.inner.get_model() {
            ModelWrapper::BPE(_) => "BPE",
            ModelWrapper::Unigram(_) => "Unigram",
            ModelWrapper::WordPiece(_) => "WordPiece",
            ModelWrapper::WordLevel(_) => "WordLevel",
        }
    }

    /// The input length transformers truncates to by default (`model_max_length`), if set.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `tokenizer(text, truncation=True, max_length=max_len)["input_ids"]`: the content is cut
    /// so that the post-processor's special tokens still fit (`<s> … </s>` keeps its `</s>`),
    /// exactly as the library's own truncation does.
    pub fn encode(&self, text: &str, max_len: Option<usize>) -> Result<Vec<u32>> {
        let mut enc = self.inner.encode(text, false).map_err(tok_err)?;
        if let Some(max) = max_len {
            let added = self
                .inner
                .get_post_processor()
                .map(|p| p.added_tokens(false))
                .unwrap_or(0);
            if max < added {
                return Err(Error::Input(format!(
                    "max input tokens {max} is smaller than the {added} special tokens"
                )));
            }
            enc.truncate(max - added, 0, tokenizers::TruncationDirection::Right);
        }
        let enc = self.inner.post_process(enc, None, true).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// The id of token `text` (e.g. a special token named in tokenizer_config.json).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// `tokenizer(text, add_special_tokens=…)["input_ids"]`, never truncated: a decoder-only
    /// model's prompt (a rendered chat template is tokenized without adding special tokens
    /// again, as `apply_chat_template(tokenize=True)` does).
    pub fn encode_prompt(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Where each token of `text` starts (byte offsets into `text`, special tokens left out),
    /// for cutting a text at token boundaries.
    pub fn token_starts(&self, text: &str) -> Result<Vec<usize>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        Ok(enc.get_offsets().iter().map(|&(start, _)| start).collect())
    }

    /// Encodes several texts and right-pads them with `pad_id`.
    pub fn encode_batch(
        &self,
        texts: &[&str],
        max_len: Option<usize>,
        pad_id: u32,
    ) -> Result<Batch> {
        let input_ids = texts
            .iter()
            .map(|t| self.encode(t, max_len))
            .collect::<Result<Vec<_>>>()?;
        Ok(pad_batch(input_ids, pad_id))
    }

    /// `tokenizer.decode(ids, skip_special_tokens=...)`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(tok_err)?;
        Ok(if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }
}

/// Right-pads sequences to their longest length.
pub fn pad_batch(input_ids: Vec<Vec<u32>>, pad_id: u32) -> Batch {
    let width = input_ids.iter().map(Vec::len).max().unwrap_or(0);
    let attention_mask = input_ids
        .iter()
        .map(|ids| (0..width).map(|i| u32::from(i < ids.len())).collect())
        .collect();
    let input_ids = input_ids
        .into_iter()
        .map(|mut ids| {
            ids.resize(width, pad_id);
            ids
        })
        .collect();
    Batch {
        input_ids,
        attention_mask,
        width,
    }
}

/// transformers' `clean_up_tokenization`.
pub fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// What `tokenizer_config.json` says that the tokenizer needs: transformers'
/// `clean_up_tokenization_spaces` (default false) and `model_max_length` (unset, or the huge
/// placeholder transformers writes when there is none, is `None`).
fn settings(tokenizer_config: Option<&[u8]>) -> Result<(bool, Option<usize>)> {
    let Some(bytes) = tokenizer_config else {
        return Ok((false, None));
    };
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Tokenizer(format!("tokenizer_config.json: {e}")))?;
    let clean_up = v
        .get("clean_up_tokenization_spaces")
        .and_then(|b| b.as_bool())
        .unwrap_or(false);
    let max_length = v
        .get("model_max_length")
        .and_then(|n| n.as_u64())
        .filter(|&n| n > 0 && n <= 1 << 24)
        .map(|n| n as usize);
    Ok((clean_up, max_length))
}
