"""The distillation control: learning from a model's mistakes (Wallace 2019, "Learning from
Incorrectly Labeled Data", the Distill discussion of Ilyas et al. 2019).

Ilyas et al. train on adversarial examples labelled with the attack's target and generalise to
the real test set. Wallace shows the same happens *without any perturbation*: train a ResNet-18 on
CIFAR-10 for two epochs (≈ 63% accurate), relabel every training image with its prediction,
**keep only the images it gets wrong** (18,768 of 50,000, each with the model's wrong label) and
train a fresh ResNet-18 on them alone: 49.7% on the real test set. The wrong labels carry the
teacher's function, so part of the D_rand / D_det effect may be distillation rather than
non-robust features.

What is implemented is exactly that procedure, which is both readings of "train on the model's
mistakes": the inputs are left unchanged, only the points the teacher misclassifies are kept, and
each carries the teacher's (wrong) prediction as its label (:func:`mistakes_dataset`).
:func:`distillation_control` uses a given teacher or, by default, trains a weak one for
``teacher_epochs`` epochs (Wallace's two), trains a student on the mistakes, and reports the
student's real test accuracy, its agreement with the teacher, and a control student trained on
the same images with *uniformly random* wrong labels (which should not generalise).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..data.dataset import ImageDataset
from ..evaluate import accuracy
from ..seeding import derive_seed
from ..train import TrainConfig, train_model
from .common import check_compatible, predict, seeded_model, stream_generator

log = logging.getLogger(__name__)


def mistakes_dataset(model: nn.Module, data: ImageDataset, *, batch_size: int = 500, device: str | torch.device = "cpu") -> ImageDataset:
    """The images of ``data`` that ``model`` misclassifies, labelled with its (wrong) predictions.

    ``info`` holds ``source_labels`` (the true labels), ``source_index`` (positions in ``data``) and
    ``teacher_accuracy`` (the model's accuracy on all of ``data``)."""
    pred = predict(model, data, batch_size=batch_size, device=device)  # read a batch at a time
    wrong = pred != data.labels.to(pred.device)
    index = wrong.nonzero().flatten().cpu()
    # the mistakes keep their images where they are (held as uint8, or on disk): a view, not a copy
    return ImageDataset(data.subset(index).source, pred[index].cpu(), data.classes, f"{data.name}-mistakes",
                        {"source_labels": data.labels[index], "source_index": index,
                         "teacher_accuracy": 1.0 - float(wrong.float().mean()) if len(data) else 0.0})


def random_wrong_labels(data: ImageDataset, *, generator: torch.Generator) -> ImageDataset:
    """The same images with a uniformly random label different from the true one (the control)."""
    shift = torch.randint(1, data.num_classes, data.labels.shape, generator=generator)
    return ImageDataset(data.source, (data.labels + shift) % data.num_classes, data.classes, f"{data.name}-random-wrong", {})


def distillation_control(
    model: nn.Module | None,
    train: ImageDataset,
    test: ImageDataset,
    *,
    arch: str,
    train_cfg: TrainConfig,
    arch_kwargs: dict[str, Any] | None = None,
    teacher_epochs: int = 2,
    min_mistakes: int = 20,
    random_control: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train a fresh ``arch`` on the mistakes of ``model`` (or, when ``model`` is None, of a weak
    teacher of the same architecture trained for ``teacher_epochs`` epochs without LR decay) on
    ``train``, and test it on the real ``test`` set.

    Returns a JSON-ready dict; when the teacher makes fewer than ``min_mistakes`` mistakes no
    student is trained and ``trained`` is False with a ``note`` saying why.
    """
    check_compatible(train, test, what="distillation control")
    kwargs = dict(arch_kwargs or {})
    shape, classes = train.image_shape, train.num_classes
    out: dict[str, Any] = {"arch": arch, "arch_kwargs": kwargs, "chance": 1.0 / classes, "pool_size": len(train), "seed": seed}
    if model is None:
        teacher = seeded_model(arch, shape, classes, seed=derive_seed(seed, 1), **kwargs)
        train_model(teacher, train, replace(train_cfg, epochs=teacher_epochs, milestones=(), seed=seed + 1), device=device,
                    desc="weak teacher")
        out["teacher"] = {"source": "trained", "epochs": teacher_epochs}
    else:
        teacher = model
        out["teacher"] = {"source": "given"}
    mistakes = mistakes_dataset(teacher, train, device=device)
    out["teacher"].update({"train_accuracy": mistakes.info["teacher_accuracy"], "test_accuracy": accuracy(teacher, test, device=device)})
    out["mistakes"] = len(mistakes)
    out["mistake_share"] = len(mistakes) / max(1, len(train))
    if len(mistakes) < min_mistakes:
        out.update({"trained": False, "note": f"the teacher got only {len(mistakes)} of {len(train)} training images wrong "
                    f"(fewer than {min_mistakes}, too few to train a student on)"
                    + ("; pass model=None to train a weak teacher" if model is not None else "")})
        return out
    student = seeded_model(arch, shape, classes, seed=derive_seed(seed, 2), **kwargs)
    train_model(student, mistakes, replace(train_cfg, seed=seed + 2), device=device, desc="student on mistakes")
    teacher_test = predict(teacher, test, device=device).cpu()
    student_test = predict(student, test, device=device).cpu()
    out.update({
        "trained": True,
        "student_test_accuracy": float((student_test == test.labels).float().mean()),
        "student_agrees_with_teacher_on_test": float((student_test == teacher_test).float().mean()),
        "student_fit_accuracy": accuracy(student, mistakes, device=device),
    })
    if random_control:
        # same images, each with a random label other than its true one: wrong labels without the teacher's function
        truly = ImageDataset(mistakes.source, mistakes.info["source_labels"], train.classes, mistakes.name)
        control_data = random_wrong_labels(truly, generator=stream_generator(seed, 3))
        control = seeded_model(arch, shape, classes, seed=derive_seed(seed, 3), **kwargs)
        train_model(control, control_data, replace(train_cfg, seed=seed + 3), device=device, desc="control on random wrong labels")
        out["control_random_wrong_labels_test_accuracy"] = accuracy(control, test, device=device)
    log.info("distillation control: student %.3f on the real test set from %d mistakes (teacher %.3f, chance %.3f)",
             out["student_test_accuracy"], len(mistakes), out["teacher"]["test_accuracy"], out["chance"])
    return out
