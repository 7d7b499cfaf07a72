#!/usr/bin/env python3
"""Random-weight checkpoint with the exact facebook/bart-large-cnn architecture, for benchmarks (no hub access).

  tools/reference/.venv/bin/python tools/reference/make_bench_model.py [OUT_DIR] [--tiny] [--data ../shared/data]

OUT_DIR defaults to bench/out/bart-large-cnn-random (git-ignored). The directory mirrors the hub layout of
facebook/bart-large-cnn: config.json (with the legacy generation keys and task_specific_params the hub file has),
generation_config.json, model.safetensors, tokenizer.json, vocab.json, merges.txt (no tokenizer_config.json).

Weights: transformers' default init (init_std 0.02), seeded. Tokenizer: byte-level BPE trained on the shared
train splits to 50,264 tokens (+ <mask> = 50264, 50,265 in all, like bart-large-cnn's tokenizer; the model's
vocab_size is 50264 as on the hub). If BPE training stops short of 50,264, the vocab is padded with unreachable
"<dummy_N>" entries before <mask>.

--distilbart-6-6: sshleifer/distilbart-cnn-6-6's shape (bart-large-cnn's width, 6 encoder + 6 decoder layers).
--tiny: same tokenizer and config keys, but d_model 64, 2+2 layers, 4 heads, ffn 128 (a smoke test, seconds).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse
import json
import shutil
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration, GenerationConfig

transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parents[2]
SEED = 1234
TOKENIZER_SIZE = 50265  # including <mask>
MODEL_VOCAB = 50264  # bart-large-cnn's config.vocab_size (the tokenizer's <mask> is outside the embedding)

GENERATION = dict(
    num_beams=4, length_penalty=2.0, max_length=142, min_length=56, no_repeat_ngram_size=3, early_stopping=True,
)
TOKENS = dict(bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=0,
              forced_eos_token_id=2)


def corpus(data):
    for src in ("samsum", "dialogsum", "ami"):
        with open(data / src / "train.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    yield r["dialogue"]
                    yield r["summary"]


def build_tokenizer(data):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_SIZE - 1,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(data), trainer=trainer)
    d = json.loads(tok.to_str())
    vocab = d["model"]["vocab"]
    trained = len(vocab)
    n = trained
    while n < TOKENIZER_SIZE - 1:
        vocab[f"<dummy_{n}>"] = n
        n += 1
    assert sorted(vocab.values()) == list(range(TOKENIZER_SIZE - 1))
    # legacy "a b" merges, like the hub's tokenizer.json
    d["model"]["merges"] = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in d["model"]["merges"]]
    d["added_tokens"].append(
        {"id": TOKENIZER_SIZE - 1, "content": "<mask>", "single_word": False, "lstrip": True, "rstrip": False,
         "normalized": False, "special": True}
    )
    d["post_processor"] = {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": True,
                           "add_prefix_space": False}
    tok = Tokenizer.from_str(json.dumps(d))
    assert tok.get_vocab_size(with_added_tokens=True) == TOKENIZER_SIZE
    assert tok.token_to_id("<mask>") == TOKENIZER_SIZE - 1
    return d, trained


def write_tokenizer(d, out):
    with open(out / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False)
    vocab = dict(d["model"]["vocab"])
    vocab["<mask>"] = TOKENIZER_SIZE - 1
    with open(out / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(out / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for m in d["model"]["merges"]:
            f.write(m + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=str(ROOT / "bench" / "out" / "bart-large-cnn-random"))
    ap.add_argument("--tiny", action="store_true", help="tiny dims (smoke test); same tokenizer and config keys")
    ap.add_argument("--distilbart-6-6", dest="distil", action="store_true",
                    help="sshleifer/distilbart-cnn-6-6's shape (6+6 layers of bart-large-cnn's width) for bench/web")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    out = Path(args.out)
    torch.manual_seed(SEED)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    t0 = time.time()
    tok_json, trained = build_tokenizer(Path(args.data))
    print(f"tokenizer: trained {trained} tokens, padded to {TOKENIZER_SIZE - 1} + <mask> ({time.time() - t0:.0f}s)")

    dims = dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096)
    if args.distil:
        dims.update(encoder_layers=6, decoder_layers=6)
    if args.tiny:
        dims = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128)
    cfg = BartConfig(
        vocab_size=MODEL_VOCAB, max_position_embeddings=1024, activation_function="gelu", scale_embedding=False,
        dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, init_std=0.02, classifier_dropout=0.0,
        **dims, **TOKENS,
    )
    t0 = time.time()
    model = BartForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(**TOKENS, **GENERATION)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params saved ({time.time() - t0:.0f}s)")

    # config.json like the hub's bart-large-cnn (legacy generation keys + task_specific_params included)
    c = json.loads((out / "config.json").read_text())
    c.update(TOKENS)
    c.update(GENERATION)
    c.update({"add_final_layer_norm": False, "normalize_before": False, "add_bias_logits": False,
              "static_position_embeddings": False, "force_bos_token_to_be_generated": True, "output_past": True,
              "prefix": " ", "task_specific_params": {"summarization": dict(GENERATION)}})
    with open(out / "config.json", "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
    write_tokenizer(tok_json, out)

    # smoke check: reload both and summarise one dialogue
    tok = AutoTokenizer.from_pretrained(str(out))
    assert len(tok) == TOKENIZER_SIZE and tok.mask_token_id == TOKENIZER_SIZE - 1
    slow = AutoTokenizer.from_pretrained(str(out), use_fast=False)
    text = "Amanda: I baked cookies. Do you want some?\nJerry: Sure!\nAmanda: I'll bring you tomorrow :-)"
    assert slow(text)["input_ids"] == tok(text)["input_ids"]
    m = BartForConditionalGeneration.from_pretrained(str(out)).eval()
    assert m.config.vocab_size == MODEL_VOCAB
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        ids = m.generate(**enc, num_beams=1, do_sample=False, max_new_tokens=8, min_length=0)
    print("smoke generate:", ids.tolist())
    print("wrote", out, sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
