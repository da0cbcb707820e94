"""A representation for any nn.Module: the hook equals the manual computation, takes one forward
pass, carries gradients; a named layer works; the constructions, inversion and visualisation run on
a user's module; the fake ReLU is reported as applied only where it was."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from advfeatures.construct import MatchingConfig, build_dataset, load_constructed, robust_dataset
from advfeatures.data.dataset import ImageDataset
from advfeatures.errors import ModelError
from advfeatures.models import as_classifier, build_model, fake_relu, fake_relu_applies, representation
from advfeatures.models import base as models_base
from advfeatures.progress import set_progress_enabled
from advfeatures.represent import invert, visualize


@pytest.fixture
def net(user_nets):
    return user_nets.make_net(classes=3, seed=0).eval()


@pytest.fixture
def source():
    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.rand(6, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], "tiny")


def manual_penultimate(net, x):
    z = torch.nn.functional.adaptive_avg_pool2d(torch.relu(net.conv(x)), 4).flatten(1)
    return torch.tanh(net.fc1(z))


def test_hook_representation_is_the_input_of_the_last_linear(net):
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(representation(net, x), manual_penultimate(net, x), atol=1e-6)
        assert torch.allclose(representation(net, x, layer="conv"), net.conv(x).flatten(1), atol=1e-6)
        assert torch.allclose(representation(net, x, layer="fc1"), net.fc1(
            torch.nn.functional.adaptive_avg_pool2d(torch.relu(net.conv(x)), 4).flatten(1)), atol=1e-6)
    clf = as_classifier(net)
    assert clf.head is net.fc2
    with torch.no_grad():
        assert torch.equal(clf(x), net(x))  # the model's own forward, not head(features)


def test_hook_takes_one_forward_pass_and_carries_the_gradient(net):
    calls = []
    handle = net.register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    v = torch.randn(3, 16)
    (g_hook,) = torch.autograd.grad((representation(net, x) * v).sum(), x)
    handle.remove()
    assert len(calls) == 1
    x2 = x.detach().clone().requires_grad_(True)
    (g_manual,) = torch.autograd.grad((manual_penultimate(net, x2) * v).sum(), x2)
    assert torch.allclose(g_hook, g_manual, atol=1e-6)
    assert all(p.grad is None for p in net.parameters())


def test_unknown_layer_and_no_linear_fail_in_one_line(net):
    with pytest.raises(ModelError, match=r"no layer 'fc3'.*conv, fc1, fc2") as exc:
        representation(net, torch.rand(1, 1, 8, 8), layer="fc3")
    assert "\n" not in str(exc.value)
    with pytest.raises(ModelError, match="exposes no representation"):
        representation(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), torch.rand(1, 1, 8, 8))


def test_a_layer_that_never_runs_is_named():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(4, 4)
            self.fc = nn.Linear(64, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ModelError, match="'unused' never ran"):
        representation(Skips(), torch.rand(1, 1, 8, 8), layer="unused")


def test_fake_relu_applies_only_where_our_penultimate_relu_is(net, caplog, monkeypatch):
    monkeypatch.setattr(models_base, "_warned_no_fake_relu", set())
    ours = build_model("mlp", (1, 8, 8), 3, hidden=(8, 8))
    assert fake_relu_applies(ours) and fake_relu_applies(ours, "features") and not fake_relu_applies(ours, "features.1")
    assert not fake_relu_applies(net)
    with caplog.at_level(logging.WARNING, logger="advfeatures.models.base"):
        for _ in range(3):
            with fake_relu(net):
                pass
    assert sum("fake ReLU is not applied" in r.getMessage() for r in caplog.records) == 1


def test_d_r_runs_on_a_user_module_with_and_without_layer(net, source, tmp_path):
    set_progress_enabled(False)
    cfg = MatchingConfig(steps=4, step_size=0.1)
    for layer in (None, "fc1"):
        folder = tmp_path / str(layer)
        manifest = robust_dataset(net, source, folder, matching=cfg, seed=0, batch_size=4, shard_size=4, layer=layer)
        matching = manifest["config"]["matching"]
        assert matching["layer"] == layer and matching["fake_relu"] is False and matching["fake_relu_requested"] is True
        ds, _ = load_constructed(folder, classes=source.classes)
        assert torch.equal(ds.labels, source.labels) and ds.images.min() >= 0 and ds.images.max() <= 1
        # the recorded distance is that of the named layer's output (or the default representation)
        with torch.no_grad():
            g_new, g_src = representation(net, ds.images, layer), representation(net, source.images, layer)
        expected = (g_new - g_src).norm(dim=1) / g_src.norm(dim=1)
        assert torch.allclose(ds.info["stat"].float(), expected, atol=1e-4)
    with pytest.raises(ModelError, match="no layer 'nope'"):
        build_dataset("d_nr", net, source, tmp_path / "bad", matching=cfg, layer="nope")


def test_manifest_records_fake_relu_applied_on_our_model(source, tmp_path):
    set_progress_enabled(False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ours = build_model("mlp", (1, 8, 8), 3, hidden=(8,)).eval()
    cfg = MatchingConfig(steps=2, step_size=0.1)
    manifest = build_dataset("d_nr", ours, source, tmp_path / "ours", matching=cfg, batch_size=6, shard_size=6)
    assert manifest["config"]["matching"]["fake_relu"] is True
    manifest = build_dataset("d_nr", ours, source, tmp_path / "early", matching=cfg, batch_size=6, shard_size=6,
                             layer="features.1")
    assert manifest["config"]["matching"]["fake_relu"] is False  # the PenultimateReLU lies after that layer


def test_inversion_and_visualisation_run_on_a_user_module_by_layer(net, source):
    g = torch.Generator().manual_seed(1)
    res = invert(net, source.images[:3], steps=5, step_size=0.1, generator=g, layer="fc1")
    start_d = (representation(net, res.start, "fc1") - representation(net, source.images[:3], "fc1")).norm(dim=1)
    with torch.no_grad():
        final = (representation(net, res.images, "fc1") - representation(net, source.images[:3], "fc1")).norm(dim=1)
    assert torch.allclose(res.representation_distance, final / representation(net, source.images[:3], "fc1").norm(dim=1),
                          atol=1e-5)
    assert bool((final <= start_d.detach() + 1e-6).all())  # keep_best: never worse than the seed
    vis = visualize(net, source.images[:2], coordinates=[0, 3], steps=5, step_size=0.5, layer="conv")
    assert vis.directions.shape == (2, 4 * 8 * 8) and bool((vis.final_activation >= vis.start_activation - 1e-6).all())
    vis = visualize(net, source.images[:2], coordinates=1, steps=5, step_size=0.5)  # default: fc2's input
    assert vis.directions.shape == (2, 16)


def test_linear_probe_reads_a_user_module_through_the_hook(net, source):
    from advfeatures.represent import linear_probe

    res = linear_probe(net, source, source, input_shape=(1, 8, 8), max_iter=20)
    assert res["feature_dim"] == 16  # fc2's input


def test_a_wrapped_model_knows_its_layers_by_their_inner_names(net):
    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.original = inner

        def forward(self, x):
            return self.original(x)

    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(representation(Wrapper(net), x, layer="fc1"), representation(net, x, layer="fc1"))
        assert torch.equal(representation(Wrapper(net), x), representation(net, x))
    from advfeatures.distributed import accelerate

    fast = accelerate(net, channels_last=True)  # the speed options' wrapper, as the CLI uses it
    with torch.no_grad():
        assert torch.allclose(representation(fast, x, layer="fc1"), representation(net, x, layer="fc1"), atol=1e-6)


@pytest.mark.parametrize(("name", "shape"), [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("resnet18", (3, 16, 16)),
                                             ("tv_resnet18", (3, 32, 32))])
def test_the_hook_reads_our_models_features_exactly(name, shape):
    from advfeatures.models import HookedClassifier

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(name, shape, 4, **({"width": 4} if "resnet" in name else {})).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert torch.equal(HookedClassifier(model).features(x), model.features(x).flatten(1))


def test_a_torchvision_layout_checkpoint_answers_to_its_own_layer_names(tmp_path):
    """A torchvision-layout state dict is renamed into ours on loading; --layer still takes its names."""
    from advfeatures.cli.options import ModelLoader
    from advfeatures.models.torchvision_resnet import to_torchvision

    with torch.random.fork_rng():
        torch.manual_seed(0)
        ours = build_model("tv_resnet18", (3, 32, 32), 4, width=4).eval()
    torch.save(to_torchvision(ours.state_dict(), ours), tmp_path / "tv.pt")  # conv1, bn1, layer1.0…, fc
    x = torch.rand(2, 3, 32, 32)
    last_block = max(i for i, m in enumerate(ours.features) if hasattr(m, "conv2"))
    with torch.no_grad():
        for name, expected in [("layer4", representation(ours, x, layer=f"features.{last_block}")),
                               ("avgpool", ours.features(x)), ("layer1.0.conv1", representation(ours, x, layer="features.4.conv1")),
                               ("maxpool", representation(ours, x, layer="features.3"))]:
            loaded = ModelLoader(layer=name).load(tmp_path / "tv.pt", "cpu")
            assert torch.equal(loaded.features(x), expected), name
    with pytest.raises(ModelError, match=r"no layer 'layer5' \(close: layer4.*advfeatures\.models\.layer_names\(model\)") as exc:
        ModelLoader(layer="layer5").load(tmp_path / "tv.pt", "cpu")
    assert "\n" not in str(exc.value)


def test_a_ddp_checkpoints_key_prefix_is_accepted_in_a_layer_name_and_typos_get_close_matches(net):
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(representation(net, x, layer="module.fc1"), representation(net, x, layer="fc1"))
    with pytest.raises(ModelError, match=r"no layer 'fc_1' \(close: fc1") as exc:
        representation(net, x, layer="fc_1")
    assert "\n" not in str(exc.value)
