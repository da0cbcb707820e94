import pytest
import torch

from advfeatures.errors import ModelError
from advfeatures.models import MLP, as_classifier, build_model, fake_relu, load_model, representation, save_model
from advfeatures.storage import atomic_path, missing_shards, read_sharded, save_safetensors_atomic, shard_path, write_manifest


@pytest.mark.parametrize("name, shape", [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("cnn", (1, 28, 28)), ("resnet18", (3, 32, 32))])
def test_models_expose_representation(name, shape):
    kw = {"width": 8} if name != "mlp" else {}
    model = build_model(name, shape, 10, **kw).eval()
    x = torch.rand(2, *shape)
    feats = model.features(x)
    assert torch.allclose(model.head(feats), model(x), atol=1e-6)
    assert representation(model, x).shape == (2, model.head.in_features)


def test_resnet50_builds():
    model = build_model("resnet50", (3, 32, 32), 10).eval()
    assert model.head.in_features == 2048


def test_save_and_load_round_trip(tmp_path):
    model = build_model("cnn", (1, 8, 8), 10, width=8, hidden=16, mean=[0.5], std=[0.25]).eval()
    save_model(model, tmp_path / "m.safetensors", extra={"note": "x"})
    again = load_model(tmp_path / "m.safetensors")
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(model(x), again(x)) and again.extra == {"note": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not an advfeatures model"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(ModelError, match="unknown model"):
        build_model("vgg", (1, 8, 8), 10)


def test_as_classifier_splits_sequential():
    seq = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    clf = as_classifier(seq)
    x = torch.rand(5, 1, 2, 2)
    assert torch.allclose(clf.head(clf.features(x)), seq(x))
    with pytest.raises(ModelError, match="exposes no representation"):
        as_classifier(torch.nn.Conv2d(1, 1, 1))


def test_fake_relu_passes_gradient_through_zeroed_features():
    model = MLP((1, 2, 2), 2, hidden=(3,))
    with torch.no_grad():
        model.features[1].weight.fill_(-1.0)  # every hidden unit negative → ReLU output zero
        model.features[1].bias.fill_(0.0)
    x = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    (g_plain,) = torch.autograd.grad(model.features(x).sum(), x)
    with fake_relu(model):
        (g_fake,) = torch.autograd.grad(model.features(x).sum(), x)
        assert torch.equal(model.features(x), torch.zeros(1, 3))  # the forward pass is still a ReLU
    assert g_plain.abs().sum() == 0 and g_fake.abs().sum() > 0


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_sharded_round_trip(tmp_path):
    for i in range(2):
        save_safetensors_atomic({"images": torch.full((3, 1, 2, 2), float(i)), "labels": torch.arange(3)}, shard_path(tmp_path, i))
    assert missing_shards(tmp_path, 3) == [2]
    write_manifest(tmp_path, num_shards=2, config={"a": 1})
    tensors, manifest = read_sharded(tmp_path, verify=True)
    assert manifest["count"] == 6 and tensors["images"].shape == (6, 1, 2, 2)
