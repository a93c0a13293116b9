"""Face embeddings: an aligned RGB crop in, a unit 128-vector out.

Two models sit behind one :class:`Embedder`: SFace (the default; OpenCV Zoo,
Apache-2.0, converted to LiteRT by scripts/convert_sface.py) and the older
MobileFaceNet int8 (no licence upstream: kept only for comparison). Each has
its own alignment template and input contract, described by an
:class:`EmbedModel`; embeddings of two models are never comparable, so every
embedder says which file made it (``model_id``, the file's sha256).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import models
from .align import MOBILEFACENET, SFACE, Template, align
from .runtime import load_interpreter


def normalise(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows left at zero)."""
    v = np.asarray(v, np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


@dataclass(frozen=True)
class EmbedModel:
    """One embedding model's contract: manifest role, alignment and input layout.

    ``layout`` is "nchw" for a 1x3xHxW input (PyTorch-converted models) or
    "nhwc" for 1xHxWx3; ``scaled`` models take (x - 127.5) / 128, the others
    RGB 0-255 (their graph normalises itself).
    """

    name: str
    role: str
    template: Template
    layout: Literal["nchw", "nhwc"]
    scaled: bool


#: The models ``embed.model`` can select.
EMBED_MODELS = {
    "sface": EmbedModel("sface", "embed_sface", SFACE, "nchw", scaled=False),
    "mobilefacenet": EmbedModel("mobilefacenet", "embed_mobilefacenet", MOBILEFACENET, "nhwc",
                                scaled=True),
}


class Embedder:
    """An embedding model behind one call: ``embed(crop) -> (128,) float32``, unit length.

    ``crop(rgb, keypoints)`` aligns a detected face onto this model's template;
    ``model_id`` is the sha256 of the model file (from the manifest), ``name``
    the model's short name. ``flip_average`` also embeds the mirrored crop and
    averages the two, which costs a second inference and steadies the result
    on turned faces.
    """

    dim = 128

    def __init__(self, interpreter: Any, model: EmbedModel = EMBED_MODELS["sface"],
                 model_id: str = "", flip_average: bool = False) -> None:
        self._it = interpreter
        self._input = interpreter.get_input_details()[0]["index"]
        self._output = interpreter.get_output_details()[0]["index"]
        self.model = model
        self.name = model.name
        self.model_id = model_id or models.entry(model.role).sha256
        self.template = model.template
        self.flip_average = flip_average

    def crop(self, rgb: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """The face aligned onto this model's template (uint8 RGB, template size)."""
        return align(rgb, keypoints, self.template)

    def _run(self, crop: np.ndarray) -> np.ndarray:
        x = crop.astype(np.float32)
        if self.model.scaled:
            x = (x - 127.5) / 128.0
        x = x.transpose(2, 0, 1) if self.model.layout == "nchw" else x
        self._it.set_tensor(self._input, np.ascontiguousarray(x[None]))
        self._it.invoke()
        return np.array(self._it.get_tensor(self._output)[0], np.float32)

    def embed(self, crop: np.ndarray) -> np.ndarray:
        v = self._run(crop)
        if self.flip_average:
            v = normalise(v) + normalise(self._run(crop[:, ::-1]))
        return normalise(v)


def load_embedder(models_dir: Path, name: str = "sface", threads: int = 1,
                  flip_average: bool = False) -> Embedder:
    """The embedder ``name`` on its verified model file (:func:`models.require` checks it)."""
    model = EMBED_MODELS[name]
    path = models.require(models_dir, model.role)
    return Embedder(load_interpreter(path, threads), model, models.entry(model.role).sha256,
                    flip_average)
