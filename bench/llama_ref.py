"""bench/llama's reference side: transformers (PyTorch fp32 from the bf16 checkpoint, 2 threads) generate() on the
same prompt Bartleby builds (chat template, exactly 512 tokens), exactly 64 new tokens, greedy and 4 beams, batch 1
(and batch 8 with BATCH8=1). Writes OUT/llama_reference.json (ids, seconds, peak RSS) and OUT/llama_batch{b}.jsonl."""
import json, os, resource, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, out, data = sys.argv[1:4]
# bench/phi3 runs it too: its own file names, pad id, and greedy only (BEAMS="1").
NAME = os.environ.get("NAME", "llama")
PAD = int(os.environ.get("PAD", "361"))
BEAMS = [int(k) for k in os.environ.get("BEAMS", "1 4").split()]
PROMPT = "Summarize the following dialogue in one or two sentences.\n\n{dialogue}"
DATE = "26 Jul 2024"
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(model_dir)
rows = [json.loads(l) for l in open(os.path.join(data, "dialogsum", "validation.jsonl"))]

def prompt_ids(d):
    m = [{"role": "user", "content": PROMPT.replace("{dialogue}", d)}]
    return list(tok.apply_chat_template(m, tokenize=True, add_generation_prompt=True, date_string=DATE))

def exactly(n, start):
    """A dialogue (consecutive validation dialogues joined, cut at a line or word) whose prompt is n tokens."""
    text = "\n".join(r["dialogue"] for r in rows[start:start + 6])
    words = text.split(" ")
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(prompt_ids(" ".join(words[:mid]))) <= n: lo = mid
        else: hi = mid - 1
    d = " ".join(words[:lo])
    if len(prompt_ids(d)) != n:  # a merge across the cut skipped n: start from the next dialogue
        return exactly(n, start + 1)
    return d

t0 = time.time()
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
load_s = time.time() - t0
result = {"load_s": load_s}
batches = [1, 8] if os.environ.get("BATCH8") else [1]
for b in batches:
    dialogues = [exactly(512, 10 * i) for i in range(b)]
    assert len(set(dialogues)) == b
    with open(os.path.join(out, f"{NAME}_batch{b}.jsonl"), "w") as f:
        for i, d in enumerate(dialogues):
            f.write(json.dumps({"id": i, "dialogue": d}) + "\n")
    ids = torch.tensor([prompt_ids(d) for d in dialogues])
    json.dump(ids[0].tolist(), open(os.path.join(out, f"{NAME}_prompt_b{b}.json"), "w"))  # for llama.cpp
    for beams in BEAMS:
        with torch.no_grad():
            t0 = time.time()
            seqs = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=beams,
                                  max_new_tokens=64, min_new_tokens=64, pad_token_id=PAD)
            dt = time.time() - t0
        result[f"batch{b}_beams{beams}"] = {"s": dt, "token_ids": seqs[:, 512:].tolist()}
        print(f"transformers batch {b}, {beams} beams: {dt:.2f} s", flush=True)
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
json.dump(result, open(os.path.join(out, f"{NAME}_reference.json"), "w"))
