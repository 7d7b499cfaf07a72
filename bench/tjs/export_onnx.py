"""transformers.js' layout of a BART checkpoint: config/tokenizer files at the top, and
onnx/encoder_model_quantized.onnx + onnx/decoder_model_merged_quantized.onnx — what
`from_pretrained(id, {dtype: 'q8'})` loads. The export is optimum's (text2text-generation-with-past,
the merged decoder with and without past), quantized like transformers.js' own conversion script
(onnxruntime dynamic quantization, uint8 weights, per tensor).

    python bench/tjs/export_onnx.py MODEL_DIR OUT_DIR
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic

model, out = Path(sys.argv[1]), Path(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(
        [sys.executable, "-m", "optimum.commands.optimum_cli", "export", "onnx", "--model", str(model),
         "--task", "text2text-generation-with-past", tmp],
        check=True,
    )
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    for f in Path(tmp).iterdir():
        if f.suffix in (".json", ".txt"):
            shutil.copy(f, out / f.name)
    for name in ["encoder_model", "decoder_model_merged"]:
        quantize_dynamic(
            f"{tmp}/{name}.onnx",
            str(out / "onnx" / f"{name}_quantized.onnx"),
            weight_type=QuantType.QUInt8,
            per_channel=False,
            reduce_range=False,
            extra_options={"EnableSubgraph": True},
        )
