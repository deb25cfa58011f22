"""Normalisation and tiled inference: any size, any units, seamless tiles."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stemreg.models import ReverseHourglass, denoise_array, denormalise, normalise


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = ReverseHourglass(6, [4, 8, 16, 8, 4])
    # Give the correction real weight so tiling mistakes would show.
    with torch.no_grad():
        torch.nn.init.normal_(net.net[-1].weight, std=0.3)
    return net.eval()


def test_normalise_gives_zero_mean_unit_scale_per_image_and_round_trips():
    rng = np.random.default_rng(0)
    stack = np.stack([rng.poisson(5, (20, 30)), rng.poisson(500, (20, 30)) * 3.0]).astype(np.float32)
    xn, stats = normalise(stack)
    assert np.allclose(xn.mean(axis=(1, 2)), 0, atol=1e-5)
    assert np.allclose(xn.std(axis=(1, 2)), 1, atol=1e-4)
    assert np.allclose(denormalise(xn, stats), stack, rtol=1e-5, atol=1e-3)
    flat, _ = normalise(np.full((8, 8), 3.0, np.float32))
    assert np.all(np.isfinite(flat))


@pytest.mark.parametrize("shape", [(37, 53), (3, 19, 70), (300, 290), (1, 9)])
def test_any_size_in_same_size_and_float32_out(model, shape):
    image = np.random.default_rng(1).poisson(10, shape).astype(np.uint16)
    out = denoise_array(model, image, tile_px=64, overlap_px=12)
    assert out.shape == shape and out.dtype == np.float32 and np.all(np.isfinite(out))


def test_tiled_inference_equals_whole_image_inference(model):
    image = np.random.default_rng(2).poisson(10, (150, 170)).astype(np.float32)
    whole = denoise_array(model, image, tile_px=512, overlap_px=12)
    tiled = denoise_array(model, image, tile_px=48, overlap_px=12, batch_size=3)
    # overlap >= receptive radius (6 px here): identical up to float rounding, seams included
    assert model.receptive_radius_px <= 12
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4 * float(np.abs(whole).max()))


def test_tiles_match_the_raw_network_away_from_the_image_border(model):
    image = np.random.default_rng(3).normal(0, 1, (96, 96)).astype(np.float32)
    tiled = denoise_array(model, image, tile_px=40, overlap_px=8)
    xn, stats = normalise(image)
    with torch.no_grad():
        raw = denormalise(model(torch.from_numpy(xn)[None, None])[0, 0].numpy(), stats)
    r = model.receptive_radius_px
    np.testing.assert_allclose(tiled[r:-r, r:-r], raw[r:-r, r:-r], rtol=1e-4, atol=1e-4)


def test_output_follows_the_input_units(model):
    image = np.random.default_rng(4).poisson(10, (64, 64)).astype(np.float32)
    base = denoise_array(model, image)
    scaled = denoise_array(model, image * 1000 + 50)
    np.testing.assert_allclose(scaled, base * 1000 + 50, rtol=1e-4, atol=0.05)


def test_stack_gives_the_same_as_one_image_at_a_time(model):
    stack = np.random.default_rng(5).poisson(10, (3, 40, 40)).astype(np.float32)
    together = denoise_array(model, stack, tile_px=32, overlap_px=8)
    for image, out in zip(stack, together):
        np.testing.assert_allclose(denoise_array(model, image, tile_px=32, overlap_px=8), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, needle", [
    (np.zeros((2, 2, 2, 2)), "2-D"),
    (np.zeros(5), "2-D"),
    (np.zeros((0, 4)), "empty"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    (np.array([["a", "b"]]), "numeric"),
])
def test_bad_images_are_refused_with_a_reason(model, bad, needle):
    with pytest.raises(ValueError, match=needle):
        denoise_array(model, bad)


def test_tile_smaller_than_twice_the_overlap_is_refused(model):
    with pytest.raises(ValueError, match="overlap"):
        denoise_array(model, np.zeros((10, 10)), tile_px=16, overlap_px=8)


def test_model_declaring_a_size_multiple_gets_padded_tiles():
    class NeedsEight(torch.nn.Module):
        size_multiple = 8

        def forward(self, x):
            assert x.shape[-1] % 8 == 0 and x.shape[-2] % 8 == 0
            return x

    image = np.random.default_rng(6).normal(0, 1, (29, 45)).astype(np.float32)
    np.testing.assert_allclose(denoise_array(NeedsEight(), image, tile_px=40, overlap_px=5), image, rtol=1e-5,
                               atol=1e-5)
