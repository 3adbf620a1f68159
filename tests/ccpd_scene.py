"""CCPD scenes made from our own crops, for tests: a plate warped into a larger picture and saved under
the CCPD file name that carries its corners and its text.

Tests import this as ``from ccpd_scene import ...`` (``tests`` is on pytest's pythonpath).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

QUAD = np.float32([[60, 50], [330, 62], [326, 130], [56, 120]])  # TL, TR, BR, BL in a 400x200 scene


def ccpd_name(text: str, quad: np.ndarray) -> str:
    """A CCPD file name for ``text`` with the plate at ``quad`` (TL, TR, BR, BL)."""
    from lprnet.data import real

    idx = [real.PROVINCES.index(text[0]), real.ALPHABETS.index(text[1])] + [real.ADS.index(c) for c in text[2:]]
    tl, tr, br, bl = (f"{int(x)}&{int(y)}" for x, y in quad)
    x0, y0 = quad.min(axis=0).astype(int)
    x1, y1 = quad.max(axis=0).astype(int)
    return f"02-90_90-{x0}&{y0}_{x1}&{y1}-{br}_{bl}_{tl}_{tr}-{'_'.join(map(str, idx))}-100-10.jpg"


def ccpd_scene(crop: np.ndarray) -> np.ndarray:
    """``crop`` (BGR) enlarged 3x and warped onto :data:`QUAD` of a dark 400x200 scene."""
    big = cv2.resize(crop, (282, 72), interpolation=cv2.INTER_CUBIC)
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [282, 0], [282, 72], [0, 72]]), QUAD)
    return cv2.warpPerspective(big, m, (400, 200), borderValue=(40, 40, 40))


def write_ccpd_scene(folder: Path, crop: np.ndarray, text: str) -> Path:
    """Save :func:`ccpd_scene` of ``crop`` in ``folder`` under the CCPD name for ``text``; its path."""
    path = folder / ccpd_name(text, QUAD)
    cv2.imencode(".jpg", ccpd_scene(crop), [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tofile(str(path))
    return path
