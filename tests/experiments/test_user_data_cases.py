"""``reproduce --data`` on users' own data that is not ten balanced classes of a preset's size: every
number and sentence of the report must follow the data (its name, its classes, its test split's size),
never the preset's dataset or CIFAR-10's ten classes. Tiny one-epoch runs: the wiring, not the science."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advfeatures.cli import main
from advfeatures.experiments.report import ensemble_text

STAGES = ("standard", "adversarial", "train_d_r", "train_d_nr", "train_d_rand", "train_d_det")
TINY = [f"{stage}.epochs=1" for stage in STAGES]
TINY += ["construction.matching.steps=2", "construction.relabel.steps=2", "evaluation.worst_case.steps=2",
         "evaluation.worst_case.square_queries=5", "evaluation.sanity.enabled=false", "extras.transfer=false",
         "extras.distillation=false"]


def _npz(path, shape, classes, n_train, n_test):
    rng = np.random.default_rng(0)
    y, yt = np.arange(n_train) % classes, np.arange(n_test) % classes
    x = (rng.random((n_train, *shape)) * 255).astype(np.uint8)
    x[y == 1] //= 2  # some signal
    xt = (rng.random((n_test, *shape)) * 255).astype(np.uint8)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def _reproduce(*args: str) -> str:
    sets = [a for s in TINY for a in ("--set", s)]
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", "reproduce", "--no-estimate", *sets, *args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """Two classes of 8×8 images and a test split of 12 images (fewer than the inversion's 16)."""
    root = tmp_path_factory.mktemp("two")
    data = _npz(root / "two_classes.npz", (1, 8, 8), 2, 60, 12)
    _reproduce("--data", str(data), "--out", str(root / "run"))
    return json.loads((root / "run" / "results.json").read_text()), (root / "run" / "report.md").read_text()


def test_two_classes_report_names_the_users_data(two_classes):
    results, report = two_classes
    assert results["dataset"]["name"].startswith("two_classes.npz"), results["dataset"]
    assert report.startswith("# Reproduction of Ilyas et al. 2019 on two_classes.npz")
    assert "Dataset digits" not in report and "Your data (two_classes.npz" in report


def test_two_classes_ensemble_is_described_as_run(two_classes):
    results, report = two_classes
    members = {m["name"] for w in results["models"]["standard"]["worst_case"] for m in w["members"]}
    assert "apgd-t" not in members and "fab-t" not in members  # the ensemble drops them with two classes
    assert "APGD-T (" not in report and "FAB-T (" not in report, [line for line in report.splitlines() if "APGD-T" in line]
    assert "no APGD-T or FAB-T: with two classes" in report
    assert all(f["attack"] == "worst case (APGD-CE, Square)" for f in results["findings"] if "ε=" in f["claim"])


def test_two_classes_chance_and_d_rand(two_classes):
    results, report = two_classes
    assert results["dataset"]["chance_accuracy"] == 0.5
    assert sum("above chance (50%)" in f["claim"] for f in results["findings"]) == 2
    assert results["extras"]["leakage"]["d_rand"]["chance"] == 0.5
    assert "t = 1 − y" in report and "uniform over the other classes" not in report


def test_small_test_split_inverts_what_it_has(two_classes):
    results, report = two_classes
    assert results["extras"]["inversion"]["n"] == 12 and "12 test images inverted" in report


def test_ensemble_text_counts_the_targets_there_are():
    settings = {"steps": 20, "n_target_classes": 9, "square_queries": 300}
    assert "APGD-T (2 target classes × 20 steps), FAB-T (2 target classes" in ensemble_text(settings, 3)
    assert "APGD-T (9 target classes" in ensemble_text(settings, 10)
    assert ensemble_text(settings, 2).startswith("APGD-CE (20 steps), Square (300 queries) (no APGD-T or FAB-T")


def test_estimate_counts_the_inversion_of_a_small_test_split():
    from advfeatures.experiments.config import resolve_config
    from advfeatures.experiments.estimate import count_passes

    cfg, _ = resolve_config("digits")
    small = count_passes(cfg, 48, 12, num_classes=2, shape=(1, 8, 8))["extra_inversion"]["grad"]
    assert small == 2 * 12 * 2 * cfg.construction.matching.steps  # the 12 images it has, not 16
    assert count_passes(cfg, 48, 100, num_classes=2, shape=(1, 8, 8))["extra_inversion"]["grad"] == 2 * 16 * 2 * cfg.construction.matching.steps


def test_above_chance_is_judged_above_the_most_common_class():
    """An imbalanced test split (90% of one of two classes): a model that always answers that class
    scores 90%, 40 points 'above chance' (50%), and has learnt nothing. The claim must not be shown."""
    from advfeatures.experiments.findings import findings

    from .test_findings_seeds import CLEAR, fake_results

    blind = {**CLEAR, "d_rand": (0.9, 0.0, 0.0), "d_det": (0.9, 0.0, 0.0)}
    results = fake_results(blind, n=200)
    results["dataset"].update({"classes": ["a", "b"], "chance_accuracy": 0.5, "majority_class_share": 0.9})
    above = [f for f in findings([results]) if "D_rand" in f["claim"] or "D_det" in f["claim"]]
    assert len(above) == 2 and all(f["verdict"] != "shown" for f in above), above
    assert "most common class (90%; chance is 50%)" in above[0]["claim"]
    balanced = fake_results(CLEAR)  # nearly balanced (or not recorded): the claim still says chance
    balanced["dataset"]["majority_class_share"] = 0.103
    assert "above chance (10%)" in [f for f in findings([balanced]) if "D_rand" in f["claim"]][0]["claim"]


def test_two_classes_records_the_majority_share(two_classes):
    results, report = two_classes
    assert results["dataset"]["majority_class_share"] == 0.5 and "most common class" not in report


def test_limits_draw_every_class_of_data_sorted_by_class(tmp_path):
    """Own train/test splits sorted by class (as an image folder tree always is): train_limit and
    evaluation.test_limit (the 28×28 preset sets both) must not keep only the first classes."""
    from advfeatures.experiments.config import resolve_config
    from advfeatures.experiments.pipeline import load_data

    rng = np.random.default_rng(0)
    x = (rng.random((400, 1, 8, 8)) * 255).astype(np.uint8)
    np.savez(tmp_path / "sorted.npz", x_train=x, y_train=np.repeat(np.arange(4), 100), x_test=x[:40],
             y_test=np.repeat(np.arange(4), 10))
    cfg, _ = resolve_config("digits", overrides=["train_limit=100", "evaluation.test_limit=20"], data=str(tmp_path / "sorted.npz"))
    train, test = load_data(cfg)
    assert len(train) == 100 and len(test) == 20
    assert set(train.labels.tolist()) == {0, 1, 2, 3} and set(test.labels.tolist()) == {0, 1, 2, 3}
    again, _ = load_data(resolve_config("digits", overrides=["train_limit=100"], data=str(tmp_path / "sorted.npz"), seed=1)[0])
    assert torch.equal(again.labels, train.labels)  # the same order for every run seed


def test_a_class_missing_from_the_test_split_is_named(two_classes):
    from advfeatures.data.dataset import ImageDataset
    from advfeatures.experiments.pipeline import classes_without_images

    results, _ = two_classes
    assert results["dataset"]["classes_without_test_images"] == []
    test = ImageDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 2, 2, 0]), ["cat", "dog", "emu"], "t")
    assert classes_without_images(test) == ["dog"]
