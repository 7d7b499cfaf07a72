#!/usr/bin/env python3
"""Reference for bartleby's TensorBoard event files (backend-native/src/tensorboard.rs):
tests/fixtures/tensorboard/{scalars.json, events.out.tfevents.reference} — the scalars, and the
file TensorBoard's own EventFileWriter writes for them (version event at a fixed wall time, then
one add_scalar-style Summary.Value{tag, simple_value} event per scalar). Also checks that
TensorBoard's EventAccumulator reads the values back. events.out.tfevents.hparams: the same with the
HParams dashboard's session start summary (summary_v2.hparams_pb, its map serialized deterministically:
keys sorted) right after the version event; the hparams plugin's reader gets the values back.

  tools/reference/.venv/bin/python tools/reference/make_tensorboard_fixture.py   (tensorboard 2.20.0)
"""
import json
import os
import tempfile
import time
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.text.summary_v2 import text_pb

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tensorboard"
START = 1765000000.25
SCALARS = [
    {"tag": "train/loss", "step": 1, "value": 8.3125, "wall_time": START + 1.5},
    {"tag": "train/lr", "step": 1, "value": 1e-4, "wall_time": START + 1.5},
    {"tag": "train/loss", "step": 2, "value": 7.75, "wall_time": START + 2.75},
    {"tag": "train/grad_norm", "step": 300, "value": 0.333, "wall_time": START + 99.0},
    {"tag": "val/rougeL", "step": 0, "value": 0.171, "wall_time": START + 100.0},
    {"tag": "eval/ünïcode tag", "step": 123456789, "value": -2.5e-8, "wall_time": START + 1e6},
]

TEXTS = [
    {"tag": "eval/predictions", "step": 0, "text": "| id | summary |\n|---|---|\n| 1 | Amanda bakes cookies. |", "wall_time": START + 7.0},
    {"tag": "eval/predictions", "step": 3, "text": "ünïcode — and `code`", "wall_time": START + 8.0},
]


HPARAMS = {"lr": 1e-4, "method": "lora", "rslora": False, "lora_r": 8, "target_modules": '["q_proj","v_proj"]',
           "ünïcode": "√"}
TRIAL = "run-a"


def hparams_summary():
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.plugins.hparams import plugin_data_pb2
    s = hp.hparams_pb(HPARAMS, trial_id=TRIAL, start_time_secs=START)
    content = s.value[0].metadata.plugin_data.content
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    s.value[0].metadata.plugin_data.content = data.SerializeToString(deterministic=True)
    return s


def write(d, with_hparams):
    real = time.time
    time.time = lambda: START  # the version event's wall time
    try:
        w = EventFileWriter(d)
    finally:
        time.time = real
    if with_hparams:
        w.add_event(Event(wall_time=START, summary=hparams_summary()))
    for s in SCALARS:
        ev = Event(wall_time=s["wall_time"], step=s["step"],
                   summary=Summary(value=[Summary.Value(tag=s["tag"], simple_value=s["value"])]))
        w.add_event(ev)
    for t in TEXTS:
        w.add_event(Event(wall_time=t["wall_time"], step=t["step"], summary=text_pb(t["tag"], t["text"])))
    w.close()
    (path,) = [Path(d) / f for f in os.listdir(d)]
    return path.read_bytes()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        data = write(d, False)
        acc = EventAccumulator(d)
        acc.Reload()
        for s in SCALARS:
            got = [e for e in acc.Scalars(s["tag"]) if e.step == s["step"]]
            assert got and abs(got[0].value - s["value"]) <= abs(s["value"]) * 1e-6, s
        from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PA
        pa = PA(d)
        pa.Reload()
        import tensorboard.util.tensor_util as tu
        got = [tu.make_ndarray(e.tensor_proto).item().decode() for e in pa.Tensors("eval/predictions")]
        assert got == [t["text"] for t in TEXTS], got
    with tempfile.TemporaryDirectory() as d:
        with_hp = write(d, True)
        # The HParams plugin's own reader finds the session and its values.
        from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PA
        from tensorboard.plugins.hparams import metadata as hmeta
        pa = PA(d)
        pa.Reload()
        content = pa.PluginTagToContent(hmeta.PLUGIN_NAME)[hmeta.SESSION_START_INFO_TAG]
        info = hmeta.parse_session_start_info_plugin_data(content)
        got = {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
        assert got == HPARAMS and info.group_name == TRIAL, (got, info.group_name)
    (OUT / "events.out.tfevents.reference").write_bytes(data)
    (OUT / "events.out.tfevents.hparams").write_bytes(with_hp)
    (OUT / "scalars.json").write_text(json.dumps({"start": START, "scalars": SCALARS, "texts": TEXTS,
                                                  "hparams": HPARAMS, "trial": TRIAL}, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
