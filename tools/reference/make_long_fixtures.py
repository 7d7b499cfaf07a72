#!/usr/bin/env python3
"""Pinned reference for `--long chunk` (issue 24): tests/fixtures/long/<model>.json.

An independent implementation of the chunking of bartleby-core `long.rs` on top of transformers
(the tokenizer counts and cuts, `generate()` summarizes each window and each level, one text at a
time): the windows of each level, the partial summaries, the final ids. Splitting rules (see
long.rs): turns = non-blank lines; a turn too long for the window is cut after . ? ! (and closing
quotes/brackets) followed by white space, a sentence too long at token starts; units are packed
greedily by their estimated cost (tokens of the unit with the separator before it), then checked
exactly and shrunk; the next window repeats the last whole units within `overlap` tokens (never the
whole window) and must bring new text; partial summaries are joined one per line.

Run (see tools/reference/README.md):
  tools/reference/.venv/bin/python tools/reference/make_long_fixtures.py [--data ../shared/data]
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

transformers.logging.set_verbosity_error()
FIX = mf.FIX
MAX_LEVELS = 12


def is_ws(c):
    # Rust's char::is_whitespace (Unicode White_Space); Python's isspace adds \x1c-\x1f.
    return c.isspace() and c not in "\x1c\x1d\x1e\x1f"


def strip(s):
    a, b = 0, len(s)
    while a < b and is_ws(s[a]):
        a += 1
    while b > a and is_ws(s[b - 1]):
        b -= 1
    return a, b


def turns(text):
    out, start = [], 0
    for line in split_inclusive(text):
        a, b = strip(line)
        if b > a:
            out.append((start + a, start + b))
        start += len(line)
    return out


def split_inclusive(text):
    parts, start = [], 0
    for i, c in enumerate(text):
        if c == "\n":
            parts.append(text[start : i + 1])
            start = i + 1
    if start < len(text):
        parts.append(text[start:])
    return parts


def sentences(text, rng):
    s = text[rng[0] : rng[1]]
    out, start, after_end = [], 0, False

    def push(a, b):
        x, y = strip(s[a:b])
        if y > x:
            out.append((rng[0] + a + x, rng[0] + a + y))

    for i, c in enumerate(s):
        if c in ".?!":
            after_end = True
        elif after_end and is_ws(c):
            push(start, i)
            start, after_end = i, False
        elif c not in "\"')]\u201d\u2019":
            after_end = False
    push(start, len(s))
    return out


class Counter:
    def __init__(self, tok, prefix):
        self.tok, self.prefix = tok, prefix

    def input_tokens(self, text):
        return len(self.tok(self.prefix + text)["input_ids"])

    def token_starts(self, text):
        return [a for a, _ in self.tok._tokenizer.encode(text, add_special_tokens=False).offsets]


def token_pieces(text, rng, counter, max_input):
    s = text[rng[0] : rng[1]]
    starts = []
    for b in counter.token_starts(s):
        if b < len(s) and (not starts or starts[-1] != b):
            starts.append(b)
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    budget = max_input - counter.input_tokens("")
    out, i = [], 0
    while i < len(starts):
        take = min(budget, len(starts) - i)
        while True:
            end = starts[i + take] if i + take < len(starts) else len(s)
            a, b = rng[0] + starts[i], rng[0] + end
            piece = text[a:b]
            y = len(piece)  # trim the end only
            while y > 0 and is_ws(piece[y - 1]):
                y -= 1
            b = a + y
            if b == a or counter.input_tokens(text[a:b]) <= max_input:
                if b > a:
                    out.append((a, b))
                break
            assert take > 1, "window cannot hold one token"
            take -= 1
        i += take
    return out


def split(text, counter, max_input, overlap):
    fits = lambda r: counter.input_tokens(text[r[0] : r[1]]) <= max_input  # noqa: E731
    base = counter.input_tokens("")
    assert base < max_input
    units = []
    for t in turns(text):
        if fits(t):
            units.append(t)
            continue
        for s in sentences(text, t):
            if fits(s):
                units.append(s)
            else:
                units.extend(token_pieces(text, s, counter, max_input))
    cost = []
    for i, u in enumerate(units):
        frm = u[0] if i == 0 else units[i - 1][1]
        cost.append(counter.input_tokens(text[frm : u[1]]) - base)
    windows, spans, start = [], [], 0
    while start < len(units):
        used = base + min(cost[start], max_input)
        end = start + 1
        while end < len(units) and used + cost[end] <= max_input:
            used += cost[end]
            end += 1
        while not fits((units[start][0], units[end - 1][1])):
            assert end - start > 1
            end -= 1
        if spans and end <= spans[-1][1]:
            start = spans[-1][1]
            continue
        windows.append((units[start][0], units[end - 1][1]))
        spans.append((start, end))
        if end == len(units):
            break
        nxt, carried = end, 0
        while nxt > start + 1 and carried + cost[nxt - 1] <= overlap:
            carried += cost[nxt - 1]
            nxt -= 1
        start = nxt
    return windows


def generate(model, tok, prefix, text, max_input, kwargs):
    enc = tok(prefix + text, truncation=True, max_length=max_input, return_tensors="pt")
    enc.pop("token_type_ids", None)
    with torch.no_grad():
        out = model.generate(**enc, **kwargs)
    return out[0].tolist()  # one text: no padding


def chunked(model, tok, prefix, text, max_input, overlap, final_kw, partial_kw):
    counter = Counter(tok, prefix)
    source, tokens = text, counter.input_tokens(text)
    levels, chunks = [], 1
    for level in range(1, MAX_LEVELS + 1):
        if tokens <= max_input:
            ids = generate(model, tok, prefix, source, max_input, final_kw)
            return {"token_ids": ids, "chunks": chunks, "levels": level, "level_windows": levels}
        windows = [source[a:b] for a, b in split(source, counter, max_input, overlap)]
        if level == 1:
            chunks = len(windows)
        partials = []
        for w in windows:
            ids = generate(model, tok, prefix, w, max_input, partial_kw)
            partials.append(tok.decode(ids, skip_special_tokens=True))
        levels.append({"windows": windows, "partials": partials})
        joined = []
        for p in partials:
            a, b = strip(p)
            if b > a:
                joined.append(p[a:b])
        source = "\n".join(joined)
        new_tokens = counter.input_tokens(source)
        assert new_tokens < tokens, "no progress"
        tokens = new_tokens
    raise AssertionError("too many levels")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    data = Path(args.data)
    ami = mf.read_jsonl(data / "ami" / "validation.jsonl")[0]["dialogue"]
    # An AMI excerpt with a turn longer than the window (sentence and token cuts), a DialogSum
    # dialogue of several windows, and a short one that fits.
    lines = ami.split("\n")
    long_turn = max(range(len(lines)), key=lambda i: len(lines[i]))
    excerpt = "\n".join(lines[max(0, long_turn - 6) : long_turn + 4])
    dialogsum = [r["dialogue"] for r in mf.read_jsonl(data / "dialogsum" / "validation.jsonl")[:40]]
    several = max(dialogsum, key=len)
    short = "#Person1#: Hi.\n#Person2#: Hello, how are you?"
    texts = [excerpt, several, short]
    for name, max_input, partial_new in [("tiny-gelu", 48, 6), ("t5-relu-tied", 40, 5)]:
        d = FIX / "models" / name
        tok = AutoTokenizer.from_pretrained(d)
        model = AutoModelForSeq2SeqLM.from_pretrained(d, dtype=torch.float32).eval()
        task = (model.config.task_specific_params or {}).get("summarization", {})
        prefix = task.get("prefix", "")
        final_kw = {k: v for k, v in task.items() if k != "prefix"}
        gc = model.generation_config
        min_length = final_kw.get("min_length", gc.min_length)
        partial_kw = dict(final_kw, max_new_tokens=partial_new, min_length=min(min_length, partial_new), num_return_sequences=1)
        cases = []
        for overlap in [0, 24]:
            for i, text in enumerate(texts):
                r = chunked(model, tok, prefix, text, max_input, overlap, final_kw, partial_kw)
                truncate_ids = generate(model, tok, prefix, text, max_input, final_kw)
                cases.append(dict(r, text_index=i, overlap_tokens=overlap, truncate_token_ids=truncate_ids))
                print(name, overlap, i, "chunks", r["chunks"], "levels", r["levels"])
        out = {
            "model": name,
            "max_input_tokens": max_input,
            "partial_max_new_tokens": partial_new,
            "texts": texts,
            "cases": cases,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
        mf.dump_json(out, FIX / "long" / f"{name}.json")


if __name__ == "__main__":
    main()
