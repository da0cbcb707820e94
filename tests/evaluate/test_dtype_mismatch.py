"""Images of another dtype than the model's weights: one line naming the fix, from every entry
point (an attack, clean predictions, the worst-case ensemble), never torch's bare matmul error; a
model that casts its own input still runs."""

import pytest
import torch
from torch import nn

import advfeatures.attacks as A
from advfeatures.errors import ModelError
from advfeatures.evaluate import accuracy, predict, worst_case_evaluation


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


class Casting(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.float())


X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
Y = torch.arange(6)

CALLS = {
    "pgd": lambda m: A.PGD(norm="Linf", eps=0.1, steps=2)(m, X, Y),
    "fgsm": lambda m: A.FGSM(norm="Linf", eps=0.1)(m, X, Y),
    "square": lambda m: A.Square(norm="Linf", eps=0.1, max_queries=3)(m, X, Y),
    "predict": lambda m: predict(m, X),
    "accuracy": lambda m: accuracy(m, (X, Y)),
    "ensemble": lambda m: worst_case_evaluation(m, X, Y, norm="Linf", eps=0.1, steps=2, n_target_classes=1,
                                                square_queries=3),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_float64_images_into_float32_model_name_the_fix(name):
    with pytest.raises(ModelError) as info:
        CALLS[name](_model())
    text = str(info.value)
    assert "torch.float64" in text and "torch.float32" in text and "x.to(torch.float32)" in text
    assert "\n" not in text


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_model_that_casts_its_input_still_runs(name):
    CALLS[name](Casting(_model()))


def test_same_dtype_float64_model_runs_and_keeps_dtype():
    model = _model().double()
    x_adv = A.PGD(norm="Linf", eps=0.1, steps=2)(model, X, Y)
    assert x_adv.dtype == torch.float64
    assert float((x_adv - X).abs().max()) <= 0.1 + 1e-12


def test_other_runtime_errors_pass_through_unchanged():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 10)

        def forward(self, x):
            raise RuntimeError("shape mismatch in my own layer")

    with pytest.raises(RuntimeError, match="shape mismatch in my own layer"):
        A.PGD(norm="Linf", eps=0.1, steps=2)(Broken(), X, Y)
