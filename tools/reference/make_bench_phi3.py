#!/usr/bin/env python3
"""A random-weight checkpoint of the exact microsoft/Phi-3-mini-4k-instruct shape for bench/phi3 (3.82 B parameters,
bf16 weights, fused qkv_proj / gate_up_proj, 32 heads without GQA, sliding window 2047, untied head, vocabulary
32,064) with the Phi-3-style fixture tokenizer and its chat template (tests/fixtures/tokenizer-phi3; its special ids
are the fixture's, 600-610: ids past the tokenizer's are generated and decoded to nothing). Made in bf16 directly
(an f32 copy would need 15 GB).

  tools/reference/.venv/bin/python tools/reference/make_bench_phi3.py OUT_DIR
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import Phi3Config, Phi3ForCausalLM

ROOT = Path(__file__).resolve().parents[2]
out = Path(sys.argv[1])
tok_dir = ROOT / "tests" / "fixtures" / "tokenizer-phi3"
torch.manual_seed(20261207)
cfg = Phi3Config(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                 original_max_position_embeddings=4096, rope_theta=10000.0, rope_scaling=None, sliding_window=2047,
                 rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=[600, 601, 607],
                 pad_token_id=600, hidden_act="silu")
torch.set_default_dtype(torch.bfloat16)
with torch.device("cpu"):
    model = Phi3ForCausalLM(cfg)
out.mkdir(parents=True, exist_ok=True)
model.save_pretrained(str(out), safe_serialization=True, max_shard_size="2GB")
for f in tok_dir.iterdir():
    if f.name != "cases.json":
        shutil.copy(f, out / f.name)
print(f"wrote {out}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters")
