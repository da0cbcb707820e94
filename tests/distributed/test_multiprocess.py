"""Two CPU processes under torchrun (gloo): a sharded construction equals the single-process one
tensor for tensor, and data-parallel training ends with the same weights on both ranks as one
process training on the whole batches."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from advfeatures.cli import main as cli
from advfeatures.construct import MatchingConfig, RelabelConfig, build_dataset
from advfeatures.data.loaders import load_digits
from advfeatures.models import load_model
from advfeatures.storage import read_sharded
from advfeatures.train import train_model

from . import _common
from .conftest import run_torchrun

CONSTRUCT = ["--kind", "d_rand", "--dataset", "digits", "--steps", "3", "--step-size", "0.3", "--eps", "1.0",
             "--shard-size", "10", "--batch-size", "8", "--seed", "5", "--device", "cpu"]


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_two_process_construction_equals_single_process(mlp_file, tmp_path):
    # 2 processes through the CLI: 6 shards, 3 per rank, each rank writing its own
    run_torchrun(["-m", "advfeatures.cli", "--quiet", "construct", "--model", str(mlp_file), "--out", str(tmp_path / "two"),
                  "--num-images", "60", *CONSTRUCT], log_dir=tmp_path / "torchrun-logs")
    # one process, the library directly
    source = load_digits()[0].head(60)
    model = load_model(mlp_file)
    relabel = RelabelConfig(eps=1.0, steps=3, step_size=0.3)
    one = build_dataset("d_rand", model, source, tmp_path / "one", relabel=relabel, seed=5, batch_size=8, shard_size=10)
    assert one is not None
    two_tensors, two = read_sharded(tmp_path / "two", verify=True)
    one_tensors, _ = read_sharded(tmp_path / "one")
    _same_tensors(one_tensors, two_tensors)
    assert two["count"] == 60 and len(two["shards"]) == 6
    assert two["summary"] == one["summary"]
    assert [s["count"] for s in two["shards"]] == [s["count"] for s in one["shards"]]
    # (the files' hashes are not compared: safetensors writes the metadata keys in a random order)
    assert not (two_tensors["labels"] == two_tensors["source_labels"]).any()  # every label moved to another class
    # the single-process CLI agrees with both, and a second run finds the construction finished
    runner = CliRunner()
    r = runner.invoke(cli, ["--quiet", "construct", "--model", str(mlp_file), "--out", str(tmp_path / "cli"), "--n", "60", *CONSTRUCT])
    assert r.exit_code == 0, r.output
    _same_tensors(one_tensors, read_sharded(tmp_path / "cli")[0])
    r = runner.invoke(cli, ["--quiet", "construct", "--model", str(mlp_file), "--out", str(tmp_path / "two"), "--n", "60", *CONSTRUCT])
    assert r.exit_code == 0 and "nothing to do" in r.output
    r = runner.invoke(cli, ["--quiet", "construct", "--model", str(mlp_file), "--out", str(tmp_path / "two"), "--n", "40", *CONSTRUCT])
    assert r.exit_code == 2 and "different construction" in r.output


def test_sharding_by_rank_covers_the_single_process_matching(mlp_file, tmp_path):
    """D_NR (representation matching, random-image starts) built as rank 1 then rank 0 of 2 equals one build."""
    source = load_digits()[0].head(30)
    model = load_model(mlp_file)
    cfg = MatchingConfig(steps=3, step_size=0.5)
    kw = {"matching": cfg, "seed": 2, "batch_size": 4, "shard_size": 7}
    assert build_dataset("d_nr", model, source, tmp_path / "split", rank=1, world_size=2, **kw) is None  # rank 1 never writes the manifest
    assert sorted(p.name for p in (tmp_path / "split").glob("shard-*")) == ["shard-00001.safetensors", "shard-00003.safetensors"]
    manifest = build_dataset("d_nr", model, source, tmp_path / "split", rank=0, world_size=2, **kw)
    one = build_dataset("d_nr", model, source, tmp_path / "one", **kw)
    assert manifest is not None and manifest["summary"] == one["summary"]
    _same_tensors(read_sharded(tmp_path / "one")[0], read_sharded(tmp_path / "split")[0])


def test_ddp_training_matches_one_process(tmp_path):
    worker = str(__import__("pathlib").Path(__file__).with_name("ddp_train_worker.py"))
    run_torchrun([worker, str(tmp_path)], log_dir=tmp_path / "torchrun-logs")
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    for k in r0:  # identical all-reduced gradients: bit-identical weights on both ranks
        assert torch.equal(r0[k], r1[k]), k
    h0 = json.loads((tmp_path / "history0.json").read_text())
    h1 = json.loads((tmp_path / "history1.json").read_text())
    assert h0 == h1 and h0["world_size"] == 2
    assert (tmp_path / "checkpoint.pt").is_file()
    # one process on the whole batches: the same weights up to float summation order
    model = _common.tiny_mlp(seed=0)
    history = train_model(model, _common.tiny_digits(), _common.adversarial_config())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert abs(history[-1]["loss"] - h0["history"][-1]["loss"]) < 1e-4
    assert history[-1]["train_accuracy"] == h0["history"][-1]["train_accuracy"]
    # and training changed the weights (the comparison is not between two untouched models)
    assert not torch.allclose(_common.tiny_mlp(seed=0).state_dict()["head.weight"], r0["head.weight"])
