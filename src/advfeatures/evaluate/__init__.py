"""Evaluation in one package.

* :mod:`.metrics` — one ``predict``, one ``accuracy``, one ``robust_accuracy`` (correct on x *and*
  on x_adv, as AutoAttack and RobustBench count it), and ``attack_summary`` (one attack's numbers);
* :mod:`.suite` — the fixed suite of configs: ``AttackSpec``, ``evaluate_suite``;
* :mod:`.ensemble` — the worst-case ensemble, AutoAttack's ``standard`` and ``rand`` versions;
* :mod:`.curves` — robust accuracy against ε;
* :mod:`.checks` — the sanity checks, one small function each.
"""

from .checks import sanity_checks
from .curves import robustness_curve
from .ensemble import VERSIONS, Member, standard_members, worst_case_evaluation
from .metrics import accuracy, attack_summary, correct_mask, predict, robust_accuracy, robust_mask
from .suite import AttackSpec, evaluate_suite

__all__ = [
    "VERSIONS",
    "AttackSpec",
    "Member",
    "accuracy",
    "attack_summary",
    "correct_mask",
    "evaluate_suite",
    "predict",
    "robust_accuracy",
    "robust_mask",
    "robustness_curve",
    "sanity_checks",
    "standard_members",
    "worst_case_evaluation",
]
