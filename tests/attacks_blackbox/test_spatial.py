"""Spatial attacks: exact transforms on known images, valid outputs, and a grid worst case that is
at least as strong as every single transform in it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advfeatures.attacks import SpatialGrid, StAdv
from advfeatures.attacks.spatial import apply_flow, flow_smoothness, rotate_translate
from advfeatures.errors import ConfigError


def test_identity_and_integer_shift_are_exact():
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rotate_translate(x, 0.0), x, atol=1e-6)
    right = rotate_translate(x, 0.0, tx=1.0)
    assert torch.allclose(right[..., 1:], x[..., :-1], atol=1e-6) and right[..., 0].abs().max() < 1e-6
    down = rotate_translate(x, 0.0, ty=2.0)
    assert torch.allclose(down[..., 2:, :], x[..., :-2, :], atol=1e-6) and down[..., :2, :].abs().max() < 1e-6


def test_quarter_turn_is_rot90():
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    out = rotate_translate(x, 90.0)
    assert any(torch.allclose(out, torch.rot90(x, k, dims=(-2, -1)), atol=1e-5) for k in (1, -1))
    back = rotate_translate(out, -90.0)
    assert torch.allclose(back, x, atol=1e-5)


def test_rotation_uses_pixel_geometry_on_non_square_images():
    x = torch.zeros(1, 1, 6, 8)
    x[0, 0, 3, 5] = 1.0  # (1.5, 0.5) px from the centre (3.5, 2.5)
    out = rotate_translate(x, 90.0)[0, 0]
    peak = divmod(int(out.argmax()), 8)
    assert peak in ((4, 3), (1, 4)) and out.max() == pytest.approx(1.0, abs=1e-5)


def test_zero_flow_is_identity_and_smooth():
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(2))
    flow = torch.zeros(2, 2, 5, 7)
    assert torch.allclose(apply_flow(x, flow), x, atol=1e-6)
    const = torch.full((2, 2, 5, 7), 0.7)
    assert torch.allclose(flow_smoothness(const), torch.full((2,), 4 * 35 * 1e-4), rtol=1e-3)  # 4 neighbours × √1e-8
    one = torch.zeros(1, 2, 5, 7)
    one[0, 0, 2, 3] = 1.0  # one pixel moved by 1: its 4 edges, counted from both sides
    assert flow_smoothness(one).item() == pytest.approx(8.0 + (140 - 8) * 1e-4, abs=1e-4)
    # a flow of exactly one pixel to the right samples the left neighbour
    shift = torch.zeros(2, 2, 5, 7)
    shift[:, 0] = -1.0
    assert torch.allclose(apply_flow(x, shift)[..., 1:], x[..., :-1], atol=1e-6)


def test_grid_outputs_are_valid_transformed_images(mlp, batch):
    x, y = batch
    attack = SpatialGrid(n_rotations=7, n_translations=3)  # shifts scale with the width: ±0.75 px
    res = attack(mlp, x[:32], y[:32], return_result=True)
    out = res.x_adv
    assert out.shape == x[:32].shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    t = res.extra["transform"]  # (angle, tx, ty) per example, all on the grid
    assert (t[:, 0].abs() <= 30 + 1e-4).all() and (t[:, 1:].abs() <= 0.75 + 1e-6).all()
    redo = rotate_translate(x[:32], t[:, 0], t[:, 1], t[:, 2])
    assert torch.allclose(redo, out, atol=1e-5)


def test_grid_worst_case_is_at_least_each_single_transform(mlp, batch):
    x, y = batch
    attack = SpatialGrid(translation_scale=8 / 32, n_rotations=7, n_translations=3, grid_batch=8)
    res = attack(mlp, x, y, return_result=True)
    with torch.no_grad():
        worst_loss = F.cross_entropy(mlp(res.x_adv), y, reduction="none")
        for angle, tx, ty in attack.grid(width=8).tolist():
            single = rotate_translate(x, angle, tx, ty)
            logits = mlp(single)
            fooled = logits.argmax(1) != y
            assert (res.success | ~fooled).all(), "a single transform fooled an example the grid did not"
            assert res.success.float().mean() >= fooled.float().mean()
            loss = F.cross_entropy(logits, y, reduction="none")
            assert (res.success | (worst_loss >= loss - 1e-4)).all()
    assert res.success.float().mean() > 0.5  # ±30°, ±0.75 px breaks most 8×8 digits


def test_stadv_fools_with_a_smooth_flow(mlp, batch, correct):
    x, y = batch
    res = StAdv(steps=100)(mlp, x[:64], y[:64], return_result=True)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1 and torch.isfinite(res.x_adv).all()
    assert res.success[correct[:64]].float().mean() >= 0.9
    smooth = res.extra["flow_smoothness"][res.success]
    assert torch.isfinite(smooth).all() and smooth.median() < 40  # the flow moves pixels by a fraction of a pixel


def test_stadv_targeted_and_parameters_untouched(mlp, batch):
    x, y = batch
    for p in mlp.parameters():
        assert p.grad is None
    res = StAdv(steps=60, lr=0.05)(mlp, x[:16], y[:16], target="least_likely", return_result=True)
    assert res.success.float().mean() >= 0.5
    assert all(p.grad is None for p in mlp.parameters())


@pytest.mark.parametrize(
    "make",
    [
        lambda: SpatialGrid(max_rotation=-1),
        lambda: SpatialGrid(n_rotations=0),
        lambda: SpatialGrid(translation_scale=0),
        lambda: SpatialGrid(max_translation=float("nan")),
        lambda: StAdv(tau=-1),
        lambda: StAdv(steps=0),
        lambda: StAdv(lr=0),
    ],
)
def test_bad_arguments(make):
    with pytest.raises(ConfigError) as info:
        make()
    assert "\n" not in str(info.value)
