#!/usr/bin/env python3
"""tests/fixtures/data/dialogsum-validation-5.parquet: the first 5 DialogSum validation rows as HF `datasets` writes
them (pyarrow, snappy), plus an extra `topic` column; the Rust test compares what it reads with the JSONL rows.
  tools/reference/.venv/bin/python tools/reference/make_parquet_fixture.py [--data ../shared/data]"""
import argparse, json
from pathlib import Path
import datasets

ROOT = Path(__file__).resolve().parents[2]
ap = argparse.ArgumentParser()
ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
rows = [json.loads(l) for l in open(Path(ap.parse_args().data) / "dialogsum" / "validation.jsonl", encoding="utf-8")][:5]
for r in rows:
    r["topic"] = "t"
out = ROOT / "tests" / "fixtures" / "data" / "dialogsum-validation-5.parquet"
datasets.Dataset.from_list(rows).to_parquet(str(out))
print(out, out.stat().st_size)
