#!/usr/bin/env python3
"""Pinned reference generator for the decoder-only (Llama 3.2 / Phi-3 / Qwen2) parity fixtures.

Writes, deterministically (fixed seeds, float32, CPU, 2 threads, deterministic algorithms):

  tests/fixtures/tokenizer-llama3/       a byte-level BPE tokenizer.json laid out like Llama 3's (regex split +
                                        ByteLevel, `<|begin_of_text|> $A` post-processor, the Llama 3 special tokens),
                                        trained with `tokenizers` on the dialogue data; tokenizer_config.json carries
                                        the real Llama-3.2-Instruct chat template (tests/fixtures/chat-templates/)
  tests/fixtures/tokenizer-phi3/        a SentencePiece-style BPE (Metaspace, byte fallback, `<s> $A`) laid out like
                                        Phi-3's (<unk>=0 <s>=1 </s>=2, <|endoftext|> <|assistant|> ... <|end|> <|user|>),
                                        with the real Phi-3 chat template
  tests/fixtures/models/<name>/         tiny random-weight checkpoints of odd shapes (GQA, head_dim != hidden/heads,
                                        llama3 / linear / dynamic / longrope rope scaling, tied and untied heads,
                                        biases, bf16 and f16 storage, several eos ids)
  tests/fixtures/parity/<name>.json     chat-template prompts (apply_chat_template), forward logits of left-padded
                                        batches, generate() ids (greedy and beam, batched with left padding)

Run (see tools/reference/README.md):
  tools/reference/.venv/bin/python tools/reference/make_llama_fixtures.py [--data ../shared/data] [--only NAME ...]
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
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (shared helpers: data, JSON writers)

import transformers  # noqa: E402
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

transformers.logging.set_verbosity_error()

FIX = mf.FIX
SEED = 20261207
WEIGHT_STD = 0.25
F32_VS_F64_TOL = 5e-5  # the tests compare at 1e-4
DATE = "26 Jul 2024"  # date_string passed to the Llama 3.2 template (it would call strftime_now otherwise)
# Bartleby's default prompt for decoder-only models (documented in README / docs).
PROMPT = "Summarize the following dialogue in one or two sentences.\n\n{dialogue}"
SYSTEM = "You are a helpful assistant that writes short, faithful summaries."
TEXTS = [("samsum", "13817874"), ("samsum", "13682333"), ("samsum", "13731412"), ("samsum", "13681537")]

LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|eom_id|>", "<|finetune_right_pad_id|>", "<|python_tag|>"]
LLAMA_VOCAB = 360  # trained part; the specials follow
PHI3_SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
                 "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]
PHI3_VOCAB = 600  # the byte-fallback tokens and the alphabet included
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------------------------------
def corpus(data):
    texts = []
    for r in mf.read_jsonl(data / "samsum" / "train.jsonl")[:1500]:
        texts += [r["dialogue"], r["summary"]]
    return texts


def template(name):
    return (FIX / "chat-templates" / name).read_text(encoding="utf-8")


def llama3_tokenizer(texts):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=LLAMA_VOCAB, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    assert tok.get_vocab_size() == LLAMA_VOCAB, tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in LLAMA_SPECIALS])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return tok


def save_llama3_tokenizer(tok, out_dir):
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   model_max_length=131072, clean_up_tokenization_spaces=True,
                                   chat_template=template("llama-3.2-instruct.jinja"))
    fast.save_pretrained(str(out_dir))
    return AutoTokenizer.from_pretrained(str(out_dir))


def phi3_tokenizer(texts):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    alphabet = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=PHI3_VOCAB, min_frequency=2, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"] + alphabet)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # Phi-3 (like Llama 2's legacy=False fast tokenizer) does not split on spaces before BPE.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True, rstrip=True) for t in PHI3_SPECIALS])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1",
                                                       special_tokens=[("<s>", 1)])
    return tok


def save_phi3_tokenizer(tok, out_dir):
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>",
                                   unk_token="<unk>", pad_token="<|endoftext|>", model_max_length=4096,
                                   clean_up_tokenization_spaces=False, chat_template=template("phi-3-mini-instruct.jinja"))
    fast.save_pretrained(str(out_dir))
    return AutoTokenizer.from_pretrained(str(out_dir))


TOKENIZERS = {"llama3": (llama3_tokenizer, save_llama3_tokenizer), "phi3": (phi3_tokenizer, save_phi3_tokenizer)}


def tokenizer_cases(fast, texts, out_dir):
    enc = [fast(t)["input_ids"] for t in texts]
    mf.dump_json({"texts": texts, "ids": enc, "ids_no_special": [fast(t, add_special_tokens=False)["input_ids"] for t in texts],
                  "decoded": [fast.decode(e, skip_special_tokens=True) for e in enc],
                  "decoded_keep_special": [fast.decode(e, skip_special_tokens=False) for e in enc]},
                 out_dir / "cases.json")


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------
def llama_ids(fast):
    return {t: fast.convert_tokens_to_ids(t) for t in LLAMA_SPECIALS}


MODEL_SPECS = [
    dict(
        # Llama-3.2-Instruct-like: GQA (4 heads, 2 kv heads), head_dim 12 != 40/4, llama3 rope scaling with
        # original_max_position_embeddings below every prompt, tied head, eos [<|end_of_text|>, <|eom_id|>, <|eot_id|>],
        # a generation config asking for sampling.
        name="llama-gqa-llama3-tied", tokenizer="llama3", cls=LlamaConfig, seed=SEED + 1, dtype="float32",
        config=dict(hidden_size=40, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=12, max_position_embeddings=512, rope_theta=500000.0,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=16),
                    rms_norm_eps=1e-5, tie_word_embeddings=True),
        eos=["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"], sampling=True,
    ),
    dict(
        # Untied head, attention and MLP biases, MHA (kv heads == heads), linear rope scaling, bf16 storage.
        name="llama-bias-linear-bf16", tokenizer="llama3", cls=LlamaConfig, seed=SEED + 2, dtype="bfloat16",
        config=dict(hidden_size=36, intermediate_size=44, num_hidden_layers=3, num_attention_heads=3,
                    num_key_value_heads=3, max_position_embeddings=256, rope_theta=10000.0,
                    rope_scaling=dict(rope_type="linear", factor=2.0), attention_bias=True, mlp_bias=True,
                    rms_norm_eps=1e-6, tie_word_embeddings=False),
        eos=["<|eot_id|>"], sampling=False,
    ),
    dict(
        # Phi-3 with longrope (short factors up to original_max_position_embeddings, long ones beyond, attention scaled),
        # fused qkv_proj / gate_up_proj, GQA, a sliding window shorter than the prompts, f16 storage.
        name="phi3-longrope-f16", tokenizer="phi3", cls=Phi3Config, seed=SEED + 3, dtype="float16",
        config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, original_max_position_embeddings=90,
                    rope_theta=10000.0, sliding_window=48, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    rope_scaling=dict(type="longrope", short_factor=[1.0, 1.1, 1.25, 1.5], long_factor=[1.0, 2.0, 3.5, 6.0])),
        eos=["<|endoftext|>", "<|assistant|>", "<|end|>"], sampling=False,
    ),
    dict(
        # Dynamic NTK rope scaling with every prompt past max_position_embeddings (the base grows with the sequence,
        # step by step during generation), MQA (1 kv head), head_dim 10. transformers keeps the grown frequencies in the
        # module between calls: every reference call below runs on a freshly loaded model, as Bartleby starts each
        # generation from the configured frequencies.
        name="llama-dynamic-mqa", tokenizer="llama3", cls=LlamaConfig, seed=SEED + 5, dtype="float32",
        config=dict(hidden_size=30, intermediate_size=36, num_hidden_layers=2, num_attention_heads=3,
                    num_key_value_heads=1, head_dim=10, max_position_embeddings=64, rope_theta=10000.0,
                    rope_scaling=dict(rope_type="dynamic", factor=2.0), rms_norm_eps=1e-5, tie_word_embeddings=False),
        eos=["<|eot_id|>"], sampling=False, fresh_per_call=True,
    ),
    dict(
        # Widths in 32-value blocks (GGUF q8_0 quantizes every matrix: tests/fixtures/gguf/), untied head, llama3
        # rope scaling, GQA 4/2 with head_dim 16.
        name="llama-q8-untied", tokenizer="llama3", cls=LlamaConfig, seed=SEED + 6, dtype="bfloat16",
        config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=512, rope_theta=500000.0,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=32),
                    rms_norm_eps=1e-5, tie_word_embeddings=False),
        eos=["<|end_of_text|>", "<|eot_id|>"], sampling=True,
    ),
    dict(
        # Qwen2: q/k/v biases (no o bias), GQA, tied head.
        name="qwen2-bias-tied", tokenizer="llama3", cls=Qwen2Config, seed=SEED + 4, dtype="float32",
        config=dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=1, max_position_embeddings=512, rope_theta=1000000.0, rms_norm_eps=1e-6,
                    tie_word_embeddings=True, use_sliding_window=False),
        eos=["<|end_of_text|>", "<|eot_id|>"], sampling=False,
    ),
]


def build_model(spec, fast, seed):
    torch.manual_seed(seed)
    vocab = len(fast)
    eos = [fast.convert_tokens_to_ids(t) for t in spec["eos"]]
    bos = fast.bos_token_id
    cfg = spec["cls"](vocab_size=vocab, bos_token_id=bos, eos_token_id=eos if len(eos) > 1 else eos[0],
                      attention_dropout=0.0, **spec["config"])
    cfg.pad_token_id = fast.pad_token_id
    m = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(WEIGHT_STD * torch.randn_like(p))
    m.eval()
    gc = dict(bos_token_id=bos, eos_token_id=eos)
    if spec["sampling"]:
        gc.update(do_sample=True, temperature=0.6, top_p=0.9)
    m.generation_config = GenerationConfig(**gc)
    return m


def head_weight(model):
    return model.get_output_embeddings().weight


def pad_id(model):
    gc = model.generation_config
    if gc.pad_token_id is not None:
        return gc.pad_token_id
    eos = gc.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


def left_pad(rows, pad):
    width = max(len(r) for r in rows)
    ids = [[pad] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return ids, mask


GEN_CASES = [
    ("a_greedy", dict(do_sample=False, num_beams=1, max_new_tokens=12)),
    ("b_greedy_no_repeat_min_new", dict(do_sample=False, num_beams=1, max_new_tokens=16, min_new_tokens=4,
                                        no_repeat_ngram_size=3)),
    ("c_beam3", dict(do_sample=False, num_beams=3, max_new_tokens=14, length_penalty=1.5, early_stopping=True,
                     no_repeat_ngram_size=2)),
    ("d_beam4_never_two_returns", dict(do_sample=False, num_beams=4, max_new_tokens=10, early_stopping="never",
                                       num_return_sequences=2)),
    ("e_model_defaults", dict(do_sample=False)),
]


def run_generations(model, prompts, fresh=None):
    pad = pad_id(model)
    out = []
    for name, kwargs in GEN_CASES:
        for idx in ([0, 1, 2], [3]):
            if fresh is not None:
                model = fresh()
            ids, mask = left_pad([prompts[i] for i in idx], pad)
            entry = dict(name=name, kwargs=kwargs, prompts_index=idx, input_ids=ids, attention_mask=mask)
            try:
                with torch.no_grad():
                    seqs = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                          pad_token_id=pad, **kwargs)
                entry["sequences"] = seqs.tolist()
            except ValueError as e:  # e.g. a default max_length capped at max_position_embeddings below the prompt
                entry["sequences"] = None
                entry["error"] = str(e)
            out.append(entry)
    return out


def eos_score(model, gens):
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    early = full = 0
    for g in gens:
        width = len(g["input_ids"][0])
        for s in g["sequences"] or []:
            new = s[width:]
            if any(t in eos for t in new[:-1]) or (new and new[-1] in eos and len(new) < 10):
                early += 1
            else:
                full += 1
    return min(early, full)


def tune_eos(model, fast, spec, prompts):
    """Random weights rarely end a sequence: shift the eos rows of the output projection along the mean final hidden
    state so that some generations end early and others run to max_new_tokens."""
    ids, mask = left_pad(prompts, pad_id(model))
    with torch.no_grad():
        h = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True).hidden_states[-1]
    u = h[torch.tensor(mask).bool()].mean(0)
    u = u / (u @ u)
    head = head_weight(model)
    eos = [fast.convert_tokens_to_ids(t) for t in spec["eos"]]
    base = head[eos].detach().clone()
    best = None
    for b in np.arange(0.0, 12.01, 1.5):
        with torch.no_grad():
            for j, e in enumerate(eos):
                head[e] = base[j] + float(b) * (j + 1) / len(eos) * u
        m = copy.deepcopy(model).to(mf.DTYPES[spec["dtype"]]).to(torch.float32)
        s = eos_score(m, run_generations(m, prompts))
        if best is None or s > best[0]:
            best = (s, float(b))
    with torch.no_grad():
        for j, e in enumerate(eos):
            head[e] = base[j] + best[1] * (j + 1) / len(eos) * u
    print(f"[{spec['name']}] eos offset {best[1]:+.1f}: {best[0]} rows on each side")


def chat_prompts(fast, dialogues):
    out = []
    for i, d in enumerate(dialogues):
        for system in (None, SYSTEM):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": PROMPT.replace("{dialogue}", d)}]
            text = fast.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, date_string=DATE)
            ids = fast.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, date_string=DATE)
            out.append(dict(dialogue_index=i, system=system, text=text, ids=list(ids)))
    return out


def forward_logits(model, prompts):
    ids, mask = left_pad(prompts, pad_id(model))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    return ids, mask, logits


def make_model_fixtures(data, only):
    rows = {r["id"]: r for r in mf.read_jsonl(data / "samsum" / "validation.jsonl")}
    dialogues = [rows[i]["dialogue"] for _, i in TEXTS]
    texts = corpus(data)
    toks = {}
    for key, (train, save) in TOKENIZERS.items():
        tok = train(texts)
        d = FIX / f"tokenizer-{key}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        fast = save(tok, d)
        tokenizer_cases(fast, mf.tokenizer_case_texts(data) + ["<|eot_id|> and <|end|> are special", "  two  spaces"], d)
        toks[key] = (tok, save, fast)
    for spec in MODEL_SPECS:
        name = spec["name"]
        if only and name not in only:
            continue
        tok, save, fast = toks[spec["tokenizer"]]
        chats = chat_prompts(fast, dialogues)
        prompts = [c["ids"] for c in chats if c["system"] is None]
        model = build_model(spec, fast, spec["seed"])
        tune_eos(model, fast, spec, prompts)
        out_dir = FIX / "models" / name
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        m = copy.deepcopy(model).to(mf.DTYPES[spec["dtype"]])
        m.save_pretrained(str(out_dir), safe_serialization=True)
        fast_m = save(tok, out_dir)
        assert chat_prompts(fast_m, dialogues) == chats
        def loader(dtype):
            return lambda: AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=dtype).eval()
        fresh32 = loader(torch.float32) if spec.get("fresh_per_call") else None
        fresh64 = loader(torch.float64) if spec.get("fresh_per_call") else None
        ref = loader(torch.float32)()
        ref64 = loader(torch.float64)()
        ids, mask, logits = forward_logits(ref, prompts)
        _, _, logits64 = forward_logits(ref64, prompts)
        real = torch.tensor(mask).bool()
        d = (logits.double() - logits64)[real].abs().max().item()
        print(f"[{name}] f32 vs f64 logits {d:.2e} (max |logit| {logits[real].abs().max().item():.2f})")
        assert d <= F32_VS_F64_TOL, f"{name}: ill-conditioned"
        gens = run_generations(ref, prompts, fresh32)
        gens64 = run_generations(ref64, prompts, fresh64)
        for g, g64 in zip(gens, gens64):
            assert g.get("error") == g64.get("error")
            if g["sequences"] != g64["sequences"]:
                print(f"[{name}] {g['name']} {g['prompts_index']}: float64 differs (near-tie): using float64")
                g["sequences"] = g64["sequences"]
                g["decided_by_float64"] = True
        width = len(ids[0])
        sampled = [[j for j in range(width) if m[j] and (j % 8 == 0 or j >= width - 3)] for m in mask]
        plain = [PROMPT.replace("{dialogue}", d) for d in dialogues]
        fixture = {
            "model": name, "model_dir": f"tests/fixtures/models/{name}", "storage_dtype": spec["dtype"],
            "prompt_template": PROMPT, "system": SYSTEM, "date_string": DATE, "dialogues": dialogues,
            "chat_prompts": chats,
            "plain_prompts": [dict(text=t, ids=fast_m(t)["input_ids"]) for t in plain],
            # Logits at every 8th position of each row (padding included: finite, unused) and its last 3.
            "forward": dict(input_ids=ids, attention_mask=mask, positions=sampled,
                            logits=[[logits[b, j].tolist() for j in sampled[b]] for b in range(len(ids))]),
            "f32_vs_f64_max_abs_logits": d, "pad_token_id": pad_id(ref),
            "effective_generation_config": mf.jsonable(ref.generation_config.to_dict()),
            "generations": gens,
        }
        mf.dump_json(fixture, FIX / "parity" / f"{name}.json")


def make_warper_fixture():
    """transformers' sampling warpers (Temperature -> TopK -> TopP, as _get_logits_processor orders them for
    do_sample=True) on seeded score rows, ties and -inf included: tests/fixtures/generate/warpers.json."""
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)
    g = torch.Generator().manual_seed(SEED)
    cases = []
    for temperature, top_k, top_p in [(1.0, 50, 1.0), (0.6, 0, 0.9), (1.3, 5, 1.0), (0.7, 8, 0.8), (1.0, 3, 0.5),
                                      (2.0, 0, 0.95)]:
        scores = torch.randn(4, 40, generator=g) * 2
        scores[1, 7] = scores[1, 3]  # a tie
        scores[2, :5] = float("-inf")  # banned tokens (no-repeat, min length)
        warpers = LogitsProcessorList()
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k != 0:
            warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
        out = warpers(torch.zeros(4, 1, dtype=torch.long), scores.clone())
        as_list = lambda t: [[None if x == float("-inf") else x for x in row] for row in t.tolist()]
        cases.append(dict(temperature=temperature, top_k=top_k, top_p=top_p, scores=as_list(scores), warped=as_list(out)))
    (FIX / "generate").mkdir(parents=True, exist_ok=True)
    mf.dump_json({"transformers_version": transformers.__version__, "cases": cases}, FIX / "generate" / "warpers.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(mf.ROOT.parent / "shared" / "data"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    mf.setup_determinism()
    make_warper_fixture()
    make_model_fixtures(Path(args.data), args.only)


if __name__ == "__main__":
    main()
