//! The searches: greedy (`GenerationMixin._sample`, `do_sample=False`) and beam search
//! (`GenerationMixin._beam_search`).

use super::*;
use crate::Error;

/// Generates for `batch_size` inputs whose encoder states the model already holds,
/// expanded to batch_size * num_beams rows (row = b * num_beams + k, i.e.
/// repeat_interleave like HF).
/// Returns batch_size * num_return_sequences sequences in HF order, each the full
/// decoder sequence starting with decoder_start_token_id, with its TRUE length (no pad
/// appended). `on_step(cur_len, sequences)` is called after every decoding step with the new
/// sequence length (start token included) and, for greedy search, the sequences so far (one per
/// row; finished rows are padded) — what a streaming UI shows; beam search passes `&[]`.
///
/// Blocks until done; for a model whose reads are truly asynchronous (WebGPU in a browser)
/// use [`generate_async`].
pub fn generate(
    model: &mut impl StepModel,
    batch_size: usize,
    cfg: &GenerationConfig,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
) -> Result<Vec<Vec<u32>>, Error> {
    burn::tensor::try_read_sync(generate_async(model, batch_size, cfg, on_step)).unwrap_or_else(
        || {
            Err(gen_err(
                "this device reads results asynchronously (WebGPU in a browser): use generate_async",
            ))
        },
    )
}

/// [`generate`] as a future: awaits each decoding step's logits.
pub async fn generate_async(
    model: &mut impl StepModel,
    batch_size: usize,
    cfg: &GenerationConfig,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
) -> Result<Vec<Vec<u32>>, Error> {
    generate_until(model, batch_size, cfg, on_step, &|| false).await
}

/// [`generate_async`] that asks `stop()` after every step (after `on_step`) and returns
/// [`Error::Cancelled`] as soon as it says true: a server drops the work of clients that left.
pub async fn generate_until(
    model: &mut impl StepModel,
    batch_size: usize,
    cfg: &GenerationConfig,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Vec<u32>>, Error> {
    let prompts = vec![vec![cfg.decoder_start_token_id]; batch_size];
    generate_prompted(model, &prompts, cfg, None, on_step, stop).await
}

/// [`generate_until`] from prompts: each input's sequence starts with its prompt (all of one
/// length: a decoder-only model's left-padded prompt, or an encoder-decoder's decoder start
/// token), which the processors see (no-repeat n-grams, minimum length) as transformers'
/// `generate` does with `input_ids`. The model is fed the prompts' last column first (a
/// decoder-only [`StepModel`] runs its whole prompt then). Lengths count the prompt
/// ([`GenerationConfig::max_length_after`], `max_positions` capping a default `max_length`).
/// Returns the whole sequences, prompt included.
pub async fn generate_prompted(
    model: &mut impl StepModel,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    max_positions: Option<usize>,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Vec<u32>>, Error> {
    cfg.validate()?;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let prompt_len = prompts[0].len();
    if prompt_len == 0 || prompts.iter().any(|p| p.len() != prompt_len) {
        return Err(gen_err("prompts must be non-empty and of one length"));
    }
    let vocab = model.vocab_size();
    if vocab == 0 {
        return Err(gen_err("vocab_size is 0"));
    }
    let max_len = cfg.max_length_after(prompt_len, max_positions);
    // `_validate_generated_length`: nothing may be generated.
    if prompt_len >= max_len {
        return Err(gen_err(format!(
            "the input is {prompt_len} tokens but max_length is {max_len} (a default max_length is \
             capped at max_position_embeddings): set max_new_tokens"
        )));
    }
    let search = Search {
        prompts,
        prompt_len,
        max_len,
        vocab,
    };
    if cfg.num_beams == 1 {
        greedy(model, &search, cfg, on_step, stop).await
    } else {
        beam_search(model, &search, cfg, on_step, stop).await
    }
}

/// What both searches start from.
pub(super) struct Search<'p> {
    prompts: &'p [Vec<u32>],
    prompt_len: usize,
    max_len: usize,
    vocab: usize,
}

pub(super) fn check_logits(logits: &[f32], rows: usize, vocab: usize) -> Result<(), Error> {
    if logits.len() != rows * vocab {
        return Err(gen_err(format!(
            "model returned {} logits, expected {rows} rows x {vocab}",
            logits.len()
        )));
    }
    Ok(())
}

/// `GenerationMixin._sample` with `do_sample=False`.
pub(super) async fn greedy(
    model: &mut impl StepModel,
    search: &Search<'_>,
    cfg: &GenerationConfig,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Vec<u32>>, Error> {
    let (rows, vocab, max_len) = (search.prompts.len(), search.vocab, search.max_len);
    let procs = Processors::new(cfg, vocab, search.prompt_len, max_len)?;
    let no_eos = cfg.eos_ids().is_empty();
    let pad = cfg.pad_token_id;
    let mut seqs: Vec<Vec<u32>> = search
        .prompts
        .iter()
        .map(|p| {
            let mut s = Vec::with_capacity(max_len);
            s.extend_from_slice(p);
            s
        })
        .collect();
    let mut unfinished = vec![true; rows];
    let mut lens = vec![0usize; rows];
    let mut tokens = vec![0u32; rows];
    let mut cur_len = search.prompt_len;
    let mut rng = cfg.sampling.map(|s| crate::sampling::SplitMix64(s.seed));
    loop {
        for (t, s) in tokens.iter_mut().zip(&seqs) {
            *t = s[cur_len - 1];
        }
        let mut logits = model.step(&tokens).await?;
        check_logits(&logits, rows, vocab)?;
        for r in 0..rows {
            let next = if unfinished[r] || no_eos {
                let row = &mut logits[r * vocab..(r + 1) * vocab];
                procs.apply(row, &seqs[r]);
                match (&cfg.sampling, rng.as_mut()) {
                    (Some(sampling), Some(rng)) => {
                        sampling.warp(row);
                        sampling.draw(row, rng) as u32
                    }
                    _ => argmax(row) as u32,
                }
            } else {
                pad
            };
            seqs[r].push(next);
        }
        cur_len += 1;
        for r in 0..rows {
            if unfinished[r] {
                let last = seqs[r][cur_len - 1];
                if cur_len >= max_len || cfg.is_eos(last) {
                    unfinished[r] = false;
                    lens[r] = cur_len;
                }
            }
        }
        on_step(cur_len, &seqs);
        if stop() {
            return Err(Error::Cancelled);
        }
        if !unfinished.iter().any(|&u| u) {
            break;
        }
    }
    for (s, &l) in seqs.iter_mut().zip(&lens) {
        s.truncate(l);
    }
    Ok(seqs)
}

/// `GenerationMixin._beam_search` with `do_sample=False`.
#[allow(clippy::needless_range_loop)] // index arithmetic mirrors the [batch, beam] tensors
pub(super) async fn beam_search(
    model: &mut impl StepModel,
    search: &Search<'_>,
    cfg: &GenerationConfig,
    on_step: &mut dyn FnMut(usize, &[Vec<u32>]),
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Vec<u32>>, Error> {
    let (batch, vocab, max_len) = (search.prompts.len(), search.vocab, search.max_len);
    let prompt_len = search.prompt_len;
    let nb = cfg.num_beams;
    let rows = batch * nb;
    let procs = Processors::new(cfg, vocab, prompt_len, max_len)?;
    let n_eos = cfg.eos_ids().len();
    let keep = std::cmp::max(2, 1 + n_eos) * nb; // beams_to_keep
    if keep > nb * vocab {
        return Err(gen_err(format!(
            "beam search needs {keep} candidates but num_beams * vocab_size = {}",
            nb * vocab
        )));
    }
    let lp = py_float(cfg.length_penalty);
    let early = cfg.early_stopping;
    let fill = cfg.hf_output_pad_token_id();
    let l = max_len;

    // running beams [batch][nb]
    let mut run_seq = vec![fill; rows * l];
    for r in 0..rows {
        run_seq[r * l..r * l + prompt_len].copy_from_slice(&search.prompts[r / nb]);
    }
    let mut run_score = vec![0f32; rows];
    for b in 0..batch {
        for j in 1..nb {
            run_score[b * nb + j] = NEG_1E9;
        }
    }
    // finished hypotheses [batch][nb]
    let mut fin_seq = run_seq.clone();
    let mut fin_score = vec![NEG_1E9; rows];
    let mut fin_flag = vec![false; rows];
    let mut fin_len = vec![prompt_len; rows];
    // candidates [batch][keep]
    let mut cand_seq = vec![fill; batch * keep * l];
    let mut cand_score = vec![0f32; batch * keep];
    let mut cand_src = vec![0usize; batch * keep];
    let mut cand_hit = vec![false; batch * keep];
    // double buffers
    let mut run_seq2 = run_seq.clone();
    let mut run_score2 = run_score.clone();
    let mut fin_seq2 = fin_seq.clone();
    let mut fin_score2 = fin_score.clone();
    let mut fin_flag2 = fin_flag.clone();
    let mut fin_len2 = fin_len.clone();

    let mut unsat = vec![true; batch]; // is_early_stop_heuristic_unsatisfied
    let mut tokens = vec![0u32; rows];
    let mut src = vec![0usize; rows];
    let mut top: Vec<Elem> = Vec::with_capacity(keep);
    let mut scratch: Vec<Elem> = Vec::new();
    let mut small: Vec<Elem> = Vec::with_capacity(3 * nb);
    let mut cur_len = prompt_len;

    loop {
        // a. forward the last token of every running beam
        for r in 0..rows {
            tokens[r] = run_seq[r * l + cur_len - 1];
        }
        let mut logp = model.step(&tokens).await?;
        check_logits(&logp, rows, vocab)?;
        // b. log-probs, processors
        // (the rows' log-softmax on the host's threads: a row's values do not depend on it)
        crate::ops::int8::for_each_row(&mut logp, vocab, 1 << 16, &log_softmax_in_place);
        for r in 0..rows {
            let row = &mut logp[r * vocab..(r + 1) * vocab];
            procs.apply(row, &run_seq[r * l..r * l + cur_len]);
        }
        let denom = length_denominator(cur_len + 1 - prompt_len, lp); // cur_len + 1 - decoder_prompt_len
        for b in 0..batch {
            // c. top-k continuations over num_beams * vocab
            topk_offset_rows(
                &logp[b * nb * vocab..(b + 1) * nb * vocab],
                &run_score[b * nb..(b + 1) * nb],
                vocab,
                keep,
                &mut top,
                &mut scratch,
            );
            for (c, e) in top.iter().enumerate() {
                let beam = e.i / vocab;
                let tok = (e.i % vocab) as u32;
                let ci = b * keep + c;
                let from = (b * nb + beam) * l;
                let to = ci * l;
                cand_seq[to..to + cur_len].copy_from_slice(&run_seq[from..from + cur_len]);
                cand_seq[to + cur_len] = tok;
                cand_score[ci] = e.v;
                cand_src[ci] = beam;
                // d. stopping criteria on the candidate (MaxLength, Eos)
                cand_hit[ci] = cur_len + 1 >= max_len || cfg.is_eos(tok);
            }
            // e. running beams for the next iteration
            small.clear();
            for c in 0..keep {
                let ci = b * keep + c;
                let v = if cand_hit[ci] {
                    cand_score[ci] + NEG_1E9
                } else {
                    cand_score[ci]
                };
                small.push(Elem { v, i: c });
            }
            topk(&mut small, nb);
            for j in 0..nb {
                let c = small[j].i;
                let ci = b * keep + c;
                let r = b * nb + j;
                run_seq2[r * l..r * l + cur_len + 1]
                    .copy_from_slice(&cand_seq[ci * l..ci * l + cur_len + 1]);
                run_score2[r] = small[j].v;
                src[r] = b * nb + cand_src[ci];
            }
            // f. update finished hypotheses
            let full =
                early == EarlyStopping::True && fin_flag[b * nb..(b + 1) * nb].iter().all(|&f| f);
            small.clear();
            for j in 0..nb {
                small.push(Elem {
                    v: fin_score[b * nb + j],
                    i: j,
                });
            }
            for c in 0..keep {
                let ci = b * keep + c;
                let mut s = cand_score[ci] / denom;
                if full {
                    s += NEG_1E9;
                }
                if !unsat[b] {
                    s += NEG_1E9;
                }
                let did = cand_hit[ci] && c < nb;
                if !did {
                    s += NEG_1E9;
                }
                small.push(Elem { v: s, i: nb + c });
            }
            topk(&mut small, nb);
            for j in 0..nb {
                let m = small[j].i;
                let r = b * nb + j;
                if m < nb {
                    let o = b * nb + m;
                    let len = fin_len[o];
                    fin_seq2[r * l..r * l + len].copy_from_slice(&fin_seq[o * l..o * l + len]);
                    fin_score2[r] = small[j].v;
                    fin_flag2[r] = fin_flag[o];
                    fin_len2[r] = len;
                } else {
                    let c = m - nb;
                    let ci = b * keep + c;
                    let len = cur_len + 1;
                    fin_seq2[r * l..r * l + len].copy_from_slice(&cand_seq[ci * l..ci * l + len]);
                    fin_score2[r] = small[j].v;
                    fin_flag2[r] = cand_hit[ci] && c < nb;
                    fin_len2[r] = len;
                }
            }
        }
        std::mem::swap(&mut run_seq, &mut run_seq2);
        std::mem::swap(&mut run_score, &mut run_score2);
        std::mem::swap(&mut fin_seq, &mut fin_seq2);
        std::mem::swap(&mut fin_score, &mut fin_score2);
        std::mem::swap(&mut fin_flag, &mut fin_flag2);
        std::mem::swap(&mut fin_len, &mut fin_len2);

        // g. stopping condition
        cur_len += 1;
        let hyp_len = if early == EarlyStopping::Never && lp > 0.0 {
            max_len - prompt_len
        } else {
            cur_len - prompt_len
        };
        let hyp_denom = length_denominator(hyp_len, lp);
        for b in 0..batch {
            let best = run_score[b * nb] / hyp_denom;
            let scores = &fin_score[b * nb..(b + 1) * nb];
            let mut worst = scores[0];
            for &s in &scores[1..] {
                if s.is_nan() || worst.is_nan() {
                    worst = f32::NAN;
                } else if s < worst {
                    worst = s;
                }
            }
            let any = (0..nb).any(|j| {
                let w = if fin_flag[b * nb + j] { worst } else { NEG_1E9 };
                best > w
            });
            unsat[b] = unsat[b] && any;
        }
        let improvement_possible = unsat.iter().any(|&u| u);
        let exists_open_beam = !(fin_flag.iter().all(|&f| f) && early == EarlyStopping::True);
        let valid_continuations = !cand_hit.iter().all(|&h| h);
        let done = !(improvement_possible && exists_open_beam && valid_continuations);
        on_step(cur_len, &[]);
        if stop() {
            return Err(Error::Cancelled);
        }
        if done {
            break;
        }
        if src.iter().enumerate().any(|(i, &s)| i != s) {
            model.reorder(&src)?;
        }
    }

    let nrs = cfg.num_return_sequences;
    let mut out = Vec::with_capacity(batch * nrs);
    for b in 0..batch {
        for j in 0..nrs {
            let r = b * nb + j;
            out.push(fin_seq[r * l..r * l + fin_len[r]].to_vec());
        }
    }
    Ok(out)
}

/// HF pads outputs to a common length with pad_token_id; this helper does that so
/// tests can compare to HF's raw `generate` output. (Pass
/// [`GenerationConfig::hf_output_pad_token_id`] to match HF in every case.)
pub fn pad_like_hf(seqs: &[Vec<u32>], pad: u32) -> Vec<Vec<u32>> {
    let max = seqs.iter().map(Vec::len).max().unwrap_or(0);
    seqs.iter()
        .map(|s| {
            let mut p = s.clone();
            p.resize(max, pad);
            p
        })
        .collect()
}
