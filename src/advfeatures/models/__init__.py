"""Models: classifiers with a representation, a registry by name, and safe checkpoints."""

from .base import Classifier, Normalize, PenultimateReLU, as_classifier, fake_relu, representation
from .registry import MODELS, build_model, load_model, save_model
from .resnet import ResNet, resnet18, resnet50
from .small import MLP, SmallCNN

__all__ = [
    "MLP",
    "MODELS",
    "Classifier",
    "Normalize",
    "PenultimateReLU",
    "ResNet",
    "SmallCNN",
    "as_classifier",
    "build_model",
    "fake_relu",
    "load_model",
    "representation",
    "resnet18",
    "resnet50",
    "save_model",
]
