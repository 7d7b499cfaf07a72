#!/usr/bin/env python3
"""Reference side of bench/score: 10,000 (prediction, reference) pairs from the shared train splits (prediction =
the dialogue's first three lines, reference = its summary), written to OUT/pairs10k.jsonl, then scored with
rouge_score 0.1.2 (stemmer; rouge1/2/L/Lsum; BootstrapAggregator 1,000 samples) + sacrebleu 2.6.0 (sentence
BLEU per pair and corpus BLEU) — what `bartleby score --stemmer --metrics rouge,bleu` computes. Prints seconds."""
import json, sys, time
from pathlib import Path
import numpy as np
import sacrebleu
from rouge_score import rouge_scorer, scoring

data, out = Path(sys.argv[1]), Path(sys.argv[2])
pairs = []
for src in ("dialogsum", "samsum"):
    for line in open(data / src / "train.jsonl", encoding="utf-8"):
        r = json.loads(line)
        pairs.append({"id": r["id"], "prediction": "\n".join(r["dialogue"].splitlines()[:3]), "reference": r["summary"]})
        if len(pairs) == 10_000:
            break
    if len(pairs) == 10_000:
        break
with open(out / "pairs10k.jsonl", "w", encoding="utf-8") as f:
    for p in pairs:
        f.write(json.dumps(p) + "\n")
t0 = time.perf_counter()
scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
agg = scoring.BootstrapAggregator()
for p in pairs:
    agg.add_scores(scorer.score_multi([p["reference"]], p["prediction"]))
np.random.seed(0)
result = agg.aggregate()
t1 = time.perf_counter()
sent = [sacrebleu.sentence_bleu(p["prediction"], [p["reference"]]).score for p in pairs]
corpus = sacrebleu.corpus_bleu([p["prediction"] for p in pairs], [[p["reference"] for p in pairs]]).score
t2 = time.perf_counter()
json.dump({"rouge_s": t1 - t0, "bleu_s": t2 - t1, "total_s": t2 - t0, "rougeL_mid": result["rougeL"].mid.fmeasure,
           "corpus_bleu": corpus}, open(out / "score_reference.json", "w"))
print(f"python: rouge_score {t1 - t0:.2f} s, sacrebleu {t2 - t1:.2f} s")
