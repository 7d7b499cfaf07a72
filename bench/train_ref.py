#!/usr/bin/env python3
"""Reference side of bench/train: one LoRA training step with PyTorch + PEFT (fp32, 2 threads) on the
bart-large-cnn-shaped random checkpoint, the seed's step: micro-batch 4 x 768 input / 192 target tokens,
LoRA r=8 alpha=32 dropout 0.05 on q_proj,v_proj, model.train() (dropout on), AdamW, clip 1.0.

PRECISION=bf16|f16 (env): the base loaded in that dtype (torch_dtype=...), PEFT's adapter in f32 (its default),
each step under torch.autocast("cpu", dtype) — what transformers' Trainer does with bf16=True / fp16=True
(f16 also with torch.amp.GradScaler).

Writes OUT/train.jsonl (long dialogue/summary pairs: every row exceeds 768 / 192 tokens, so both sides
train on exactly 4 x 768 / 192) and OUT/train_reference.json (seconds per step, peak RSS)."""
import json, os, resource, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
from pathlib import Path
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoTokenizer, BartForConditionalGeneration

model_dir, out, data = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
STEPS, MICRO, SRC, TGT = int(os.environ.get("STEPS", "4")), 4, 768, 192
torch.set_num_threads(2)
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(model_dir)
rows = [json.loads(l) for l in open(data / "dialogsum/train.jsonl", encoding="utf-8")]
pairs, i = [], 0
while len(pairs) < STEPS * MICRO:
    d, s = [], []
    while len(tok("\n".join(d))["input_ids"]) <= SRC + 8 or len(tok(" ".join(s))["input_ids"]) <= TGT + 8:
        d.append(rows[i]["dialogue"]); s.append(rows[i]["summary"]); i += 1
    pairs.append({"id": f"long{len(pairs)}", "dialogue": "\n".join(d), "summary": " ".join(s)})
with open(out / "train.jsonl", "w", encoding="utf-8") as f:
    for p in pairs:
        f.write(json.dumps(p) + "\n")

PRECISION = os.environ.get("PRECISION", "f32")
HALF = {"bf16": torch.bfloat16, "f16": torch.float16}.get(PRECISION)
model = BartForConditionalGeneration.from_pretrained(model_dir, dtype=HALF or torch.float32)
model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=8, lora_alpha=32, lora_dropout=0.05,
                                         target_modules=["q_proj", "v_proj"]))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
scaler = torch.amp.GradScaler("cpu") if PRECISION == "f16" else None
times = []
for step in range(STEPS):
    batch = pairs[step * MICRO:(step + 1) * MICRO]
    enc = tok([p["dialogue"] for p in batch], max_length=SRC, truncation=True, padding="longest", return_tensors="pt")
    labels = tok(text_target=[p["summary"] for p in batch], max_length=TGT, truncation=True, padding="longest",
                 return_tensors="pt").input_ids
    labels[labels == tok.pad_token_id] = -100
    assert enc.input_ids.shape == (MICRO, SRC) and labels.shape == (MICRO, TGT), (enc.input_ids.shape, labels.shape)
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=HALF, enabled=HALF is not None):
        loss = model(**enc, labels=labels).loss
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    if scaler:
        scaler.step(opt); scaler.update()
    else:
        opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - t0)
    print(f"pytorch step {step + 1}: {times[-1]:.2f} s, loss {loss.item():.4f}", flush=True)
json.dump({"step_s": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "torch": torch.__version__, "precision": PRECISION}, open(out / "train_reference.json", "w"))
