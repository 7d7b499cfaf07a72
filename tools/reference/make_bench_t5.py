#!/usr/bin/env python3
"""Random-weight checkpoint with the exact t5-large architecture, for bench/summarize-t5 (no hub access).

  tools/reference/.venv/bin/python tools/reference/make_bench_t5.py [OUT_DIR]

OUT_DIR defaults to bench/out/t5-large-random (git-ignored): config.json (t5-large's shape and its
task_specific_params.summarization, "summarize: " prefix included), generation_config.json, model.safetensors,
and the T5 fixture tokenizer (tests/fixtures/tokenizer-t5: a SentencePiece-Unigram tokenizer.json trained on the
dialogue data; ids beyond its 400 tokens decode to nothing, which does not matter for timing). Weights:
transformers' default T5 init (initializer_factor 1.0), seeded.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import shutil
import sys
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

ROOT = Path(__file__).resolve().parents[2]


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench/out/t5-large-random"
    torch.manual_seed(1234)
    config = T5Config(
        vocab_size=32128, d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_decoder_layers=24, num_heads=16,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="relu",
        tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        task_specific_params={"summarization": dict(early_stopping=True, length_penalty=2.0, max_length=200,
                                                    min_length=30, no_repeat_ngram_size=3, num_beams=4,
                                                    prefix="summarize: ")},
    )
    model = T5ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(str(out), safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(ROOT / "tests/fixtures/tokenizer-t5" / f, out / f)
    print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters")


if __name__ == "__main__":
    main()
