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

Run: tools/reference/.venv/bin/python tools/reference/make_train_fixtures.py [--data ../shared/data]
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse
import json
import shutil
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

import peft
import transformers
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoTokenizer, BartForConditionalGeneration, get_linear_schedule_with_warmup
from transformers.models.bart.modeling_bart import shift_tokens_right

transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "train"
MODEL = "tiny-gelu"
SEED = 7
STEPS, MICRO, GA = 20, 2, 2
MAX_SOURCE, MAX_TARGET = 48, 16
LR, BETAS, EPS, WEIGHT_DECAY, WARMUP, CLIP = 2e-3, (0.9, 0.999), 1e-8, 0.01, 3, 1.0
LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"])


def collate(tok, rows):
    enc = tok([r["dialogue"] for r in rows], max_length=MAX_SOURCE, truncation=True, padding="longest",
              return_tensors="pt")
    labels = tok(text_target=[r["summary"] for r in rows], max_length=MAX_TARGET, truncation=True,
                 padding="longest", return_tensors="pt").input_ids
    labels[labels == tok.pad_token_id] = -100
    dec = shift_tokens_right(labels, tok.pad_token_id, 2)
    return enc.input_ids, enc.attention_mask, dec, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    rows = [json.loads(l) for l in open(Path(args.data) / "dialogsum" / "train.jsonl", encoding="utf-8")]
    rows = rows[: STEPS * MICRO * GA]
    model_dir = FIX / "models" / MODEL
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    base = BartForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, lora_dropout=0.0, **LORA))
    model.eval()  # no dropout: the comparison is deterministic
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(str(OUT / "initial"), safe_serialization=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    sched = get_linear_schedule_with_warmup(opt, WARMUP, STEPS)
    steps, batches = [], []
    for step in range(STEPS):
        lr = sched.get_last_lr()[0]
        losses = []
        for m in range(GA):
            i = (step * GA + m) * MICRO
            ids, mask, dec, labels = collate(tok, rows[i : i + MICRO])
            batches.append({"rows": list(range(i, i + MICRO)), "input_ids": ids.tolist(),
                            "attention_mask": mask.tolist(), "decoder_input_ids": dec.tolist(),
                            "labels": labels.tolist()})
            out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, labels=labels)
            (out.loss / GA).backward()
            losses.append(out.loss.item())
        norm = torch.nn.utils.clip_grad_norm_(trainable, CLIP).item()
        opt.step()
        sched.step()
        opt.zero_grad()
        steps.append({"step": step + 1, "loss": sum(losses) / GA, "micro_losses": losses, "grad_norm": norm,
                      "lr": lr})
    model.save_pretrained(str(OUT / "final"), safe_serialization=True)
    for d in ("initial", "final"):
        (OUT / d / "README.md").unlink(missing_ok=True)
    fixture = {
        "model": MODEL, "steps": STEPS, "micro_batch": MICRO, "grad_accum": GA, "max_source": MAX_SOURCE,
        "max_target": MAX_TARGET, "lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": WEIGHT_DECAY,
        "warmup": WARMUP, "clip": CLIP, "lora": LORA, "data": "dialogsum/train.jsonl",
        "peft_version": peft.__version__, "torch_version": torch.__version__,
        "transformers_version": transformers.__version__, "history": steps, "batches": batches,
    }
    with open(OUT / "steps.json", "w", encoding="utf-8") as f:
        json.dump(fixture, f, separators=(",", ":"))
    print(" ".join(f"{s['loss']:.4f}" for s in steps))


if __name__ == "__main__":
    main()
