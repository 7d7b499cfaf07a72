//! Fine-tuning, one piece at a time, each computing what PyTorch + transformers compute:
//! tokenized examples → [`collate`] (DataCollatorForSeq2Seq) → [`loss`] (BART's mean token
//! cross-entropy) → gradients → [`clip_global_norm`] (`clip_grad_norm_`) → [`AdamW`]
//! (`torch.optim.AdamW`) with [`linear_schedule`] (`get_linear_schedule_with_warmup`).
//!
//! Only the trainable parameters live on burn's autodiff device; the frozen base stays a plain
//! tensor (a constant to autodiff), so LoRA training pays for the adapter's gradients only.

use crate::checkpoint::Params;
use crate::checkpoint::Slot;
use crate::models::Model;
use crate::pipeline::ids_tensor;
use crate::tokenizer::BartTokenizer;
use crate::{Error, Result};
use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};

/// The label value the loss ignores (PyTorch's `ignore_index`, transformers' padding of labels).
pub const IGNORE: i64 = -100;

/// One tokenized training pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    /// The summary's ids (`<s> ... </s>`), truncated.
    pub labels: Vec<u32>,
}

/// Tokenizes a pair as `tokenizer(dialogue, max_length, truncation=True)` and
/// `tokenizer(text_target=summary, ...)` do.
pub fn tokenize(
    tokenizer: &BartTokenizer,
    dialogue: &str,
    summary: &str,
    max_source: usize,
    max_target: usize,
) -> Result<Example> {
    Ok(Example {
        input_ids: tokenizer.encode(dialogue, Some(max_source))?,
        labels: tokenizer.encode(summary, Some(max_target))?,
    })
}

/// A decoder-only pair: the prompt ids (as `summarize` builds them) followed by the summary's
/// ids and the eos, the loss on the summary and the eos only (prompt labels `-100`, as a
/// completion-only SFT collator masks them). The summary is tokenized without special tokens and
/// cut to `max_target - 1` tokens before the eos.
pub fn tokenize_causal(
    tokenizer: &BartTokenizer,
    prompt: Vec<u32>,
    summary: &str,
    eos: u32,
    max_target: usize,
) -> Result<Example> {
    let mut completion = tokenizer.encode_prompt(summary, false)?;
    completion.truncate(max_target.saturating_sub(1));
    completion.push(eos);
    let mut labels = vec![u32::MAX; prompt.len()];
    labels.extend_from_slice(&completion);
    let mut input_ids = prompt;
    input_ids.extend_from_slice(&completion);
    Ok(Example { input_ids, labels })
}

/// A decoder-only micro-batch: the sequences right-padded with `pad` (attention mask 0), the
/// labels `-100` on the prompt (marked `u32::MAX` by [`tokenize_causal`]) and the padding. No
/// decoder inputs: the loss shifts the labels (`ForCausalLMLoss`).
pub fn collate_causal(examples: &[&Example], pad: u32) -> Batch {
    let len = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let mut batch = Batch {
        input_ids: Vec::new(),
        attention_mask: Vec::new(),
        decoder_input_ids: Vec::new(),
        labels: Vec::new(),
    };
    for e in examples {
        let n = e.input_ids.len();
        let mut ids = e.input_ids.clone();
        ids.resize(len, pad);
        let mut mask = vec![1; n];
        mask.resize(len, 0);
        let mut labels: Vec<i64> = e
            .labels
            .iter()
            .map(|&l| if l == u32::MAX { IGNORE } else { l as i64 })
            .collect();
        labels.resize(len, IGNORE);
        batch.input_ids.push(ids);
        batch.attention_mask.push(mask);
        batch.labels.push(labels);
    }
    batch
}

/// A padded micro-batch, as `DataCollatorForSeq2Seq(padding="longest")` + BART's
/// `shift_tokens_right` make it.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
    pub decoder_input_ids: Vec<Vec<u32>>,
    /// Padded with [`IGNORE`].
    pub labels: Vec<Vec<i64>>,
}

impl Batch {
    /// Target tokens the loss counts.
    pub fn target_tokens(&self) -> usize {
        self.labels
            .iter()
            .flatten()
            .filter(|&&l| l != IGNORE)
            .count()
    }

    /// Input and target tokens, padding excluded.
    pub fn tokens(&self) -> usize {
        let inputs: u32 = self.attention_mask.iter().flatten().sum();
        inputs as usize + self.target_tokens()
    }
}

pub fn collate(examples: &[&Example], pad: u32, decoder_start: u32) -> Batch {
    let src_len = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let tgt_len = examples.iter().map(|e| e.labels.len()).max().unwrap_or(0);
    let mut batch = Batch {
        input_ids: Vec::new(),
        attention_mask: Vec::new(),
        decoder_input_ids: Vec::new(),
        labels: Vec::new(),
    };
    for e in examples {
        let n = e.input_ids.len();
        let mut ids = e.input_ids.clone();
        ids.resize(src_len, pad);
        let mut mask = vec![1; n];
        mask.resize(src_len, 0);
        let mut labels: Vec<i64> = e.labels.iter().map(|&t| t as i64).collect();
        labels.resize(tgt_len, IGNORE);
        // shift_tokens_right: start token, then the labels without the last, -100 → pad.
        let decoder = std::iter::once(decoder_start)
            .chain(labels[..tgt_len.saturating_sub(1)].iter().map(|&l| {
                if l == IGNORE {
                    pad
                } else {
                    l as u32
                }
            }))
            .collect();
        batch.input_ids.push(ids);
        batch.attention_mask.push(mask);
        batch.decoder_input_ids.push(decoder);
        batch.labels.push(labels);
    }
    batch
}

/// Mean cross-entropy over the non-ignored target tokens (`CrossEntropyLoss(ignore_index=-100)`
/// on BART's logits), as a one-element tensor that carries the autodiff graph.
pub fn loss(model: &Model, batch: &Batch) -> Result<Tensor<1>> {
    let count = batch.target_tokens();
    if count == 0 {
        return Err(Error::Input("a training batch has no target tokens".into()));
    }
    let device = model.device();
    let (logits, labels) = match model.as_llama() {
        // Decoder-only: position t predicts label t + 1 (`ForCausalLMLoss` pads the labels with
        // -100 and shifts them left).
        Some(llama) => {
            let mask: Vec<Vec<u32>> = batch.attention_mask.clone();
            let logits = llama.forward(ids_tensor(&batch.input_ids, &device), &mask);
            let shifted: Vec<Vec<i64>> = batch
                .labels
                .iter()
                .map(|l| l.iter().skip(1).copied().chain([IGNORE]).collect())
                .collect();
            (logits, shifted)
        }
        None => {
            let (_, logits) = model.forward(
                ids_tensor(&batch.input_ids, &device),
                ids_tensor(&batch.attention_mask, &device),
                ids_tensor(&batch.decoder_input_ids, &device),
            );
            (logits, batch.labels.clone())
        }
    };
    let [rows, len, vocab] = logits.dims();
    let flat: Vec<i64> = labels.iter().flatten().copied().collect();
    let keep: Vec<f32> = flat.iter().map(|&l| (l != IGNORE) as u8 as f32).collect();
    let targets: Vec<i64> = flat.iter().map(|&l| l.max(0)).collect();
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [rows * len, 1]), &device);
    let keep = Tensor::<1>::from_data(TensorData::new(keep, [rows * len]), &device);
    let log_probs = crate::ops::log_softmax_last(logits.reshape([rows * len, vocab]));
    let picked = log_probs.gather(1, targets).reshape([rows * len]);
    Ok((picked * keep).sum().neg().div_scalar(count as f64))
}

/// What training updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainable {
    /// The LoRA branches' A and B.
    Lora,
    /// Every weight of the model (full fine-tuning).
    All,
}

/// A trainable tensor, flattened: its name (PEFT key or transformers name) and value.
enum ParamRef<'a> {
    D1(&'a mut Param<Tensor<1>>),
    D2(&'a mut Param<Tensor<2>>),
}

/// Calls `f` on every trainable parameter, in a fixed order, with a stable name.
fn each_trainable(
    model: &mut Model,
    what: Trainable,
    f: &mut dyn FnMut(String, ParamRef<'_>) -> Result<()>,
) -> Result<()> {
    match what {
        Trainable::Lora => model.visit_projections(&mut |name, proj| match &mut proj.lora {
            Some(lora) => {
                f(format!("{name}.lora_A"), ParamRef::D2(&mut lora.a))?;
                f(format!("{name}.lora_B"), ParamRef::D2(&mut lora.b))
            }
            None => Ok(()),
        }),
        Trainable::All => model.visit(&mut |name, slot| match slot {
            Slot::Matrix(p) | Slot::LinearWeight(p) => f(name, ParamRef::D2(p)),
            Slot::Vector(p) => f(name, ParamRef::D1(p)),
        }),
    }
}

/// Puts the trainable parameters on the autodiff device with gradients required (the rest stay
/// plain tensors) and switches the model to training (dropout on). Returns how many values are
/// trainable.
pub fn make_trainable(model: &mut Model, what: Trainable) -> Result<usize> {
    model.set_training(true);
    let mut count = 0;
    each_trainable(model, what, &mut |_, p| {
        match p {
            ParamRef::D1(p) => {
                count += p.val().dims().iter().product::<usize>();
                *p = Param::from_tensor(p.val().inner().autodiff().require_grad());
            }
            ParamRef::D2(p) => {
                count += p.val().dims().iter().product::<usize>();
                *p = Param::from_tensor(p.val().inner().autodiff().require_grad());
            }
        }
        Ok(())
    })?;
    if count == 0 {
        return Err(Error::Input(
            "the model has nothing to train (no LoRA branches)".into(),
        ));
    }
    Ok(count)
}

/// Gradients of the trainable parameters, flattened, in [`each_trainable`] order; summed over
/// the micro-batches of one optimizer step.
#[derive(Default)]
pub struct GradAccumulator {
    grads: Vec<Tensor<1>>,
}

impl GradAccumulator {
    /// Runs backward from `loss` and adds each trainable parameter's gradient.
    pub fn backward(&mut self, model: &mut Model, what: Trainable, loss: Tensor<1>) -> Result<()> {
        let grads = loss.backward();
        let mut i = 0;
        let accumulated = &mut self.grads;
        each_trainable(model, what, &mut |name, p| {
            let g = match p {
                ParamRef::D1(p) => p.val().grad(&grads),
                ParamRef::D2(p) => p.val().grad(&grads).map(flatten),
            };
            let g = g.ok_or_else(|| Error::Input(format!("no gradient reached {name}")))?;
            if i < accumulated.len() {
                accumulated[i] = accumulated[i].clone() + g;
            } else {
                accumulated.push(g);
            }
            i += 1;
            Ok(())
        })
    }

    pub fn take(&mut self) -> Vec<Tensor<1>> {
        std::mem::take(&mut self.grads)
    }
}

fn flatten<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n: usize = t.dims().iter().product();
    t.reshape([n])
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)`: scales every gradient by
/// `min(1, max_norm / (total_norm + 1e-6))`, where the norm is over all gradients together.
/// Returns the total norm before clipping.
pub fn clip_global_norm(grads: &mut [Tensor<1>], max_norm: f64) -> Result<f64> {
    let Some(first) = grads.first() else {
        return Ok(0.0);
    };
    let mut sum = Tensor::<1>::zeros([1], &first.device());
    for g in grads.iter() {
        sum = sum + g.clone().powi_scalar(2).sum();
    }
    let total = scalar(sum.sqrt())?;
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    // torch multiplies by the clamped coefficient whatever its value, as f32.
    for g in grads.iter_mut() {
        *g = g.clone().mul_scalar(coef as f32);
    }
    Ok(total)
}

/// Dynamic loss scaling for f16 mixed precision, as `torch.amp.GradScaler` (and so
/// transformers' Trainer with `fp16=True`) does it: the loss is multiplied by `scale` before
/// backward, so that gradients passing through f16 products keep clear of its underflow; the
/// accumulated gradients are multiplied by `1 / scale` (as f32) before clipping. A step whose
/// gradients are not all finite is skipped and the scale halved; after `growth_interval`
/// finite steps in a row it doubles. (bf16 has f32's range and needs none.)
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Finite steps since the scale last changed.
    pub growth_tracker: u64,
    pub growth_interval: u64,
}

impl Default for LossScaler {
    /// GradScaler's defaults: initial scale 2¹⁶, growth interval 2000.
    fn default() -> Self {
        Self {
            scale: 65536.0,
            growth_tracker: 0,
            growth_interval: 2000,
        }
    }
}

impl LossScaler {
    /// `grads *= 1 / scale` (GradScaler's `unscale_`: the reciprocal rounded to f32).
    pub fn unscale(&self, grads: &mut [Tensor<1>]) {
        let inv = (1.0 / self.scale) as f32;
        for g in grads.iter_mut() {
            *g = g.clone().mul_scalar(inv);
        }
    }

    /// After a step: `finite` says whether its gradients were (else it was skipped).
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.growth_tracker += 1;
            if self.growth_tracker == self.growth_interval {
                self.scale *= 2.0;
                self.growth_tracker = 0;
            }
        } else {
            self.scale *= 0.5;
            self.growth_tracker = 0;
        }
    }
}

/// Reads a one-element tensor.
pub fn scalar(t: Tensor<1>) -> Result<f64> {
    let v = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Device(format!("{e:?}")))?;
    Ok(v[0] as f64)
}

/// `get_linear_schedule_with_warmup`: the learning rate for optimizer step `step` (0-based).
pub fn linear_schedule(base_lr: f64, step: usize, warmup: usize, total: usize) -> f64 {
    let factor = if step < warmup {
        step as f64 / warmup.max(1) as f64
    } else {
        ((total as f64 - step as f64) / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
    };
    base_lr * factor
}

/// `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments, eps outside the sqrt).
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Completed steps.
    pub step: u64,
    /// First and second moments, flattened, in [`each_trainable`] order.
    pub moments: Vec<(Tensor<1>, Tensor<1>)>,
}

impl AdamW {
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        Self {
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
            moments: Vec::new(),
        }
    }

    /// One update of the trainable parameters with `grads` (from [`GradAccumulator::take`]).
    pub fn step(
        &mut self,
        model: &mut Model,
        what: Trainable,
        grads: Vec<Tensor<1>>,
        lr: f64,
    ) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let fresh = self.moments.is_empty();
        let mut grads = grads.into_iter();
        let mut i = 0;
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let moments = &mut self.moments;
        each_trainable(model, what, &mut |name, p| {
            let g = grads
                .next()
                .ok_or_else(|| Error::Input(format!("no gradient for {name}")))?;
            if fresh {
                moments.push((g.zeros_like(), g.zeros_like()));
            }
            let (m, v) = &mut moments[i];
            *m = m.clone().mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
            *v = v.clone().mul_scalar(b2) + g.clone().powi_scalar(2).mul_scalar(1.0 - b2);
            let denom = v.clone().sqrt().div_scalar(bias2_sqrt).add_scalar(eps);
            let update = m.clone().div(denom).mul_scalar(lr / bias1);
            match p {
                ParamRef::D1(p) => *p = updated(p.val(), update, lr, wd),
                ParamRef::D2(p) => *p = updated(p.val(), update, lr, wd),
            }
            i += 1;
            Ok(())
        })
    }
}

/// What [`optimizer_step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The global gradient norm before clipping (not finite when skipped).
    pub grad_norm: f64,
    /// The learning rate of the update (or of the one skipped).
    pub lr: f64,
    /// f16 only: gradients overflowed, nothing was updated.
    pub skipped: bool,
}

/// One optimizer step from accumulated `grads`, as transformers' Trainer takes it: unscale
/// (f16: [`LossScaler`]), clip to `max_norm` ([`clip_global_norm`]), AdamW at
/// `lr_at(updates made so far)` — a skipped step does not advance the schedule.
pub fn optimizer_step(
    model: &mut Model,
    what: Trainable,
    opt: &mut AdamW,
    scaler: Option<&mut LossScaler>,
    mut grads: Vec<Tensor<1>>,
    max_norm: f64,
    lr_at: impl Fn(usize) -> f64,
) -> Result<StepOutcome> {
    if let Some(scaler) = &scaler {
        scaler.unscale(&mut grads);
    }
    let grad_norm = clip_global_norm(&mut grads, max_norm)?;
    let lr = lr_at(opt.step as usize);
    let skipped = scaler.is_some() && !grad_norm.is_finite();
    if !skipped {
        opt.step(model, what, grads, lr)?;
    }
    if let Some(scaler) = scaler {
        scaler.update(!skipped);
    }
    Ok(StepOutcome {
        grad_norm,
        lr,
        skipped,
    })
}

/// `p ← p·(1 − lr·wd) − update`, as a fresh trainable leaf.
fn updated<const D: usize>(p: Tensor<D>, update: Tensor<1>, lr: f64, wd: f64) -> Param<Tensor<D>> {
    let shape = p.dims();
    let p = p.inner();
    let p = if wd != 0.0 {
        p.mul_scalar(1.0 - lr * wd)
    } else {
        p
    };
    let p = p - update.reshape(shape);
    Param::from_tensor(p.autodiff().require_grad())
}

/// A copy of `model` for inference: trainable parameters taken off the autodiff device (no
/// graph is recorded while validating or generating, and dropout is off).
pub fn detached(model: &Model, what: Trainable) -> Result<Model> {
    let mut copy = model.clone();
    copy.set_training(false);
    each_trainable(&mut copy, what, &mut |_, p| {
        match p {
            ParamRef::D1(p) => *p = Param::from_tensor(p.val().inner()),
            ParamRef::D2(p) => *p = Param::from_tensor(p.val().inner()),
        }
        Ok(())
    })?;
    Ok(copy)
}

/// Flattened trainable values (for checkpoints), in [`each_trainable`] order, with names.
pub fn trainable_values(model: &mut Model, what: Trainable) -> Result<Vec<(String, Tensor<1>)>> {
    let mut out = Vec::new();
    each_trainable(model, what, &mut |name, p| {
        let t = match p {
            ParamRef::D1(p) => p.val().inner(),
            ParamRef::D2(p) => flatten(p.val().inner()),
        };
        out.push((name, t));
        Ok(())
    })?;
    Ok(out)
}

/// Overwrites the trainable values with `values` (same order and sizes as
/// [`trainable_values`]), keeping them trainable.
pub fn set_trainable_values(
    model: &mut Model,
    what: Trainable,
    values: Vec<Tensor<1>>,
) -> Result<()> {
    let mut values = values.into_iter();
    each_trainable(model, what, &mut |name, p| {
        let v = values
            .next()
            .ok_or_else(|| Error::Weights(format!("checkpoint lacks {name}")))?;
        let fit = |v: Tensor<1>, n: usize| {
            (v.dims()[0] == n).then_some(v).ok_or_else(|| {
                Error::Weights(format!("checkpoint value of {name} has the wrong size"))
            })
        };
        match p {
            ParamRef::D1(p) => {
                let dims = p.val().dims();
                *p = Param::from_tensor(fit(v, dims[0])?.autodiff().require_grad());
            }
            ParamRef::D2(p) => {
                let dims = p.val().dims();
                let v = fit(v, dims[0] * dims[1])?.reshape(dims);
                *p = Param::from_tensor(v.autodiff().require_grad());
            }
        }
        Ok(())
    })?;
    if values.next().is_some() {
        return Err(Error::Weights(
            "checkpoint has more values than the model trains".into(),
        ));
    }
    Ok(())
}

/// A permutation of `0..n` that depends only on `seed`: Fisher–Yates driven by SplitMix64, the
/// same on every machine and in every version (no dependency on a library's RNG).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The micro-batches of one epoch, as example indices: a seeded shuffle, then (like
/// transformers' `group_by_length`) mega-batches of 50 micro-batches each sorted by input
/// length, longest first, so padding stays small.
pub fn epoch_batches(lengths: &[usize], micro: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let order = shuffled(
        lengths.len(),
        seed.wrapping_add(epoch.wrapping_mul(0x5851_F42D_4C95_7F2D)),
    );
    let mut batches = Vec::new();
    for mega in order.chunks(50 * micro.max(1)) {
        let mut mega = mega.to_vec();
        mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(mega.chunks(micro.max(1)).map(<[usize]>::to_vec));
    }
    batches
}
