"""Real users' checkpoints meeting load_any_model: the wrappers training scripts put around the
weights, the prefixes of DataParallel and torch.compile, other dtypes and devices, and files that
do not fit the architecture asked for. Each either loads to the saved model's logits or is refused
in one line that names the problem and the fix."""

from __future__ import annotations

import sys
import zlib

import pytest
import torch

from advfeatures.errors import ModelError
from advfeatures.models import build_model, load_any_model
from test_load_any_model import one_line  # the same one-line check as the loader's other tests


@pytest.fixture
def trained():
    """A tiny MLP after one SGD step with momentum, and that optimizer (its state holds tensors and ints)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("mlp", (1, 8, 8), 10, hidden=(16,))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.rand(4, 1, 8, 8)).sum().backward()
        opt.step()
    return model.eval(), opt


def _load(path, **kw):
    return load_any_model(path, arch="mlp", arch_kwargs={"hidden": [16]}, in_shape=(1, 8, 8), **kw)


@pytest.mark.parametrize("wrap", ["model_state_dict", "net", "ema", "state_dict_ema", "model_ema", "model+optimizer",
                                  "orig_mod", "module+orig_mod", "orig_mod+module"])
def test_common_checkpoint_wrappers_load_to_the_same_logits(tmp_path, trained, wrap):
    model, opt = trained
    state = model.state_dict()
    extra = {"epoch": 7, "best_acc": 0.91, "optimizer": opt.state_dict(), "lr_schedule": [0.1, 0.01]}
    obj = {
        "model_state_dict": {"model_state_dict": state, **extra},  # the PyTorch tutorial's checkpoint
        "net": {"net": state, "acc": 93.1, "epoch": 200},  # kuangliu/pytorch-cifar
        "ema": {"ema": state, "step": 1000},
        "state_dict_ema": {"state_dict_ema": state, "epoch": 3},  # timm, EMA weights only
        "model_ema": {"model_ema": state, **extra},
        "model+optimizer": {"model": state, **extra},
        "orig_mod": {f"_orig_mod.{k}": v for k, v in state.items()},  # torch.compile(model).state_dict()
        "module+orig_mod": {"state_dict": {f"module._orig_mod.{k}": v for k, v in state.items()}},
        "orig_mod+module": {f"_orig_mod.module.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(obj, tmp_path / "ckpt.pt")
    loaded = _load(tmp_path / "ckpt.pt")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_the_models_own_weights_win_over_an_ema_copy_beside_them(tmp_path, trained):
    model, _ = trained
    ema = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save({"state_dict": model.state_dict(), "state_dict_ema": ema}, tmp_path / "timm.pth")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(_load(tmp_path / "timm.pth")(x), model(x))


def test_a_checkpoint_without_a_known_weights_key_names_the_keys_we_look_for(tmp_path, trained):
    model, _ = trained
    torch.save({"my_weights": model.state_dict(), "epoch": 1}, tmp_path / "odd.pt")
    with pytest.raises(ModelError, match=r"not tensors \(my_weights, epoch\).*'model_state_dict'") as exc:
        _load(tmp_path / "odd.pt")
    one_line(exc)


# --- dtypes and devices ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_half_bfloat16_and_double_files_load_into_float32_as_their_values(tmp_path, trained, dtype, suffix):
    from safetensors.torch import save_file

    model, _ = trained
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded = _load(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert all(torch.equal(loaded.state_dict()[k], v.to(torch.float32)) for k, v in state.items() if v.is_floating_point())


def test_a_file_saved_on_a_gpu_loads_on_a_cpu_only_machine(tmp_path, trained, monkeypatch):
    """torch.save records each storage's device; a checkpoint written on CUDA names "cuda:0", which
    torch.load without map_location refuses where there is no GPU."""
    import torch.serialization as ser

    model, _ = trained
    with monkeypatch.context() as m:
        m.setattr(ser, "location_tag", lambda storage: "cuda:0")
        torch.save({"model": model.state_dict()}, tmp_path / "gpu.pt")
    if not torch.cuda.is_available():  # the file really names the GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "gpu.pt", weights_only=True)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(_load(tmp_path / "gpu.pt")(x), model(x))


def test_meta_tensors_and_integer_weights_are_refused_in_one_line(tmp_path, trained):
    model, _ = trained
    state = model.state_dict()
    torch.save({k: v.to("meta") for k, v in state.items()}, tmp_path / "meta.pt")
    with pytest.raises(ModelError, match=r"no weights, only their shapes \(4 meta tensors") as exc:
        _load(tmp_path / "meta.pt")
    one_line(exc)
    torch.save({k: (v * 127).round().to(torch.int8) for k, v in state.items()}, tmp_path / "int8.pt")
    with pytest.raises(ModelError, match=r"stores torch.int8 values for 4 floating-point weights") as exc:
        _load(tmp_path / "int8.pt")
    one_line(exc)


# --- files that do not fit the architecture asked for ---------------------------------------------


@pytest.fixture
def tv18(tmp_path):
    """A tiny (width 2) torchvision-layout ResNet-18 state dict with a 1000-class fc, saved to a file."""
    from advfeatures.models import to_torchvision

    with torch.random.fork_rng():
        torch.manual_seed(0)
        ours = build_model("tv_resnet18", (3, 32, 32), 1000, width=2).eval()
    torch.save({"state_dict": to_torchvision(ours.state_dict(), ours)}, tmp_path / "r18.pth")
    return ours, tmp_path / "r18.pth"


@pytest.mark.parametrize("arch", ["tv_resnet50", "resnet18", "resnet50", "mlp"])
def test_a_resnet18_file_given_another_arch_is_named_for_what_it_is(tv18, arch):
    _, path = tv18
    with pytest.raises(ModelError, match=r"holds a tv_resnet18 \(read from its torchvision-layout keys\), not a "
                                         rf"{arch}: pass arch='tv_resnet18'") as exc:
        load_any_model(path, arch=arch, arch_kwargs={"width": 2} if "resnet" in arch else None, in_shape=(3, 32, 32))
    one_line(exc)


def test_a_1000_class_head_for_10_class_data_says_so(tv18):
    ours, path = tv18
    with pytest.raises(ModelError, match=r"a classifier of 1000 classes, not of the 10 asked for .*pick data with 1000 "
                                         r"classes .*replace model.head") as exc:
        load_any_model(path, in_shape=(3, 32, 32), num_classes=10)
    one_line(exc)
    loaded = load_any_model(path, in_shape=(3, 32, 32), num_classes=1000)  # the fix the message gives
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), ours(x))


def test_a_head_mismatch_beside_other_mismatches_is_not_blamed_on_the_classes(tv18):
    _, path = tv18  # width 2 read as width 4: the whole network differs, not just the head
    with pytest.raises(ModelError, match="mis-shaped") as exc:
        load_any_model(path, arch="tv_resnet18", arch_kwargs={"width": 4}, in_shape=(3, 32, 32), num_classes=10)
    assert "1000 classes" not in one_line(exc)


# --- module:factory -------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "message"), [
    ("def make(:\n", r"SyntaxError: invalid syntax at .*broken_nets_\w+\.py:1\); it was found but failed to import: fix"),
    ("import _no_such_dependency_xyz\n", r"No module named '_no_such_dependency_xyz'\); it was found but failed to import"),
    ("raise RuntimeError('needs a GPU')\n", r"RuntimeError: needs a GPU\); it was found but failed to import"),
])
def test_a_factory_module_that_fails_to_import_is_not_sent_to_pythonpath(tmp_path, monkeypatch, source, message):
    name = f"broken_nets_{zlib.crc32(source.encode())}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(ModelError, match=message) as exc:
        load_any_model(tmp_path / "w.pt", arch=f"{name}:make")
    assert "PYTHONPATH" not in one_line(exc)
    with pytest.raises(ModelError, match=r"cannot import '_absent_pkg_xyz.nets'.*put it on PYTHONPATH") as exc:
        load_any_model(tmp_path / "w.pt", arch="_absent_pkg_xyz.nets:make")
    one_line(exc)


# --- through the CLI ------------------------------------------------------------------------------


def _cli(args):
    from click.testing import CliRunner

    from advfeatures.cli import main

    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [line for line in res.output.splitlines() if line.strip()]
    return res.exit_code, lines


@pytest.mark.parametrize(("factory", "kind"), [("TupleNet", "tuple"), ("DictNet", "dict")])
def test_a_model_returning_a_tuple_or_dict_is_refused_with_the_fix(tmp_path, user_nets, factory, kind):
    torch.save(user_nets.make_net(classes=10).state_dict(), tmp_path / "w.pt")
    code, lines = _cli(["attack", "--model", str(tmp_path / "w.pt"), "--arch", f"_user_nets:{factory}",
                        "--arch-kwargs", '{"classes": 10}', "--attack", "fgsm", "--eps", "0.1", "--n", "4"])
    assert code == 2 and len(lines) == 1, lines
    assert f"returns a {kind}, not a tensor of logits; make its forward return the logits alone" in lines[0]


def test_a_compiled_ddp_checkpoint_and_an_unknown_layer_through_the_cli(tmp_path, user_nets):
    net = user_nets.make_net(classes=10)
    torch.save({"model_state_dict": {f"module._orig_mod.{k}": v for k, v in net.state_dict().items()}, "epoch": 1},
               tmp_path / "w.pt")
    args = ["attack", "--model", str(tmp_path / "w.pt"), "--arch", "_user_nets:make_net", "--arch-kwargs", '{"classes": 10}',
            "--attack", "fgsm", "--eps", "0.1", "--n", "4"]
    code, lines = _cli([*args, "--out", str(tmp_path / "a.json")])
    assert code == 0 and (tmp_path / "a.json").exists(), lines
    code, lines = _cli([*args, "--layer", "fc3"])
    assert code == 2 and len(lines) == 1 and "has no layer 'fc3'" in lines[0] and "conv, fc1, fc2" in lines[0], lines


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, but users still have such files
@pytest.mark.filterwarnings("error::UserWarning")  # torch's "dispatching to torch.jit.load" would be untrue: it refuses
def test_a_torchscript_archive_and_sparse_weights_are_refused_with_the_fix(tmp_path, trained):
    model, _ = trained
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 1, 8, 8)), tmp_path / "scripted.pt")
    with pytest.raises(ModelError, match=r"is a TorchScript archive \(torch.jit.save\).*model.state_dict\(\)") as exc:
        _load(tmp_path / "scripted.pt")
    assert "weights_only" not in one_line(exc)  # (torch's own "dispatching to torch.jit.load" warning is silenced)
    torch.save({k: v.to_sparse() for k, v in model.state_dict().items()}, tmp_path / "sparse.pt")
    with pytest.raises(ModelError, match=r"stores 4 weights as torch.sparse_coo tensors .*to_dense") as exc:
        _load(tmp_path / "sparse.pt")
    one_line(exc)


@pytest.mark.parametrize("attribute", ["model", "net"])
def test_a_lightning_checkpoint_loads_without_its_attribute_prefix(tmp_path, trained, user_nets, attribute):
    model, _ = trained
    lightning = {"epoch": 4, "global_step": 40, "pytorch-lightning_version": "2.1.0", "optimizer_states": [],
                 "lr_schedulers": [], "hyper_parameters": {"lr": 0.1}}
    x = torch.rand(3, 1, 8, 8)
    torch.save({"state_dict": {f"{attribute}.{k}": v for k, v in model.state_dict().items()}, **lightning}, tmp_path / "a.ckpt")
    with torch.no_grad():
        assert torch.equal(_load(tmp_path / "a.ckpt")(x), model(x))
    net = user_nets.make_net(classes=3, seed=2).eval()
    torch.save({"state_dict": {f"{attribute}.{k}": v for k, v in net.state_dict().items()}, **lightning}, tmp_path / "u.ckpt")
    with torch.no_grad():
        assert torch.equal(load_any_model(tmp_path / "u.ckpt", arch="_user_nets:make_net")(x), net(x))


def test_a_shared_prefix_that_does_not_make_the_keys_fit_is_still_reported(tmp_path, trained):
    model, _ = trained
    state = {f"model.{k}": v for k, v in model.state_dict().items() if k != "head.bias"}
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelError, match=r"missing 4 .*unexpected 3 \(model\.features") as exc:
        _load(tmp_path / "w.pt")
    one_line(exc)


def test_naming_the_right_resnet_arch_reads_its_width_from_the_file(tv18):
    ours, path = tv18  # width 2; arch given, arch_kwargs not
    loaded = load_any_model(path, arch="tv_resnet18", in_shape=(3, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert loaded.arch["kwargs"] == {"width": 2} and torch.equal(loaded(x), ours(x))


_SCRIPT = """import argparse, sys
from torch import nn
print("a warning of its own", file=sys.stderr)
args = argparse.ArgumentParser().parse_args()  # our command line is not its own
def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
"""


def test_a_factory_module_that_runs_as_a_script_ends_in_our_one_line(tmp_path, monkeypatch):
    name = f"train_script_{zlib.crc32(str(tmp_path).encode())}"
    (tmp_path / f"{name}.py").write_text(_SCRIPT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("sys.argv", ["advfeatures", "attack", "--n", "4"])
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(ModelError, match=rf"importing '{name}' .* exited \(SystemExit: 2\): it runs as a script.*__name__") as exc:
        load_any_model(tmp_path / "w.pt", arch=f"{name}:make")
    one_line(exc)


def test_factory_failures_and_a_class_as_the_factory(tmp_path, user_nets, monkeypatch):
    torch.save(user_nets.make_net().state_dict(), tmp_path / "w.pt")
    monkeypatch.setattr(user_nets, "raises", lambda **kw: (_ for _ in ()).throw(RuntimeError("needs a GPU")), raising=False)
    monkeypatch.setattr(user_nets, "exits", lambda **kw: sys.exit(3), raising=False)
    for spec, message in [("_user_nets:raises", r"_user_nets:raises\(\*\*\{\}\) failed: RuntimeError: needs a GPU"),
                          ("_user_nets:exits", r"_user_nets:exits\(\*\*\{\}\) failed: SystemExit: 3")]:
        with pytest.raises(ModelError, match=message) as exc:
            load_any_model(tmp_path / "w.pt", arch=spec)
        one_line(exc)
    trained_mode = user_nets.make_net().train()
    monkeypatch.setattr(user_nets, "in_training_mode", lambda: trained_mode, raising=False)
    model = load_any_model(tmp_path / "w.pt", arch="_user_nets:in_training_mode")
    assert not model.training and all(not m.training for m in model.modules())
    x = torch.rand(2, 1, 8, 8)
    as_class = load_any_model(tmp_path / "w.pt", arch="_user_nets:UserNet")  # a class names its own constructor
    assert torch.equal(as_class(x), model(x))


def test_a_config_dict_under_model_beside_the_weights_is_not_taken_for_them(tmp_path, trained):
    model, _ = trained
    torch.save({"model": {"name": "mlp", "hidden": [16]}, "state_dict": model.state_dict(), "meta": {"epoch": 3}},
               tmp_path / "ckpt.pth")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(_load(tmp_path / "ckpt.pth")(x), model(x))


def test_thop_counters_in_a_state_dict_are_ignored(tmp_path, trained):
    """thop.profile registers total_ops / total_params buffers on every module; they are no weights."""
    model, _ = trained
    state = dict(model.state_dict())
    names = ["", *(n for n, _ in model.named_modules() if n)]
    for n in names:
        for buf in ("total_ops", "total_params"):
            state[f"{n}.{buf}" if n else buf] = torch.zeros(1, dtype=torch.float64)
    torch.save({"model": state, "epoch": 3}, tmp_path / "profiled.pt")
    loaded = _load(tmp_path / "profiled.pt")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_checkpoint_with_an_argparse_namespace_is_refused_with_a_fix_that_needs_no_model_object(tmp_path, trained):
    import argparse

    model, opt = trained
    path = tmp_path / "ckpt.pt"
    torch.save({"args": argparse.Namespace(lr=0.1, arch="mlp"), "model": model.state_dict(),
                "optimizer": opt.state_dict(), "epoch": 9}, path)
    with pytest.raises(ModelError) as exc:
        _load(path)
    line = one_line(exc)
    assert "names code (argparse.Namespace)" in line
    n = len(model.state_dict())
    assert f"its weights are the {n} tensors under 'model'" in line
    fix = f"torch.save(torch.load({str(path)!r}, weights_only=False)['model'], 'weights.pt')"
    assert fix in line and "model.state_dict()" not in line
    exec(fix.replace("'weights.pt'", repr(str(tmp_path / "weights.pt"))), {"torch": torch})  # the fix works as written
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(_load(tmp_path / "weights.pt")(x), model(x))
