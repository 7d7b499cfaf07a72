#!/usr/bin/env python3
"""Pinned reference generator for the Rust parity fixtures (tests/fixtures/).

Writes, deterministically (fixed seeds, float32, CPU, 2 threads, deterministic algorithms):

  tests/fixtures/tokenizer/        byte-level BPE (vocab 500, <mask> last): tokenizer.json (+ tokenizer_config.json,
                                   special_tokens_map.json), cases.json (tokenizer test vectors)
  tests/fixtures/tokenizer-slow/   the same tokenizer as vocab.json + merges.txt only (BartTokenizer files)
  tests/fixtures/models/<name>/    four tiny random-weight BartForConditionalGeneration checkpoints
  tests/fixtures/parity/<name>.json  forward (encoder states, logits) and generate() references

Run (see tools/reference/README.md):
  python3 -m venv tools/reference/.venv
  tools/reference/.venv/bin/pip install -r tools/reference/requirements.txt
  tools/reference/.venv/bin/python tools/reference/make_fixtures.py [--data ../shared/data]
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse
import copy
import json
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")

import tokenizers
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BartTokenizer,
    GenerationConfig,
)

transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
SEED = 20240611

PAD, BOS, EOS, UNK = 1, 0, 2, 3

# Random-weight scales. Kept small enough that every model is well conditioned: transformers' float32 forward must
# agree with the same checkpoint run in float64 to F32_VS_F64_TOL (checked per model, recorded in the parity JSON),
# so that a 1e-4 parity tolerance measures implementation differences rather than float32 rounding noise. (With
# init_std 0.5 and 0.2 perturbations, f32 vs f64 reached 3e-4 on the logits.)
INIT_STD = 0.25  # BartConfig.init_std (Linear/Embedding weights ~ N(0, INIT_STD^2))
LINEAR_BIAS_STD = 0.1  # Linear biases ~ N(0, .^2) (HF init: 0)
LAYERNORM_WEIGHT_STD = 0.1  # LayerNorm weights ~ 1 + N(0, .^2) (HF init: 1)
LAYERNORM_BIAS_STD = 0.1  # LayerNorm biases ~ N(0, .^2) (HF init: 0)
FINAL_LOGITS_BIAS_STD = 0.1  # final_logits_bias ~ N(0, .^2) before the </s> entry is tuned (HF init: 0)
F32_VS_F64_TOL = 1e-5  # max |f32 - f64| allowed for the reference logits and encoder_last_hidden_state
TOKENIZER_VOCAB = 500  # including <mask> as the last id (499)

# The 6 parity texts (source, id). Order matters: the first 4 form the padded batch, 4 and 5 are single inputs.
PARITY_TEXTS = [
    ("dialogsum", "dev_0"),  # long, truncated
    ("samsum", "13817874"),  # very short
    ("samsum", "13682333"),  # short, contains U+2019 ’
    ("samsum", "13731412"),  # short, ends with an emoji 👍
    ("samsum", "13681537"),  # very short, "<3" (single input shorter than every max_input_tokens)
    ("dialogsum", "dev_133"),  # longer than max_input_tokens
]

# ---------------------------------------------------------------------------------------------------------------------
# Model specs
# ---------------------------------------------------------------------------------------------------------------------
BASE_GEN = dict(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True)

MODEL_SPECS = [
    dict(
        name="tiny-gelu",
        seed=SEED + 1,
        config=dict(
            d_model=24, encoder_attention_heads=3, decoder_attention_heads=3, encoder_layers=2, decoder_layers=3,
            encoder_ffn_dim=40, decoder_ffn_dim=36, activation_function="gelu", scale_embedding=False,
            max_position_embeddings=64, forced_bos_token_id=0,
        ),
        vocab="full",  # vocab_size = len(tokenizer) = 500
        max_input_tokens=48,
        generation=dict(BASE_GEN, max_length=30, min_length=6, forced_bos_token_id=0),
        dtype="float32",
        tokenizer_files="fast",
        shard=None,
    ),
    dict(
        name="tiny-relu-scaled",
        seed=SEED + 2,
        config=dict(
            d_model=30, encoder_attention_heads=5, decoder_attention_heads=3, encoder_layers=3, decoder_layers=1,
            encoder_ffn_dim=52, decoder_ffn_dim=44, activation_function="relu", scale_embedding=True,
            max_position_embeddings=80, forced_bos_token_id=0,
        ),
        vocab="minus_mask",  # vocab_size = len(tokenizer) - 1 = 499 (like bart-large-cnn: 50264)
        max_input_tokens=64,
        generation=dict(BASE_GEN, max_length=36, min_length=8, forced_bos_token_id=0),
        dtype="float16",
        tokenizer_files="slow",
        shard=None,
    ),
    dict(
        name="tiny-gelunew-sharded",
        seed=SEED + 3,
        config=dict(
            d_model=20, encoder_attention_heads=5, decoder_attention_heads=5, encoder_layers=2, decoder_layers=2,
            encoder_ffn_dim=28, decoder_ffn_dim=28, activation_function="gelu_new", scale_embedding=True,
            max_position_embeddings=72,
        ),
        vocab="minus_mask",
        max_input_tokens=56,
        generation=dict(BASE_GEN, max_length=32, min_length=7),
        dtype="float32",
        tokenizer_files="fast-pair-merges",  # tokenizer.json with [["a","b"],...] merges (tokenizers>=0.20 format)
        shard="20KB",
    ),
    dict(
        name="tiny-silu",
        seed=SEED + 4,
        config=dict(
            d_model=16, encoder_attention_heads=2, decoder_attention_heads=2, encoder_layers=1, decoder_layers=2,
            encoder_ffn_dim=24, decoder_ffn_dim=20, activation_function="silu", scale_embedding=False,
            max_position_embeddings=48,
            task_specific_params={
                "summarization": dict(
                    num_beams=3, length_penalty=1.5, max_length=20, min_length=4, no_repeat_ngram_size=2,
                    early_stopping=True,
                )
            },
        ),
        vocab="full",
        max_input_tokens=40,
        generation=None,  # no generation_config.json: generation keys live in config.json task_specific_params
        dtype="bfloat16",
        # d_model 16 / 1 encoder layer: at INIT_STD 0.25 no candidate seed has a final_logits_bias[</s>] for which
        # every generation case (e: early_stopping="never") gets both early-</s> and max-length rows. Still well
        # conditioned at 0.3 (f32 vs f64 ~2e-6).
        init_std=0.3,
        tokenizer_files="fast",
        shard=None,
    ),
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------
def setup_determinism():
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def dump_json(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write_pretty_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2, sort_keys=True)
        f.write("\n")


def jsonable(v):
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, torch.dtype):
        return str(v).replace("torch.", "")
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


# ---------------------------------------------------------------------------------------------------------------------
# 1. Tokenizer
# ---------------------------------------------------------------------------------------------------------------------
def tokenizer_corpus(data):
    texts = []
    for src in ("samsum", "dialogsum"):
        rows = read_jsonl(data / src / "train.jsonl")[:1500]
        for r in rows:
            texts.append(r["dialogue"])
            texts.append(r["summary"])
    return texts


def train_bpe(corpus, vocab_size_with_mask):
    """Byte-level BPE laid out like facebook/bart-base: <s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask>=last."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size_with_mask - 1,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    n = tok.get_vocab_size(with_added_tokens=True)
    if n < vocab_size_with_mask - 1:
        raise SystemExit(f"BPE training reached only {n} tokens (< {vocab_size_with_mask - 1})")
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, single_word=False, normalized=False, special=True)])
    tok.post_processor = processors.RobertaProcessing(
        sep=("</s>", EOS), cls=("<s>", BOS), trim_offsets=True, add_prefix_space=False
    )
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size_with_mask
    assert [tok.token_to_id(t) for t in ["<s>", "<pad>", "</s>", "<unk>"]] == [0, 1, 2, 3]
    assert tok.token_to_id("<mask>") == vocab_size_with_mask - 1
    return tok


def save_tokenizer_json(tok, path, legacy_merges):
    """tokenizers>=0.20 writes merges as [["a","b"], ...]; facebook/bart-base's tokenizer.json (and every older hub
    file) has "a b" strings. legacy_merges=True writes the bart-base form. Both load to the same tokenizer."""
    tok.save(str(path))
    if legacy_merges:
        d = json.loads(path.read_text(encoding="utf-8"))
        merges = d["model"]["merges"]
        if merges and isinstance(merges[0], list):
            assert all(" " not in a and " " not in b for a, b in merges)
            d["model"]["merges"] = [f"{a} {b}" for a, b in merges]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(d, f, ensure_ascii=False, indent=2)
    assert Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True) == tok.get_vocab_size(True)


def save_tokenizer_dirs(tok, fast_dir, slow_dir, model_max_length=1024):
    """fast_dir: tokenizer.json + tokenizer_config.json + special_tokens_map.json.
    slow_dir: vocab.json + merges.txt + tokenizer_config.json + special_tokens_map.json (what BartTokenizer needs)."""
    for d in (fast_dir, slow_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    save_tokenizer_json(tok, fast_dir / "tokenizer.json", legacy_merges=True)
    # vocab.json/merges.txt from the BPE model; <mask> is an added token, put it in vocab.json (like bart-base).
    tmp = slow_dir / "_tmp"
    tmp.mkdir()
    tok.model.save(str(tmp))
    vocab = json.loads((tmp / "vocab.json").read_text(encoding="utf-8"))
    vocab["<mask>"] = tok.token_to_id("<mask>")
    assert sorted(vocab.values()) == list(range(len(vocab)))
    with open(tmp / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    slow = BartTokenizer(
        vocab_file=str(tmp / "vocab.json"),
        merges_file=str(tmp / "merges.txt"),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    assert len(slow) == len(vocab), (len(slow), len(vocab))
    slow.save_pretrained(str(slow_dir))
    shutil.rmtree(tmp)
    # Drop anything that is not one of the four files (e.g. an empty added_tokens.json).
    keep = {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}
    for p in slow_dir.iterdir():
        if p.name not in keep:
            p.unlink()
    assert {p.name for p in slow_dir.iterdir()} == keep, list(slow_dir.iterdir())
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(slow_dir / name, fast_dir / name)


def tokenizer_case_texts(data):
    samsum_val = {r["id"]: r for r in read_jsonl(data / "samsum" / "validation.jsonl")}
    dsum_val = {r["id"]: r for r in read_jsonl(data / "dialogsum" / "validation.jsonl")}
    ami_val = read_jsonl(data / "ami" / "validation.jsonl")
    long_text = ami_val[0]["dialogue"][:3000]
    return [
        samsum_val["13817874"]["dialogue"],
        samsum_val["13681116"]["dialogue"],  # ’
        samsum_val["13728799"]["dialogue"],  # 💖💋
        dsum_val["dev_0"]["dialogue"],
        dsum_val["dev_133"]["summary"],
        "",
        " ",
        "   \t  ",
        "\n",
        " leading space",
        "trailing space ",
        "line one\nline two\n\nline four",
        "windows\r\nline\r\nendings\r\n",
        "It’s a café — naïve résumé, Zürich.",
        "中文测试：你好，世界！",
        "emoji 🙂👍🏽 and family 👨‍👩‍👧 done",
        "Prices: $3.50, 1,234,567 items; 42% off!!! (ok?) #Person1#: 10:30am",
        "<s>literal special</s> and <pad> <unk> <mask> tokens",
        "Hello <mask> world",
        "multiple    spaces   between     words",
        "  two leading, two trailing  ",
        "tab\tseparated\tvalues",
        "ALL CAPS SHOUTING and lowercase and MiXeD",
        "a" * 40 + " " + "ab" * 30,
        long_text,
    ]


def encode_all(t, texts):
    out = {}
    out["ids"] = [t(x)["input_ids"] for x in texts]
    out["ids_no_special"] = [t(x, add_special_tokens=False)["input_ids"] for x in texts]
    out["ids_trunc_16"] = [t(x, truncation=True, max_length=16)["input_ids"] for x in texts]
    out["tokens"] = [t.convert_ids_to_tokens(i) for i in out["ids"]]
    out["decoded"] = [t.decode(i, skip_special_tokens=True) for i in out["ids"]]
    out["decoded_keep_special"] = [t.decode(i, skip_special_tokens=False) for i in out["ids"]]
    out["decoded_clean_up_spaces"] = [
        t.decode(i, skip_special_tokens=True, clean_up_tokenization_spaces=True) for i in out["ids"]
    ]
    return out


def make_tokenizer_fixtures(data):
    corpus = tokenizer_corpus(data)
    tok = train_bpe(corpus, TOKENIZER_VOCAB)
    fast_dir, slow_dir = FIX / "tokenizer", FIX / "tokenizer-slow"
    save_tokenizer_dirs(tok, fast_dir, slow_dir)

    texts = tokenizer_case_texts(data)
    assert any(len(t) > 2000 for t in texts)
    fast = AutoTokenizer.from_pretrained(str(fast_dir))
    fast_from_slow_files = AutoTokenizer.from_pretrained(str(slow_dir))  # converted slow->fast
    slow = AutoTokenizer.from_pretrained(str(slow_dir), use_fast=False)
    assert fast.is_fast and fast_from_slow_files.is_fast and not slow.is_fast
    assert type(slow).__name__ == "BartTokenizer", type(slow)
    assert len(fast) == TOKENIZER_VOCAB and fast.mask_token_id == TOKENIZER_VOCAB - 1

    ref = encode_all(fast, texts)
    raw = Tokenizer.from_file(str(fast_dir / "tokenizer.json"))
    raw_ids = [e.ids for e in raw.encode_batch(texts)]
    mismatches = {}
    for label, t in (("fast_from_vocab_merges", fast_from_slow_files), ("slow", slow)):
        other = encode_all(t, texts)
        for k, v in other.items():
            if v != ref[k]:
                bad = [i for i in range(len(texts)) if v[i] != ref[k][i]]
                mismatches.setdefault(label, {})[k] = {"indices": bad, "values": [v[i] for i in bad]}
    if raw_ids != ref["ids"]:
        mismatches["raw_tokenizers_lib"] = {"ids": {"indices": [i for i in range(len(texts)) if raw_ids[i] != ref["ids"][i]]}}

    cases = {
        "tokenizer_dir": "tests/fixtures/tokenizer",
        "slow_tokenizer_dir": "tests/fixtures/tokenizer-slow",
        "vocab_size": len(fast),
        "special_ids": {"bos": BOS, "pad": PAD, "eos": EOS, "unk": UNK, "mask": fast.mask_token_id},
        "clean_up_tokenization_spaces_default": bool(fast.clean_up_tokenization_spaces),
        "texts": texts,
        **ref,
        "slow_matches_fast": not any(k in mismatches for k in ("fast_from_vocab_merges", "slow")),
        "mismatches": mismatches,
    }
    dump_json(cases, fast_dir / "cases.json")
    print(f"[tokenizer] vocab {len(fast)}; {len(texts)} cases; slow/fast/raw mismatches: {json.dumps(mismatches)[:400] or 'none'}")
    return tok, fast


# ---------------------------------------------------------------------------------------------------------------------
# 2./3. Models and parity references
# ---------------------------------------------------------------------------------------------------------------------
def build_model(spec, vocab_size):
    cfg_kwargs = dict(spec["config"])
    cfg = BartConfig(
        vocab_size=vocab_size,
        init_std=spec.get("init_std", INIT_STD),
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=EOS,
        forced_eos_token_id=EOS,
        **cfg_kwargs,
    )
    torch.manual_seed(spec["seed"])
    model = BartForConditionalGeneration(cfg).eval()
    # HF init leaves biases at 0 and LayerNorms at (1, 0): randomise them so a swapped/missing bias or LayerNorm
    # parameter cannot go unnoticed in the parity test.
    g = torch.Generator().manual_seed(spec["seed"] * 7 + 1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * LINEAR_BIAS_STD)
            elif isinstance(mod, torch.nn.LayerNorm):
                mod.weight.copy_(1.0 + torch.randn(mod.weight.shape, generator=g) * LAYERNORM_WEIGHT_STD)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * LAYERNORM_BIAS_STD)
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=g) * FINAL_LOGITS_BIAS_STD)
        # Round to the storage dtype now so the in-memory model equals what the checkpoint reloads as f32.
        dt = DTYPES[spec["dtype"]]
        if dt != torch.float32:
            for p in list(model.parameters()) + list(model.buffers()):
                if p.is_floating_point():
                    p.copy_(p.to(dt).to(torch.float32))
    return model


def gen_config_for(spec):
    if spec["generation"] is None:
        return None
    return GenerationConfig(
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        decoder_start_token_id=EOS,
        forced_eos_token_id=EOS,
        **spec["generation"],
    )


def generation_cases(spec, effective_gc):
    """List of (name, kwargs) -- kwargs exactly as passed to generate() (besides inputs)."""
    c = dict(do_sample=False, num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, min_length=6, max_length=24,
             early_stopping=True)
    cases = [
        ("a_greedy", dict(do_sample=False, num_beams=1)),
        ("b_greedy_max_new_tokens", dict(do_sample=False, num_beams=1, max_new_tokens=10, min_length=0,
                                         no_repeat_ngram_size=0)),
        ("c_beam", c),
        ("d_beam_no_early_stop", dict(c, early_stopping=False, length_penalty=0.8)),
        ("e_beam_never_two_returns", dict(c, early_stopping="never", length_penalty=1.0, num_return_sequences=2)),
        ("f_beam3_max_new_tokens_negative_lp", dict(do_sample=False, num_beams=3, max_new_tokens=12,
                                                    length_penalty=-0.5)),
        ("g_model_defaults", dict(do_sample=False, _defaults=True)),
    ]
    tsp = (spec["config"].get("task_specific_params") or {}).get("summarization")
    if tsp is not None:
        # What the task_specific_params fallback means: those settings passed explicitly (the pipeline does this;
        # plain generate() does NOT read task_specific_params).
        cases.append(("h_task_specific_params", dict(tsp, do_sample=False, _task_specific_params=True)))
    return cases


def effective_max_length(kwargs, gc, max_positions, decoder_prompt_len=1):
    if kwargs.get("max_new_tokens") is not None:
        return decoder_prompt_len + kwargs["max_new_tokens"]
    if kwargs.get("max_length") is not None:
        return kwargs["max_length"]
    if gc.max_new_tokens is not None:
        return decoder_prompt_len + gc.max_new_tokens
    if gc.max_length == GenerationConfig().max_length:
        # transformers quirk (_prepare_generated_length): a max_length left at the global default 20 and not passed
        # to generate() means "20 NEW tokens", i.e. max_length = 20 + decoder prompt length (capped at max positions).
        return min(gc.max_length + decoder_prompt_len, max_positions)
    return gc.max_length


def row_length(row):
    """Length up to and including the first </s> after the decoder start token (or the full row)."""
    for i in range(1, len(row)):
        if row[i] == EOS:
            return i + 1
    return len(row)


def run_generate(model, input_ids, attention_mask, kwargs):
    kw = {k: v for k, v in kwargs.items() if not k.startswith("_")}
    num_beams = kw.get("num_beams", model.generation_config.num_beams)
    want_scores = (num_beams or 1) > 1
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            return_dict_in_generate=True,
            output_scores=want_scores,
            **kw,
        )
    seqs = out.sequences.tolist()
    scores = out.sequences_scores.tolist() if want_scores and getattr(out, "sequences_scores", None) is not None else None
    return seqs, scores


def generation_inputs(parity_in):
    """(batch_texts_index, input_ids tensor, attention_mask tensor)."""
    items = [([0, 1, 2, 3], torch.tensor(parity_in["batch_input_ids"]), torch.tensor(parity_in["batch_attention_mask"]))]
    for i in (4, 5):
        ids = torch.tensor([parity_in["input_ids"][i]])
        items.append(([i], ids, torch.ones_like(ids)))
    return items


def run_all_generations(model, spec, parity_in):
    gc = model.generation_config
    results = []
    for name, kwargs in generation_cases(spec, gc):
        for idx, ids, mask in generation_inputs(parity_in):
            seqs, scores = run_generate(model, ids, mask, kwargs)
            mx = effective_max_length(kwargs, gc, model.config.max_position_embeddings)
            lens = [row_length(r) for r in seqs]
            entry = {
                "name": name,
                "kwargs": kwargs,
                "batch_texts_index": idx,
                "input_ids": ids.tolist(),
                "attention_mask": mask.tolist(),
                "sequences": seqs,
                "effective_max_length": mx,
                "row_lengths": lens,
                "row_ended_before_max_length": [L < mx for L in lens],
            }
            if scores is not None:
                entry["sequences_scores"] = scores
            results.append(entry)
    return results


def eos_quality(results):
    """Score a set of generations: want both early-</s> and max-length rows, at varying lengths."""
    early_lengths = set()
    cases_with_both = set()
    by_case = {}
    n_early = n_max = 0
    for e in results:
        for L, early in zip(e["row_lengths"], e["row_ended_before_max_length"]):
            by_case.setdefault(e["name"], [0, 0])[0 if early else 1] += 1
            if early:
                n_early += 1
                early_lengths.add(L)
            else:
                n_max += 1
    for name, (ne, nm) in by_case.items():
        if ne > 0 and nm > 0:
            cases_with_both.add(name)
    # early-stopping logic needs early rows everywhere; max-length rows only somewhere
    cases_with_early = sum(1 for ne, nm in by_case.values() if ne > 0)
    score = 10 * len(cases_with_both) + 3 * cases_with_early + len(early_lengths) + min(n_early, n_max) * 0.1
    return score, dict(n_early=n_early, n_max=n_max, distinct_early_lengths=sorted(early_lengths),
                       cases_with_both=sorted(cases_with_both))


def seed_candidates(spec, vocab_size, pin, n_candidates=6):
    """Random BARTs with tied embeddings tend to repeat one token whatever the input. Rank a few fixed seeds by how
    much their plain greedy continuations differ across the batch (input dependence), best first (ties: lower k)."""
    ids = torch.tensor(pin["batch_input_ids"])
    mask = torch.tensor(pin["batch_attention_mask"])
    ranked = []
    for k in range(n_candidates):
        seed = spec["seed"] + 100 * k
        m = build_model(dict(spec, seed=seed), vocab_size)
        with torch.no_grad():
            out = m.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1, max_new_tokens=10,
                             min_length=0, no_repeat_ngram_size=0, max_length=None)
        rows = out.tolist()
        score = 10 * len(set(map(tuple, rows))) + sum(len(set(r)) for r in rows)
        ranked.append((score, k, seed, m))
    ranked.sort(key=lambda t: (-t[0], t[1]))
    return [(score, seed, m) for score, _, seed, m in ranked]


def pick_seed_and_tune(spec, vocab_size, pin, gc):
    """Take the most input-dependent seed whose tuned final_logits_bias[</s>] gives, in every generation case, both
    rows that end with </s> before max_length and rows that reach it; fall back to the next seed otherwise."""
    n_cases = None
    for score, seed, model in seed_candidates(spec, vocab_size, pin):
        model.generation_config = gc if gc is not None else GenerationConfig.from_model_config(model.config)
        n_cases = len(generation_cases(spec, model.generation_config))
        print(f"[{spec['name']}] seed {seed} (diversity score {score})")
        _, info = tune_eos_bias(model, spec, pin)
        if len(info["cases_with_both"]) == n_cases:
            spec["chosen_seed"] = seed
            return model
        print(f"[{spec['name']}] seed {seed}: only {len(info['cases_with_both'])}/{n_cases} generation cases have both "
              f"early-</s> and max-length rows; trying the next seed")
    raise SystemExit(f"{spec['name']}: no candidate seed gives early-</s> and max-length rows in all {n_cases} cases")


def tune_eos_bias(model, spec, parity_in):
    base = model.final_logits_bias[0, EOS].item()
    dt = DTYPES[spec["dtype"]]

    def trial(b):
        v = torch.tensor(base + b).to(dt).to(torch.float32).item()
        with torch.no_grad():
            model.final_logits_bias[0, EOS] = v
        res = run_all_generations(model, spec, parity_in)
        s, info = eos_quality(res)
        return s, info, v

    best = None
    tried = {}
    for b in np.arange(-2.0, 12.01, 1.0):
        tried[float(b)] = trial(float(b))
    b0 = max(tried, key=lambda k: (tried[k][0], -abs(k)))
    for b in np.arange(b0 - 0.75, b0 + 0.76, 0.25):
        b = float(round(b, 2))
        if b not in tried:
            tried[b] = trial(b)
    bbest = max(tried, key=lambda k: (tried[k][0], -abs(k)))
    s, info, v = tried[bbest]
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = v
    print(f"[{spec['name']}] eos bias offset {bbest:+.2f} -> final_logits_bias[eos]={v:.4f} score {s:.1f} {info}")
    return v, info


def save_model(model, spec, gc, out_dir, tok, tok_fast_dir, tok_slow_dir):
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    m = copy.deepcopy(model)
    if gc is not None:
        m.generation_config = gc
    dt = DTYPES[spec["dtype"]]
    m = m.to(dt)
    kw = dict(safe_serialization=True)
    if spec["shard"]:
        kw["max_shard_size"] = spec["shard"]
    m.save_pretrained(str(out_dir), **kw)

    # config.json: make the bart-large-cnn-style token/generation keys explicit (save_pretrained may have moved
    # generation keys out of it).
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["decoder_start_token_id"] = EOS
    cfg["forced_eos_token_id"] = EOS
    if "forced_bos_token_id" in spec["config"]:
        cfg["forced_bos_token_id"] = spec["config"]["forced_bos_token_id"]
    else:
        cfg.pop("forced_bos_token_id", None)
    if "task_specific_params" in spec["config"]:
        cfg["task_specific_params"] = spec["config"]["task_specific_params"]
    write_pretty_json(cfg, cfg_path)

    gpath = out_dir / "generation_config.json"
    if gc is None:
        if gpath.exists():
            gpath.unlink()
    else:
        assert gpath.exists()

    # tokenizer files
    if spec["tokenizer_files"] in ("fast", "fast-pair-merges"):
        names = ["tokenizer_config.json", "special_tokens_map.json"]
        src = tok_fast_dir
        save_tokenizer_json(tok, out_dir / "tokenizer.json", legacy_merges=spec["tokenizer_files"] == "fast")
    else:
        names = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
        src = tok_slow_dir
    for n in names:
        shutil.copy(src / n, out_dir / n)
    # model_max_length = max positions (like bart-large-cnn: 1024)
    tc_path = out_dir / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["model_max_length"] = spec["config"]["max_position_embeddings"]
    write_pretty_json(tc, tc_path)

    if spec["shard"]:
        assert (out_dir / "model.safetensors.index.json").exists()
        assert not (out_dir / "model.safetensors").exists()
        shards = sorted(p.name for p in out_dir.glob("model-*.safetensors"))
        assert len(shards) >= 2, shards
    else:
        assert (out_dir / "model.safetensors").exists()


def load_reference_model(out_dir, dtype=torch.float32):
    try:
        m = BartForConditionalGeneration.from_pretrained(str(out_dir), dtype=dtype)
    except TypeError:
        m = BartForConditionalGeneration.from_pretrained(str(out_dir), torch_dtype=dtype)
    m.eval()
    return m


def teacher_forced_forward(model, pin):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(pin["batch_input_ids"]),
            attention_mask=torch.tensor(pin["batch_attention_mask"]),
            decoder_input_ids=torch.tensor(pin["decoder_input_ids"]),
        )


def check_f32_vs_f64(name, out_dir, pin, out32):
    """Conditioning check: the same checkpoint (same storage-rounded weights) reloaded in float64 must give the same
    teacher-forced logits / encoder states as the float32 reference, to F32_VS_F64_TOL."""
    ref64 = load_reference_model(out_dir, dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in list(ref64.parameters()) + list(ref64.buffers()) if t.is_floating_point())
    out64 = teacher_forced_forward(ref64, pin)
    d_logits = (out32.logits.double() - out64.logits).abs().max().item()
    d_enc = (out32.encoder_last_hidden_state.double() - out64.encoder_last_hidden_state).abs().max().item()
    print(f"[{name}] f32 vs f64 max |diff|: logits {d_logits:.3e}, encoder_last_hidden_state {d_enc:.3e} "
          f"(limit {F32_VS_F64_TOL:g}; max |logit| {out32.logits.abs().max().item():.2f})")
    assert d_logits <= F32_VS_F64_TOL and d_enc <= F32_VS_F64_TOL, (
        f"{name}: ill-conditioned model, float32 vs float64 logits {d_logits:.3e} / encoder {d_enc:.3e} "
        f"> {F32_VS_F64_TOL:g}"
    )
    return d_logits, d_enc


def parity_inputs(spec, tok, texts, summaries):
    M = spec["max_input_tokens"]
    assert M <= spec["config"]["max_position_embeddings"]
    input_ids = [tok(t, truncation=True, max_length=M)["input_ids"] for t in texts]
    batch = tok(texts[:4], truncation=True, max_length=M, padding=True)
    assert tok.padding_side == "right"
    dec = []
    for s in summaries[:4]:
        sid = tok(s)["input_ids"]  # [<s>, ...]
        assert len(sid) >= 8, s
        dec.append([EOS] + sid[:7])
    return {
        "max_input_tokens": M,
        "input_ids": input_ids,
        "batch_input_ids": batch["input_ids"],
        "batch_attention_mask": batch["attention_mask"],
        "decoder_input_ids": dec,
    }


def compare_models(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    for k, v in sa.items():
        if k not in sb:
            raise AssertionError(f"missing {k} after reload")
        if not torch.equal(v.float(), sb[k].float()):
            raise AssertionError(f"{k} differs after reload (max diff {(v.float() - sb[k].float()).abs().max()})")


def make_model_fixtures(tok, tok_fast_dir, tok_slow_dir, fast, data):
    samsum_val = {r["id"]: r for r in read_jsonl(data / "samsum" / "validation.jsonl")}
    dsum_val = {r["id"]: r for r in read_jsonl(data / "dialogsum" / "validation.jsonl")}
    src = {"samsum": samsum_val, "dialogsum": dsum_val}
    rows = [src[s][i] for s, i in PARITY_TEXTS]
    texts = [r["dialogue"] for r in rows]
    summaries = [r["summary"] for r in rows]
    assert any(ord(c) > 127 for t in texts for c in t)

    summary_table = {}
    for spec in MODEL_SPECS:
        name = spec["name"]
        vocab_size = len(fast) if spec["vocab"] == "full" else len(fast) - 1
        pin = parity_inputs(spec, fast, texts, summaries)
        gc = gen_config_for(spec)
        assert any(len(x) > pin["max_input_tokens"] - 1 for x in pin["input_ids"])
        assert any(len(x) < pin["max_input_tokens"] for x in pin["input_ids"][:4])
        assert len(fast(texts[4])["input_ids"]) < pin["max_input_tokens"] < len(fast(texts[5])["input_ids"])

        model = pick_seed_and_tune(spec, vocab_size, pin, gc)

        out_dir = FIX / "models" / name
        save_model(model, spec, gc, out_dir, tok, tok_fast_dir, tok_slow_dir)

        # ----- reference from the checkpoint as reloaded in float32 -----
        ref = load_reference_model(out_dir)
        compare_models(model, ref)
        tok_m = AutoTokenizer.from_pretrained(str(out_dir))
        pin_m = parity_inputs(spec, tok_m, texts, summaries)
        assert pin_m == pin, f"{name}: tokenizer files in the model dir disagree with the reference tokenizer"
        if (out_dir / "tokenizer.json").exists():
            raw = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
            assert [e.ids for e in raw.encode_batch(texts)] == [fast(t)["input_ids"] for t in texts]

        out = teacher_forced_forward(ref, pin)
        d_logits, d_enc = check_f32_vs_f64(name, out_dir, pin, out)
        effective_gc = ref.generation_config.to_dict()
        gens = run_all_generations(ref, spec, pin)
        # Same model in memory (before saving) must have produced identical generations.
        gens_mem = run_all_generations(model, spec, pin)
        assert [g["sequences"] for g in gens] == [g["sequences"] for g in gens_mem], f"{name}: reload changed outputs"
        for g in gens:
            if g["kwargs"].get("_defaults"):
                g["effective_generation_config"] = jsonable(effective_gc)

        fixture = {
            "model": name,
            "model_dir": f"tests/fixtures/models/{name}",
            "seed": spec["chosen_seed"],
            "storage_dtype": spec["dtype"],
            "reference_dtype": "float32",
            "texts": texts,
            "text_sources": [f"{s}/validation:{i}" for s, i in PARITY_TEXTS],
            **pin,
            "encoder_last_hidden_state": out.encoder_last_hidden_state.tolist(),
            "logits": out.logits.tolist(),
            "f32_vs_f64_max_abs_logits": d_logits,
            "f32_vs_f64_max_abs_encoder": d_enc,
            "generation_config_file_present": (out_dir / "generation_config.json").exists(),
            "effective_generation_config": jsonable(effective_gc),
            "generations": gens,
        }
        tsp = (spec["config"].get("task_specific_params") or {}).get("summarization")
        if tsp is not None:
            fixture["task_specific_params_summarization"] = tsp
            try:
                from transformers import pipeline

                pipe = pipeline("summarization", model=ref, tokenizer=tok_m, device=-1)
                fixture["pipeline_generation_config"] = jsonable(pipe.generation_config.to_dict())
            except Exception as e:  # informational only
                fixture["pipeline_generation_config"] = f"unavailable: {e!r}"
            fixture["note"] = (
                "No generation_config.json. transformers' generate() builds its generation config from config.json "
                "top-level keys only (see effective_generation_config / case g) and ignores task_specific_params; the "
                "summarization pipeline applies task_specific_params.summarization (pipeline_generation_config). "
                "Case h passes task_specific_params.summarization explicitly: that is the fallback to match. "
                "Quirks: with max_length left at the global default 20 and not passed, generate() makes 20 NEW "
                "tokens (effective_max_length 21 in cases a/g); the pipeline also keeps its own max_new_tokens=256, "
                "which overrides max_length=20 there."
            )
        dump_json(fixture, FIX / "parity" / f"{name}.json")
        summary_table[name] = (spec, gens)
    return summary_table


def print_summary(summary_table):
    print()
    print("Generated sequence lengths (up to and including the first </s>; '*' = ended before the effective "
          "max_length, '=' = reached max_length). Rows per input: batch[0..3] | text4 | text5")
    for name, (spec, gens) in summary_table.items():
        print(f"\n== {name}")
        by_case = {}
        for g in gens:
            by_case.setdefault(g["name"], []).append(g)
        for case, entries in by_case.items():
            parts = []
            for e in entries:
                cells = [f"{L}{'*' if early else '='}" for L, early in
                         zip(e["row_lengths"], e["row_ended_before_max_length"])]
                parts.append(" ".join(cells))
            mx = entries[0]["effective_max_length"]
            print(f"  {case:<38} max={mx:<3} " + " | ".join(parts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="dir with {samsum,dialogsum,ami}/")
    args = ap.parse_args()
    data = Path(args.data)
    setup_determinism()
    print(f"torch {torch.__version__}  transformers {transformers.__version__}  tokenizers {tokenizers.__version__}")
    if (FIX / "parity").exists():
        shutil.rmtree(FIX / "parity")
    if (FIX / "models").exists():
        shutil.rmtree(FIX / "models")
    FIX.mkdir(parents=True, exist_ok=True)
    tok, fast = make_tokenizer_fixtures(data)
    table = make_model_fixtures(tok, FIX / "tokenizer", FIX / "tokenizer-slow", fast, data)
    print_summary(table)
    print()
    print(subprocess.run(["du", "-sh", str(FIX)], capture_output=True, text=True).stdout.strip())
    print(subprocess.run(["du", "-ah", str(FIX)], capture_output=True, text=True).stdout)


if __name__ == "__main__":
    main()
