#!/usr/bin/env python3
"""Training parity fixture (tests/fixtures/train/): 20 AdamW steps of LoRA on a tiny model with PyTorch + PEFT.

The recipe is what transformers' Seq2SeqTrainer does for BART, written out so every piece is explicit:
  - examples: the first 80 rows of ../shared/data/dialogsum/train.jsonl, tokenized with truncation
    (MAX_SOURCE input / MAX_TARGET target tokens), micro-batches of MICRO in order, padded to the longest
    (DataCollatorForSeq2Seq: labels padded with -100; decoder_input_ids = shift_tokens_right(labels));
  - loss: BartForConditionalGeneration's mean token cross-entropy of each micro-batch, divided by GA
    (gradient accumulation), backward per micro-batch;
  - clip_grad_norm_(trainable, 1.0) (global norm), torch.optim.AdamW(lr, betas, eps, weight_decay),
    get_linear_schedule_with_warmup(WARMUP, STEPS), one optimizer step per GA micro-batches;
  - no dropout anywhere (model.eval(), lora_dropout 0), so the run is deterministic.

Writes initial/ (the PEFT adapter before training: A kaiming-uniform, B = 0), final/ (after 20 steps) and
steps.json (per step: loss = mean of its micro-batch losses, grad_norm before clipping, lr used; plus the
collated ids of every micro-batch).

With --precision bf16|f16 (written to train-bf16/, train-f16/) the run is Bartleby's mixed precision, stated
here in PyTorch terms (what CUDA autocast does with a model loaded with torch_dtype=bfloat16/float16, made
explicit so that it is deterministic on the CPU): every frozen weight matrix (projections, the shared
embedding / LM head, the learned positions) is held in the half dtype and takes its products in it (inputs
cast to it, result cast back to f32); activations, biases, LayerNorm, softmax, GELU, residual sums, the LoRA
branch (f32 factors, PEFT's default), AdamW and the loss stay in f32. f16 adds torch.amp.GradScaler (the
CPU one; initial scale INIT_SCALE): scaled loss, unscale_ before clipping, a step with non-finite gradients is
skipped (and the learning-rate schedule does not advance, as in transformers' Trainer).

With --model t5-relu-tied (written to train-t5/) the same recipe runs on a T5 fixture: sources get the model's
summarization prefix (task_specific_params.summarization.prefix, "summarize: ", as Bartleby's train puts it
before every source, like transformers' run_summarization.py --source_prefix), labels end with </s>, the
decoder inputs are T5's shift right (decoder_start_token_id = pad), LoRA on q, v and wi.

Run: tools/reference/.venv/bin/python tools/reference/make_train_fixtures.py [--data ../shared/data]
     [--precision f32|bf16|f16] [--model tiny-gelu|t5-relu-tied]
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse
import json
import math
import shutil
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")

import peft
import transformers
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, get_linear_schedule_with_warmup
from transformers.models.bart import modeling_bart
from transformers.models.bart.modeling_bart import shift_tokens_right

transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
HALF = {"bf16": torch.bfloat16, "f16": torch.float16}
# f16's initial loss scale: far above GradScaler's default 2^16, so that the first steps overflow and the
# fixture exercises skipped steps and the scale backing off.
INIT_SCALE = 2.0**24
MODEL = "tiny-gelu"
SEED = 7
STEPS, MICRO, GA = 20, 2, 2
MAX_SOURCE, MAX_TARGET = 48, 16
LR, BETAS, EPS, WEIGHT_DECAY, WARMUP, CLIP = 2e-3, (0.9, 0.999), 1e-8, 0.01, 3, 1.0
LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"])


LORA_T5 = dict(r=4, lora_alpha=8, target_modules=["q", "v", "wi"])
# Decoder-only (make_llama_fixtures.py's GQA Llama): attention and MLP projections; the prompt is the chat template
# with Bartleby's default instruction, the loss on the summary + eos only (completion-only SFT).
LORA_LLAMA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"])
# Phi-3 (make_llama_fixtures.py's phi3-longrope-f16: fused projections, longrope past original_max_position_embeddings,
# a sliding window shorter than every sequence): LoRA on the fused qkv_proj and gate_up_proj, as PEFT targets them.
LORA_PHI3 = dict(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
PROMPT = "Summarize the following dialogue in one or two sentences.\n\n{dialogue}"
DATE = "26 Jul 2024"


def collate_causal(tok, rows, pad):
    """prompt (apply_chat_template, add_generation_prompt) + summary tokens (no special tokens, cut to MAX_TARGET - 1)
    + eos; labels -100 on the prompt; right-padded with `pad` (labels -100, attention mask 0)."""
    seqs, labels = [], []
    for r in rows:
        messages = [{"role": "user", "content": PROMPT.replace("{dialogue}", r["dialogue"])}]
        prompt = list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, date_string=DATE))
        completion = tok(r["summary"], add_special_tokens=False).input_ids[: MAX_TARGET - 1] + [tok.eos_token_id]
        seqs.append(prompt + completion)
        labels.append([-100] * len(prompt) + completion)
    n = max(len(x) for x in seqs)
    ids = torch.tensor([x + [pad] * (n - len(x)) for x in seqs])
    mask = torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in seqs])
    lab = torch.tensor([x + [-100] * (n - len(x)) for x in labels])
    return ids, mask, lab


def collate(tok, rows, model, prefix):
    enc = tok([prefix + r["dialogue"] for r in rows], max_length=MAX_SOURCE, truncation=True, padding="longest",
              return_tensors="pt")
    labels = tok(text_target=[r["summary"] for r in rows], max_length=MAX_TARGET, truncation=True,
                 padding="longest", return_tensors="pt").input_ids
    labels[labels == tok.pad_token_id] = -100
    start = model.config.decoder_start_token_id
    dec = shift_tokens_right(labels, tok.pad_token_id, start)
    return enc.input_ids, enc.attention_mask, dec, labels


def hold_in_half(model, dt):
    """The mixed-precision policy above, applied to a PEFT-wrapped BART in place."""
    bart = model.base_model.model

    def half_linear(lin):
        lin.weight.data = lin.weight.data.to(dt)
        bias = lin.bias

        def forward(x):
            y = F.linear(x.to(dt), lin.weight).float()
            return y + bias if bias is not None else y

        lin.forward = forward

    for name, module in bart.named_modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad and "lora_" not in name:
            if module is not bart.lm_head:
                half_linear(module)
    # The shared table: embedding lookups and the tied LM head (held once, in dt).
    shared = bart.model.shared
    shared.weight.data = shared.weight.data.to(dt)
    assert bart.lm_head.weight is shared.weight
    for emb in (bart.model.encoder.embed_tokens, bart.model.decoder.embed_tokens):
        emb.forward = (lambda e: lambda ids: F.embedding(ids, e.weight, e.padding_idx).float() * e.embed_scale)(emb)
    bart.lm_head.forward = lambda h: F.linear(h.to(dt), shared.weight).float()
    for pos in (bart.model.encoder.embed_positions, bart.model.decoder.embed_positions):
        pos.weight.data = pos.weight.data.to(dt)
        forward = pos.forward
        pos.forward = (lambda f: lambda *a, **k: f(*a, **k).float())(forward)

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, head_mask=None, **kw):
        # transformers' eager_attention_forward with both products in dt.
        scores = torch.matmul(query.to(dt), key.to(dt).transpose(2, 3)).float() * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = torch.softmax(scores, dim=-1)
        weights = F.dropout(weights, p=dropout, training=module.training)
        out = torch.matmul(weights.to(dt), value.to(dt)).float()
        return out.transpose(1, 2).contiguous(), weights

    modeling_bart.ALL_ATTENTION_FUNCTIONS["bartleby_mixed"] = attention
    bart.config._attn_implementation = "bartleby_mixed"
    for m in bart.modules():
        if hasattr(m, "config") and m.config is not bart.config:
            m.config._attn_implementation = "bartleby_mixed"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--precision", choices=["f32", "bf16", "f16"], default="f32")
    ap.add_argument("--model", default=MODEL)
    args = ap.parse_args()
    t5 = args.model.startswith("t5-")
    causal = args.model.startswith(("llama-", "phi3-"))
    phi3 = args.model.startswith("phi3-")
    if (t5 or causal) and args.precision != "f32":
        raise SystemExit("--precision applies to the BART fixture only")
    OUT = FIX / ("train-t5" if t5 else "train-phi3" if phi3 else "train-llama" if causal else "train" if args.precision == "f32"
                 else f"train-{args.precision}")
    lora = LORA_T5 if t5 else LORA_PHI3 if phi3 else LORA_LLAMA if causal else LORA
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    rows = [json.loads(l) for l in open(Path(args.data) / "dialogsum" / "train.jsonl", encoding="utf-8")]
    rows = rows[: STEPS * MICRO * GA]
    model_dir = FIX / "models" / args.model
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    cls = AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM
    base = cls.from_pretrained(str(model_dir), dtype=torch.float32)
    prefix = ((base.config.task_specific_params or {}).get("summarization") or {}).get("prefix", "")
    task = TaskType.CAUSAL_LM if causal else TaskType.SEQ_2_SEQ_LM
    model = get_peft_model(base, LoraConfig(task_type=task, lora_dropout=0.0, **lora))
    eos = base.config.eos_token_id
    pad = eos[0] if isinstance(eos, list) else eos
    model.eval()  # no dropout: the comparison is deterministic
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(str(OUT / "initial"), safe_serialization=True)
    if args.precision != "f32":
        hold_in_half(model, HALF[args.precision])
    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE) if args.precision == "f16" else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    sched = get_linear_schedule_with_warmup(opt, WARMUP, STEPS)
    steps, batches = [], []
    for step in range(STEPS):
        lr = sched.get_last_lr()[0]
        losses = []
        for m in range(GA):
            i = (step * GA + m) * MICRO
            if causal:
                ids, mask, labels = collate_causal(tok, rows[i : i + MICRO], pad)
                batches.append({"rows": list(range(i, i + MICRO)), "input_ids": ids.tolist(),
                                "attention_mask": mask.tolist(), "labels": labels.tolist()})
                out = model(input_ids=ids, attention_mask=mask, labels=labels)
            else:
                ids, mask, dec, labels = collate(tok, rows[i : i + MICRO], base, prefix)
                batches.append({"rows": list(range(i, i + MICRO)), "input_ids": ids.tolist(),
                                "attention_mask": mask.tolist(), "decoder_input_ids": dec.tolist(),
                                "labels": labels.tolist()})
                out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, labels=labels)
            loss = out.loss / GA
            (scaler.scale(loss) if scaler else loss).backward()
            losses.append(out.loss.item())
        record = {"step": step + 1, "loss": sum(losses) / GA, "micro_losses": losses, "lr": lr}
        if scaler:
            record["loss_scale"] = scaler.get_scale()
            scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(trainable, CLIP).item()
        if scaler:
            scaler.step(opt)
            scaler.update()
            skipped = scaler.get_scale() < record["loss_scale"]
            record["skipped"] = skipped
        else:
            opt.step()
            skipped = False
        if not skipped:
            sched.step()
        opt.zero_grad()
        record["grad_norm"] = norm if math.isfinite(norm) else None
        steps.append(record)
    model.save_pretrained(str(OUT / "final"), safe_serialization=True)
    for d in ("initial", "final"):
        (OUT / d / "README.md").unlink(missing_ok=True)
    fixture = {
        "model": args.model, "source_prefix": prefix, "prompt": PROMPT if causal else None,
        "date_string": DATE if causal else None, "pad_token_id": pad if causal else None, "precision": args.precision, "init_scale": INIT_SCALE if scaler else None, "steps": STEPS, "micro_batch": MICRO, "grad_accum": GA, "max_source": MAX_SOURCE,
        "max_target": MAX_TARGET, "lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": WEIGHT_DECAY,
        "warmup": WARMUP, "clip": CLIP, "lora": lora, "data": "dialogsum/train.jsonl",
        "peft_version": peft.__version__, "torch_version": torch.__version__,
        "transformers_version": transformers.__version__, "history": steps, "batches": batches,
    }
    with open(OUT / "steps.json", "w", encoding="utf-8") as f:
        json.dump(fixture, f, separators=(",", ":"))
    print(" ".join(f"{s['loss']:.4f}" for s in steps))


if __name__ == "__main__":
    main()
