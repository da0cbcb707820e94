"""``reproduce --seeds``: bad seed lists are one-line errors that write nothing; a tiny two-seed run
writes one run directory per seed and the aggregate report."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from advfeatures.cli import main

TINY = ["--set", "standard.epochs=1", "--set", "adversarial.epochs=1", "--set", "train_d_r.epochs=1", "--set", "train_d_nr.epochs=1",
        "--set", "train_d_rand.epochs=1", "--set", "train_d_det.epochs=1", "--set", "construction.matching.steps=3",
        "--set", "construction.relabel.steps=2", "--set", "evaluation.worst_case.steps=3",
        "--set", "evaluation.worst_case.square_queries=20", "--set", "evaluation.sanity.enabled=false",
        "--set", "extras.transfer=false", "--set", "extras.distillation=false", "--set", "extras.inversion=false",
        "--set", "extras.leakage=false", "--set", "evaluation.test_limit=40", "--set", "train_limit=200", "--device", "cpu"]


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,x"], "seeds must look like 0,1,2"),
    (["--seeds", "1,1"], "seeds must be distinct"),
    (["--seeds", "0,1", "--seed", "3"], "either --seed (one run) or --seeds"),
    (["--set", "evaluation.margin_se=0"], "evaluation.margin_se"),
    (["--set", "evaluation.worst_case.steps=0"], "evaluation.worst_case.steps"),
])
def test_bad_seed_options_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["reproduce", "--quiet", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_two_seeds_write_a_run_each_and_the_aggregate(tmp_path):
    out = tmp_path / "seeds"
    result = CliRunner().invoke(main, ["reproduce", "--quiet", "--out", str(out), "--seeds", "0,1", *TINY])
    assert result.exit_code == 0, result.output
    agg = json.loads((out / "results.json").read_text())
    assert agg["seeds"] == [0, 1] and agg["runs"] == {"0": str(out / "seed0"), "1": str(out / "seed1")}
    for s in (0, 1):
        one = json.loads((out / f"seed{s}" / "results.json").read_text())
        assert one["seeds"]["run"] == s
        assert agg["models"]["standard"]["clean_accuracy"]["per_seed"][s] == one["models"]["standard"]["clean_accuracy"]
    # the two seeds drew different data splits and initialisations
    assert agg["models"]["standard"]["clean_accuracy"]["per_seed"] != [None, None]
    report = (out / "report.md").read_text()
    assert "2 seeds (0, 1)" in report and "±" in report and "mean ± std" in result.output
    # asking again reuses every step of both seeds
    again = CliRunner().invoke(main, ["reproduce", "--quiet", "--out", str(out), "--seeds", "0,1", *TINY])
    assert again.exit_code == 0 and json.loads((out / "results.json").read_text())["models"] == agg["models"]
    assert all(json.loads((out / f"seed{s}" / "results.json").read_text())["timing"]["steps"]["train_standard"]["reused"]
               for s in (0, 1))
