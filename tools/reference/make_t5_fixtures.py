#!/usr/bin/env python3
"""Pinned reference generator for the T5 parity fixtures (tests/fixtures/).

Writes, deterministically (fixed seeds, float32, CPU, 2 threads, deterministic algorithms):

  tests/fixtures/tokenizer-t5/          a SentencePiece-Unigram tokenizer.json (Metaspace, `$A </s>`), trained with
                                        `tokenizers` on the dialogue data like T5's (<pad>=0 </s>=1 <unk>=2, three
                                        <extra_id_N> sentinels), + cases.json (tokenizer test vectors)
  tests/fixtures/models/<name>/         tiny random-weight T5ForConditionalGeneration checkpoints of odd shapes
  tests/fixtures/parity/<name>.json     forward (encoder states, logits), generate() and pipeline references
  tests/fixtures/t5/relative_buckets.json  T5Attention._relative_position_bucket over -700..700 for several settings

Run (see tools/reference/README.md):
  tools/reference/.venv/bin/python tools/reference/make_t5_fixtures.py [--data ../shared/data]
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
import make_fixtures as mf  # noqa: E402  (shared helpers: data, JSON writers, parity texts)

import transformers  # noqa: E402
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

transformers.logging.set_verbosity_error()

FIX = mf.FIX
SEED = 20261206
PAD, EOS, UNK = 0, 1, 2
VOCAB = 400  # including three <extra_id_N> sentinels at the end
N_EXTRA = 3
WEIGHT_STD = 0.3
NORM_WEIGHT_STD = 0.1
F32_VS_F64_TOL = 1e-5
PREFIX = "summarize: "
DTYPES = mf.DTYPES

BASE_GEN = dict(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True)

MODEL_SPECS = [
    dict(
        # t5-small-like: relu, tied head (output scaled by d_model^-0.5), heads x d_kv != d_model, unequal depths,
        # task_specific_params.summarization with the "summarize: " prefix.
        name="t5-relu-tied",
        seed=SEED + 1,
        config=dict(d_model=24, d_kv=5, num_heads=3, d_ff=40, num_layers=3, num_decoder_layers=2,
                    feed_forward_proj="relu", tie_word_embeddings=True, relative_attention_num_buckets=8,
                    relative_attention_max_distance=20),
        max_input_tokens=48,
        generation=dict(max_length=30),
        task_specific_params={"summarization": dict(BASE_GEN, max_length=26, min_length=5, prefix=PREFIX)},
        dtype="float32",
    ),
    dict(
        # flan-t5-like: gated-gelu (gelu_new), untied lm_head, bf16 storage, more buckets than positions reach.
        name="t5-gatedgelu-untied",
        seed=SEED + 2,
        config=dict(d_model=20, d_kv=8, num_heads=4, d_ff=28, num_layers=2, num_decoder_layers=2,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False, relative_attention_num_buckets=16,
                    relative_attention_max_distance=32),
        max_input_tokens=56,
        generation=dict(BASE_GEN, max_length=32, min_length=6),
        task_specific_params=None,
        dtype="bfloat16",
        # Gated FFNs multiply two projections: smaller weights keep float32 within 1e-5 of float64.
        weight_std=0.2,
    ),
    dict(
        # gated-silu, f16 storage, decoder shallower than the encoder, one head.
        name="t5-gatedsilu-f16",
        seed=SEED + 3,
        config=dict(d_model=16, d_kv=12, num_heads=2, d_ff=24, num_layers=2, num_decoder_layers=1,
                    feed_forward_proj="gated-silu", tie_word_embeddings=True, relative_attention_num_buckets=32,
                    relative_attention_max_distance=128),
        max_input_tokens=40,
        generation=dict(max_length=24, num_beams=3, no_repeat_ngram_size=2, length_penalty=1.5),
        task_specific_params=None,
        dtype="float16",
        weight_std=0.2,
    ),
]


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------------
def train_unigram(corpus):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB - N_EXTRA, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    n = tok.get_vocab_size(with_added_tokens=True)
    if n != VOCAB - N_EXTRA:
        raise SystemExit(f"Unigram training reached {n} tokens, expected {VOCAB - N_EXTRA}")
    tok.add_special_tokens([AddedToken(f"<extra_id_{i}>", normalized=False, special=True) for i in reversed(range(N_EXTRA))])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS)]
    )
    assert [tok.token_to_id(t) for t in ["<pad>", "</s>", "<unk>"]] == [PAD, EOS, UNK]
    assert tok.get_vocab_size(True) == VOCAB
    return tok


def save_tokenizer(tok, out_dir, model_max_length):
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=[f"<extra_id_{i}>" for i in range(N_EXTRA)], model_max_length=model_max_length,
        clean_up_tokenization_spaces=True,
    )
    fast.save_pretrained(str(out_dir))
    return AutoTokenizer.from_pretrained(str(out_dir))


def make_tokenizer_fixtures(tok, data):
    d = FIX / "tokenizer-t5"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    fast = save_tokenizer(tok, d, 512)
    texts = mf.tokenizer_case_texts(data) + ["summarize: Hello  there", "a <extra_id_0> b", "  leading and trailing  "]
    enc = [fast(t)["input_ids"] for t in texts]
    cases = {
        "texts": texts,
        "ids": enc,
        "ids_trunc_16": [fast(t, truncation=True, max_length=16)["input_ids"] for t in texts],
        "decoded": [fast.decode(e, skip_special_tokens=True) for e in enc],
        "decoded_keep_special": [fast.decode(e, skip_special_tokens=False) for e in enc],
    }
    mf.dump_json(cases, d / "cases.json")
    return fast


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------
def build_model(spec, seed):
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=VOCAB, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
                   dropout_rate=0.0, layer_norm_epsilon=1e-6, **spec["config"])
    m = T5ForConditionalGeneration(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + NORM_WEIGHT_STD * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(spec.get("weight_std", WEIGHT_STD) * torch.randn_like(p))
    m.eval()
    return m


def gen_config_for(spec):
    return GenerationConfig(decoder_start_token_id=PAD, eos_token_id=EOS, pad_token_id=PAD, **spec["generation"])


def generation_cases(spec):
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
    tsp = (spec["task_specific_params"] or {}).get("summarization")
    if tsp is not None:
        kw = {k: v for k, v in tsp.items() if k != "prefix"}
        cases.append(("h_task_specific_params", dict(kw, do_sample=False, _task_specific_params=True)))
    return cases


def row_length(row):
    for i in range(1, len(row)):
        if row[i] == EOS:
            return i + 1
    return len(row)


def run_all_generations(model, spec, pin):
    gc = model.generation_config
    results = []
    for name, kwargs in generation_cases(spec):
        for idx, ids, mask in mf.generation_inputs(pin):
            seqs, scores = mf.run_generate(model, ids, mask, kwargs)
            mx = mf.effective_max_length(kwargs, gc, 10**9)
            lens = [row_length(r) for r in seqs]
            entry = {
                "name": name, "kwargs": kwargs, "batch_texts_index": idx, "input_ids": ids.tolist(),
                "attention_mask": mask.tolist(), "sequences": seqs, "effective_max_length": mx, "row_lengths": lens,
                "row_ended_before_max_length": [L < mx for L in lens],
            }
            if scores is not None:
                entry["sequences_scores"] = scores
            results.append(entry)
    return results


def eos_score(results):
    early = sum(sum(g["row_ended_before_max_length"]) for g in results)
    full = sum(len(g["row_lengths"]) - sum(g["row_ended_before_max_length"]) for g in results)
    lengths = {L for g in results for L, e in zip(g["row_lengths"], g["row_ended_before_max_length"]) if e}
    both = {g["name"] for g in results if any(g["row_ended_before_max_length"])} & {
        g["name"] for g in results if not all(g["row_ended_before_max_length"])}
    return 10 * len(both) + min(early, full) + len(lengths), both


def decoder_states(model, pin):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(pin["batch_input_ids"]),
                    attention_mask=torch.tensor(pin["batch_attention_mask"]),
                    decoder_input_ids=torch.tensor(pin["decoder_input_ids"]), output_hidden_states=True)
    h = out.decoder_hidden_states[-1]
    if model.config.tie_word_embeddings:
        h = h * model.model_dim ** -0.5
    return h.reshape(-1, h.shape[-1])


def round_to_storage(model, dtype):
    return model.to(DTYPES[dtype]).to(torch.float32)


def tune_eos(model, spec, pin):
    """No final_logits_bias in T5: shift the </s> row of the output projection along the mean decoder state, which
    moves the </s> logit by about `b` on typical states; keep the offset whose generations end early in some rows and
    run to max_length in others, in the most cases."""
    u = decoder_states(model, pin).mean(0)
    u = u / (u @ u)
    head = model.lm_head.weight
    base = head[EOS].detach().clone()
    best = None
    for b in np.arange(-2.0, 10.01, 1.0):
        with torch.no_grad():
            head[EOS] = base + float(b) * u
        m = round_to_storage(copy.deepcopy(model), spec["dtype"])
        s, both = eos_score(run_all_generations(m, spec, pin))
        if best is None or s > best[0]:
            best = (s, float(b), both)
    with torch.no_grad():
        head[EOS] = base + best[1] * u
    print(f"[{spec['name']}] eos offset {best[1]:+.1f}: score {best[0]}, cases with both {sorted(best[2])}")
    return best


def parity_inputs(spec, tok, texts, summaries, prefix):
    M = spec["max_input_tokens"]
    texts = [prefix + t for t in texts]
    input_ids = [tok(t, truncation=True, max_length=M)["input_ids"] for t in texts]
    batch = tok(texts[:4], truncation=True, max_length=M, padding=True)
    dec = []
    for s in summaries[:4]:
        sid = tok(s)["input_ids"]
        assert len(sid) >= 8, s
        dec.append([PAD] + sid[:7])
    return {"max_input_tokens": M, "input_ids": input_ids, "batch_input_ids": batch["input_ids"],
            "batch_attention_mask": batch["attention_mask"], "decoder_input_ids": dec}


def save_model(model, spec, out_dir, tok):
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    m = copy.deepcopy(model).to(DTYPES[spec["dtype"]])
    m.generation_config = gen_config_for(spec)
    if spec["task_specific_params"] is not None:
        m.config.task_specific_params = spec["task_specific_params"]
    m.save_pretrained(str(out_dir), safe_serialization=True)
    save_tokenizer(tok, out_dir, spec["max_input_tokens"] * 8)


def load_reference_model(out_dir, dtype=torch.float32):
    m = T5ForConditionalGeneration.from_pretrained(str(out_dir), dtype=dtype)
    m.eval()
    return m


def teacher_forced(model, pin):
    with torch.no_grad():
        return model(input_ids=torch.tensor(pin["batch_input_ids"]),
                     attention_mask=torch.tensor(pin["batch_attention_mask"]),
                     decoder_input_ids=torch.tensor(pin["decoder_input_ids"]))


def make_model_fixtures(tok, data, only=None):
    samsum = {r["id"]: r for r in mf.read_jsonl(data / "samsum" / "validation.jsonl")}
    dsum = {r["id"]: r for r in mf.read_jsonl(data / "dialogsum" / "validation.jsonl")}
    src = {"samsum": samsum, "dialogsum": dsum}
    rows = [src[s][i] for s, i in mf.PARITY_TEXTS]
    texts = [r["dialogue"] for r in rows]
    summaries = [r["summary"] for r in rows]
    for spec in MODEL_SPECS:
        name = spec["name"]
        if only and name not in only:
            continue
        tsp = (spec["task_specific_params"] or {}).get("summarization") or {}
        prefix = tsp.get("prefix", "")
        fast = save_tokenizer(tok, Path("/tmp") / f"tok-{name}", spec["max_input_tokens"] * 8)
        pin = parity_inputs(spec, fast, texts, summaries, prefix)
        best = None
        for k in range(3):
            model = build_model(spec, spec["seed"] + 100 * k)
            model.generation_config = gen_config_for(spec)
            score = tune_eos(model, spec, pin)
            if best is None or score[0] > best[0][0]:
                best = (score, spec["seed"] + 100 * k, model)
        _, seed, model = best
        out_dir = FIX / "models" / name
        save_model(model, spec, out_dir, tok)
        ref = load_reference_model(out_dir)
        tok_m = AutoTokenizer.from_pretrained(str(out_dir))
        assert parity_inputs(spec, tok_m, texts, summaries, prefix) == pin
        out = teacher_forced(ref, pin)
        ref64 = load_reference_model(out_dir, torch.float64)
        out64 = teacher_forced(ref64, pin)
        d_logits = (out.logits.double() - out64.logits).abs().max().item()
        d_enc = (out.encoder_last_hidden_state.double() - out64.encoder_last_hidden_state).abs().max().item()
        print(f"[{name}] seed {seed}: f32 vs f64 logits {d_logits:.2e} encoder {d_enc:.2e} "
              f"(max |logit| {out.logits.abs().max().item():.2f})")
        assert d_logits <= F32_VS_F64_TOL and d_enc <= F32_VS_F64_TOL, f"{name}: ill-conditioned"
        gens = run_all_generations(ref, spec, pin)
        gens64 = run_all_generations(ref64, spec, pin)
        near_ties = [i for i, (a, b) in enumerate(zip(gens, gens64)) if a["sequences"] != b["sequences"]]
        if near_ties:
            print(f"[{name}] float64 generations differ from float32 in cases {near_ties}: near-ties; using float64")
            for i in near_ties:
                gens[i]["sequences"] = gens64[i]["sequences"]
                gens[i]["decided_by_float64"] = True
        effective_gc = mf.jsonable(ref.generation_config.to_dict())
        fixture = {
            "model": name, "model_dir": f"tests/fixtures/models/{name}", "seed": seed, "storage_dtype": spec["dtype"],
            "reference_dtype": "float32", "texts": texts, "prefix": prefix,
            "text_sources": [f"{s}/validation:{i}" for s, i in mf.PARITY_TEXTS], **pin,
            "encoder_last_hidden_state": out.encoder_last_hidden_state.tolist(), "logits": out.logits.tolist(),
            "f32_vs_f64_max_abs_logits": d_logits, "f32_vs_f64_max_abs_encoder": d_enc,
            "effective_generation_config": effective_gc, "generations": gens,
        }
        # What transformers' summarization pipeline does with the checkpoint as it is (prefix and
        # task_specific_params included): its settings and, for two dialogues, its output text.
        from transformers import pipeline

        pipe = pipeline("summarization", model=ref, tokenizer=tok_m, device=-1)
        fixture["pipeline_generation_config"] = mf.jsonable(pipe.generation_config.to_dict())
        fixture["pipeline_prefix"] = pipe.prefix if getattr(pipe, "prefix", None) is not None else ""
        outs = []
        for t in texts[1:3]:
            r = pipe(t, truncation=True)
            outs.append(r[0]["summary_text"])
        fixture["pipeline_texts_index"] = [1, 2]
        fixture["pipeline_summaries"] = outs
        mf.dump_json(fixture, FIX / "parity" / f"{name}.json")


def make_bucket_fixture():
    rel = torch.arange(-700, 701)
    out = []
    for bidirectional in (True, False):
        for nb, md in ((8, 20), (16, 32), (32, 128), (32, 64), (64, 256)):
            b = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=nb, max_distance=md)
            out.append(dict(bidirectional=bidirectional, num_buckets=nb, max_distance=md, buckets=b.tolist()))
    mf.dump_json({"relative_positions": rel.tolist(), "cases": out}, FIX / "t5" / "relative_buckets.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(mf.ROOT.parent / "shared" / "data"))
    ap.add_argument("--only", nargs="*", help="models to (re)write, reusing the committed tokenizer")
    args = ap.parse_args()
    data = Path(args.data)
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    if args.only:
        tok = Tokenizer.from_file(str(FIX / "tokenizer-t5" / "tokenizer.json"))
    else:
        tok = train_unigram(mf.tokenizer_corpus(data))
        make_tokenizer_fixtures(tok, data)
        make_bucket_fixture()
    make_model_fixtures(tok, data, args.only)
    print("torch", torch.__version__, "transformers", transformers.__version__)


if __name__ == "__main__":
    main()
