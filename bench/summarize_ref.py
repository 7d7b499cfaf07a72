#!/usr/bin/env python3
"""Reference side of bench/summarize: transformers (PyTorch fp32, 2 threads) and, when it converts,
CTranslate2 (fp32 and int8, 2 threads) on the same random-weight bart-large-cnn-shaped checkpoint.

Writes OUT/batch1.jsonl and OUT/batch8.jsonl (the inputs bartleby reads) and OUT/reference.json
(times, peak memory, generated ids)."""
import json, os, resource, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
from pathlib import Path
import torch
from transformers import AutoTokenizer, BartForConditionalGeneration

model_dir, out, data = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
INPUT_TOKENS, NEW_TOKENS, BEAMS = 512, 64, 4
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(model_dir)

# 8 long documents: consecutive SAMSum validation dialogues joined until each exceeds 512 tokens.
rows = [json.loads(l) for l in open(data / "samsum/validation.jsonl", encoding="utf-8")]
docs, cur = [], []
for r in rows:
    cur.append(r["dialogue"])
    if len(tok("\n".join(cur))["input_ids"]) > INPUT_TOKENS + 8:
        docs.append("\n".join(cur)); cur = []
    if len(docs) == 8:
        break
for name, n in (("batch1", 1), ("batch8", 8)):
    with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for i, d in enumerate(docs[:n]):
            f.write(json.dumps({"id": i, "dialogue": d}) + "\n")

gen = dict(num_beams=BEAMS, max_length=NEW_TOKENS + 1, min_length=NEW_TOKENS + 1, do_sample=False)
t0 = time.perf_counter()
model = BartForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
load_s = time.perf_counter() - t0
result = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__, "load_s": load_s}
for name, n in (("batch1", 1), ("batch8", 8)):
    enc = tok(docs[:n], truncation=True, max_length=INPUT_TOKENS, padding=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] == INPUT_TOKENS
    with torch.inference_mode():
        model.generate(**enc, **dict(gen, max_length=3, min_length=0))  # warm-up
        t0 = time.perf_counter()
        seqs = model.generate(**enc, **gen)
        secs = time.perf_counter() - t0
    assert seqs.shape[1] == NEW_TOKENS + 1, seqs.shape
    result[name] = {"transformers_s": secs, "token_ids": seqs.tolist()}
    print(f"transformers {name}: {secs:.2f} s", flush=True)
result["transformers_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

try:
    import ctranslate2
    ct2_dir = out / "ct2-fp32"
    if not (ct2_dir / "model.bin").exists():
        from ctranslate2.converters import TransformersConverter
        TransformersConverter(str(model_dir)).convert(str(ct2_dir), quantization="float32", force=True)
    # fp32, and int8 (CTranslate2 quantizes the fp32 model's weights on load: its int8 CPU path).
    for compute_type, key in (("float32", "ctranslate2_s"), ("int8", "ctranslate2_int8_s")):
        translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type=compute_type, intra_threads=2)
        for name, n in (("batch1", 1), ("batch8", 8)):
            toks = [tok.convert_ids_to_tokens(tok(d, truncation=True, max_length=INPUT_TOKENS)["input_ids"]) for d in docs[:n]]
            kw = dict(beam_size=BEAMS, max_decoding_length=NEW_TOKENS, min_decoding_length=NEW_TOKENS,
                      no_repeat_ngram_size=3, length_penalty=2.0, max_batch_size=n)
            translator.translate_batch(toks, **dict(kw, max_decoding_length=2, min_decoding_length=0))
            t0 = time.perf_counter()
            translator.translate_batch(toks, **kw)
            result[name][key] = time.perf_counter() - t0
            print(f"ctranslate2 {compute_type} {name}: {result[name][key]:.2f} s", flush=True)
        del translator
except Exception as e:  # CTranslate2 is a yardstick, not a requirement
    print(f"ctranslate2 skipped: {e}", flush=True)

json.dump(result, open(out / "reference.json", "w"))
