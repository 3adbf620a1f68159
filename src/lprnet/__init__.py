"""lprnet: license-plate recognition with LPRNet, proved-equivalent rewrites and portable exports.

Layers (dependencies point down; ``tests/test_layers.py`` holds every import to them): the faces (``cli``;
``evaluate``, ``bench``, ``profile``, ``serve``, ``scale``) -> :mod:`lprnet.recognizer`, :mod:`lprnet.train` ->
:mod:`lprnet.export` -> :mod:`lprnet.weights`, :mod:`lprnet.data`, :mod:`lprnet.rewrite` -> :mod:`lprnet.core`,
:mod:`lprnet.model` -> :mod:`lprnet.charset`, :mod:`lprnet.config`, :mod:`lprnet.errors`, :mod:`lprnet.layers`.

The recognizer's names (``load``, ``Recognizer``, ...) are imported on first use, so that ``import lprnet`` and the
command line's ``--help`` do not wait for PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lprnet.charset import Charset
from lprnet.config import VERSION, ModelConfig

if TYPE_CHECKING:
    from lprnet.recognizer import ProvinceEstimate, Recognizer, Result, load

__version__ = VERSION
__all__ = ["Charset", "ModelConfig", "ProvinceEstimate", "Recognizer", "Result", "__version__", "load"]
_FROM_RECOGNIZER = ("ProvinceEstimate", "Recognizer", "Result", "load")


if not TYPE_CHECKING:  # a type checker sees the imports above, and flags ``lprnet.lod`` as the typo it is

    def __getattr__(name: str) -> Any:
        if name in _FROM_RECOGNIZER:
            from lprnet import recognizer

            return getattr(recognizer, name)
        raise AttributeError(f"module 'lprnet' has no attribute {name!r}")
