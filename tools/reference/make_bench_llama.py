#!/usr/bin/env python3
"""A random-weight checkpoint of the exact meta-llama/Llama-3.2-1B-Instruct shape for bench/llama (bf16 weights,
tied head, llama3 rope scaling, GQA 32/8, eos [128001, 128008, 128009]) with the Llama-3-style fixture tokenizer and
the real chat template. The tokenizer's vocabulary is the fixture's (368 tokens); the model's is 128,256, as Llama 3.2's:
ids past the tokenizer's are generated and decoded to nothing, which the benchmark does not care about.

  tools/reference/.venv/bin/python tools/reference/make_bench_llama.py OUT_DIR
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[2]
out = Path(sys.argv[1])
tok_dir = ROOT / "tests" / "fixtures" / "tokenizer-llama3"
torch.manual_seed(20261207)
cfg = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                  rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=360,
                  eos_token_id=[361, 365, 364],
                  rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=8192))
with torch.device("cpu"):
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
out.mkdir(parents=True, exist_ok=True)
model.save_pretrained(str(out), safe_serialization=True)
for f in tok_dir.iterdir():
    if f.name != "cases.json":
        shutil.copy(f, out / f.name)
print(f"wrote {out}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters")
