"""Reference fixture for the unit tests in core/src/generate.rs.

Everything expected by those tests is produced here by the pinned reference stack
(torch 2.15.0, transformers 4.57.6), never written by hand:

* "generate": transformers' real `generate()` (greedy `_sample`, `_beam_search`) driven
  by a fake BART whose logits are a fixed integer-hash function of (seed of the batch
  item, last two decoder tokens, candidate token). The Rust tests implement the same
  function; values are multiples of 1/64, exact in float32.
* "topk": `torch.topk` (CPU) on tie-heavy inputs, to pin down the tie order of the
  libstdc++ algorithms torch uses.
* "log_softmax": `torch.log_softmax` (CPU, float32) rows, as raw bits.
* "config_resolution": the generation config transformers actually uses for
  `BartForConditionalGeneration.generate()` given a config.json and an optional
  generation_config.json.

Usage (from the repository root):
    tools/reference/.venv/bin/python tools/reference/gen_fake_model_fixture.py
Writes tests/fixtures/generate/fake_model.json.
"""

import json
import os
import tempfile

import numpy as np
import torch
import transformers
from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

assert transformers.__version__ == "4.57.6", transformers.__version__
assert torch.__version__.startswith("2.15.0"), torch.__version__

M32 = 0xFFFFFFFF
BIAS_TOKEN = 2  # the token whose logit grows with the sequence length (BART's eos)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "generate", "fake_model.json")


def fake_logits(seed, seq, vocab, bias):
    """Mirrored by `fake_logits` in core/src/generate.rs. `bias` is a multiple of 1/64."""
    n = len(seq)
    last = seq[-1]
    prev = seq[-2] if n >= 2 else 65535
    out = []
    for v in range(vocab):
        h = 2166136261
        for w in (seed, prev, last, v):
            h ^= w
            h = (h * 16777619) & M32
        h ^= h >> 15
        h = (h * 0x2C1B3C6D) & M32
        h ^= h >> 12
        out.append((h % 1024) / 64.0)
    if BIAS_TOKEN < vocab:
        out[BIAS_TOKEN] += bias * min(n, 24)
    return out


class PassEncoder(torch.nn.Module):
    """Encoder whose output is the input id itself: the fake decoder reads it as a seed."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return BaseModelOutput(last_hidden_state=input_ids[:, :, None].to(torch.float32))


class FakeBart(BartForConditionalGeneration):
    def __init__(self, config, bias=0.375):
        super().__init__(config)
        self.pass_encoder = PassEncoder()
        self.bias = bias

    def get_encoder(self):
        return self.pass_encoder

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, encoder_outputs=None, **kwargs):
        # use_cache=False: decoder_input_ids is the full decoder sequence of every row
        seeds = encoder_outputs[0][:, 0, 0].tolist()
        vocab = self.config.vocab_size
        rows = [fake_logits(int(s), r.tolist(), vocab, self.bias) for s, r in zip(seeds, decoder_input_ids)]
        logits = torch.tensor(rows, dtype=torch.float32)[:, None, :]
        return Seq2SeqLMOutput(logits=logits)


def tiny_config(vocab, **overrides):
    kw = dict(
        vocab_size=vocab,
        d_model=8,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=1,
        decoder_attention_heads=1,
        encoder_ffn_dim=8,
        decoder_ffn_dim=8,
        max_position_embeddings=64,
        forced_eos_token_id=None,
    )
    kw.update(overrides)
    return BartConfig(**kw)


GEN_CASES = [
    # name, vocab, seeds, config overrides, generate kwargs
    ("greedy_basic", 24, [3, 17, 250], {}, dict(max_new_tokens=12)),
    ("greedy_default_max_length", 160, [5, 6], {}, dict(no_repeat_ngram_size=2)),
    ("greedy_explicit_max_length_20", 24, [11, 12], {}, dict(max_length=20)),
    ("greedy_forced_min", 24, [7, 8], {}, dict(min_length=8, forced_bos_token_id=5, forced_eos_token_id=2, max_length=15)),
    ("greedy_min_new_tokens", 160, [21, 22, 23], {}, dict(min_new_tokens=5, max_new_tokens=10)),
    ("greedy_no_eos", 24, [31], {}, dict(eos_token_id=None, max_new_tokens=9)),
    ("beam_basic", 24, [3, 17], {}, dict(num_beams=3, max_new_tokens=15)),
    ("beam_cnn_like", 160, [40, 41, 42], {}, dict(num_beams=4, max_length=25, early_stopping=True, length_penalty=2.0,
                                                   no_repeat_ngram_size=3, min_length=6, forced_bos_token_id=0,
                                                   forced_eos_token_id=2, num_return_sequences=2)),
    ("beam_never_lp08", 160, [50, 51], {}, dict(num_beams=4, max_new_tokens=20, early_stopping="never", length_penalty=0.8,
                                                num_return_sequences=4)),
    ("beam_never_negative_lp", 24, [60, 61], {}, dict(num_beams=2, max_new_tokens=14, early_stopping="never", length_penalty=-0.5)),
    ("beam_true_lp0", 160, [70, 71, 72, 73], {}, dict(num_beams=5, max_new_tokens=18, early_stopping=True, length_penalty=0.0,
                                                     no_repeat_ngram_size=2)),
    ("beam_default_max_length", 24, [80], {}, dict(num_beams=3)),
    ("beam_no_eos", 24, [90, 91], {}, dict(num_beams=3, max_new_tokens=8, eos_token_id=None)),
    ("beam_tiny_vocab", 3, [100, 101], {}, dict(num_beams=2, max_new_tokens=10, no_repeat_ngram_size=2)),
    ("beam_pad_zero", 24, [110, 111], {}, dict(num_beams=3, max_new_tokens=16, pad_token_id=0, num_return_sequences=3)),
    ("beam_lp13_min_new", 160, [120, 121], {}, dict(num_beams=6, max_new_tokens=22, length_penalty=1.3, min_new_tokens=4,
                                                     num_return_sequences=3)),
    ("beam_config_defaults", 160, [130, 131], dict(num_beams=4, max_length=30, min_length=5, no_repeat_ngram_size=3,
                                                    length_penalty=2.0, early_stopping=True, forced_bos_token_id=0,
                                                    forced_eos_token_id=2), {}),
    ("beam_wide", 160, [140], {}, dict(num_beams=8, max_new_tokens=12, early_stopping=False)),
    ("beam_never_lp2_long", 160, [150, 151, 152], {}, dict(num_beams=4, max_new_tokens=40, early_stopping="never",
                                                         length_penalty=2.0, num_return_sequences=4), 0.125),
    ("beam_false_all_returned", 24, [160, 161, 162], {}, dict(num_beams=5, max_new_tokens=30, num_return_sequences=5),
     0.125),
    ("beam_never_lp0", 24, [170, 171], {}, dict(num_beams=3, max_new_tokens=30, early_stopping="never",
                                               length_penalty=0.0, num_return_sequences=3), 0.125),
    ("beam_true_lp15", 160, [180, 181, 182, 183], {}, dict(num_beams=4, max_new_tokens=30, early_stopping=True,
                                                          num_return_sequences=4, length_penalty=1.5), 0.125),
    ("beam_false_lp2_long", 160, [190, 191], {}, dict(num_beams=3, max_new_tokens=35, length_penalty=2.0,
                                                     num_return_sequences=3, no_repeat_ngram_size=3), 0.0625),
    ("greedy_long", 160, [200, 201, 202], {}, dict(max_new_tokens=40, no_repeat_ngram_size=3), 0.0625),
    ("beam_never_lp1_eos_late", 24, [210, 211], {}, dict(num_beams=4, max_new_tokens=25, early_stopping="never",
                                                        num_return_sequences=2), 0.0625),
    ("greedy_forced_eos_hit", 160, [220, 221], {}, dict(max_new_tokens=7, forced_eos_token_id=2, forced_bos_token_id=0),
     0.0),
    ("beam_forced_eos_hit", 160, [230, 231], {}, dict(num_beams=4, max_length=9, forced_eos_token_id=2, early_stopping=True,
                                                     num_return_sequences=4, length_penalty=2.0), 0.0),
    ("beam_max_length_hit", 24, [240, 241, 242], {}, dict(num_beams=3, max_new_tokens=6, num_return_sequences=2), 0.0),
]


def run_generate_cases():
    out = []
    for name, vocab, seeds, overrides, kwargs, *rest in GEN_CASES:
        bias = rest[0] if rest else 0.375
        config = tiny_config(vocab, **overrides)
        torch.manual_seed(0)
        model = FakeBart(config, bias).eval()
        input_ids = torch.tensor([[s] for s in seeds], dtype=torch.long)
        with torch.no_grad():
            seqs = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                use_cache=False,
                **kwargs,
            )
        out.append(
            dict(
                name=name,
                vocab=vocab,
                bias=bias,
                seeds=seeds,
                config=json.loads(config.to_json_string()),
                kwargs=kwargs,
                sequences=seqs.tolist(),
            )
        )
        print(name, seqs.shape)
    return out


def run_topk_cases():
    rng = np.random.default_rng(1234)
    cases = []
    # codes: integers are values; 1000 = -inf, 1001 = nan, 1002 = -1e9
    for n, k, levels, specials in [
        (4, 2, 2, False), (5, 3, 2, False), (6, 2, 3, True), (8, 4, 2, True), (9, 3, 3, False), (12, 6, 4, True),
        (15, 5, 3, False), (16, 8, 2, True), (17, 8, 3, False), (18, 9, 2, True), (24, 12, 5, True), (30, 10, 2, False),
        (40, 20, 3, True), (64, 32, 4, False), (72, 6, 5, True), (100, 50, 3, True), (127, 2, 2, False), (128, 2, 2, True),
        (200, 3, 3, False), (256, 4, 2, True), (320, 5, 4, False), (1000, 8, 6, True), (1000, 16, 2, False),
        (4096, 64, 50, True), (3000, 12, 9, False),
    ]:
        for rep in range(3):
            codes = rng.integers(0, levels, size=n).tolist()
            if specials:
                for _ in range(max(1, n // 8)):
                    codes[int(rng.integers(0, n))] = int(rng.choice([1000, 1001, 1002]))
            vals = torch.tensor([decode(c) for c in codes], dtype=torch.float32)
            _, idx = torch.topk(vals, k)
            cases.append(dict(codes=codes, k=k, indices=idx.tolist()))
    return cases


def decode(c):
    if c == 1000:
        return float("-inf")
    if c == 1001:
        return float("nan")
    if c == 1002:
        return -1e9
    return float(c) * 0.5


def run_log_softmax_cases():
    g = torch.Generator().manual_seed(7)
    cases = []
    for i in range(86):
        n = [5, 15, 16, 17, 37, 160, 1000][i % 7] if i < 84 else 8192 + 7
        x = (torch.randn(n, generator=g) * 4).to(torch.float32)
        y = torch.log_softmax(x, dim=-1)
        cases.append(
            dict(
                input_bits=x.numpy().view(np.uint32).tolist(),
                output_bits=y.numpy().view(np.uint32).tolist(),
            )
        )
    return cases


CNN_LIKE = {
    "vocab_size": 50, "d_model": 8, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 1,
    "decoder_attention_heads": 1, "encoder_ffn_dim": 8, "decoder_ffn_dim": 8, "max_position_embeddings": 64,
    "bos_token_id": 0, "decoder_start_token_id": 2, "early_stopping": True, "eos_token_id": 2,
    "forced_bos_token_id": 0, "forced_eos_token_id": 2, "length_penalty": 2.0, "max_length": 142,
    "min_length": 56, "no_repeat_ngram_size": 3, "num_beams": 4, "pad_token_id": 1,
    "task_specific_params": {"summarization": {"early_stopping": True, "length_penalty": 2.0, "max_length": 142,
                                               "min_length": 56, "no_repeat_ngram_size": 3, "num_beams": 4}},
}
PLAIN = {
    "vocab_size": 50, "d_model": 8, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 1,
    "decoder_attention_heads": 1, "encoder_ffn_dim": 8, "decoder_ffn_dim": 8, "max_position_embeddings": 64,
}

RESOLUTION_CASES = [
    ("cnn_config_only", CNN_LIKE, None),
    ("cnn_legacy_from_model_config", CNN_LIKE, {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 2,
                                                 "decoder_start_token_id": 2, "pad_token_id": 1, "num_beams": 2,
                                                 "max_length": 60, "transformers_version": "4.27.0"}),
    ("cnn_with_generation_config", CNN_LIKE, {"bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
                                              "num_beams": 2, "max_length": 60, "transformers_version": "4.45.0"}),
    ("plain_legacy_flag_ignored", PLAIN, {"_from_model_config": True, "num_beams": 3, "max_new_tokens": 40,
                                          "no_repeat_ngram_size": 4, "transformers_version": "4.45.0"}),
    ("plain_config_only", PLAIN, None),
    ("nulls", dict(PLAIN, forced_eos_token_id=None, forced_bos_token_id=None, max_length=None, min_length=10,
                   early_stopping="never"), None),
    ("force_bos_legacy", dict(PLAIN, force_bos_token_to_be_generated=True, bos_token_id=0, num_beams=6,
                              length_penalty=1.2), None),
    ("tsp_only", dict(PLAIN, task_specific_params={"summarization": {"num_beams": 4, "max_length": 142,
                                                                       "min_length": 56, "length_penalty": 2.0}}), None),
    ("gen_eos_list_no_pad", PLAIN, {"eos_token_id": [2], "bos_token_id": 0, "decoder_start_token_id": 2,
                                    "num_beams": 5, "length_penalty": 0.6, "transformers_version": "4.45.0"}),
]

FIELDS = ["max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "length_penalty",
          "early_stopping", "no_repeat_ngram_size", "num_return_sequences", "decoder_start_token_id", "bos_token_id",
          "eos_token_id", "pad_token_id", "forced_bos_token_id", "forced_eos_token_id"]


def run_resolution_cases():
    out = []
    for name, config_json, gen_json in RESOLUTION_CASES:
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(dict(config_json, model_type="bart"), f)
            if gen_json is not None:
                with open(os.path.join(d, "generation_config.json"), "w") as f:
                    json.dump(gen_json, f)
            config = BartConfig.from_pretrained(d)
            model = FakeBart(config)
            # what PreTrainedModel.from_pretrained does after building the model
            try:
                model.generation_config = GenerationConfig.from_pretrained(d)
            except OSError:
                pass
            gc, _ = model._prepare_generation_config(None)
            try:
                model._prepare_special_tokens(gc, True, device="cpu")
                resolved = {k: getattr(gc, k) for k in FIELDS}
                resolved["decoder_start_token_id"] = int(gc._decoder_start_token_tensor)
                resolved["eos_token_id"] = None if gc._eos_token_tensor is None else gc._eos_token_tensor.tolist()
                resolved["pad_token_id"] = None if gc._pad_token_tensor is None else int(gc._pad_token_tensor)
            except ValueError as e:
                resolved = {"error": str(e)}
        out.append(dict(name=name, config=config_json, generation_config=gen_json, resolved=resolved))
        print(name, resolved)
    return out


def main():
    fixture = dict(
        generator="tools/reference/gen_fake_model_fixture.py",
        torch=torch.__version__,
        transformers=transformers.__version__,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        bias_token=BIAS_TOKEN,
        generate=run_generate_cases(),
        topk=run_topk_cases(),
        log_softmax=run_log_softmax_cases(),
        config_resolution=run_resolution_cases(),
    )
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
