"""lprnet: license-plate recognition with LPRNet, proved-equivalent rewrites and portable exports.

Layers (dependencies point down; ``tests/test_layers.py`` holds every import to them): the faces (``cli``;
``evaluate``, ``bench``, ``profile``, ``serve``, ``scale``) -> :mod:`lprnet.recognizer`, :mod:`lprnet.train` ->
:mod:`lprnet.export` -> :mod:`lprnet.weights`, :mod:`lprnet.data`, :mod:`lprnet.rewrite` -> :mod:`lprnet.core`,
:mod:`lprnet.model` -> :mod:`lprnet.charset`, :mod:`lprnet.config`, :mod:`lprnet.errors`, :mod:`lprnet.layers`.
"""

from lprnet.charset import Charset
from lprnet.config import VERSION, ModelConfig
from lprnet.recognizer import ProvinceEstimate, Recognizer, Result, load

__version__ = VERSION
__all__ = ["Charset", "ModelConfig", "ProvinceEstimate", "Recognizer", "Result", "__version__", "load"]
