"""helpers.augment.random_affine: one transform per image, seeded, identity at zero range."""

import pytest
import torch

from helpers.augment import random_affine


def _digits(n=4):
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0  # the same bar in every image
    return x


def test_images_of_one_batch_get_different_transforms():
    out = random_affine(_digits(), torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 28, 28)
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # same input, different draw
    assert not torch.allclose(out[0], _digits()[0], atol=1e-3)


def test_same_seed_same_output_and_a_zero_range_is_the_identity():
    x = torch.randn(6, 3, 32, 32)
    a = random_affine(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, random_affine(x, torch.Generator().manual_seed(1)))
    same = random_affine(x, torch.Generator().manual_seed(1), max_shift=0, max_degrees=0)
    assert torch.allclose(same, x, atol=1e-4)


def test_a_pure_shift_moves_the_image_by_whole_pixels():
    x = _digits(1)
    g = torch.Generator().manual_seed(0)
    u = 2 * torch.rand(1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 1
    out = random_affine(x, g, max_shift=3.0, max_degrees=0)
    dx = 3.0 * u[0, 0].item()  # the shift drawn for this image, in pixels (positive: content moves left)
    expected_left = 12 - dx
    column_mass = out[0, 0].sum(0)
    centre = (column_mass * torch.arange(28)).sum() / column_mass.sum()
    assert centre.item() == pytest.approx(expected_left + 1.5, abs=0.05)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="N x C x H x W"):
        random_affine(torch.zeros(28, 28), torch.Generator())
    with pytest.raises(ValueError, match=">= 0"):
        random_affine(torch.zeros(1, 1, 4, 4), torch.Generator(), max_shift=-1)
