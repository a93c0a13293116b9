"""Open a ``.tflite`` file with LiteRT, or tflite-runtime where that is what a Pi has.

The interpreter is built once per model and reused for every frame.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ModelError


def runtime_name() -> str:
    """Which TFLite runtime this machine has ("ai_edge_litert" or "tflite_runtime")."""
    return _interpreter_class().__module__.split(".")[0]


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                "no TFLite runtime: install ai-edge-litert (or tflite-runtime on a Pi)"
            ) from None
    return Interpreter


def load_interpreter(path: str | os.PathLike[str], threads: int = 1) -> Any:
    """An allocated interpreter for ``path`` using ``threads`` CPU threads."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file missing (run 'edge models fetch')")
    cls = _interpreter_class()
    try:
        with _quiet_stderr():
            it = cls(model_path=str(path), num_threads=threads)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: cannot load model ({str(e).splitlines()[0]})") from None
    return it


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the runtime's C++ banner ("INFO: Created TensorFlow Lite XNNPACK
    delegate") that would otherwise land in every CLI answer and log."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
