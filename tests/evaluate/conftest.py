"""The evaluation tests use the black-box tests' tiny digits MLP and affine models."""

from attacks_blackbox.conftest import CountingModel, LinearBinary, batch, correct, digits, linear_binary, mlp  # noqa: F401
