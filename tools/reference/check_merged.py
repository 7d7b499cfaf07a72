#!/usr/bin/env python3
"""Checks a `bartleby merge` output against transformers + PEFT (manual check; CI never runs Python).

  check_merged.py BASE_DIR ADAPTER_DIR MERGED_DIR

Loads MERGED_DIR with transformers' from_pretrained, BASE_DIR + ADAPTER_DIR with PEFT, and prints the max |logit|
difference and whether generate() (the merged generation_config.json) gives the same ids.
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from peft import PeftModel
from transformers import AutoTokenizer, BartForConditionalGeneration, GenerationConfig

base_dir, adapter_dir, merged_dir = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(merged_dir)
texts = ["Anna: are we still on for Saturday?\nTom: sure, 10am at the station", "#Person1#: How much is it?\n#Person2#: 80 dollars."]
batch = tok(texts, return_tensors="pt", padding=True, return_token_type_ids=False)
merged = BartForConditionalGeneration.from_pretrained(merged_dir).eval()
peft = PeftModel.from_pretrained(BartForConditionalGeneration.from_pretrained(base_dir), adapter_dir).eval()
gc = GenerationConfig.from_pretrained(merged_dir)
with torch.no_grad():
    a = merged.generate(**batch, generation_config=gc)
    b = peft.generate(**batch, generation_config=gc)
    la = merged(**batch, decoder_input_ids=a).logits
    lb = peft(**batch, decoder_input_ids=a).logits
print(f"merged vs PEFT: max |logit diff| {(la - lb).abs().max().item():.3e}; ids identical: {a.tolist() == b.tolist()}")
