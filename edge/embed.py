"""Face embeddings with MobileFaceNet: 112x96 RGB crop in, unit 128-vector out."""

from __future__ import annotations

from typing import Any

import numpy as np


def normalise(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows left at zero)."""
    v = np.asarray(v, np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


class Embedder:
    """MobileFaceNet behind one call: ``embed(crop) -> (128,) float32``, unit length.

    ``flip_average`` also embeds the mirrored crop and averages the two,
    which costs a second inference and steadies the result on turned faces.

    ``model_id`` is the sha256 (hex) of the model file: the gallery tags every
    template with it, and the matcher compares only embeddings of one model.
    ``name`` is the model's short human name, for messages.
    """

    dim = 128

    def __init__(
        self,
        interpreter: Any,
        flip_average: bool = False,
        *,
        model_id: str,
        name: str = "mobilefacenet_int8",
    ) -> None:
        self.model_id = model_id
        self.name = name
        self._it = interpreter
        self._input = interpreter.get_input_details()[0]["index"]
        self._output = interpreter.get_output_details()[0]["index"]
        self.flip_average = flip_average

    def _run(self, crop: np.ndarray) -> np.ndarray:
        x = (crop.astype(np.float32) - 127.5) / 128.0
        self._it.set_tensor(self._input, x[None])
        self._it.invoke()
        return np.array(self._it.get_tensor(self._output)[0], np.float32)

    def embed(self, crop: np.ndarray) -> np.ndarray:
        v = self._run(crop)
        if self.flip_average:
            v = normalise(v) + normalise(self._run(crop[:, ::-1]))
        return normalise(v)
