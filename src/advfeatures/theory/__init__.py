"""Theory models, simulated and checked against their closed forms.

* :mod:`.gaussian` — Ilyas et al. 2019, Sec. 4: two Gaussian classes; standard vs robust maximum
  likelihood (Theorem 2), vulnerability as metric misalignment (Theorem 1), gradient alignment.
* :mod:`.tsipras` — Tsipras et al. 2019: the robustness/accuracy trade-off distribution.
* :mod:`.logistic` — Goodfellow et al. 2015: adversarial logistic regression in closed form.
* :mod:`.run` — :func:`run_theory` runs all three and writes ``theory.json`` and one figure each.

These modules are self-contained (plain tensors, float64, their own exact attacks on linear
models): the library's threat models clamp to the [0, 1] image box, under which these closed forms
do not hold.
"""

from .gaussian import TwoGaussians
from .run import run_theory
from .tsipras import TsiprasDistribution

__all__ = ["TsiprasDistribution", "TwoGaussians", "run_theory"]
