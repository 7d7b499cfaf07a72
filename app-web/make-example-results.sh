#!/usr/bin/env bash
# Regenerates public/results/: real `bartleby eval` / `compare` / `train` outputs for the
# Dashboards view's "Load example results" (the tiny fixture model with and without a PEFT
# adapter on 40 SAMSum validation dialogues, and a short LoRA training run). Random-weight tiny
# models: the numbers show the dashboards working, not a useful summarizer.
#   bash app-web/make-example-results.sh      (after cargo build --release -p bartleby)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/bartleby
OUT=public/results
DATA=../shared/data/samsum
rm -rf "$OUT" && mkdir -p "$OUT"
TMP=$(mktemp -d)
$BIN eval --model tests/fixtures/models/tiny-gelu --data $DATA --split validation --limit 40 \
  --seed 1 --name tiny-base --out "$TMP" --stemmer --num-beams 1 --max-length 24
$BIN eval --model tests/fixtures/models/tiny-gelu --adapter tests/fixtures/lora/gelu-qv \
  --data $DATA --split validation --limit 40 --seed 1 --name tiny-lora --out "$TMP" --stemmer \
  --num-beams 1 --max-length 24
$BIN compare "$TMP/tiny-base_metrics.json" "$TMP/tiny-lora_metrics.json" --out "$TMP" --name compare > /dev/null
$BIN train --model tests/fixtures/models/tiny-gelu --data $DATA --runs-dir "$TMP/runs" --name tiny-lora-train \
  --train-size 64 --val-size 8 --max-source-tokens 64 --max-target-tokens 24 --micro-batch 4 \
  --grad-accum 2 --epochs 2 --lr 1e-3 --seed 1 --eval-every 2 > /dev/null
# The dashboards read the failure reports from NAME_metrics.json (NAME_failures.md is for people).
cp "$TMP"/tiny-base_metrics.json "$TMP"/tiny-base_predictions.csv \
   "$TMP"/tiny-lora_metrics.json "$TMP"/tiny-lora_predictions.csv "$OUT"/
cp "$TMP"/compare.json "$OUT"/
mkdir -p "$OUT/runs/tiny-lora-train" && cp "$TMP/runs/tiny-lora-train/metrics.jsonl" "$OUT/runs/tiny-lora-train/"
# A benchmark ranking of the fixture models (docs/results.md has the real-data one).
$BIN benchmark --model tests/fixtures/models/tiny-gelu --model tests/fixtures/models/tiny-silu \
  --model tests/fixtures/models/t5-relu-tied --data $DATA --limit 20 --seed 1 --num-beams 1 \
  --out "$TMP/benchmark" > /dev/null
cp "$TMP/benchmark/final_ranking.json" "$OUT/"
(cd "$OUT" && find . -type f ! -name index.json | sed 's#^\./##' | sort | python3 -c 'import json,sys; print(json.dumps([l.strip() for l in sys.stdin if l.strip()], indent=1))' > index.json)
rm -rf "$TMP"
ls -la "$OUT"
