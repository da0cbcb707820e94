"""The distillation control: the mistakes set holds exactly the teacher's mistakes with its labels."""

from __future__ import annotations

import pytest
import torch

from advfeatures.data.dataset import ImageDataset
from advfeatures.science.common import predict
from advfeatures.science.distill import distillation_control, mistakes_dataset
from advfeatures.train import TrainConfig

from .conftest import fixed_affine


def test_mistakes_of_a_known_model():
    """A model that always answers class 2: its mistakes are every image not of class 2, all labelled 2."""
    x = torch.rand(12, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3] * 3)
    data = ImageDataset(x, y, ["a", "b", "c", "d"], "toy")
    model = fixed_affine(torch.zeros(4, 4), torch.tensor([0.0, 0.0, 1.0, 0.0]))
    m = mistakes_dataset(model, data)
    keep = (y != 2).nonzero().flatten()
    assert torch.equal(m.info["source_index"], keep)
    assert torch.equal(m.images, x[keep])
    assert bool((m.labels == 2).all()) and torch.equal(m.info["source_labels"], y[keep])
    assert m.info["teacher_accuracy"] == pytest.approx(0.25)


def test_mistakes_of_a_trained_model_are_all_wrong_and_its_own_predictions(digits, digits_mlp):
    train, _ = digits
    m = mistakes_dataset(digits_mlp, train)
    assert 0 < len(m) < len(train)
    assert bool((m.labels != m.info["source_labels"]).all())
    assert torch.equal(m.labels, predict(digits_mlp, m.images))
    assert torch.equal(m.info["source_labels"], train.labels[m.info["source_index"]])
    right = torch.ones(len(train), dtype=torch.bool)
    right[m.info["source_index"]] = False
    assert bool((predict(digits_mlp, train.images[right]) == train.labels[right]).all())


def test_distillation_control_runs_and_reports(digits, digits_mlp):
    train, test = digits
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05, crop_padding=0, flip=False)
    res = distillation_control(None, train, test, arch="mlp", arch_kwargs={"hidden": [32]}, train_cfg=cfg, teacher_epochs=1)
    assert res["trained"] and res["teacher"]["source"] == "trained"
    assert res["mistakes"] == round(res["mistake_share"] * len(train))
    for key in ("student_test_accuracy", "student_agrees_with_teacher_on_test", "control_random_wrong_labels_test_accuracy"):
        assert 0.0 <= res[key] <= 1.0
    # a nearly perfect teacher leaves too few mistakes: reported, not trained
    skipped = distillation_control(digits_mlp, train, test, arch="mlp", arch_kwargs={"hidden": [32]}, train_cfg=cfg,
                                   min_mistakes=len(train))
    assert skipped["trained"] is False and "weak teacher" in skipped["note"]


def test_too_few_mistakes_note_gives_advice_that_applies():
    """With its own weak teacher (model=None, as reproduce runs it) the note must not tell the caller
    to pass model=None; with a given model it may."""
    x = torch.rand(12, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    data = ImageDataset(x, torch.tensor([0, 1, 2, 3] * 3), ["a", "b", "c", "d"], "toy")
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.01, crop_padding=0, flip=False)
    own = distillation_control(None, data, data, arch="mlp", arch_kwargs={"hidden": [4]}, train_cfg=cfg, min_mistakes=100)
    assert not own["trained"] and "too few to train a student on" in own["note"] and "model=None" not in own["note"]
    model = fixed_affine(torch.zeros(4, 4), torch.tensor([0.0, 0.0, 1.0, 0.0]))
    given = distillation_control(model, data, data, arch="mlp", arch_kwargs={"hidden": [4]}, train_cfg=cfg, min_mistakes=100)
    assert not given["trained"] and "pass model=None" in given["note"]
