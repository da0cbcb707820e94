"""The paper's qualitative claims, each a linear inequality between measured accuracies, judged
with a stated margin (:func:`.stats.judge`) on one run or on several seeds' runs.

Robust accuracies here are the headline ones: the worst case over the ensemble where the run
measured it, else the single L2 PGD attack (the finding says which).
"""

from __future__ import annotations

from typing import Any

from ..evaluate.ensemble import standard_plan
from .stats import judge

MEMBER_LABELS = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}


def metrics(results: dict[str, Any]) -> dict[str, float]:
    """A flat table of one run's accuracies: ``"<model>/clean"``, ``"<model>/<source>/<norm>/<ε>"``
    with source ``worst`` (the ensemble) or the single attack's name."""
    out: dict[str, float] = {}
    for name, m in results["models"].items():
        out[f"{name}/clean"] = m["clean_accuracy"]
        for r in m["robust_accuracy"]:
            out[f"{name}/{r['attack']}/{r['norm']}/{r['eps']:g}"] = r["accuracy"]
        for r in m.get("worst_case") or []:
            out[f"{name}/worst/{r['norm']}/{r['eps']:g}"] = r["robust_accuracy"]
    return out


def _l2_radii(results: dict[str, Any]) -> tuple[str, list[float]]:
    std = results["models"]["standard"]
    wc = sorted(r["eps"] for r in std.get("worst_case") or [] if r["norm"] == "L2")
    if wc:
        return "worst", wc
    return "pgd", sorted(r["eps"] for r in std["robust_accuracy"] if r["norm"] == "L2" and r["attack"] == "pgd")


def claims(results: dict[str, Any], majorities: list[float] | None = None) -> list[dict[str, Any]]:
    """Each claim as ``{"claim", "terms": [(coefficient, metric)], "constant", "attack"}``:
    it holds when ``Σ coefficient·metric + constant > 0`` by the margin. ``majorities``: each
    seed's ``majority_class_share`` (each seed may draw its own test split); the largest is used."""
    source, l2 = _l2_radii(results)
    members = [MEMBER_LABELS[name] for name, _ in standard_plan("L2", len(results["dataset"]["classes"]), 1)]  # as run on these classes
    label = f"worst case ({', '.join(members)})" if source == "worst" else "L2 PGD"
    chance = results["dataset"]["chance_accuracy"]
    out = []
    if l2:
        small, big = l2[0], l2[-1]

        def at(model: str, eps: float) -> str:
            return f"{model}/{source}/L2/{eps:g}"

        out += [
            {"claim": f"The standard model's robust accuracy at L2 ε={big:g} is below half its clean accuracy",
             "terms": [(0.5, "standard/clean"), (-1.0, at("standard", big))], "constant": 0.0, "attack": label},
            {"claim": f"The adversarially trained model is more robust than the standard one by over 10 points at L2 ε={big:g}",
             "terms": [(1.0, at("adversarial", big)), (-1.0, at("standard", big))], "constant": -0.1, "attack": label},
            {"claim": f"The model trained on D_R is more robust than the standard model at L2 ε={small:g} (the smaller radius, "
                      "as the paper compares at half its training ε)",
             "terms": [(1.0, at("d_r", small)), (-1.0, at("standard", small))], "constant": 0.0, "attack": label},
            {"claim": f"The model trained on D_NR is less robust than the one trained on D_R at L2 ε={small:g}",
             "terms": [(1.0, at("d_r", small)), (-1.0, at("d_nr", small))], "constant": 0.0, "attack": label},
        ]
    # on an imbalanced test split a model that always answers the most common class beats 1/C: the
    # claim is then judged above that share (the best a model blind to the images can score)
    majority = max([results["dataset"].get("majority_class_share", chance), *(majorities or [])])
    # (named so when it is a point or more above chance; a nearly balanced split, e.g. digits' 37 of 360, says chance)
    floor = (f"chance ({chance:.0%})" if majority < chance + 0.01 else
             f"always answering the test set's most common class ({majority:.0%}; chance is {chance:.0%})")
    for kind, name in (("d_rand", "D_rand"), ("d_det", "D_det")):
        out.append({"claim": f"The model trained on {name} is more than 10 points above {floor} on the original test set",
                    "terms": [(1.0, f"{kind}/clean")], "constant": -(max(chance, majority) + 0.1), "attack": "none (clean accuracy)"})
    return out


def findings(runs: list[dict[str, Any]], *, margin: float = 2.0) -> list[dict[str, Any]]:
    """Every claim judged on ``runs`` (one results dict per seed, same configuration)."""
    tables = [metrics(r) for r in runs]
    counts = [r["dataset"]["test_count"] for r in runs]
    out = []
    for c in claims(runs[0], [r["dataset"].get("majority_class_share", 0.0) for r in runs]):
        v = judge(c["terms"], tables, counts, constant=c["constant"], margin=margin)
        means = {name: sum(t[name] for t in tables) / len(tables) for _, name in c["terms"]}
        detail = ", ".join(f"{name} {value:.3f}" for name, value in means.items())
        out.append({"claim": c["claim"], "attack": c["attack"], "terms": [list(t) for t in c["terms"]],
                    "constant": c["constant"], "detail": detail, **v})
    return out
