"""Data: datasets read batch by batch (uint8 or float, in memory or from disk), the built-in
loaders, readers of outside formats behind :func:`load_data`, export, and batched augmentation."""

from .augment import augment_batch
from .dataset import ImageDataset, check_images, to_float
from .export import EXPORT_FORMATS, export_dataset, save_adversarial
from .external import (FORMATS, detect_format, from_torch_dataset, labels_from, load_data, read_data, read_image_folder,
                       read_madrylab, read_npy, read_npz, stratified_split)
from .loaders import DATASETS, FASHION_MNIST_DIR, load_cifar10, load_dataset, load_digits, load_idx_folder, parse_idx
from .source import ImageFileSource, ImageSource, IndexedSource, RowFileSource, TensorSource

__all__ = [
    "DATASETS",
    "EXPORT_FORMATS",
    "FASHION_MNIST_DIR",
    "FORMATS",
    "ImageDataset",
    "ImageFileSource",
    "ImageSource",
    "IndexedSource",
    "RowFileSource",
    "TensorSource",
    "augment_batch",
    "check_images",
    "detect_format",
    "export_dataset",
    "from_torch_dataset",
    "labels_from",
    "load_cifar10",
    "load_data",
    "load_dataset",
    "load_digits",
    "load_idx_folder",
    "parse_idx",
    "read_data",
    "read_image_folder",
    "read_madrylab",
    "read_npy",
    "read_npz",
    "save_adversarial",
    "stratified_split",
    "to_float",
]
