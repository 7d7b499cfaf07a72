#!/usr/bin/env python3
"""Reference generator for the end-to-end `bartleby score` parity test (tests/score.rs).

References (tools/reference/requirements.txt): rouge-score 0.1.2 (nltk 3.10.4's PorterStemmer), sacrebleu 2.6.0,
numpy; optionally evaluate 0.4.6 (+ datasets) for the --hf-evaluate cross-check. Deterministic, no network.

Writes:
  tests/fixtures/score/pairs.jsonl     ~30 (prediction, references) pairs built from the shared validation
                                       summaries: perturbed or unrelated summaries, exact copies, 1 or 2 references
                                       ("reference" string or "references" list), one multi-line pair, an empty
                                       prediction, short predictions with 1 reference among 2-reference pairs (so
                                       the two BLEU paddings differ), ids that are strings, numbers or missing
  tests/fixtures/score/expected.json   for each run (command-line arguments): the per-example and corpus scores
                                       that `bartleby score` must output, computed by
                                       - rouge_score RougeScorer(['rouge1','rouge2','rougeL','rougeLsum'],
                                         use_stemmer=S).score_multi(references, prediction)
                                       - BootstrapAggregator(n_samples=K) fed those scores, np.random.seed(N), then
                                         aggregate(): {low, mid, high} of the F-measure
                                       - sacrebleu.sentence_bleu(prediction, references).score and
                                         sacrebleu.corpus_bleu(predictions, streams).score, stream k = k-th
                                         reference of every pair, missing ones None (--bleu-pad none) or ''
                                         (--bleu-pad empty)
                                       - --hf-evaluate: what evaluate's rouge metric returns: the mid F-measures of
                                         a BootstrapAggregator() with its default 1000 samples (evaluate has no way
                                         to change them) after np.random.seed(N); with --evaluate-rouge-script PATH (a local copy of evaluate's
                                         metrics/rouge/rouge.py; the hub is not used) it is also checked against
                                         evaluate.load(PATH, seed=N).compute(predictions, references)

Run (from the repository root):
  tools/reference/.venv/bin/python tools/reference/make_score_fixture.py [--data ../shared/data]
      [--evaluate-rouge-script /path/to/rouge.py]
"""

import argparse
import json
import os
import random
from importlib.metadata import version
from pathlib import Path

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer, scoring

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "score"
TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
SETS = ["samsum", "dialogsum", "ami"]

# (extra command-line arguments, stemmer, seed, n_samples, padding, hf_evaluate, metrics)
RUNS = [
    (["--stemmer", "--bootstrap-seed", "7"], True, 7, 1000, "none", False, ["rouge", "bleu"]),
    (["--bootstrap-seed", "2024", "--bootstrap-samples", "250", "--bleu-pad", "empty", "--hf-evaluate"],
     False, 2024, 250, "empty", True, ["rouge", "bleu"]),
    ([], False, 0, 1000, "none", False, ["rouge", "bleu"]),
    (["--metrics", "bleu", "--bleu-pad", "empty"], False, 0, 1000, "empty", False, ["bleu"]),
]


def load(data_dir):
    return {name: [json.loads(line) for line in open(Path(data_dir) / name / "validation.jsonl", encoding="utf-8")]
            for name in SETS}


def perturb(text, rng, strength=0.25):
    """Drops, duplicates, replaces and recases words, and swaps a few neighbours."""
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < strength * 0.3:
            continue
        if r < strength * 0.5:
            out.append(w)
        elif r < strength * 0.7:
            w = rng.choice(["the", "a", "meeting", "said", "will", "Tom", "and", "not"])
        elif r < strength:
            w = w.upper() if rng.random() < 0.5 else w.lower()
        out.append(w)
    for _ in range(max(1, len(out) // 10)):
        if len(out) > 2:
            i = rng.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def to_lines(text):
    return text.replace(". ", ".\n").replace("! ", "!\n").replace("? ", "?\n")


def build_pairs(data):
    rng = random.Random(31337)
    ss, ds, ami = data["samsum"], data["dialogsum"], data["ami"]
    rows = []

    def add(row_id, prediction, references, single=False):
        row = {} if row_id is None else {"id": row_id}
        row["prediction"] = prediction
        if single:
            assert len(references) == 1
            row["reference"] = references[0]
        else:
            row["references"] = references
        rows.append(row)

    for k in range(8):  # samsum: perturbed, some with a second (perturbed) reference
        ex = ss[3 * k]
        refs = [ex["summary"]] + ([perturb(ex["summary"], rng, 0.4)] if k % 2 else [])
        add(ex["id"], perturb(ex["summary"], rng), refs, single=(k == 2))
    for k in range(6):  # dialogsum: another example's summary, or itself
        ex, other = ds[k], ds[(k + 7) % len(ds)]
        pred = other["summary"] if k % 3 else ex["summary"]
        refs = [ex["summary"]] + ([other["summary"]] if k == 4 else [])
        add(ex["id"], pred, refs)
    for k in range(3):  # ami: long summaries, perturbed strongly
        ex = ami[k]
        add(ex["id"], perturb(ex["summary"], rng, 0.5), [ex["summary"], perturb(ex["summary"], rng, 0.2)])
    # Multi-line (one sentence per line: rougeLsum differs from rougeL).
    ex = ss[40]
    add("multi-line", to_lines(perturb(ex["summary"], rng, 0.3)), [to_lines(ex["summary"]), ex["summary"]])
    ex = ami[3]
    add("multi-line-ami", to_lines(ex["summary"]), [to_lines(perturb(ex["summary"], rng, 0.3))])
    # Short predictions with one reference, among pairs with two: '' padding changes their closest
    # reference length (0 tokens) and so corpus BLEU's brevity penalty.
    for k in range(3):
        ex = ss[60 + k]
        words = ex["summary"].split(" ")
        add(1000 + k, " ".join(words[: max(1, len(words) // 4)]), [ex["summary"]], single=(k == 0))
    add(None, "", [ss[70]["summary"]])  # empty prediction, no id (its position)
    add(None, ss[71]["summary"].upper(), [ss[71]["summary"], ss[72]["summary"]])  # case: ROUGE ignores it, BLEU not
    add("unicode", "Zoë’s café — naïve “quotes” 2,5 km… ok", ["Zoe's cafe - naive \"quotes\" 2.5 km... ok"])
    ex = ds[20]
    add(7, ex["summary"], [ex["summary"]])  # identical
    add("empty-ref", ss[80]["summary"], ["", ss[80]["summary"]])
    ex = ss[90]
    add(8, perturb(ex["summary"], rng, 0.1), [ex["summary"], ss[91]["summary"]])
    return rows


def run_reference(rows, stemmer, seed, n_samples, padding, hf_evaluate, metrics, evaluate_script):
    preds = [r["prediction"] for r in rows]
    refs = [r["references"] if "references" in r else [r["reference"]] for r in rows]
    ids = [r.get("id", i) for i, r in enumerate(rows)]
    per_example = [{"id": i} for i in ids]
    corpus = {}
    out = {"per_example": per_example, "corpus": corpus}
    if "rouge" in metrics:
        scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=stemmer)
        aggregator = scoring.BootstrapAggregator(n_samples=n_samples)
        for row, p, r in zip(per_example, preds, refs):
            s = scorer.score_multi(r, p)
            aggregator.add_scores(s)
            for t in TYPES:
                row[t] = {"precision": s[t].precision, "recall": s[t].recall, "fmeasure": s[t].fmeasure}
        np.random.seed(seed)
        agg = aggregator.aggregate()
        for t in TYPES:
            corpus[t] = {"low": float(agg[t].low.fmeasure), "mid": float(agg[t].mid.fmeasure),
                         "high": float(agg[t].high.fmeasure)}
        if hf_evaluate:
            # evaluate's rouge.py: BootstrapAggregator() (n_samples=1000 whatever --bootstrap-samples says),
            # use_stemmer=False unless asked, compute() run under numpy seeded with the module's seed.
            hf_agg = scoring.BootstrapAggregator()
            for p, r in zip(preds, refs):
                hf_agg.add_scores(scorer.score_multi(r, p))
            np.random.seed(seed)
            hf_result = hf_agg.aggregate()
            out["hf_evaluate"] = {t: float(hf_result[t].mid.fmeasure) for t in TYPES}
            if evaluate_script:
                import evaluate
                metric = evaluate.load(evaluate_script, seed=seed)
                got = metric.compute(predictions=preds, references=refs, use_stemmer=stemmer)
                assert set(got) == set(TYPES), got
                for t in TYPES:
                    assert float(got[t]) == out["hf_evaluate"][t], (t, got[t], out["hf_evaluate"][t])
                print(f"evaluate {evaluate.__version__} rouge (seed={seed}) matches the mid F-measures exactly")
    if "bleu" in metrics:
        for row, p, r in zip(per_example, preds, refs):
            row["bleu"] = sacrebleu.sentence_bleu(p, r).score
        width = max(len(r) for r in refs)
        pad = None if padding == "none" else ""
        streams = [[r[k] if k < len(r) else pad for r in refs] for k in range(width)]
        bleu = sacrebleu.corpus_bleu(preds, streams)
        corpus["bleu"] = bleu.score
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--evaluate-rouge-script", default=None,
                    help="local copy of evaluate's metrics/rouge/rouge.py to cross-check --hf-evaluate")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    rows = build_pairs(load(args.data))
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "pairs.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    runs = []
    for extra, stemmer, seed, n_samples, padding, hf, metrics in RUNS:
        expected = run_reference(rows, stemmer, seed, n_samples, padding, hf, metrics, args.evaluate_rouge_script)
        runs.append({"args": extra, "stemmer": stemmer, "bootstrap_seed": seed, "bootstrap_samples": n_samples,
                     "bleu_pad": padding, "hf_evaluate": hf, "metrics": metrics, "expected": expected})
    bleu = {r["bleu_pad"]: r["expected"]["corpus"]["bleu"] for r in runs}
    assert bleu["none"] != bleu["empty"], "the fixture must make the two paddings differ"
    fixture = {
        "generated_by": "tools/reference/make_score_fixture.py",
        "versions": {"rouge_score": version("rouge-score"), "sacrebleu": sacrebleu.__version__,
                     "numpy": np.__version__},
        "pairs": len(rows),
        "runs": runs,
    }
    with open(OUT / "expected.json", "w", encoding="utf-8") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{len(rows)} pairs; corpus BLEU with None padding {bleu['none']:.6f}, with '' padding {bleu['empty']:.6f}")
    for r in runs:
        c = r["expected"]["corpus"]
        print(r["args"], {k: (v["mid"] if isinstance(v, dict) else v) for k, v in c.items()})


if __name__ == "__main__":
    main()
