#!/usr/bin/env python3
"""Does a summarizer read its input? transformers' loss on N training pairs with the right dialogues and with the
dialogues shuffled among the pairs (same summaries). A model that ignores its input scores the same on both
(docs/results.md, bartleby-small: 3.8399 vs 3.8400 for the first long run).

  tools/reference/.venv/bin/python tools/reference/input_sensitivity.py MODEL_DIR [--data ../shared/data/samsum/train.jsonl] [--n 32]
"""
import argparse, json, random

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--data", default="../shared/data/samsum/train.jsonl")
ap.add_argument("--n", type=int, default=32)
ap.add_argument("--max-source-tokens", type=int, default=256)
ap.add_argument("--max-target-tokens", type=int, default=64)
args = ap.parse_args()

rows = []
for line in open(args.data, encoding="utf-8"):
    if line.strip():
        rows.append(json.loads(line))
    if len(rows) == args.n:
        break
tok = AutoTokenizer.from_pretrained(args.model)
model = AutoModelForSeq2SeqLM.from_pretrained(args.model, dtype=torch.float32).eval()
shuffled = list(range(len(rows)))
random.Random(0).shuffle(shuffled)


def loss(order):
    enc = tok([rows[i]["dialogue"] for i in order], truncation=True, max_length=args.max_source_tokens, padding=True,
              return_tensors="pt")
    lab = tok(text_target=[r["summary"] for r in rows], truncation=True, max_length=args.max_target_tokens,
              padding=True, return_tensors="pt")["input_ids"]
    lab[lab == tok.pad_token_id] = -100
    enc.pop("token_type_ids", None)
    with torch.no_grad():
        return model(**enc, labels=lab).loss.item()


print(json.dumps({"model": args.model, "pairs": len(rows), "loss_paired": round(loss(range(len(rows))), 4),
                  "loss_shuffled": round(loss(shuffled), 4)}))
