"""The paper's findings judged with a margin, and several seeds aggregated (synthetic results:
the numbers are chosen so that the verdicts follow from the stated margin by hand)."""

from __future__ import annotations

import json
import math

import pytest

from advfeatures.experiments.config import resolve_config, to_dict
from advfeatures.experiments.findings import claims, findings, metrics
from advfeatures.experiments.pipeline import PAPER_REFERENCE, aggregate
from advfeatures.experiments.report import aggregate_markdown, write_aggregate_report
from advfeatures.experiments.state import MODEL_NAMES, TRAINING_SETS
from advfeatures.experiments.stats import wilson_interval

# (clean, worst case at L2 0.5, worst case at L2 1.0) per model: every paper finding clearly holds
CLEAR = {"standard": (0.99, 0.17, 0.0), "adversarial": (0.87, 0.58, 0.30), "d_r": (0.95, 0.31, 0.0),
         "d_nr": (0.95, 0.07, 0.0), "d_rand": (0.78, 0.0, 0.0), "d_det": (0.47, 0.0, 0.0)}


def fake_results(table: dict[str, tuple[float, float, float]], *, n: int = 360, seed: int = 0) -> dict:
    cfg, given = resolve_config("digits", seed=seed)
    models = {}
    for name in MODEL_NAMES:
        clean, small, big = table[name]
        models[name] = {
            "training_set": TRAINING_SETS[name], "clean_accuracy": clean,
            "robust_accuracy": [{"attack": "pgd", "norm": "L2", "eps": 0.5, "steps": 20, "accuracy": min(clean, small + 0.08)},
                                {"attack": "pgd", "norm": "L2", "eps": 1.0, "steps": 20, "accuracy": min(clean, big + 0.05)}],
            "worst_case": [{"norm": "L2", "eps": 0.5, "n": n, "robust_accuracy": small, "members": [{"name": "apgd-ce"}]},
                           {"norm": "L2", "eps": 1.0, "n": n, "robust_accuracy": big, "members": [{"name": "apgd-ce"}]}],
            "sanity": {"flags": []},
        }
    return {"preset": "digits", "seeds": {"run": seed}, "device": "cpu", "versions": {"advfeatures": "x", "torch": "y", "python": "z"},
            "dataset": {"name": "digits", "train_count": 1437, "test_count": n, "image_shape": [1, 8, 8],
                        "classes": [str(c) for c in range(10)], "chance_accuracy": 0.1},
            "robust_accuracy_definition": "correct clean and under attack", "timing": {"total_seconds": 1.0},
            "paper_reference": PAPER_REFERENCE, "config": {"given": given, "resolved": to_dict(cfg)}, "models": models}


def verdicts(runs, **kw) -> dict[str, str]:
    return {f["claim"].split(" at ")[0].split(" is ")[0]: f["verdict"] for f in findings(runs, **kw)}


def test_metrics_name_the_attack_behind_each_number():
    m = metrics(fake_results(CLEAR))
    assert m["standard/worst/L2/0.5"] == 0.17 and m["standard/pgd/L2/0.5"] == pytest.approx(0.25)
    assert m["d_det/clean"] == 0.47
    # the headline claims compare worst-case numbers, not the single PGD attack
    assert all("worst case" in c["attack"] for c in claims(fake_results(CLEAR))[:4])


def test_clear_findings_are_shown():
    out = findings([fake_results(CLEAR)])
    assert [f["verdict"] for f in out] == ["shown"] * 6
    d_r = out[2]
    se = math.sqrt((0.31 * 0.69 + 0.17 * 0.83) / 360)
    assert d_r["difference"] == pytest.approx(0.14) and d_r["standard_error"] == pytest.approx(se)


def test_a_finding_within_noise_says_not_shown():
    # D_R 2 points above the standard model on 360 images: inside two standard errors (~5.4 points)
    table = {**CLEAR, "d_r": (0.95, 0.19, 0.0)}
    out = findings([fake_results(table)])
    assert out[2]["verdict"] == "not shown" and out[2]["holds"] is False
    assert out[2]["difference"] == pytest.approx(0.02)
    # D_det 13 points above chance: 3 points over the required 10, SE √(.23·.77/360) ≈ 2.2 points
    table = {**CLEAR, "d_det": (0.23, 0.0, 0.0)}
    assert findings([fake_results(table)])[5]["verdict"] == "not shown"
    # the same 3 points over on 4× the images (SE halves) clear the margin
    assert findings([fake_results(table, n=1440)])[5]["verdict"] == "shown"


def test_a_reversed_finding_is_contradicted():
    table = {**CLEAR, "d_nr": (0.95, 0.45, 0.0)}  # D_NR far more robust than D_R
    assert findings([fake_results(table)])[3]["verdict"] == "contradicted"


def test_findings_over_seeds_use_the_seeds_spread():
    # D_R beats the standard model by 14, −6 and 14 points: mean 7.3, spread/√3 = 6.7 points > binomial 1.9
    runs = [fake_results({**CLEAR, "d_r": (0.95, 0.17 + d, 0.0)}, seed=s) for s, d in enumerate((0.14, -0.06, 0.14))]
    f = findings(runs)[2]
    assert f["difference"] == pytest.approx(0.22 / 3)
    assert f["se_seeds"] == pytest.approx(math.sqrt(((0.14 - 0.22 / 3) ** 2 * 2 + (0.06 + 0.22 / 3) ** 2) / 2) / math.sqrt(3))
    assert f["standard_error"] == f["se_seeds"] and f["verdict"] == "not shown"
    # three seeds that agree: shown
    assert findings([fake_results(CLEAR, seed=s) for s in range(3)])[2]["verdict"] == "shown"


def test_aggregate_gives_mean_std_and_pooled_wilson_intervals(tmp_path):
    cleans = (0.90, 0.85, 0.80)
    runs = [fake_results({**CLEAR, "adversarial": (c, 0.58, 0.30)}, seed=s) for s, c in enumerate(cleans)]
    agg = aggregate(runs)
    adv = agg["models"]["adversarial"]["clean_accuracy"]
    assert adv["mean"] == pytest.approx(0.85) and adv["std"] == pytest.approx(0.05)
    assert adv["per_seed"] == list(cleans)
    k = sum(round(c * 360) for c in cleans)
    assert adv["pooled_interval"] == list(wilson_interval(k, 3 * 360)) and adv["images"] == 1080
    wc = agg["models"]["standard"]["worst_case"][0]
    assert (wc["norm"], wc["eps"], wc["mean"], wc["std"]) == ("L2", 0.5, pytest.approx(0.17), pytest.approx(0.0))
    assert agg["seeds"] == [0, 1, 2] and agg["dataset"]["test_count_per_seed"] == [360] * 3
    assert [f["verdict"] for f in agg["findings"]] == ["shown"] * 6
    # the aggregate report renders from the data alone
    agg["runs"] = {s: str(tmp_path / f"seed{s}") for s in range(3)}
    write_aggregate_report(tmp_path, agg)
    text = (tmp_path / "report.md").read_text()
    assert "85.0 ± 5.0" in text and "[seed 1](seed1/report.md)" in text and "not shown" in text  # the margin is stated
    assert "Wilson" in text and "1080 test images over 3 seeds" in text
    assert json.loads((tmp_path / "results.json").read_text())["format"] == "advfeatures-results-seeds/1"
    assert (tmp_path / "figures" / "accuracy.png").is_file()
    assert "shown" in aggregate_markdown(agg, "figures/accuracy.png", {})


def test_aggregate_says_whether_the_seeds_share_their_data():
    # digits draws its split per seed (a digest per seed); a train/test file pair gives every seed the same data
    def runs(digests):
        out = [fake_results(CLEAR, seed=s) for s in range(3)]
        for r, d in zip(out, digests):
            r["dataset"]["digest"] = d
        return out
    drawn = aggregate(runs(["a", "b", "c"]))
    assert drawn["dataset"]["same_data_every_seed"] is False
    assert "each seed draws its own data split" in aggregate_markdown(drawn, "f.png", {})
    fixed = aggregate(runs(["a", "a", "a"]))
    assert fixed["dataset"]["same_data_every_seed"] is True
    text = aggregate_markdown(fixed, "f.png", {})
    assert "same training and test images" in text and "own data split" not in text
    # no digest recorded (older results): not claimed to be the same
    assert aggregate(runs([None, None, None]))["dataset"]["same_data_every_seed"] is False
