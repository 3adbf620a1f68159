"""Shared fixtures: where ../shared lives, the reference checkpoint, the real crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared_paths import PLATES, REF_NPZ, REF_PTH, need_shared


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ref_npz() -> dict[str, np.ndarray]:
    need_shared(REF_NPZ)
    z = np.load(REF_NPZ)
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def plate_batch(ref_npz: dict[str, np.ndarray]) -> torch.Tensor:
    """All 1,000 real crops, preprocessed, in the npz ``names`` order."""
    from lprnet.core.process import preprocess, read_image

    need_shared(PLATES)
    imgs = [read_image(PLATES / n) for n in ref_npz["names"]]
    return torch.from_numpy(preprocess(imgs))


@pytest.fixture(scope="session")
def ref_state() -> dict[str, torch.Tensor]:
    need_shared(REF_PTH)
    return torch.load(REF_PTH, weights_only=True, map_location="cpu")
