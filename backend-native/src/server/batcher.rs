//! The inference thread of `bartleby serve`: inputs queued by the handlers run together in one
//! batch when they share a model (adapter) and settings, within a token budget and a short wait.
//!
//! Batches run to completion (no continuous batching): the core's generation is batch-invariant
//! (an input gives the same ids whatever else shares its batch, checked by the parity suites and
//! the server's tests), so batching changes only throughput. A batch stops early when every
//! client in it has gone; a panic fails its batch's requests, not the server.

use super::api::{Details, FinishReason, Token};
use super::metrics::Metrics;
use bartleby_core::{GenerationConfig, Summarizer};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A model the server holds: the base, or the base with one `--adapter` (unmerged).
pub struct Served {
    /// `None`: the base model; else the adapter's NAME (`adapter_id`).
    pub adapter: Option<String>,
    pub summarizer: Summarizer,
    /// Its summarization settings with the server's flags on top.
    pub defaults: GenerationConfig,
    pub prefix: String,
    pub max_input: usize,
}

/// What an input's batch must share.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub model: usize,
    pub gen: GenerationConfig,
    pub max_input: usize,
    pub prefix: String,
}

/// One input queued by a handler.
pub struct Job {
    pub text: String,
    pub settings: Settings,
    /// Its share of `--max-batch-tokens`: (input tokens + max sequence length) × beams.
    pub cost: usize,
    pub enqueued: Instant,
    /// Greedy streaming: each new token as it is chosen.
    pub tokens: Option<mpsc::UnboundedSender<Token>>,
    pub reply: oneshot::Sender<Result<Done, String>>,
}

/// A finished input.
#[derive(Debug)]
pub struct Done {
    pub text: String,
    pub details: Details,
    pub queue: Duration,
    pub inference: Duration,
    pub batch_size: usize,
}

pub struct Limits {
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
    pub max_wait: Duration,
}

/// Test hook (fault injection): an input equal to `BARTLEBY_SERVE_PANIC_ON` panics in the inference
/// thread, to check that a panic fails only its own batch.
fn panic_hook_text() -> Option<String> {
    std::env::var("BARTLEBY_SERVE_PANIC_ON").ok()
}

/// Runs until every sender of `rx` is gone.
pub fn run(models: Arc<Vec<Served>>, rx: Receiver<Job>, limits: Limits, metrics: Arc<Metrics>) {
    let panic_on = panic_hook_text();
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        // Wait for company until the oldest input has waited max_wait, or the budget is full.
        let deadline = pending[0].enqueued + limits.max_wait;
        loop {
            while let Ok(job) = rx.try_recv() {
                pending.push_back(job);
            }
            pending.retain(|j| !j.reply.is_closed());
            let Some(first) = pending.front() else { break };
            let (n, cost) = pending
                .iter()
                .filter(|j| j.settings == first.settings)
                .fold((0, 0), |(n, c), j| (n + 1, c + j.cost));
            let now = Instant::now();
            if n >= limits.max_batch_size || cost >= limits.max_batch_tokens || now >= deadline {
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(job) => pending.push_back(job),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        pending.retain(|j| !j.reply.is_closed());
        let Some(first) = pending.front() else {
            continue;
        };
        // The batch: inputs with the first one's settings, in order, within the budget.
        let settings = first.settings.clone();
        let mut batch = Vec::new();
        let mut rest = VecDeque::new();
        let mut cost = 0;
        for job in pending.drain(..) {
            let fits = batch.is_empty()
                || (cost + job.cost <= limits.max_batch_tokens
                    && batch.len() < limits.max_batch_size);
            if job.settings == settings && fits {
                cost += job.cost;
                batch.push(job);
            } else {
                rest.push_back(job);
            }
        }
        pending = rest;
        run_batch(
            &models[settings.model],
            &settings,
            batch,
            &metrics,
            &panic_on,
        );
    }
}

fn run_batch(
    served: &Served,
    settings: &Settings,
    batch: Vec<Job>,
    metrics: &Metrics,
    panic_on: &Option<String>,
) {
    let started = Instant::now();
    let summarizer = &served.summarizer;
    let texts: Vec<String> = batch
        .iter()
        .map(|j| format!("{}{}", settings.prefix, j.text))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // Streaming rows: the text decoded so far, so each event carries only what a token adds.
    let mut shown: Vec<(usize, bool)> = vec![(0, false); batch.len()];
    let special = special_ids(&settings.gen);
    // Where the generated tokens start in the sequences: after the decoder start token, or a
    // decoder-only model's left-padded prompts (the first step's length minus one).
    let mut start: Option<usize> = None;
    let max_positions = summarizer.config.max_position_embeddings();
    let mut on_step = |cur_len: usize, seqs: &[Vec<u32>]| {
        let start = *start.get_or_insert(cur_len - 1);
        let max_len = settings.gen.max_length_after(start, max_positions);
        for (r, job) in batch.iter().enumerate() {
            let (Some(tx), Some(seq)) = (&job.tokens, seqs.get(r)) else {
                continue;
            };
            let (len, finished) = &mut shown[r];
            if *finished || seq.len() < cur_len {
                continue;
            }
            let id = seq[cur_len - 1];
            let is_special = special.contains(&id);
            let last = settings.gen.is_eos(id) || cur_len >= max_len;
            let mut text = String::new();
            if !is_special || last {
                if let Ok(full) = summarizer.tokenizer.decode(&seq[start..cur_len], true) {
                    // Hold back an incomplete multi-byte character until it completes (or the
                    // sequence ends: then what the final text has).
                    if (last || !full.ends_with('\u{FFFD}')) && full.len() >= *len {
                        text = full.get(*len..).unwrap_or_default().to_string();
                        *len = full.len();
                    }
                }
            }
            *finished = last;
            let _ = tx.send(Token {
                id,
                text,
                logprob: None,
                special: is_special,
            });
        }
    };
    let stop = || batch.iter().all(|j| j.reply.is_closed());
    let result = catch_unwind(AssertUnwindSafe(|| {
        if let Some(p) = panic_on {
            if batch.iter().any(|j| &j.text == p) {
                panic!("BARTLEBY_SERVE_PANIC_ON matched an input");
            }
        }
        summarizer.summarize_until(
            &refs,
            &settings.gen,
            settings.max_input,
            &mut on_step,
            &stop,
        )
    }));
    let inference = started.elapsed();
    metrics.batch_size.observe(batch.len() as f64);
    let outcome: Result<Vec<Vec<bartleby_core::Summary>>, String> = match result {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(bartleby_core::Error::Cancelled)) => return,
        Ok(Err(e)) => Err(format!("generation failed: {e}")),
        Err(_) => {
            Err("generation failed: the inference thread panicked (see the server log)".into())
        }
    };
    let n = batch.len();
    match outcome {
        Ok(out) => {
            for (job, summaries) in batch.into_iter().zip(out) {
                let best = summaries
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| bartleby_core::Summary {
                        summary: String::new(),
                        token_ids: Vec::new(),
                    });
                // Encoder-decoder ids start with the decoder start token; decoder-only ones are
                // the generated tokens only.
                let start_token = usize::from(summarizer.prompting.is_none());
                let generated = best.token_ids.len().saturating_sub(start_token);
                metrics
                    .generated_tokens
                    .fetch_add(generated as u64, Ordering::Relaxed);
                let queue = started.saturating_duration_since(job.enqueued);
                metrics.queue_seconds.observe(queue.as_secs_f64());
                metrics.inference_seconds.observe(inference.as_secs_f64());
                let finish_reason = if generated > 0
                    && best
                        .token_ids
                        .last()
                        .is_some_and(|&t| settings.gen.is_eos(t))
                {
                    FinishReason::EosToken
                } else {
                    FinishReason::Length
                };
                let _ = job.reply.send(Ok(Done {
                    text: best.summary,
                    details: Details {
                        finish_reason,
                        generated_tokens: generated,
                        token_ids: best.token_ids,
                    },
                    queue,
                    inference,
                    batch_size: n,
                }));
            }
        }
        Err(message) => {
            tracing::error!("batch of {n}: {message}");
            for job in batch {
                let _ = job.reply.send(Err(message.clone()));
            }
        }
    }
}

/// Ids that are not text: start, end, padding, forced tokens.
fn special_ids(gen: &GenerationConfig) -> Vec<u32> {
    let mut ids = vec![gen.decoder_start_token_id, gen.pad_token_id];
    ids.extend(gen.eos_ids());
    ids.extend(gen.bos_token_id);
    ids.extend(gen.forced_bos_token_id);
    ids.extend(gen.forced_eos_token_id);
    ids
}
