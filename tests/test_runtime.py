"""The TFLite runtime loader: crash diagnostics, the banner filter, tflite-runtime on NumPy 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edge.errors import ModelError
from edge.runtime import TFLITE_RUNTIME_NUMPY, load_interpreter

from .conftest import MODELS, PEOPLE, ROOT

# On the emulated Pi too (scripts/test-arm64.sh):
# the loader's crash diagnostics and its tflite-runtime fallback.
pytestmark = pytest.mark.pi

DETECTOR = MODELS / "face_detection_short_range.tflite"
# A child without ai-edge-litert: the loader falls back to tflite-runtime.
HIDE_LITERT = "import sys; sys.modules['ai_edge_litert'] = None\n"


def _python(code: str, *args: str, hide_litert: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE_LITERT * hide_litert + textwrap.dedent(code), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_a_crash_inside_a_model_load_prints_its_faulthandler_traceback() -> None:
    """A real SIGSEGV in native code during allocate_tensors(): the traceback
    reaches stderr (it used to say only "Segmentation fault")."""
    r = _python(
        """
        import ctypes, sys
        import edge.runtime as runtime

        real = runtime._interpreter_class()

        class Crashing(real):
            __module__ = real.__module__

            def allocate_tensors(self):
                ctypes.string_at(0)  # a read of address 0: SIGSEGV

        runtime._interpreter_class = lambda: Crashing
        runtime.load_interpreter(sys.argv[1])
        """,
        str(DETECTOR),
    )
    assert r.returncode == -signal.SIGSEGV, (r.returncode, r.stderr)
    assert "Fatal Python error: Segmentation fault" in r.stderr
    assert "in allocate_tensors" in r.stderr and "in load_interpreter" in r.stderr


def test_a_load_keeps_the_banner_out_and_lets_everything_else_through(capfd) -> None:
    it = load_interpreter(DETECTOR)
    assert it.get_input_details()[0]["shape"].tolist() == [1, 128, 128, 3]
    os.write(2, b"after the load\n")
    err = capfd.readouterr().err
    assert "XNNPACK" not in err and "INFO: Created TensorFlow Lite" not in err
    assert "after the load" in err


def test_native_writes_during_a_load_pass_through_but_the_banner_does_not() -> None:
    r = _python(
        """
        import os, sys
        import edge.runtime as runtime

        real = runtime._interpreter_class()

        class Noisy(real):
            __module__ = real.__module__

            def allocate_tensors(self):
                os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
                os.write(2, b"ERROR: the runtime said something that matters\\n")
                return super().allocate_tensors()

        runtime._interpreter_class = lambda: Noisy
        runtime.load_interpreter(sys.argv[1])
        print("loaded")
        """,
        str(DETECTOR),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "loaded"
    assert r.stderr == "ERROR: the runtime said something that matters\n"


NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


def test_the_tflite_runtime_fallback_on_this_numpy() -> None:
    """The real tflite-runtime wheel (the test extra installs it): on NumPy 2 (a
    plain venv) a ModelError naming the fix, on NumPy 1 (a Pi's apt NumPy) a model."""
    r = _python(
        """
        import sys
        from edge.errors import ModelError
        from edge.runtime import load_interpreter, runtime_name
        print(runtime_name())
        try:
            it = load_interpreter(sys.argv[1])
            print(it.get_input_details()[0]["shape"].tolist())
        except ModelError as e:
            print(e)
        """,
        str(DETECTOR),
        hide_litert=True,
    )
    assert r.returncode == 0, r.stderr
    answer = (
        f"{DETECTOR}: cannot load model ({TFLITE_RUNTIME_NUMPY})" if NUMPY_2 else "[1, 128, 128, 3]"
    )
    assert r.stdout.splitlines() == ["tflite_runtime", answer]
    assert r.stderr == ""


def test_what_the_numpy_check_stands_for() -> None:
    """tflite-runtime opened directly: SystemError on NumPy 2 (why load_interpreter
    checks first), a working interpreter on NumPy 1."""
    r = _python(
        """
        import sys
        from tflite_runtime.interpreter import Interpreter
        try:
            Interpreter(model_path=sys.argv[1])
            print("opened")
        except SystemError:
            print("SystemError")
        """,
        str(DETECTOR),
        hide_litert=True,
    )
    assert r.stdout.strip() == ("SystemError" if NUMPY_2 else "opened"), r.stderr


def test_the_cli_on_tflite_runtime_alone(tmp_path) -> None:
    """One line naming the fix on NumPy 2; on NumPy 1 it identifies."""
    r = _python(
        "from edge.cli import main\nmain()\n",
        "identify", "--db", str(tmp_path / "g.db"), "--create",
        str(PEOPLE / "joe_biden" / "biden.jpg"),
        hide_litert=True,
    )
    assert "Traceback" not in r.stderr
    if NUMPY_2:
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, lines  # the first model it opens, named
        assert lines[0].startswith(f"edge: {MODELS}/")
        assert lines[0].endswith(f".tflite: cannot load model ({TFLITE_RUNTIME_NUMPY})")
    else:
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("unknown\t")


def test_a_missing_model_file_is_a_model_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="model file missing"):
        load_interpreter(tmp_path / "none.tflite")
