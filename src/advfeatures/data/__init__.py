"""Data: tensor datasets, local loaders, and batched augmentation."""

from .augment import augment_batch
from .dataset import ImageDataset, check_images
from .loaders import DATASETS, FASHION_MNIST_DIR, load_cifar10, load_dataset, load_digits, load_idx_folder, parse_idx

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIR",
    "ImageDataset",
    "augment_batch",
    "check_images",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_idx_folder",
    "parse_idx",
]
