"""load_any_model: every accepted format loads to the logits of the model that was saved; a crafted
pickle runs nothing; every refusal is one line that names the problem."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F
from conftest import randomize_batchnorm
from safetensors.torch import save_file

from advfeatures.errors import ModelError
from advfeatures.models import (build_from_factory, build_model, from_torchvision, load_any_model, load_model, save_model,
                                to_torchvision)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


@pytest.fixture
def mlp():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model("mlp", (1, 8, 8), 10, hidden=(16,)).eval()


def test_own_file_loads_as_load_model(tmp_path, mlp):
    save_model(mlp, tmp_path / "m.safetensors", extra={"note": 1})
    x = torch.rand(4, 1, 8, 8)
    model = load_any_model(tmp_path / "m.safetensors")
    assert torch.equal(model(x), mlp(x)) and model.extra == {"note": 1} and not model.training
    assert torch.equal(load_model(tmp_path / "m.safetensors")(x), mlp(x))
    with pytest.raises(ModelError, match="drop arch") as exc:
        load_any_model(tmp_path / "m.safetensors", arch="cnn")
    one_line(exc)


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "module", "safetensors"])
def test_plain_state_dict_with_our_arch_gives_identical_logits(tmp_path, mlp, wrap):
    state = mlp.state_dict()
    if wrap == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "w.pt"
        obj = {"plain": state, "model": {"model": state, "epoch": 3}, "state_dict": {"state_dict": state, "lr": 0.1},
               "module": {f"module.{k}": v for k, v in state.items()}}[wrap]
        torch.save(obj, path)
    model = load_any_model(path, arch="mlp", arch_kwargs={"hidden": [16]}, in_shape=(1, 8, 8))  # num_classes inferred
    x = torch.rand(5, 1, 8, 8)
    assert model.num_classes == 10
    assert torch.equal(model(x), mlp(x))
    assert model.arch["name"] == "mlp"


def test_our_arch_needs_the_input_shape_and_a_plain_dict_needs_an_arch(tmp_path, mlp):
    torch.save(mlp.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError, match="in_shape") as exc:
        load_any_model(tmp_path / "w.pt", arch="mlp", arch_kwargs={"hidden": [16]})
    one_line(exc)
    with pytest.raises(ModelError, match="pass arch") as exc:
        load_any_model(tmp_path / "w.pt")
    one_line(exc)
    with pytest.raises(ModelError, match="unknown arch 'vgg'") as exc:
        load_any_model(tmp_path / "w.pt", arch="vgg", in_shape=(1, 8, 8))
    one_line(exc)


def test_crafted_pickle_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    zipped, raw = tmp_path / "evil.pt", tmp_path / "evil_raw.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil()}, zipped)
    with raw.open("wb") as f:
        pickle.dump({"model": Evil()}, f, protocol=2)
    assert not marker.exists()  # saving runs nothing; only unpickling would
    for path in (zipped, raw):
        with pytest.raises(ModelError) as exc:
            load_any_model(path, arch="mlp", in_shape=(1, 8, 8))
        assert "names code (io.open)" in one_line(exc)
        assert not marker.exists()


def test_whole_pickled_module_is_refused_with_the_fix(tmp_path, mlp):
    torch.save(mlp, tmp_path / "whole.pt")
    with pytest.raises(ModelError, match=r"names code \(advfeatures.*state_dict") as exc:
        load_any_model(tmp_path / "whole.pt", arch="mlp", in_shape=(1, 8, 8))
    one_line(exc)


def test_wrong_keys_and_shapes_are_named_in_one_line(tmp_path, mlp):
    state = dict(mlp.state_dict())
    state["extra.weight"] = torch.zeros(2)
    del state["head.bias"]
    torch.save(state, tmp_path / "keys.pt")
    with pytest.raises(ModelError) as exc:
        load_any_model(tmp_path / "keys.pt", arch="mlp", arch_kwargs={"hidden": [16]}, in_shape=(1, 8, 8))
    text = one_line(exc)
    assert "missing 1 (head.bias)" in text and "unexpected 1 (extra.weight)" in text
    with pytest.raises(ModelError) as exc:  # hidden 32 instead of 16
        load_any_model(tmp_path / "keys.pt", arch="mlp", arch_kwargs={"hidden": [32]}, in_shape=(1, 8, 8), num_classes=10)
    assert "mis-shaped" in one_line(exc) and "features.1.weight: file (16, 64) vs model (32, 64)" in one_line(exc)


def test_old_checkpoints_without_batchnorm_counters_load_and_bad_kwargs_fail_in_one_line(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cnn = randomize_batchnorm(build_model("cnn", (1, 8, 8), 10, width=4, hidden=8))
    state = {k: v for k, v in cnn.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    model = load_any_model(tmp_path / "old.pt", arch="cnn", arch_kwargs={"width": 4, "hidden": 8}, in_shape=(1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), cnn(x))
    with pytest.raises(ModelError, match=r"does not take arch_kwargs \{\"depth\": 3\}") as exc:
        load_any_model(tmp_path / "old.pt", arch="cnn", arch_kwargs={"depth": 3}, in_shape=(1, 8, 8))
    one_line(exc)


def test_missing_file_and_garbage_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_any_model(tmp_path / "nope.pt", arch="mlp")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="neither a safetensors file") as exc:
        load_any_model(tmp_path / "junk.pt", arch="mlp")
    one_line(exc)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="not a state dict") as exc:
        load_any_model(tmp_path / "list.pt", arch="mlp", in_shape=(1, 8, 8))
    one_line(exc)


def test_factory_loads_saves_and_reloads_only_when_named_again(tmp_path, user_nets):
    net = user_nets.make_net(classes=3, seed=1).eval()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "user.pth")
    x = torch.rand(3, 1, 8, 8)
    model = load_any_model(tmp_path / "user.pth", arch="_user_nets:make_net", arch_kwargs={"classes": 3}, in_shape=(1, 8, 8))
    assert torch.equal(model(x), net(x)) and not model.training
    assert model.arch == {"factory": "_user_nets:make_net", "kwargs": {"classes": 3}, "normalize": None, "in_shape": [1, 8, 8]}
    save_model(model, tmp_path / "user.safetensors")
    with pytest.raises(ModelError, match=r"pass arch='_user_nets:make_net'") as exc:
        load_any_model(tmp_path / "user.safetensors")
    one_line(exc)
    with pytest.raises(ModelError, match="load_any_model"):
        load_model(tmp_path / "user.safetensors")
    again = load_any_model(tmp_path / "user.safetensors", arch="_user_nets:make_net")  # recorded kwargs reused
    assert torch.equal(again(x), net(x)) and again.arch["in_shape"] == [1, 8, 8]
    assert isinstance(build_from_factory("_user_nets:make_net", {"classes": 4}), user_nets.UserNet)


@pytest.mark.parametrize(("spec", "message"), [
    ("_user_nets:", "must read 'module.path:factory'"),
    ("no_colon_here", "unknown arch"),
    ("_no_such_module_xyz:f", "cannot import '_no_such_module_xyz'"),
    ("_user_nets:missing", "has no 'missing'"),
    ("_user_nets:NOT_A_FACTORY", "not a function or class"),
    ("_user_nets:returns_a_number", "not an nn.Module"),
    ("_user_nets:make_net", "unexpected keyword"),
])
def test_bad_factories_fail_in_one_line(tmp_path, user_nets, spec, message):
    torch.save(user_nets.make_net().state_dict(), tmp_path / "user.pt")
    with pytest.raises(ModelError, match=message) as exc:
        load_any_model(tmp_path / "user.pt", arch=spec, arch_kwargs={"bogus": 1} if spec.endswith("make_net") else None)
    one_line(exc)


# --- torchvision layout ---------------------------------------------------------------------


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5)


def torchvision_reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """torchvision's ResNet forward written from its paper and key names alone (stride in the
    first 3×3 of a basic block, in the 3×3 of a bottleneck), reading the state dict directly."""
    x = F.max_pool2d(F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1")), 3, 2, 1)
    stage = 1
    while f"layer{stage}.0.conv1.weight" in sd:
        i = 0
        while f"layer{stage}.{i}.conv1.weight" in sd:
            p, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
            if f"{p}.conv3.weight" in sd:
                out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
                out = F.relu(_bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), sd, f"{p}.bn2"))
                out = _bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            else:
                out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1), sd, f"{p}.bn1"))
                out = _bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            identity = x
            if f"{p}.downsample.0.weight" in sd:
                identity = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
            x = F.relu(out + identity)
            i += 1
        stage += 1
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("name", ["tv_resnet18", "tv_resnet50"])
def test_torchvision_key_map_round_trip_and_reference_logits(tmp_path, name):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ours = randomize_batchnorm(build_model(name, (3, 64, 64), 5))
    tv = to_torchvision(ours.state_dict(), ours)
    assert set(from_torchvision(tv, ours)) == set(ours.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "fc.weight"} <= set(tv)
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.items()}}, tmp_path / "tv.pth")
    model = load_any_model(tmp_path / "tv.pth")  # arch, classes and channels inferred from the keys
    assert model.arch["name"] == name and model.num_classes == 5 and model.extra["format"] == "torchvision"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), torchvision_reference_forward(tv, x), atol=1e-5)
        assert torch.allclose(model(x), ours(x), atol=1e-6)


def test_torchvision_names_load_into_our_cifar_resnet(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ours = randomize_batchnorm(build_model("resnet18", (3, 32, 32), 10))
    torch.save(to_torchvision(ours.state_dict(), ours), tmp_path / "c.pt")
    model = load_any_model(tmp_path / "c.pt", arch="resnet18")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ours(x))
    assert model.arch["in_shape"] == [3, 32, 32]


def test_unknown_resnet_depth_is_refused_in_one_line(tmp_path):
    ours = build_model("tv_resnet18", (3, 32, 32), 4)
    tv = {k: v for k, v in to_torchvision(ours.state_dict(), ours).items() if not k.startswith("layer4.1.")}
    torch.save(tv, tmp_path / "r.pt")
    with pytest.raises(ModelError, match=r"basic blocks \[2, 2, 2, 1\]") as exc:
        load_any_model(tmp_path / "r.pt")
    one_line(exc)


@settings(max_examples=8, deadline=None)
@given(arch=st.sampled_from(["resnet18", "resnet50", "tv_resnet18", "tv_resnet50"]), width=st.sampled_from([2, 4]),
       normalized=st.booleans(), channels=st.sampled_from([1, 3]))
def test_key_map_round_trip_is_the_identity(arch, width, normalized, channels):
    kw = {"width": width, **({"mean": [0.5] * channels, "std": [0.25] * channels} if normalized else {})}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(arch, (channels, 16, 16), 3, **kw)
    state = model.state_dict()
    back = from_torchvision(to_torchvision(state, model), model)
    expected = {k for k in state if not (normalized and k in ("features.0.mean", "features.0.std"))}
    assert set(back) == expected and all(torch.equal(back[k], state[k]) for k in back)
