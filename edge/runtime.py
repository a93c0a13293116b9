"""Open a ``.tflite`` file with LiteRT, or tflite-runtime where that is what a Pi has.

The interpreter is built once per model and reused for every frame.

A model load runs native code that can crash the process (XNNPACK segfaulted
in ``allocate_tensors()`` on an arm64 machine whose ``/proc/cpuinfo`` it could
not read). So :mod:`faulthandler` is on before any load, and stderr is never
hidden while loading: only the runtimes' own INFO banner ("INFO: Created
TensorFlow Lite XNNPACK delegate for CPU.") is kept out of every CLI answer and
log, by a thread that passes everything else through as it comes.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError

# The runtimes' C++ INFO lines at a load: noise in every CLI answer and log.
_BANNER = re.compile(rb"^INFO: (Created|Initialized) TensorFlow Lite\b")

TFLITE_RUNTIME_NUMPY = "tflite-runtime needs numpy<2; install ai-edge-litert"


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
    if cls.__module__.startswith("tflite_runtime") and int(np.__version__.split(".")[0]) >= 2:
        # Its last release (2.14) is built against NumPy 1.x: opening a model
        # prints NumPy's ABI warning and raises SystemError.
        raise ModelError(f"{path}: cannot load model ({TFLITE_RUNTIME_NUMPY})")
    if not faulthandler.is_enabled():
        faulthandler.enable(file=2)
    try:
        with _banner_filtered_stderr():
            it = cls(model_path=str(path), num_threads=threads)
            it.allocate_tensors()
    except (ValueError, RuntimeError, SystemError) as e:
        raise ModelError(f"{path}: cannot load model ({str(e).splitlines()[0]})") from None
    return it


@contextlib.contextmanager
def _banner_filtered_stderr() -> Iterator[None]:
    """Route fd 2 through a pipe whose reader drops only the runtime's banner.

    Meanwhile faulthandler writes to the real stderr, so a crash inside the
    load still shows its Python traceback there."""
    try:
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        yield
        return
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    forward = threading.Thread(target=_forward, args=(read_end, saved), daemon=True)
    forward.start()
    faulthandler.enable(file=saved)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the reader sees EOF
        forward.join(timeout=10)
        faulthandler.enable(file=2)
        os.close(saved)


def _forward(read_end: int, out: int) -> None:
    """Copy lines from ``read_end`` to ``out``, less the banner lines."""
    pending = b""
    with open(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not _BANNER.match(line):
                    os.write(out, line + b"\n")
    if pending and not _BANNER.match(pending):
        os.write(out, pending)
