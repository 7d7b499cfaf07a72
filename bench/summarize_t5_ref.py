#!/usr/bin/env python3
"""Reference side of bench/summarize-t5: transformers (PyTorch fp32, 2 threads) and CTranslate2 (fp32 and int8,
2 threads) on the random-weight t5-large-shaped checkpoint: "summarize: " + 512 input tokens, exactly 64 new tokens,
4 beams (no-repeat 3, length penalty 2, the checkpoint's summarization settings), batch 1 and 8.

Writes OUT/t5_batch1.jsonl and OUT/t5_batch8.jsonl (the inputs bartleby reads, without the prefix: bartleby adds
it as the pipeline does) and OUT/t5_reference.json (times, peak memory, generated ids)."""
import json, os, resource, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
from pathlib import Path
import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration

model_dir, out, data = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
INPUT_TOKENS, NEW_TOKENS, BEAMS, PREFIX = 512, 64, 4, "summarize: "
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(model_dir)
rows = [json.loads(l) for l in open(data / "samsum/validation.jsonl", encoding="utf-8")]
docs, cur = [], []
for r in rows:
    cur.append(r["dialogue"])
    if len(tok(PREFIX + "\n".join(cur))["input_ids"]) > INPUT_TOKENS + 8:
        docs.append("\n".join(cur)); cur = []
    if len(docs) == 8:
        break
for name, n in (("t5_batch1", 1), ("t5_batch8", 8)):
    with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for i, d in enumerate(docs[:n]):
            f.write(json.dumps({"id": i, "dialogue": d}) + "\n")

gen = dict(num_beams=BEAMS, max_length=NEW_TOKENS + 1, min_length=NEW_TOKENS + 1, no_repeat_ngram_size=3,
           length_penalty=2.0, early_stopping=True, do_sample=False)
t0 = time.perf_counter()
model = T5ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
result = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__, "load_s": time.perf_counter() - t0}
inputs = {}
for name, n in (("batch1", 1), ("batch8", 8)):
    enc = tok([PREFIX + d for d in docs[:n]], truncation=True, max_length=INPUT_TOKENS, padding=True,
              return_tensors="pt", return_token_type_ids=False)
    assert enc["input_ids"].shape[1] == INPUT_TOKENS
    inputs[name] = enc
    with torch.inference_mode():
        model.generate(**enc, **dict(gen, max_length=3, min_length=0))  # warm-up
        t0 = time.perf_counter()
        seqs = model.generate(**enc, **gen)
        secs = time.perf_counter() - t0
    assert seqs.shape[1] == NEW_TOKENS + 1, seqs.shape
    result[name] = {"transformers_s": secs, "token_ids": seqs.tolist()}
    print(f"transformers {name}: {secs:.2f} s", flush=True)
result["transformers_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
del model

try:
    import ctranslate2
    from ctranslate2.converters import TransformersConverter
    for compute in ("float32", "int8"):
        ct2_dir = out / f"t5-ct2-{compute}"
        if not (ct2_dir / "model.bin").exists():
            TransformersConverter(str(model_dir)).convert(str(ct2_dir), quantization=compute, force=True)
        translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type=compute, intra_threads=2)
        for name, n in (("batch1", 1), ("batch8", 8)):
            toks = [tok.convert_ids_to_tokens(ids) for ids in inputs[name]["input_ids"].tolist()]
            kw = dict(beam_size=BEAMS, max_decoding_length=NEW_TOKENS, min_decoding_length=NEW_TOKENS,
                      no_repeat_ngram_size=3, length_penalty=2.0, max_batch_size=n)
            translator.translate_batch(toks, **dict(kw, max_decoding_length=2, min_decoding_length=0))
            t0 = time.perf_counter()
            translator.translate_batch(toks, **kw)
            result[name][f"ctranslate2_{compute}_s"] = time.perf_counter() - t0
            print(f"ctranslate2 {compute} {name}: {result[name][f'ctranslate2_{compute}_s']:.2f} s", flush=True)
        del translator
except Exception as e:  # CTranslate2 is a yardstick, not a requirement
    print(f"ctranslate2 skipped: {e}", flush=True)

json.dump(result, open(out / "t5_reference.json", "w"))
