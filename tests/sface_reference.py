"""OpenCV's SFace features for a batch of aligned crops: run by tests/test_sface.py.

Usage: ``python tests/sface_reference.py MODEL.onnx CROPS.npy OUT.npy`` where
CROPS is an Nx112x112x3 uint8 array of RGB crops; OUT gets Nx128 float32
features (not normalised). Runs in .venv-reference (OpenCV 4.11), apart from
the project's own OpenCV.
"""

import sys

import cv2
import numpy as np


def main() -> int:
    model, crops, out = sys.argv[1:4]
    if not cv2.__version__.startswith("4.11."):
        print(f"the SFace reference needs OpenCV 4.11, found {cv2.__version__}", file=sys.stderr)
        return 2
    rec = cv2.FaceRecognizerSF.create(model, "")
    rgb = np.load(crops)
    # FaceRecognizerSF takes BGR and swaps to RGB itself (blobFromImage swapRB=True).
    feats = [rec.feature(np.ascontiguousarray(c[:, :, ::-1]))[0] for c in rgb]
    np.save(out, np.asarray(feats, np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main())
