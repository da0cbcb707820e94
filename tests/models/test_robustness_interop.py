"""MadryLab ``robustness`` checkpoints load into our models with the logits of their own code.

The reference is the ``robustness`` package itself (installed ``--no-deps`` by scripts/bootstrap.sh;
these tests skip without it): its ``cifar_models`` ResNet-18/50 and its ImageNet ResNet-50, wrapped
in its real ``AttackerModel`` (normaliser, model, attacker), saved in exactly the layout of its
``train.py`` (``{'model': DataParallel state dict, 'optimizer', 'schedule', 'epoch'}``).

``robustness.attacker`` imports dill, pandas and cox at module level for features unused here; the
test supplies empty stand-ins for whichever of them is missing, for the import only. Its
``imagenet_models`` package imports torchvision in ``__init__``, so its ``resnet.py`` is loaded from
its file.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import randomize_batchnorm

from advfeatures.models import fake_relu, load_any_model, representation

robustness = pytest.importorskip("robustness")

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def attacker_model():
    """Their AttackerModel class, imported with stand-ins for its unused, missing dependencies; the
    stand-ins leave ``sys.modules`` right after the import (other code probes for those names)."""
    stubs = []
    for name in ("dill", "pandas", "cox", "cox.store"):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
            stubs.append(name)
    try:
        if "cox" in stubs:
            sys.modules["cox"].store = sys.modules["cox.store"]
        from robustness.attacker import AttackerModel
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return AttackerModel


def their_imagenet_resnet():
    path = Path(robustness.__path__[0]) / "imagenet_models" / "resnet.py"
    spec = importlib.util.spec_from_file_location("robustness.imagenet_models.resnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_their_checkpoint(attacker_model, classifier, mean, std, path, key="model"):
    dataset = types.SimpleNamespace(mean=torch.tensor(mean), std=torch.tensor(std))
    wrapped = attacker_model(randomize_batchnorm(classifier), dataset).eval()
    state = {f"module.{k}": v for k, v in wrapped.state_dict().items()}  # train.py saves the DataParallel wrapper
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9)
    torch.save({key: state, "optimizer": opt.state_dict(), "schedule": None, "epoch": 7}, path)
    return wrapped


@pytest.mark.parametrize(("factory", "ours"), [("ResNet18", "resnet18"), ("ResNet50", "resnet50")])
def test_cifar_resnet_checkpoint_matches_their_logits(tmp_path, attacker_model, factory, ours):
    from robustness import cifar_models

    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = save_their_checkpoint(attacker_model, getattr(cifar_models, factory)(num_classes=10), CIFAR_MEAN,
                                       CIFAR_STD, tmp_path / "checkpoint.pt.latest")
    model = load_any_model(tmp_path / "checkpoint.pt.latest")  # detected: robustness layout, CIFAR stem
    assert model.arch["name"] == ours and model.arch["in_shape"] == [3, 32, 32] and model.num_classes == 10
    assert model.extra["format"] == "robustness"
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        (logits, latent) = theirs(x, with_latent=True, with_image=False)
        assert torch.allclose(model(x), logits, atol=1e-5)
        assert torch.allclose(representation(model, x), latent, atol=1e-5)


def test_cifar_fake_relu_gradient_matches_theirs(tmp_path, attacker_model):
    from robustness import cifar_models

    with torch.random.fork_rng():
        torch.manual_seed(1)
        theirs = save_their_checkpoint(attacker_model, cifar_models.ResNet18(num_classes=10), CIFAR_MEAN, CIFAR_STD,
                                       tmp_path / "c.pt", key="state_dict")  # their legacy key
    model = load_any_model(tmp_path / "c.pt", arch="resnet18", in_shape=(3, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    direction = torch.randn(2, 512)
    x1 = x.clone().requires_grad_(True)
    (_, latent) = theirs(x1, with_latent=True, fake_relu=True, with_image=False)
    (g_theirs,) = torch.autograd.grad((latent * direction).sum(), x1)
    x2 = x.clone().requires_grad_(True)
    with fake_relu(model):
        (g_ours,) = torch.autograd.grad((representation(model, x2) * direction).sum(), x2)
    assert torch.allclose(g_ours, g_theirs, atol=1e-5, rtol=1e-4)


def test_imagenet_resnet50_checkpoint_matches_their_logits(tmp_path, attacker_model):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = save_their_checkpoint(attacker_model, their_imagenet_resnet().resnet50(num_classes=6), IMAGENET_MEAN,
                                       IMAGENET_STD, tmp_path / "imagenet_l2_3_0.pt")
    model = load_any_model(tmp_path / "imagenet_l2_3_0.pt", in_shape=(3, 64, 64))  # a small input size
    assert model.arch["name"] == "tv_resnet50" and model.num_classes == 6
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), theirs(x, with_image=False), atol=1e-5)


def test_other_architectures_load_through_a_factory_behind_their_normaliser(tmp_path, attacker_model):
    from robustness import cifar_models

    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = save_their_checkpoint(attacker_model, cifar_models.VGG11(num_classes=10), CIFAR_MEAN, CIFAR_STD,
                                       tmp_path / "vgg.pt")
    model = load_any_model(tmp_path / "vgg.pt", arch="robustness.cifar_models:VGG11", arch_kwargs={"num_classes": 10})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), theirs(x, with_image=False), atol=1e-5)


def _hooked_output(module, run):
    caught = []
    handle = module.register_forward_hook(lambda m, i, o: caught.append(o))
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return caught[-1].flatten(1)


@pytest.mark.parametrize("layer", ["layer4", "module.model.layer4", "attacker.model.layer3.1.conv2", "avgpool", "layer2.0.downsample"])
def test_a_robustness_imagenet_checkpoint_answers_to_its_own_layer_names(tmp_path, attacker_model, layer):
    """--layer takes the names of the user's checkpoint (theirs), not only ours (features.N)."""
    from advfeatures.cli.options import ModelLoader

    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = save_their_checkpoint(attacker_model, their_imagenet_resnet().resnet18(num_classes=6), IMAGENET_MEAN,
                                       IMAGENET_STD, tmp_path / "r18.pt")
    model = ModelLoader(layer=layer).load(tmp_path / "r18.pt", "cpu")
    x = torch.rand(2, 3, 64, 64)
    inner = layer.removeprefix("module.").removeprefix("attacker.").removeprefix("model.")
    expected = _hooked_output(dict(theirs.model.named_modules())[inner], lambda: theirs(x, with_image=False))
    with torch.no_grad():
        assert torch.allclose(model.features(x), expected, atol=1e-5)


def test_a_factory_model_behind_their_normaliser_answers_to_its_checkpoint_names(tmp_path, attacker_model):
    from robustness import cifar_models

    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = save_their_checkpoint(attacker_model, cifar_models.ResNet18(num_classes=10), CIFAR_MEAN, CIFAR_STD,
                                       tmp_path / "r18.pt")
    model = load_any_model(tmp_path / "r18.pt", arch="robustness.cifar_models:ResNet18", arch_kwargs={"num_classes": 10})
    x = torch.rand(2, 3, 32, 32)
    expected = _hooked_output(theirs.model.layer4, lambda: theirs(x, with_image=False))
    with torch.no_grad():
        for name in ("layer4", "module.model.layer4"):
            assert torch.allclose(representation(model, x, layer=name), expected, atol=1e-5)
