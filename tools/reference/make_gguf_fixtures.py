#!/usr/bin/env python3
"""Reference GGUF files for `bartleby export --format gguf` (tests/fixtures/gguf/): llama.cpp's own
convert_hf_to_gguf.py (from the llama.cpp source that the llama-cpp-python sdist vendors, with its gguf-py) run on the
fixture checkpoints, f16 and q8_0. Two things are patched, both about the fixtures' tokenizer, which is trained here:
its pre-tokenizer hash is not in convert's table (it is Llama 3's layout, so `llama-bpe` is what convert would pick for
the real one; `qwen2` for the Qwen2 fixture, as for Qwen2.5), and convert's first attempt — a SentencePiece tokenizer.model — is skipped without needing the
sentencepiece module (Llama 3 has no tokenizer.model: convert then takes the byte-level BPE path, as here).

  tools/reference/.venv/bin/python tools/reference/make_gguf_fixtures.py [--sdist-dir DIR] [--k-quants-only]
  (the q4_k_m files need llama-cpp-python built: bash tests/extra/gguf-llamacpp once)
"""
import argparse
import glob
import json
import runpy
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
SDIST = "llama-cpp-python==0.3.36"
CASES = [("llama-gqa-llama3-tied", "f16"), ("llama-q8-untied", "f16"), ("llama-q8-untied", "q8_0"),
         ("llama-bias-linear-bf16", "f16"), ("phi3-longrope-f16", "f16"), ("phi3-longrope-f16", "q8_0"),
         ("qwen2-bias-tied", "f16"), ("qwen2-bias-tied", "q8_0")]


def phi3_tokenizer_model(model_dir):
    """Phi-3's convert reads the SentencePiece `tokenizer.model` (real Phi-3 ships one beside tokenizer.json): the
    fixture's is built from its tokenizer.json — the BPE vocabulary in id order as SentencePiece pieces (`<unk>`
    unknown, `<s>`/`</s>` control, `<0xNN>` byte, others normal; score 0 for those, minus the merge rank after), the
    added tokens (ids 600..610) left to tokenizer_config.json / tokenizer.json, as in the real model."""
    import json
    from sentencepiece import sentencepiece_model_pb2 as pb
    tok = json.load(open(model_dir / "tokenizer.json"))
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 0, 1, 2, -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    kinds = pb.ModelProto.SentencePiece
    for i, t in sorted(((i, t) for t, i in tok["model"]["vocab"].items())):
        p = m.pieces.add()
        p.piece = t
        p.score = 0.0 if i < 259 else -float(i - 259)
        p.type = (kinds.UNKNOWN if t == "<unk>" else kinds.CONTROL if t in ("<s>", "</s>")
                  else kinds.BYTE if t.startswith("<0x") and len(t) == 6 else kinds.NORMAL)
    (model_dir / "tokenizer.model").write_bytes(m.SerializeToString())


# llama-quantize's Q4_K_M (tests/fixtures/gguf/<model>-q4_k_m.gguf): llama.cpp's own quantizer (llama_model_quantize, no
# importance matrix, from the llama-cpp-python build tests/extra/gguf-llamacpp makes) on convert's f32 file. The 32-wide
# fixtures take its fallbacks (Q5_0 / Q8_0 / F16) and its per-layer choices; llama-k-quants (made here: rows of 256, so
# Q4_K and Q6_K blocks) its K-quant bytes.
K_QUANT_MODELS = ["llama-k-quants", "llama-q8-untied", "llama-gqa-llama3-tied", "phi3-longrope-f16", "qwen2-bias-tied"]
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15


def k_quants_model(out_dir):
    """A one-layer Llama whose every matrix has rows of 256 values (K-quant super-blocks), bf16 weights, untied head;
    the llama3 fixture tokenizer (llama-q8-untied's files)."""
    import shutil
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    src = FIX / "models" / "llama-q8-untied"
    torch.manual_seed(20261207)
    base = json.load(open(src / "config.json"))
    cfg = LlamaConfig(vocab_size=base["vocab_size"], hidden_size=256, intermediate_size=256, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rope_theta=500000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=base["bos_token_id"],
                      eos_token_id=base["eos_token_id"], pad_token_id=base.get("pad_token_id"))
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in model.parameters():  # a spread closer to trained weights than the 0.02 init: varied block scales
            p.mul_(torch.exp(torch.randn(p.shape[0], *[1] * (p.dim() - 1)).to(p.dtype)))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
              "generation_config.json"]:
        shutil.copy(src / f, out_dir / f)


def k_quants(sdist, lcpp_python):
    import tempfile
    k_quants_model(FIX / "models" / "llama-k-quants")
    with tempfile.TemporaryDirectory() as tmp:
        for model in K_QUANT_MODELS:
            f32 = Path(tmp) / f"{model}-f32.gguf"
            subprocess.run([sys.executable, __file__, "--sdist-dir", str(sdist), "--convert-one",
                            str(FIX / "models" / model), str(f32), "f32"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            out = FIX / "gguf" / f"{model}-q4_k_m.gguf"
            code = ("import ctypes, sys, llama_cpp\n"
                    "p = llama_cpp.llama_model_quantize_default_params()\n"
                    f"p.ftype = {LLAMA_FTYPE_MOSTLY_Q4_K_M}\n"
                    "p.nthread = 2\n"
                    "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))")
            subprocess.run([lcpp_python, "-c", code, str(f32), str(out)], check=True)
            print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size} bytes)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdist-dir", default=str(ROOT / "bench" / "out" / "llama-cpp-sdist"))
    ap.add_argument("--q4-0-only", action="store_true", help="only rewrite tests/fixtures/gguf/q4_0-blocks.json and special-vocab.json")
    ap.add_argument("--convert-one", nargs=3, metavar=("SRC", "OUT", "TYPE"), help=argparse.SUPPRESS)
    ap.add_argument("--k-quants-only", action="store_true", help="only rewrite the q4_k_m files (and llama-k-quants)")
    ap.add_argument("--llama-cpp-python", default=str(ROOT / "target" / "lcpp-venv" / "bin" / "python"),
                    help="a Python with llama-cpp-python 0.3.36 built (bash tests/extra/gguf-llamacpp makes it)")
    args = ap.parse_args()
    sdist = Path(args.sdist_dir)
    src = next(iter(sdist.glob("llama_cpp_python-*/vendor/llama.cpp")), None)
    if args.k_quants_only:
        k_quants(sdist, args.llama_cpp_python)
        return
    if args.q4_0_only:
        q4_0_blocks(src, FIX / "gguf" / "q4_0-blocks.json")
        special_vocab_cases(src, FIX / "gguf" / "special-vocab.json")
        return
    if args.convert_one:
        model, out, outtype = args.convert_one
        sys.path.insert(0, str(src))
        sys.path.insert(0, str(src / "gguf-py"))
        import conversion.base as b

        def no_sentencepiece(self, *a, **k):
            raise FileNotFoundError("tokenizer.model")

        # The fixtures' tokenizers are laid out like Llama 3's and Qwen2's: the name convert gives the real ones.
        pre = "qwen2" if Path(model).name.startswith("qwen2-") else "llama-bpe"
        for cls in [c for c in vars(b).values() if isinstance(c, type)]:
            if hasattr(cls, "get_vocab_base_pre"):
                cls.get_vocab_base_pre = lambda self, tokenizer: pre
            if hasattr(cls, "_set_vocab_sentencepiece"):
                cls._set_vocab_sentencepiece = no_sentencepiece
        sys.argv = ["convert_hf_to_gguf.py", model, "--outfile", out, "--outtype", outtype]
        runpy.run_path(str(src / "convert_hf_to_gguf.py"), run_name="__main__")
        return
    if src is None:
        sdist.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-binary", "llama-cpp-python", "--no-deps",
                        "-d", str(sdist)], check=True)
        with tarfile.open(glob.glob(str(sdist / "llama_cpp_python-*.tar.gz"))[0]) as t:
            t.extractall(sdist)
    out_dir = FIX / "gguf"
    out_dir.mkdir(parents=True, exist_ok=True)
    phi3_tokenizer_model(FIX / "models" / "phi3-longrope-f16")
    for model, outtype in CASES:
        out = out_dir / f"{model}-{outtype}.gguf"
        # One process per file: convert keeps module state.
        subprocess.run([sys.executable, __file__, "--sdist-dir", str(sdist), "--convert-one",
                        str(FIX / "models" / model), str(out), outtype], check=True)
        print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size} bytes)")
    q4_0_blocks(src, out_dir / "q4_0-blocks.json")
    special_vocab_cases(src, out_dir / "special-vocab.json")
    k_quants(sdist, args.llama_cpp_python)


def special_vocab_cases(src, path):
    """gguf-py's SpecialVocab (what convert writes after the tokens: special ids, add_*_token flags) on small
    tokenizer.json / tokenizer_config.json / config.json triples that take its other branches: a trailing eos in the
    single template ($A </s>, T5-like), a trailing token that is not the eos (it becomes the eos; the old one the eot),
    RobertaProcessing (cls/sep adopted from the processor), no post-processor with tokenizer_config's add_* flags and
    a pad id from config.json only, no tokenizer_config at all."""
    import json, tempfile
    sys.path.insert(0, str(src / "gguf-py"))
    from gguf.vocab import SpecialVocab
    added = [{"id": i, "content": t, "special": True} for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", "<|eot|>", "<mask>"])]
    A, B = {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}
    sp = lambda t: {"SpecialToken": {"id": t, "type_id": 0}}
    tmpl = lambda single, pair: {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": {}}
    cases = [
        ("t5-like", tmpl([A, sp("</s>")], [A, sp("</s>"), B, sp("</s>")]),
         {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "add_bos_token": True}, {"decoder_start_token_id": 0}),
        ("eos-override", tmpl([sp("<s>"), A, sp("<|eot|>")], [sp("<s>"), A, sp("<|eot|>"), sp("<s>"), B, sp("<|eot|>")]),
         {"bos_token": "<s>", "eos_token": "</s>"}, {}),
        ("roberta", {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1], "trim_offsets": True,
                     "add_prefix_space": False},
         {"bos_token": "<s>", "eos_token": "</s>", "mask_token": {"content": "<mask>"}}, {}),
        ("config-flags", None, {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False},
         {"pad_token_id": 0, "eos_token_id": [2, 4], "unk_token_id": 99}),
        ("no-tokenizer-config", tmpl([sp("<s>"), A, sp("</s>")], [sp("<s>"), A, sp("</s>"), B, sp("</s>")]), None,
         {"bos_token_id": 1, "pad_token_id": 0}),
    ]
    out = []
    for name, post, tcfg, cfg in cases:
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            tok = {"version": "1.0", "added_tokens": added, "post_processor": post,
                   "model": {"type": "BPE", "vocab": {t["content"]: t["id"] for t in added}, "merges": []}}
            (d / "tokenizer.json").write_text(json.dumps(tok))
            if tcfg is not None:
                (d / "tokenizer_config.json").write_text(json.dumps(tcfg))
            (d / "config.json").write_text(json.dumps(cfg))
            v = SpecialVocab(d, load_merges=False, n_vocab=6)
            out.append({"name": name, "tokenizer_json": tok, "tokenizer_config": tcfg, "config": cfg, "n_vocab": 6,
                        "ids": v.special_token_ids, "add": v.add_special_token})
    json.dump(out, open(path, "w"), indent=1)
    print(f"wrote {path.relative_to(ROOT)} ({len(out)} cases)")


def q4_0_blocks(src, path):
    """gguf-py's Q4_0 quantization (ggml's quantize_row_q4_0_ref in numpy) of blocks that probe it: random values at
    several scales, ties for the largest magnitude (+m and -m: the first wins), zeros, values landing exactly on the
    x/d + 8.5 boundaries, tiny and huge magnitudes (the f16 scale's subnormal and overflow sides)."""
    import json
    import numpy as np
    sys.path.insert(0, str(src / "gguf-py"))
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import quantize
    rng = np.random.default_rng(20261207)
    blocks = [rng.standard_normal(32) * s for s in (1e-3, 0.02, 0.5, 3.0, 100.0) for _ in range(6)]
    tie = rng.standard_normal(32); tie[3], tie[20] = 4.0, -4.0; blocks.append(tie)
    tie = rng.standard_normal(32); tie[5], tie[9] = -4.0, 4.0; blocks.append(tie)
    blocks.append(np.zeros(32))
    edge = np.arange(32, dtype=np.float64) - 16.0; edge[0] = -8.0; blocks.append(edge / 2)  # x/d + 8.5 on .5s
    blocks.append(rng.standard_normal(32) * 1e-7)
    blocks.append(rng.standard_normal(32) * 6e4)
    values = np.concatenate(blocks).astype(np.float32)
    data = quantize(values.reshape(1, -1), GGMLQuantizationType.Q4_0).tobytes()
    json.dump({"values": [float(v) for v in values], "q4_0": data.hex()}, open(path, "w"))
    print(f"wrote {path.relative_to(ROOT)} ({len(values) // 32} blocks)")


if __name__ == "__main__":
    main()
