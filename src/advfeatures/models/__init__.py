"""Models: classifiers with a representation, a registry by name, and safe checkpoints."""

from .base import (Classifier, HookedClassifier, LayerOutput, Normalize, PenultimateReLU, as_classifier, fake_relu,
                   fake_relu_applies, layer_names, representation)
from .external import build_from_factory, import_factory, load_any_model
from .registry import MODELS, build_model, load_model, save_model
from .resnet import ResNet, resnet18, resnet50
from .torchvision_resnet import from_torchvision, to_torchvision, tv_resnet18, tv_resnet50
from .small import MLP, SmallCNN

__all__ = [
    "MLP",
    "MODELS",
    "Classifier",
    "HookedClassifier",
    "LayerOutput",
    "Normalize",
    "PenultimateReLU",
    "ResNet",
    "SmallCNN",
    "as_classifier",
    "build_from_factory",
    "build_model",
    "fake_relu",
    "fake_relu_applies",
    "from_torchvision",
    "import_factory",
    "layer_names",
    "load_any_model",
    "load_model",
    "representation",
    "resnet18",
    "resnet50",
    "save_model",
    "to_torchvision",
    "tv_resnet18",
    "tv_resnet50",
]
