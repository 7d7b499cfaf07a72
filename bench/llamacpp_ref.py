"""bench/llama's llama.cpp side (llama-cpp-python 0.3.36's vendored llama.cpp, CPU, 2 threads): greedy continuation of
the same 512-token prompt ids for exactly 64 new tokens (eos masked, as generate()'s min_new_tokens=64 does), timed from
the first prompt token to the last new one. Prints one JSON line: seconds, ids, load seconds.
  python bench/llamacpp_ref.py MODEL.gguf PROMPT_IDS.json"""
import json, sys, time
import numpy as np
from llama_cpp import Llama

path, prompt_file = sys.argv[1:3]
ids = json.load(open(prompt_file))
EOS = [361, 364, 365]
t0 = time.time()
llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=2, n_threads_batch=2, verbose=False, logits_all=False)
load_s = time.time() - t0
t0 = time.time()
llm.eval(ids)
got = []
for _ in range(64):
    # The last evaluated token's logits (the only row computed without logits_all).
    scores = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()
    scores[EOS] = -np.inf
    nxt = int(np.argmax(scores))
    got.append(nxt)
    llm.eval([nxt])
print(json.dumps({"s": time.time() - t0, "load_s": load_s, "token_ids": got}))
