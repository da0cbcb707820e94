"""One exception family for everything the library refuses.

The CLI prints any :class:`AdvFeaturesError` as a single line and exits non-zero, so every message
should name what was wrong and how to fix it.
"""


class AdvFeaturesError(Exception):
    """Base class of every error advfeatures raises on purpose."""


class ConfigError(AdvFeaturesError, ValueError):
    """An impossible or unknown setting (ε ≤ 0, steps < 1, an unknown preset...)."""


class DataError(AdvFeaturesError, ValueError):
    """Missing or malformed data: a folder that is not there, images outside [0, 1]..."""


class ModelError(AdvFeaturesError, ValueError):
    """A model that cannot be used as asked (no representation, a bad checkpoint...)."""
