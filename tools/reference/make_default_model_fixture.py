"""Reference output of the shipped default model (models/bartleby-small) for tests/default_model.rs.

transformers' own generate() on the first N SAMSum validation dialogues, with the model's
generation_config.json (what `bartleby summarize` without flags uses) and inputs cut at the model's
max_position_embeddings (Bartleby's window). Run once in float32 and once in float64: the fixture
is written only when both give the same ids (no near-tie decided by rounding).

    tools/reference/.venv/bin/python tools/reference/make_default_model_fixture.py \
        [--model models/bartleby-small] [--data ../shared/data] [--rows 5] \
        [--out tests/fixtures/default-model/samsum-validation.json]
"""
import argparse
import json
import sys

import torch
import transformers
from transformers import AutoTokenizer, BartForConditionalGeneration, GenerationConfig

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="models/bartleby-small")
ap.add_argument("--data", default="../shared/data")
ap.add_argument("--rows", type=int, default=5)
ap.add_argument("--out", default="tests/fixtures/default-model/samsum-validation.json")
args = ap.parse_args()

torch.manual_seed(0)
rows = []
with open(f"{args.data}/samsum/validation.jsonl") as f:
    for line in f:
        if line.strip():
            rows.append(json.loads(line))
        if len(rows) == args.rows:
            break

tok = AutoTokenizer.from_pretrained(args.model)
gc = GenerationConfig.from_pretrained(args.model)
results = {}
for dtype in (torch.float32, torch.float64):
    model = BartForConditionalGeneration.from_pretrained(args.model, dtype=dtype).eval()
    window = model.config.max_position_embeddings
    out = []
    for r in rows:
        enc = tok(r["dialogue"], truncation=True, max_length=window, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], generation_config=gc)[0].tolist()
        full = len(tok(r["dialogue"])["input_ids"])  # before the cut (Bartleby's input_tokens)
        out.append({"id": r["id"], "input_tokens": full, "truncated": full > window, "token_ids": ids,
                    "summary": tok.decode(ids, skip_special_tokens=True).strip()})
    results[str(dtype)] = out
if results["torch.float32"] != results["torch.float64"]:
    sys.exit("float32 and float64 generate() differ: pick other rows (near-tie)")
fixture = {
    "source": "tools/reference/make_default_model_fixture.py",
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "model": args.model,
    "data": "samsum/validation.jsonl (first %d rows)" % args.rows,
    "generation_config": gc.to_diff_dict(),
    "rows": results["torch.float32"],
}
import os
os.makedirs(os.path.dirname(args.out), exist_ok=True)
with open(args.out, "w") as f:
    json.dump(fixture, f, indent=1)
    f.write("\n")
print(f"wrote {args.out}: {len(rows)} rows, float32 == float64")
