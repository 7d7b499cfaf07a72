#!/usr/bin/env python3
"""LoRA parity fixtures from PEFT 0.21 (tests/fixtures/lora/).

For each case: a PEFT adapter with NONZERO lora_B (init_lora_weights=False: A and B both get nn.Linear's
kaiming-uniform init, then B is scaled up so the adapter visibly changes the outputs) on one of the tiny fixture
models, saved with PEFT's own `save_pretrained` into tests/fixtures/lora/<case>/, and <case>.json with:

  logits            teacher-forced logits of PeftModel on the parity batch (tests/fixtures/parity/<model>.json inputs)
  generations       PeftModel.generate() sequences (greedy and the model's defaults, batched)
  merged_logits     the same after merge_and_unload()
  merged_generations
  f32_vs_f64        conditioning check of the adapted model (must be <= 1e-5)

Run: tools/reference/.venv/bin/python tools/reference/make_lora_fixtures.py
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import json
import shutil
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

import peft
import transformers
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "lora"
SEED = 20241125
F32_VS_F64_TOL = 1e-5

CASES = [
    # PEFT's BART default targets, the seed's r/alpha.
    dict(name="gelu-qv", model="tiny-gelu", r=8, alpha=32, targets=["q_proj", "v_proj"], b_scale=1.0),
    # Every projection, rsLoRA, per-module rank and alpha.
    dict(name="relu-all-rslora", model="tiny-relu-scaled", r=4, alpha=8, use_rslora=True,
         targets=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
         rank_pattern={"fc1": 2}, alpha_pattern={"encoder.layers.0.self_attn.k_proj": 3.0}, b_scale=0.5),
    # A regex target (decoder attention only), trained biases (bias="all"), layers_to_transform unused.
    dict(name="silu-regex-bias", model="tiny-silu", r=3, alpha=5,
         targets=r".*decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q_proj|out_proj)", bias="all", b_scale=1.0),
    # T5: PEFT's default T5 targets (q, v) on the tied relu model.
    dict(name="t5-qv", model="t5-relu-tied", r=4, alpha=8, targets=["q", "v"], b_scale=1.0),
    # T5 v1.1 / FLAN-T5: every projection of the gated FFN and attention, a per-module rank.
    dict(name="t5-gated-all", model="t5-gatedgelu-untied", r=3, alpha=6,
         targets=["q", "k", "v", "o", "wi_0", "wi_1", "wo"], rank_pattern={"wo": 2}, b_scale=0.5),
    # Decoder-only (make_llama_fixtures.py): every Llama projection on the GQA model; Phi-3's fused ones.
    dict(name="llama-all", model="llama-gqa-llama3-tied", causal=True, r=4, alpha=8,
         targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], b_scale=0.5),
    dict(name="phi3-fused", model="phi3-longrope-f16", causal=True, r=2, alpha=6,
         targets=["qkv_proj", "gate_up_proj", "o_proj"], b_scale=0.5),
]


def dump_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


CAUSAL = False  # set per case in main()


def load_base(model_dir, dtype=torch.float32):
    cls = AutoModelForCausalLM if CAUSAL else AutoModelForSeq2SeqLM
    m = cls.from_pretrained(str(model_dir), dtype=dtype)
    m.eval()
    return m


def make_adapter(case, base):
    cfg = LoraConfig(
        task_type=TaskType.CAUSAL_LM if CAUSAL else TaskType.SEQ_2_SEQ_LM,
        r=case["r"],
        lora_alpha=case["alpha"],
        lora_dropout=0.0,
        target_modules=case["targets"],
        use_rslora=case.get("use_rslora", False),
        rank_pattern=case.get("rank_pattern", {}),
        alpha_pattern=case.get("alpha_pattern", {}),
        bias=case.get("bias", "none"),
        init_lora_weights=False,
    )
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(case["b_scale"])
            elif case.get("bias", "none") != "none" and name.endswith(".bias") and p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    return model


def forward(model, pin):
    if CAUSAL:  # a left-padded batch of chat prompts; the logits at the fixture's sampled places
        f = pin["forward"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(f["input_ids"]), attention_mask=torch.tensor(f["attention_mask"])).logits
        return torch.cat([logits[b, f["positions"][b]] for b in range(len(f["input_ids"]))])  # [places, vocab]
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(pin["batch_input_ids"]),
            attention_mask=torch.tensor(pin["batch_attention_mask"]),
            decoder_input_ids=torch.tensor(pin["decoder_input_ids"]),
        ).logits


def generations(model, pin):
    if CAUSAL:
        g = [g for g in pin["generations"] if g["name"] == "a_greedy" and g["prompts_index"] == [0, 1, 2]][0]
        with torch.no_grad():
            seqs = model.generate(input_ids=torch.tensor(g["input_ids"]), attention_mask=torch.tensor(g["attention_mask"]),
                                  do_sample=False, max_new_tokens=10, pad_token_id=pin["pad_token_id"])
        return [{"name": "greedy", "kwargs": {"max_new_tokens": 10}, "input_ids": g["input_ids"],
                 "attention_mask": g["attention_mask"], "sequences": seqs.tolist()}]
    out = []
    for name, kwargs in [("greedy", {"num_beams": 1}), ("model_defaults", {})]:
        with torch.no_grad():
            seqs = model.generate(
                input_ids=torch.tensor(pin["batch_input_ids"]),
                attention_mask=torch.tensor(pin["batch_attention_mask"]),
                do_sample=False,
                **kwargs,
            )
        out.append({"name": name, "kwargs": kwargs, "sequences": seqs.tolist()})
    return out


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="case names to (re)write; default: all")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        if args.only and case["name"] not in args.only:
            continue
        global CAUSAL
        CAUSAL = case.get("causal", False)
        torch.manual_seed(SEED)
        model_dir = FIX / "models" / case["model"]
        pin = json.load(open(FIX / "parity" / f"{case['model']}.json"))
        model = make_adapter(case, load_base(model_dir))
        adapter_dir = OUT / case["name"]
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        model.save_pretrained(str(adapter_dir), safe_serialization=True)
        (adapter_dir / "README.md").unlink(missing_ok=True)

        # Reload exactly what was saved (as a user would) and take every reference from it.
        peft_model = PeftModel.from_pretrained(load_base(model_dir), str(adapter_dir))
        peft_model.eval()
        logits = forward(peft_model, pin)
        peft64 = PeftModel.from_pretrained(load_base(model_dir, torch.float64), str(adapter_dir))
        peft64.eval()
        d64 = (logits.double() - forward(peft64, pin)).abs().max().item()
        base_logits = forward(load_base(model_dir), pin)
        effect = (logits - base_logits).abs().max().item()
        tol = 5e-5 if CAUSAL else F32_VS_F64_TOL  # the decoder-only bases themselves sit near 1.5e-5; tests compare at 1e-4
        assert d64 <= tol, f"{case['name']}: ill-conditioned, f32 vs f64 {d64:.3e}"
        assert effect > 0.05, f"{case['name']}: the adapter barely changes the logits ({effect:.3e})"
        gens = generations(peft_model, pin)

        merged = peft_model.merge_and_unload()
        merged.eval()
        merged_logits = forward(merged, pin)
        merged_gens = generations(merged, pin)
        fixture = {
            "case": case,
            "model": case["model"],
            "peft_version": peft.__version__,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "f32_vs_f64": d64,
            "adapter_effect_max_abs_logit": effect,
            "merge_max_abs_logit_change": (merged_logits - logits).abs().max().item(),
            "logits": logits.tolist(),
            "generations": gens,
            "merged_logits": merged_logits.tolist(),
            "merged_generations": merged_gens,
        }
        dump_json(fixture, OUT / f"{case['name']}.json")
        print(f"[{case['name']}] f32 vs f64 {d64:.2e}, adapter effect {effect:.3f}, "
              f"merge change {fixture['merge_max_abs_logit_change']:.2e}, "
              f"tensors {len(list(peft_model.state_dict()))}")


if __name__ == "__main__":
    main()
