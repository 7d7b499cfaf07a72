#!/usr/bin/env python3
"""Pinned reference generator for the ROUGE / BLEU parity fixtures (tests/fixtures/metrics/).

References (tools/reference/requirements.txt): rouge-score 0.1.2 (with nltk 3.10.4's PorterStemmer),
sacrebleu 2.6.0, numpy. Deterministic (fixed seeds, no network, no nltk data needed).

Writes:
  tests/fixtures/metrics/cases.json   >= 40 (prediction, references) cases with every score, 13a and
                                      rouge-score tokenizations, corpus BLEU over the set, the numpy
                                      RNG / percentile / BootstrapAggregator data, Python's whitespace set,
                                      and the reference misbehaviours found
  tests/fixtures/metrics/stems.json   NLTK PorterStemmer (NLTK_EXTENSIONS) stems of every distinct
                                      rouge-score token longer than 3 characters in the shared validation sets

Run (from the repository root):
  tools/reference/.venv/bin/python tools/reference/make_metric_fixtures.py [--data ../shared/data]
  tools/reference/.venv/bin/python tools/reference/make_metric_fixtures.py --bench   # timing only, writes nothing

--bench times rouge_score (stemmer, rouge1/2/L/Lsum) + sacrebleu.sentence_bleu on 10,000 pairs built from the
shared validation summaries exactly as the Rust `#[ignore]` test `metrics::bench_10k_pairs` builds them.
"""

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import nltk
import rouge_score
import sacrebleu
from nltk.stem import porter
from rouge_score import rouge_scorer, scoring, tokenize as rs_tokenize
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "metrics"
TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
SETS = ["samsum", "dialogsum", "ami"]


def load(data_dir):
    return {name: [json.loads(line) for line in open(Path(data_dir) / name / "validation.jsonl", encoding="utf-8")]
            for name in SETS}


def perturb(text, rng, strength=0.25):
    """Drops, swaps, duplicates and replaces words (keeps punctuation attached to words)."""
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < strength * 0.3:
            continue  # drop
        if r < strength * 0.5:
            out.append(w)  # duplicate
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
    """One sentence per line (what rougeLsum expects)."""
    return text.replace(". ", ".\n").replace("! ", "!\n").replace("? ", "?\n")


def build_cases(data):
    rng = random.Random(20240501)
    ss, ds, ami = data["samsum"], data["dialogsum"], data["ami"]
    cases = []

    def add(kind, prediction, references, note=""):
        cases.append({"id": f"{len(cases):03d}-{kind}", "kind": kind, "note": note,
                      "prediction": prediction, "references": references})

    # Real summaries, perturbed prediction vs the reference summary.
    for i in [0, 37, 101, 202, 303, 404, 505, 606, 707, 817]:
        add("samsum-perturbed", perturb(ss[i]["summary"], rng), [ss[i]["summary"]], ss[i]["id"])
    for i in [0, 99, 250, 499]:
        add("dialogsum-perturbed", perturb(ds[i]["summary"], rng), [ds[i]["summary"]], ds[i]["id"])
    # Real summaries, a different example's summary as the prediction.
    for i, j in [(3, 4), (50, 51), (600, 12)]:
        add("samsum-other", ss[j]["summary"], [ss[i]["summary"]], f'{ss[j]["id"]} vs {ss[i]["id"]}')
    for i, j in [(10, 11), (300, 301)]:
        add("dialogsum-other", ds[j]["summary"], [ds[i]["summary"]], f'{ds[j]["id"]} vs {ds[i]["id"]}')
    # Long real summaries (AMI, 94-590 words).
    for i in [0, 7, 13]:
        add("ami-perturbed", perturb(ami[i]["summary"], rng, 0.15), [ami[i]["summary"]], ami[i]["id"])
    add("ami-other", ami[2]["summary"], [ami[3]["summary"]], f'{ami[2]["id"]} vs {ami[3]["id"]}')
    # Very long texts: the first 2,500 words of an AMI meeting transcript (multi-line) vs its summary, and vs a
    # perturbed copy of itself (exercises the LCS tables and the summary-level union LCS on 2,500 tokens).
    long_dialogue = "\n".join(ami[1]["dialogue"].split("\n")[:400])
    long_dialogue = " ".join(long_dialogue.split(" ")[:2500])
    add("very-long-vs-summary", long_dialogue, [ami[1]["summary"]], ami[1]["id"])
    add("very-long-vs-perturbed", long_dialogue, [perturb(long_dialogue, rng, 0.1)], ami[1]["id"])
    # Multi-line summaries (rougeLsum): the real multi-line dialogsum summary, and sentence-per-line versions.
    add("dialogsum-multiline", perturb(ds[231]["summary"], rng).replace(". ", ".\n"), [ds[231]["summary"]],
        ds[231]["id"])
    for i in [5, 44]:
        ref = to_lines(ss[i]["summary"] + " " + ss[i + 1]["summary"])
        lines = perturb(ref, rng, 0.2).split("\n")
        rng.shuffle(lines)
        add("samsum-multiline-shuffled", "\n".join(lines), [ref], ss[i]["id"])
    add("ami-multiline", to_lines(perturb(ami[5]["summary"], rng, 0.2)), [to_lines(ami[5]["summary"])], ami[5]["id"])
    add("multiline-crlf-blank-lines", "Amanda baked cookies.\r\n\r\nShe will bring Jerry some tomorrow.\n\n\n  \n",
        ["Amanda baked cookies and will bring Jerry some tomorrow.\n", "\nAmanda baked cookies.\nJerry wants some.\n"])
    # Multiple references (2-3), best-F selection per type.
    for i in [20, 21, 22]:
        add("samsum-multiref", perturb(ss[i]["summary"], rng),
            [ss[i + 100]["summary"], ss[i]["summary"], perturb(ss[i]["summary"], rng, 0.5)], ss[i]["id"])
    add("dialogsum-multiref", ds[41]["summary"], [ds[40]["summary"], perturb(ds[41]["summary"], rng, 0.3)],
        ds[41]["id"])
    add("multiref-tie-first-wins", "a b c d", ["a b", "a b c d e f g h"],
        "rouge1 F ties (P=0.5,R=1 vs P=1,R=0.5): np.argmax keeps the first")
    add("multiref-tie-reversed", "a b c d", ["a b c d e f g h", "a b"], "same tie, other order")
    add("multiref-closest-length-tie", "the cat sat on mat", ["the cat sat on the mat", "the cat sat mat"],
        "hypothesis length 5, references 6 and 4: sacrebleu takes the shorter")
    add("multiref-closest-length-tie-reversed", "the cat sat on mat", ["the cat sat mat", "the cat sat on the mat"])
    add("multiref-identical", "the cat sat", ["the cat sat on the mat", "the cat sat on the mat", "a dog"])
    # Edge cases.
    add("empty-prediction", "", [ss[1]["summary"]])
    add("empty-reference", ss[2]["summary"], [""])
    add("both-empty", "", [""])
    add("whitespace-prediction", "  \n\t \n", ["Some reference text here."])
    add("punctuation-only-reference", "Hello there, friend.", ["!!! ... ??? --- ,,,"])
    add("empty-and-real-references", ss[6]["summary"], ["", ss[6]["summary"]])
    add("repeated-words", "the the the the cat cat cat sat sat", ["the cat the cat the cat sat on the the mat"])
    add("repeated-bigrams", "to be or not to be to be or not to be", ["to be to be to be or not"])
    add("unicode", "Café naïve résumé — “quoted” 東京 😀 Ελληνικά ΟΔΟΣ Straße ﬁne",
        ["Cafe naive resume \"quoted\" Tokyo 😀 Greek STRASSE fine"])
    add("unicode-lowercase-to-ascii", "İstanbul \u212Aelvin 20\u212A, ǅemal ΣΑΣ",
        ["istanbul kelvin 20k dzemal sas", "İSTANBUL KELVIN"], "U+0130 and U+212A lowercase to ASCII letters")
    add("digits-punctuation", "Meet at 10:30 on 2024-05-01; it costs $3.50 (or 1,000 yen)... e.g. U.S.A. 5-3 win!",
        ["The meeting is at 10.30 on 2024/05/01, costs 3.50 dollars or 1000 yen; the U.S. team won 5-3."])
    add("bleu-13a-entities", "He said &quot;hi&quot; &amp; left &lt;now&gt; <skipped> a well-\nknown &amp;quot; case",
        ["He said \"hi\" & left <now> a well-known &quot; case"])
    add("bleu-13a-periods-commas", "3.14 and 1,000 but a.b, x,y ... 1.,2 .5 5. -7 5-3 a-b 'quote' end .",
        ["3.14 and 1 , 000 but a . b , x , y . . . 1 . , 2 . 5 5 . - 7 5 - 3 a - b ' quote ' end ."])
    add("python-whitespace", "tabs\tand\x1cfile\x1dgroup\x1erecord\x1funit\u00a0nbsp\u2009thin\u3000ideo\u2028ls\x85nel  \t",
        ["tabs and file group record unit nbsp thin ideo ls nel"],
        "\\x1c-\\x1f are whitespace to Python's str.split/rstrip but not to Rust's char::is_whitespace")
    add("stemming", "The dogs were running and generously agreed; the skies, dying, lying news proceedings happily",
        ["A dog runs, agreeing generous sky die lie news proceed happy"])
    add("lsum-union-lcs-paper", "w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5", ["w1 w2 w3 w4 w5"],
        "Lin (2004) section 3.2 example")
    add("lcs-backtrack-tie", "b a a\na b", ["a b a\nb a"], "LCS backtracking tie-breaking matters for the union")
    add("one-word", "Hello", ["hello"])
    add("short-no-4grams", "a b c", ["a b c"], "no 4-grams: corpus BLEU (no effective order) is 0")
    add("single-token-prediction", "yes", [ss[8]["summary"]])
    return cases


def rouge_all(cases, stem):
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=stem)
    out = []
    for c in cases:
        s = scorer.score_multi(c["references"], c["prediction"])
        out.append({t: [float(s[t].precision), float(s[t].recall), float(s[t].fmeasure)] for t in TYPES})
    return out


def per_reference(cases, stem):
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=stem)
    return [[{t: [float(v) for v in scorer.score(r, c["prediction"])[t]] for t in TYPES} for r in c["references"]]
            for c in cases]


def bleu_dict(b):
    return {"score": b.score, "counts": list(b.counts), "totals": list(b.totals),
            "precisions": [float(p) for p in b.precisions], "bp": b.bp, "sys_len": b.sys_len, "ref_len": b.ref_len}


def numpy_choice_draws(seed, n, k):
    np.random.seed(seed)
    return [[int(x) for x in np.random.choice(np.arange(n), size=n)] for _ in range(k)]


def python_whitespace():
    return [cp for cp in range(sys.maxunicode + 1) if chr(cp).isspace()]


def misbehaviours():
    found = []

    def probe(what, fn, rust):
        try:
            result = repr(fn())
        except Exception as e:  # noqa: BLE001
            result = f"raises {type(e).__name__}: {e}"
        found.append({"call": what, "python": result, "rust": rust})

    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    probe("RougeScorer.score_multi([], 'a b')", lambda: scorer.score_multi([], "a b"),
          "metrics::rouge::score(pred, &[], _) = all zeros (same as one empty reference)")
    probe("rouge_score tokenize('naïve café 東京')", lambda: rs_tokenize.tokenize("naïve café 東京", None),
          "same tokens: non-ASCII letters are separators, other scripts give no tokens (by design of rouge-score)")
    probe("BootstrapAggregator(n_samples=0)", lambda: scoring.BootstrapAggregator(n_samples=0),
          "metrics::rouge::aggregate(_, 0, _) = None")
    probe("BootstrapAggregator().aggregate() with no scores", lambda: scoring.BootstrapAggregator().aggregate(),
          "metrics::rouge::aggregate(&[], _, _) = None")
    probe("sacrebleu.sentence_bleu('a b', [])", lambda: sacrebleu.sentence_bleu("a b", []),
          "metrics::bleu::sentence_bleu(hyp, &[]) = as with one empty reference (score 0, ref_len 0)")
    probe("sacrebleu.corpus_bleu([], [[]])", lambda: sacrebleu.corpus_bleu([], [[]]),
          "metrics::bleu::corpus_bleu(&[], &[&[]]) = score 0 with all-zero statistics")
    probe("sacrebleu.corpus_bleu(['a b c d e', 'x y'], [['a b c d e']]).score  (stream shorter than hyps)",
          lambda: sacrebleu.corpus_bleu(["a b c d e", "x y"], [["a b c d e"]]).score,
          "metrics::bleu::corpus_bleu = Err(Error::Input): zip() silently drops the unmatched hypothesis")
    probe("sacrebleu.corpus_bleu(['a b c d e'], [['a b c d e', 'x y']]).score  (stream longer than hyps)",
          lambda: sacrebleu.corpus_bleu(["a b c d e"], [["a b c d e", "x y"]]).score,
          "metrics::bleu::corpus_bleu = Err(Error::Input)")
    probe("sacrebleu.corpus_bleu(['a b c d e'], []).score", lambda: sacrebleu.corpus_bleu(["a b c d e"], []).score,
          "metrics::bleu::corpus_bleu = Err(Error::Input)")
    probe("sacrebleu.sentence_bleu('a b c d', ['a b c d']).score",
          lambda: sacrebleu.sentence_bleu("a b c d", ["a b c d"]).score,
          "same value: exp(sum(log 100)/4) is 100.00000000000004, not 100")
    found.append({"call": "BootstrapAggregator docstring: 'Mid is always the mean'",
                  "python": "mid is the 50th percentile (median) of the bootstrap sample means, not the mean",
                  "rust": "same as the code (median of bootstrap means)"})
    found.append({"call": "BootstrapAggregator._bootstrap_resample",
                  "python": "draws from numpy's global legacy RandomState (np.random.choice); unseeded runs differ",
                  "rust": "aggregate(.., seed) replays np.random.seed(seed) exactly (MT19937 + masked bounded ints)"})
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--bench", action="store_true", help="time 10,000 pairs and exit")
    args = ap.parse_args()
    data = load(args.data)
    if args.bench:
        return bench(data)

    cases = build_cases(data)
    assert len(cases) >= 40, len(cases)
    rouge_stem, rouge_nostem = rouge_all(cases, True), rouge_all(cases, False)
    per_ref_stem = per_reference(cases, True)
    tok13a = Tokenizer13a()
    for c, rs, rn, pr in zip(cases, rouge_stem, rouge_nostem, per_ref_stem):
        c["rouge"] = {"stem": rs, "nostem": rn}
        c["rouge_per_reference_stem"] = pr
        c["sentence_bleu"] = bleu_dict(sacrebleu.sentence_bleu(c["prediction"], c["references"]))
        if len(c["prediction"]) < 400:
            c["tokens_13a"] = tok13a(c["prediction"].rstrip())
            c["tokens_rouge"] = {"stem": rs_tokenize.tokenize(c["prediction"], porter.PorterStemmer()),
                                 "nostem": rs_tokenize.tokenize(c["prediction"], None)}

    # Corpus BLEU. stream_refs[k][i]: index into cases[i].references, or null for "".
    n = len(cases)
    width = max(len(c["references"]) for c in cases)
    corpus_specs = {
        "single": [[0] * n],
        "multi-pad-last": [[min(k, len(c["references"]) - 1) for c in cases] for k in range(width)],
        "multi-pad-empty": [[k if k < len(c["references"]) else None for c in cases] for k in range(width)],
        "real-only-single": None,
    }
    corpus = []
    for name, streams in corpus_specs.items():
        subset = list(range(n))
        if streams is None:
            subset = [i for i, c in enumerate(cases) if c["kind"].startswith(("samsum", "dialogsum", "ami"))]
            streams = [[0 if i in subset else None for i in range(n)]]
        hyps = [cases[i]["prediction"] for i in subset]
        ref_streams = [[cases[i]["references"][s[i]] if s[i] is not None else "" for i in subset] for s in streams]
        corpus.append({"name": name, "cases": subset, "stream_refs": [[s[i] for i in subset] for s in streams],
                       "bleu": bleu_dict(sacrebleu.corpus_bleu(hyps, ref_streams))})

    # Bootstrap: rouge-score's BootstrapAggregator after np.random.seed(seed), on the (stemmed, score_multi)
    # per-case scores above, in TYPES order (the order the aggregator draws in).
    bootstrap = []
    equal = [rouge_stem[0]] * 5
    for name, per_example, n_samples, seed in [
        ("all-cases", rouge_stem, 1000, 0),
        ("first-7", rouge_stem[:7], 200, 12345),
        ("two-cases", rouge_stem[10:12], 1000, 2**32 - 1),
        ("one-case", rouge_stem[3:4], 50, 7),
        ("all-equal", equal, 100, 3),
    ]:
        agg = scoring.BootstrapAggregator(n_samples=n_samples)
        for s in per_example:
            agg.add_scores({t: scoring.Score(*s[t]) for t in TYPES})
        np.random.seed(seed)
        res = agg.aggregate()
        bootstrap.append({"name": name, "per_example": per_example, "n_samples": n_samples, "seed": seed,
                          "result": {t: {b: [float(v) for v in getattr(res[t], b)] for b in ("low", "mid", "high")}
                                     for t in TYPES}})

    rng = np.random.default_rng(7)
    delta = (1 - 0.95) / 2
    rouge_q = [float(v) for v in 100 * np.array([delta, 0.5, 1 - delta])]
    qs = rouge_q + [0.0, 25.0, 50.0, 100.0, 33.3, 99.9, 62.5]
    percentiles = []
    for size in [1, 2, 3, 4, 10, 101, 1000]:
        values = [float(v) for v in rng.random(size)]
        percentiles.append({"values": values, "q": qs, "result": [float(np.percentile(values, q)) for q in qs]})
    dup = [0.5, 0.25, 0.25, 0.75, 0.5, 0.5, 1.0, 0.0]
    # At gamma == 0.5 numpy's _lerp takes b - diff * (1 - t), which rounds differently from a + diff * t here.
    lerp_half = [0.031183145201048548, 94.86494471372438, 0.7535131086748066, 2.7559113243068367]
    for values in [dup, lerp_half, lerp_half[:2], lerp_half[2:]]:
        percentiles.append({"values": values, "q": qs, "result": [float(np.percentile(values, q)) for q in qs]})

    draws = [{"seed": s, "n": k, "draws": numpy_choice_draws(s, k, 3)}
             for s, k in [(0, 1), (0, 2), (0, 3), (1, 7), (42, 40), (2**32 - 1, 5), (12345, 1000), (99, 65537)]]
    for d in draws:
        if d["n"] > 1000:
            d["draws"] = [x[:50] for x in d["draws"]]  # keep the file small; the RNG stream is still checked
            d["truncated_to"] = 50

    fixture = {
        "meta": {
            "generator": "tools/reference/make_metric_fixtures.py",
            "versions": {"rouge_score": "0.1.2", "sacrebleu": sacrebleu.__version__, "nltk": nltk.__version__,
                         "numpy": np.__version__, "python": sys.version.split()[0]},
            "rouge": "RougeScorer(['rouge1','rouge2','rougeL','rougeLsum'], use_stemmer).score_multi(references, "
                     "prediction); values are [precision, recall, fmeasure]",
            "sentence_bleu": "sacrebleu.sentence_bleu(prediction, references) (exp smoothing, effective order)",
            "corpus_bleu": "sacrebleu.corpus_bleu(hyps, streams) (exp smoothing, no effective order); "
                           "stream_refs[k][j] indexes cases[cases[j]].references, null = ''",
            "bootstrap": "np.random.seed(seed); BootstrapAggregator(n_samples).aggregate() over per_example",
            "numpy_choice": "np.random.seed(seed); [np.random.choice(np.arange(n), size=n) for 3 draws]",
        },
        "cases": cases,
        "corpus_bleu": corpus,
        "bootstrap": bootstrap,
        "percentile": percentiles,
        "numpy_choice": draws,
        "python_whitespace": python_whitespace(),
        "misbehaviours": misbehaviours(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, ensure_ascii=False, indent=None, separators=(",", ":"))
    (OUT / "cases.json").write_text(text + "\n", encoding="utf-8")
    print(f"cases.json: {len(cases)} cases, {len(text.encode()) / 1024:.0f} KiB")

    # Stems of every distinct rouge-score token (> 3 chars) of the shared validation summaries and dialogues.
    words = set()
    for name in SETS:
        for row in data[name]:
            for field in ("summary", "dialogue"):
                words.update(t for t in rs_tokenize.tokenize(row[field], None) if len(t) > 3)
    stemmer = porter.PorterStemmer()
    stems = {w: stemmer.stem(w) for w in sorted(words)}
    text = json.dumps({"meta": {"nltk": nltk.__version__, "mode": stemmer.mode}, "stems": stems},
                      ensure_ascii=False, separators=(",", ":"))
    (OUT / "stems.json").write_text(text + "\n", encoding="utf-8")
    print(f"stems.json: {len(stems)} words, {len(text.encode()) / 1024:.0f} KiB")
    for m in fixture["misbehaviours"]:
        print("misbehaviour:", m["call"], "->", m["python"])


def bench_pairs(data):
    """The 10,000 (prediction, reference) pairs of the Rust bench: summaries of samsum, dialogsum, ami
    validation in file order; pair i = (S[(i + 1 + i // L) % L], S[i % L])."""
    summaries = [row["summary"] for name in SETS for row in data[name]]
    total = len(summaries)
    return [(summaries[(i + 1 + i // total) % total], summaries[i % total]) for i in range(10_000)]


def bench(data):
    pairs = bench_pairs(data)
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    t0 = time.perf_counter()
    rouge_sum = 0.0
    for pred, ref in pairs:
        rouge_sum += scorer.score_multi([ref], pred)["rougeLsum"].fmeasure
    t1 = time.perf_counter()
    bleu_sum = 0.0
    for pred, ref in pairs:
        bleu_sum += sacrebleu.sentence_bleu(pred, [ref]).score
    t2 = time.perf_counter()
    metric = sacrebleu.BLEU(effective_order=True)
    for pred, ref in pairs:
        metric.sentence_score(pred, [ref])
    t3 = time.perf_counter()
    print(f"pairs: {len(pairs)}  mean rougeLsum F {rouge_sum / len(pairs):.6f}  mean sentence BLEU "
          f"{bleu_sum / len(pairs):.6f}")
    print(f"rouge_score (stemmer, 4 types): {t1 - t0:.2f} s")
    print(f"sacrebleu.sentence_bleu: {t2 - t1:.2f} s   (BLEU object reused: {t3 - t2:.2f} s)")
    print(f"total (rouge + sentence_bleu): {t2 - t0:.2f} s")


if __name__ == "__main__":
    main()
