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
# Phi-3 (longrope): reported, not required — llama.cpp picks the long or short rope factors once, by its context
# size (n_ctx 512 > original 90: long), where transformers switches by the sequence's length.
for model in ["llama-q8-untied", "llama-gqa-llama3-tied", "phi3-longrope-f16"]:
    fx = json.load(open(FIX / "parity" / f"{model}.json"))
    prompts = [c for c in fx["chat_prompts"] if c["system"] is None]
    inp = out / f"{model}.jsonl"
    inp.write_text("\n".join(json.dumps({"id": i, "dialogue": d}) for i, d in enumerate(fx["dialogues"])))
    # Bartleby, greedy, exactly NEW tokens, on the f32 model.
    res = out / f"{model}.out.jsonl"
    subprocess.run([bin_, "summarize", "--model", str(FIX / "models" / model), "--input", str(inp), "--output", str(res),
                    "--max-new-tokens", str(NEW), "--batch-size", "1",
                    "--chat-template-kwargs", json.dumps({"date_string": fx["date_string"]})], check=True,
                   stderr=subprocess.DEVNULL)
    ours = [json.loads(l)["token_ids"] for l in res.read_text().splitlines()]
    for quant in ["f32", "f16", "q8", "q4"]:
        gguf = out / f"{model}-{quant}.gguf"
        subprocess.run([bin_, "export", "--format", "gguf", "--quant", quant, "--model", str(FIX / "models" / model),
                        "--output", str(gguf), "--force"], check=True, stdout=subprocess.DEVNULL)
        # llama.cpp in a child process (it crashes on some files: see docs/benchmarks.md).
        eos = fx["effective_generation_config"]["eos_token_id"] or []
        child = subprocess.run([sys.executable, __file__, "--greedy", str(gguf), json.dumps([p["ids"] for p in prompts]),
                                json.dumps(eos)], capture_output=True, text=True)
        if child.returncode != 0:
            print(f"{model} {quant}: llama.cpp failed (exit {child.returncode}) {child.stderr.strip()[-200:]}")
            failed |= quant == "f32" and not model.startswith("phi3")
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
            if quant == "f32" and got != want and not model.startswith("phi3"):
                failed = True
        print(f"{model} {quant}: {agree}/{total} leading tokens agree")
sys.exit(1 if failed else 0)
