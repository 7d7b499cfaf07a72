#!/usr/bin/env bash
# Trunk pre_build hook. Into the staging dir (the future dist/):
# - examples.json: 2 DialogSum + 2 SAMSum validation dialogues from ../shared/data (or
#   $BARTLEBY_DATA); an empty list without the data;
# - model/: public/model/ when present (a bundle from `bartleby export`), else the shipped default
#   model models/bartleby-small (an f16 bundle), so the built site summarizes on first open;
# - public/results/ (files for the Dashboards view, listed in results/index.json), when present.
set -euo pipefail
stage="${TRUNK_STAGING_DIR:?run by trunk}"
src="$(cd "$(dirname "$0")/.." && pwd)"
data="${BARTLEBY_DATA:-$src/../shared/data}"
rows=()
for set in dialogsum samsum; do
  f="$data/$set/validation.jsonl"
  [ -f "$f" ] || continue
  while IFS= read -r line; do rows+=("$line"); done < <(head -n 2 "$f")
done
{ printf '['; (IFS=,; printf '%s' "${rows[*]:-}"); printf ']\n'; } > "$stage/examples.json"
for d in model results; do
  if [ -d "$src/public/$d" ]; then cp -r "$src/public/$d" "$stage/$d"; fi
done
if [ ! -d "$stage/model" ] && [ -f "$src/models/bartleby-small/manifest.json" ]; then
  mkdir "$stage/model"
  # The bundle's files (manifest.json lists them), not the model card.
  for f in "$src/models/bartleby-small"/*; do
    case "$(basename "$f")" in README.md) ;; *) cp "$f" "$stage/model/" ;; esac
  done
fi
