"""tests/extra/gguf-llamacpp's check: llama.cpp (llama-cpp-python's low-level eval) greedy ids vs Bartleby's."""
import json, subprocess, sys
from pathlib import Path
import numpy as np
from llama_cpp import Llama

if sys.argv[1] == "--greedy":  # child: greedy continuations of the prompts with llama.cpp
    llm = Llama(model_path=sys.argv[2], n_ctx=512, n_threads=2, verbose=False, logits_all=True)
    eos = set(json.loads(sys.argv[4]))
    results = []
    for ids in json.loads(sys.argv[3]):
        llm.reset()
        llm.eval(ids)
        got = []
        for _ in range(16):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            got.append(nxt)
            if nxt in eos:
                break
            llm.eval([nxt])
        results.append(got)
    print(json.dumps(results))
    sys.exit(0)
bin_, out = sys.argv[1], Path(sys.argv[2])
FIX = Path("tests/fixtures")
NEW = 16
failed = False
# Phi-3 (longrope): llama.cpp picks the long or short rope factors once, by its context size (padded to a multiple
# of 256 here, over the fixture's original 90: long), where transformers switches by the sequence's length; and it
# disables Phi-3's sliding window. Measured: on the fixture itself llama.cpp's ids equal transformers' run with the
# long factors. So the check runs a copy of the fixture whose short factors are its long ones and without a sliding
# window — the same tensors and tokenizer — through both (f32 must be identical); the fixture itself is reported.
import shutil
phi3_long = out / "phi3-longrope-f16-long"
shutil.rmtree(phi3_long, ignore_errors=True)
shutil.copytree(FIX / "models" / "phi3-longrope-f16", phi3_long)
cfg = json.load(open(phi3_long / "config.json"))
cfg["rope_scaling"]["short_factor"] = cfg["rope_scaling"]["long_factor"]
cfg["sliding_window"] = None
json.dump(cfg, open(phi3_long / "config.json", "w"))
for model in ["llama-q8-untied", "llama-gqa-llama3-tied", "qwen2-bias-tied", "phi3-longrope-f16", "phi3-longrope-f16-long"]:
    model_dir = phi3_long if model.endswith("-long") else FIX / "models" / model
    fx = json.load(open(FIX / "parity" / f"{model.removesuffix('-long')}.json"))
    prompts = [c for c in fx["chat_prompts"] if c["system"] is None]
    inp = out / f"{model}.jsonl"
    inp.write_text("\n".join(json.dumps({"id": i, "dialogue": d}) for i, d in enumerate(fx["dialogues"])))
    # Bartleby, greedy, exactly NEW tokens, on the f32 model.
    res = out / f"{model}.out.jsonl"
    subprocess.run([bin_, "summarize", "--model", str(model_dir), "--input", str(inp), "--output", str(res),
                    "--max-new-tokens", str(NEW), "--batch-size", "1",
                    "--chat-template-kwargs", json.dumps({"date_string": fx["date_string"]})], check=True,
                   stderr=subprocess.DEVNULL)
    ours = [json.loads(l)["token_ids"] for l in res.read_text().splitlines()]
    for quant in ["f32", "f16", "q8", "q4", "q4_k_m"]:
        gguf = out / f"{model}-{quant}.gguf"
        subprocess.run([bin_, "export", "--format", "gguf", "--quant", quant, "--model", str(model_dir),
                        "--output", str(gguf), "--force"], check=True, stdout=subprocess.DEVNULL)
        # llama.cpp in a child process (it crashes on some files: see docs/benchmarks.md).
        eos = fx["effective_generation_config"]["eos_token_id"] or []
        child = subprocess.run([sys.executable, __file__, "--greedy", str(gguf), json.dumps([p["ids"] for p in prompts]),
                                json.dumps(eos)], capture_output=True, text=True)
        if child.returncode != 0:
            print(f"{model} {quant}: llama.cpp failed (exit {child.returncode}) {child.stderr.strip()[-200:]}")
            failed |= quant == "f32" and model != "phi3-longrope-f16"
            continue
        results = json.loads(child.stdout)
        agree = total = 0
        for i, p in enumerate(prompts):
            got = results[i]
            want = ours[i]
            n = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            agree += n; total += len(want)
            status = "identical" if got == want else f"first {n} of {len(want)} agree"
            print(f"{model} {quant} dialogue {i}: {status}")
            if quant == "f32" and got != want and model != "phi3-longrope-f16":
                failed = True
        print(f"{model} {quant}: {agree}/{total} leading tokens agree")
sys.exit(1 if failed else 0)
