"""lprnet: license-plate recognition with LPRNet, proved-equivalent rewrites and portable exports.

Layers (dependencies point down): faces (``cli``) -> :mod:`lprnet.recognizer` /
:mod:`lprnet.evaluate` / training -> :mod:`lprnet.model`, :mod:`lprnet.rewrite`,
:mod:`lprnet.weights` -> :mod:`lprnet.core`, :mod:`lprnet.config`, :mod:`lprnet.charset`.
"""

from lprnet.charset import Charset
from lprnet.config import VERSION, ModelConfig
from lprnet.recognizer import ProvinceEstimate, Recognizer, Result, load

__version__ = VERSION
__all__ = ["Charset", "ModelConfig", "ProvinceEstimate", "Recognizer", "Result", "__version__", "load"]
