"""What the model converters share: export with litert-torch, run LiteRT once, report the sha256.

``convert_sface.py`` and ``convert_minifasnet.py`` each rebuild a network in
PyTorch their own way; the tail is the same: export the module to a
``.tflite`` file, run that file once with LiteRT to check it against
PyTorch, and print its size and sha256 (which the model manifest records).
It needs the converter's venv (scripts/convert-requirements.txt).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch


def export(model: torch.nn.Module, sample: torch.Tensor, out: Path) -> None:
    """Convert ``model`` (traced on ``sample``) with litert-torch and write it to ``out``."""
    import litert_torch  # heavy; the converters import it once their arguments are good

    litert_torch.convert(model, (sample,)).export(str(out))


def litert_output(path: Path, x: np.ndarray) -> np.ndarray:
    """Run the exported file once with LiteRT (installed alongside litert-torch): its output."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    if tuple(inp["shape"]) != x.shape:
        raise SystemExit(f"exported input shape {tuple(inp['shape'])}, expected {x.shape}")
    it.set_tensor(inp["index"], x)
    it.invoke()
    return np.asarray(it.get_tensor(it.get_output_details()[0]["index"]))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def report(path: Path, check: str) -> str:
    """The converter's last line: the file, its size and sha256, and how the check went."""
    return f"{path}: {path.stat().st_size} bytes, sha256 {sha256(path)}, {check}"
