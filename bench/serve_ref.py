"""The pipeline's own deployment, for bench/serve: FastAPI + the transformers summarization pipeline under
uvicorn (sync endpoint: FastAPI runs it in its thread pool), the Inference API request shape.

  MODEL=DIR tools/reference/.venv/bin/python -m uvicorn --app-dir bench serve_ref:app --port 8081
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
summarizer = pipeline("summarization", model=os.environ["MODEL"], device=-1)
app = FastAPI()


class Request(BaseModel):
    inputs: str | list[str]
    parameters: dict = {}


@app.post("/")
def summarize(req: Request):
    out = summarizer(req.inputs, truncation=True, **req.parameters)
    return out if isinstance(req.inputs, list) else out[:1]


@app.get("/health")
def health():
    return {"status": "ok"}
