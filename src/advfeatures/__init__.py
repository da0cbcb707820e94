"""advfeatures: adversarial examples as features.

The library is layered (see DESIGN.md): ``data`` and ``models`` at the bottom, ``threats`` (L2 / Linf
/ L1 balls), ``attacks`` (one shared input-optimisation loop and one small file per attack), then
``train``, ``construct`` (the robust / non-robust datasets of Ilyas et al. 2019), ``evaluate``,
``represent`` and ``theory``; ``experiments`` and ``cli`` sit on top.
"""

from .errors import AdvFeaturesError, ConfigError, DataError, ModelError

__version__ = "0.1.0"
__all__ = ["AdvFeaturesError", "ConfigError", "DataError", "ModelError", "__version__"]
