"""Numbers checked at the door: one place that says what a setting may be.

Every number a user gives (ε, step sizes, learning rates, seeds, counts, widths) passes through one
of these functions before any work starts, wherever it comes from: a CLI option (the click types
below), a config file (``experiments.config._coerce``) or a constructor. Each raises
:class:`~advfeatures.errors.ConfigError` with one line naming the setting, what it got, and what is
allowed, so a NaN never reaches ``int()``, a negative seed never reaches scikit-learn, and an
infinite radius never ends up as ``Infinity`` in a JSON result.

Layer: below everything but :mod:`advfeatures.errors`; it imports neither torch nor click at
import time (the click types are built on first use).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

MAX_SEED = 2**63 - 1  # torch's generators take seeds in [0, 2^63); scikit-learn's below 2^32 (see below)


# Tensors are float32: a setting beyond its range (1e308, say) overflows in the first operation
FLOAT32_MAX = 3.4028234663852886e38


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _too_big(name: str, value: float) -> None:
    if math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise ConfigError(f"{name} = {value:g} is beyond float32's range (±3.4e38), in which the computations run; "
                          "give a sensible value")


def finite(name: str, value: Any) -> float:
    """``value`` as a float, refused when it is not a finite number (within float32's range)."""
    if not _is_number(value) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number (finite), got {value!r}")
    _too_big(name, float(value))
    return float(value)


def positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """A number > 0 (finite and within float32's range unless ``allow_inf``)."""
    if not _is_number(value) or math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        allowed = "a positive number (or inf)" if allow_inf else "a positive finite number"
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    _too_big(name, float(value))
    return float(value)


def non_negative(name: str, value: Any) -> float:
    """A finite number ≥ 0."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number ≥ 0, got {value!r}")
    return float(value)


def in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> float:
    """A finite number between ``low`` and ``high`` (each end closed unless said open)."""
    ok = _is_number(value) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


def whole(name: str, value: Any, *, minimum: int | None = 1, maximum: int | None = None) -> int:
    """A whole number (an int, or a float with no fraction) within [minimum, maximum]."""
    if not _is_number(value) or not math.isfinite(value) or int(value) != value:
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    maximum = MAX_SEED if maximum is None else maximum  # nothing we count goes past what torch takes (int64)
    if (minimum is not None and value < minimum) or value > maximum:
        if value <= maximum:
            raise ConfigError(f"{name} must be a whole number ≥ {minimum}, got {value}")
        raise ConfigError(f"{name} must be a whole number in [{minimum}, {maximum}], got {value}")
    return value


def seed(value: Any, name: str = "seed") -> int:
    """A seed: a whole number in [0, 2^63 − 1] (what torch's generators take)."""
    return whole(name, value, minimum=0, maximum=MAX_SEED)


def _option_name(param: Any) -> str:
    opts = getattr(param, "opts", None) or []
    return max(opts, key=len) if opts else (getattr(param, "name", None) or "value")


def _click_types():
    """Click types whose refusals are :class:`ConfigError` (one line, exit 2, like every other
    refusal), not click's three-line usage error."""
    import click

    class Finite(click.ParamType):
        """A float option that refuses nan and ±inf (and, with ``is_positive``, values ≤ 0)."""

        name = "number"

        def __init__(self, *, is_positive: bool = False, allow_inf: bool = False) -> None:
            self.is_positive, self.allow_inf = is_positive, allow_inf

        def convert(self, value, param, ctx):
            name = _option_name(param)
            if _is_number(value):
                number = float(value)
            else:
                try:
                    number = float(str(value).strip())
                except ValueError:
                    raise ConfigError(f"{name} must be a number, got {value!r}") from None
            return positive(name, number, allow_inf=self.allow_inf) if self.is_positive else finite(name, number)

    class Whole(click.ParamType):
        """An int option within [minimum, maximum]."""

        name = "integer"

        def __init__(self, minimum: int | None, maximum: int | None) -> None:
            self.minimum, self.maximum = minimum, maximum

        def convert(self, value, param, ctx):
            name = _option_name(param)
            if isinstance(value, bool) or not isinstance(value, int):
                try:
                    value = int(str(value).strip())
                except ValueError:
                    raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
            return whole(name, value, minimum=self.minimum, maximum=self.maximum)

    return Finite, Whole


def finite_float(*, is_positive: bool = False, allow_inf: bool = False):
    """A click type for a float option that must be finite (``is_positive``: also > 0)."""
    return _click_types()[0](is_positive=is_positive, allow_inf=allow_inf)


def whole_int(minimum: int | None = 1, maximum: int | None = MAX_SEED):
    """A click type for an int option within [minimum, maximum]."""
    return _click_types()[1](minimum, maximum)


def probe_model(model: Any, data: Any, path: Any = "the model", *, same_classes: bool = True) -> None:
    """Run ``model`` on one image of ``data`` (an ImageDataset) before any work, so a model built
    for other images (a 28×28 model on 8×8 digits, a 3-channel normalisation on 1-channel data) or,
    with ``same_classes``, for another number of classes is refused with one line here rather than
    crashing mid-run or, worse, reporting numbers. Models whose files record no input shape are
    checked this way too."""
    import torch

    from .errors import ModelError

    if len(data) == 0:
        from .errors import DataError

        raise DataError(f"{getattr(data, 'name', 'the data')} holds no images; nothing to run the model on")
    x, _ = data.batch(torch.arange(1))
    try:
        param = next(iter(model.parameters()), None)
    except (AttributeError, TypeError):
        param = None
    if param is not None:
        x = x.to(param.device)
    was_training = bool(getattr(model, "training", False))
    try:
        model.eval()
        with torch.no_grad():
            out = model(x.float())
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ModelError(f"{path} cannot take {getattr(data, 'name', 'the data')}'s {tuple(data.image_shape)} images "
                         f"({' '.join(str(exc).split())[:160]}); pick the data the model was built for") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):  # (logits, features), {"logits": …}, a model output object
        raise ModelError(f"{path} returns a {type(out).__name__}, not a tensor of logits; make its forward return the "
                         "logits alone (wrap it in an nn.Module whose forward picks them out)")
    if out.ndim != 2 or out.shape[0] != 1:
        raise ModelError(f"{path} does not return one row of logits per image (got {tuple(out.shape)}); it is not a classifier")
    if same_classes and out.shape[1] != data.num_classes:
        raise ModelError(f"{path} gives {out.shape[1]} class scores but {getattr(data, 'name', 'the data')} has "
                         f"{data.num_classes} classes; pick the data the model was trained on")
    if not bool(torch.isfinite(out).all()):
        raise ModelError(f"{path} gives non-finite outputs (nan or inf weights?); it cannot be evaluated — retrain it")


_SIZE_WORDS = ("width", "hidden", "depth", "channels", "blocks", "units", "layers", "features", "filters", "dim")


def arch_kwargs(arch: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """An architecture's keyword arguments, checked before the constructor sees them: sizes
    (width, hidden, depth, channels…) are whole numbers ≥ 1, and no number is nan or infinite."""

    def check(key: str, value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for v in value:
                check(key, v)
            return
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{arch}: {key} must be a finite number, got {value}")
        if any(word in key.lower() for word in _SIZE_WORDS) and _is_number(value):
            if int(value) != value or value < 1:
                raise ConfigError(f"{arch}: {key} is a size and must be a whole number ≥ 1, got {value!r}")

    for key, value in kwargs.items():
        check(str(key), value)
    return kwargs


def check_model_fits(model: Any, data: Any, path: Any = "the model", *, same_classes: bool = True) -> None:
    """Refuse a model whose recorded input shape (or, with ``same_classes``, class count) differs
    from the data's, then :func:`probe_model` it for what the file does not record."""
    from .errors import ModelError

    arch = getattr(model, "arch", None) or {}
    shape = arch.get("in_shape")
    if shape is not None and tuple(shape) != tuple(data.image_shape):
        raise ModelError(f"{path} was built for {tuple(shape)} images but {data.name} has {tuple(data.image_shape)}; "
                         "pick the data the model was trained on")
    classes = arch.get("num_classes")
    if same_classes and classes is not None and int(classes) != data.num_classes:
        raise ModelError(f"{path} has {classes} classes but {data.name} has {data.num_classes}; "
                         "pick the data the model was trained on")
    probe_model(model, data, path, same_classes=same_classes)  # what the file does not record, one image shows
