#!/usr/bin/env python3
"""A small random-initialized BART for the real-data pipeline run (docs/results.md): no pretrained weights exist
on these machines, so the run trains one from scratch on CPU in minutes.

  tools/reference/.venv/bin/python tools/reference/make_small_model.py OUT_DIR [--data ../shared/data]

Tokenizer: byte-level BPE with BART's special tokens (<s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last), 4,096 tokens,
trained on the DialogSum + SAMSum train splits. Model: d_model 256, 3+3 layers, 4 heads, ffn 1024, 512 positions,
transformers' default init (std 0.02), bart-large-cnn-like generation settings (4 beams, no-repeat 3, min 8, max 64).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import argparse, json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig, PreTrainedTokenizerFast

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
# The defaults are the docs/results.md model; bench/bartleby-small passes other sizes (issue 28).
ap.add_argument("--sources", default="dialogsum,samsum", help="train splits the BPE is trained on")
ap.add_argument("--vocab", type=int, default=4096)
ap.add_argument("--d-model", type=int, default=256)
ap.add_argument("--layers", type=int, default=3, help="encoder and decoder layers each")
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--ffn", type=int, default=1024)
ap.add_argument("--positions", type=int, default=512)
ap.add_argument("--dropout", type=float, default=0.1)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
out, data = Path(args.out), Path(args.data)
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(args.seed)

corpus = []
for src in args.sources.split(","):
    for line in open(data / src / "train.jsonl", encoding="utf-8"):
        r = json.loads(line)
        corpus += [r["dialogue"], r["summary"]]
VOCAB = args.vocab
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=VOCAB - 1, min_frequency=2, show_progress=False,
                                                    special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
tok.post_processor = processors.RobertaProcessing(sep=("</s>", 2), cls=("<s>", 0))
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                               pad_token="<pad>", mask_token="<mask>", model_max_length=args.positions)
fast.save_pretrained(out)
vocab = tok.get_vocab_size(with_added_tokens=True)
cfg = BartConfig(vocab_size=vocab, d_model=args.d_model, encoder_layers=args.layers, decoder_layers=args.layers,
                 encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=args.ffn,
                 decoder_ffn_dim=args.ffn, max_position_embeddings=args.positions, dropout=args.dropout,
                 forced_bos_token_id=0, forced_eos_token_id=2)
BartForConditionalGeneration(cfg).save_pretrained(out, safe_serialization=True)
GenerationConfig(num_beams=4, no_repeat_ngram_size=3, min_length=8, max_length=64, length_penalty=1.0,
                 early_stopping=True, decoder_start_token_id=2, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                 forced_bos_token_id=0, forced_eos_token_id=2).save_pretrained(out)
print(f"wrote {out}: vocab {vocab}, {sum(p.numel() for p in BartForConditionalGeneration(cfg).parameters())/1e6:.1f}M params")
