"""The multi-scale member of the reverse-hourglass family and the training recipe that goes with it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stemreg.models.architectures import architecture_of, build_model
from stemreg.models.config import ArchitectureName, architecture
from stemreg.models.flops import flops_per_pixel
from stemreg.models.inference import denoise_array
from stemreg.models.train_config import TrainConfig
from stemreg.models.training import lr_factor, train

SMALL = {"kind": "reverse-hourglass", "levels": 3, "widths": [4, 8, 16], "convs_per_level": 1, "unshuffle": 2}


def test_widths_grow_towards_the_middle_and_the_config_round_trips():
    model = build_model(architecture(ArchitectureName.MULTISCALE))
    assert model.widths == sorted(model.widths) and model.levels == 4
    assert architecture_of(build_model(architecture_of(model))) == architecture_of(model)
    with pytest.raises(ValueError, match="grow"):
        build_model({**SMALL, "widths": [16, 8, 4]})
    with pytest.raises(ValueError, match="unshuffle"):
        build_model({**SMALL, "unshuffle": 3})
    with pytest.raises(ValueError, match="unknown key"):
        build_model({**SMALL, "depth": 8})


def test_the_untrained_network_is_close_to_the_identity_on_any_image_size():
    torch.manual_seed(0)
    model = build_model(SMALL)
    image = np.random.default_rng(0).random((3, 37, 53)).astype(np.float32)
    out = denoise_array(model, image)
    assert out.shape == image.shape
    assert np.abs(out - image).max() < 0.05 * image.std()


def test_receptive_radius_bounds_the_measured_one_and_sees_whole_cells():
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    for p in model.parameters():  # positive weights: every path in reach carries a gradient
        torch.nn.init.uniform_(p, 0.01, 0.1)
    size = 128
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    model(x)[0, 0, size // 2, size // 2].backward()
    rows, cols = np.nonzero(x.grad[0, 0].numpy())
    measured = max(size // 2 - rows.min(), rows.max() - size // 2, size // 2 - cols.min(), cols.max() - size // 2)
    assert measured <= model.receptive_radius_px <= 1.5 * measured
    base = build_model(architecture(ArchitectureName.MULTISCALE))
    # two SrTiO3 cells (2 x 390.5 pm) at the finest sampling of the range (4 pm/px) fit in its field of view
    assert 2 * base.receptive_radius_px >= 2 * 390.5 / 4
    # and it is cheaper per pixel than the seed's plain 8-layer net
    assert flops_per_pixel(base) < 0.5 * flops_per_pixel(architecture(ArchitectureName.DEFAULT))


def test_learning_rate_warms_up_then_decays_along_a_cosine():
    config = TrainConfig(epochs=10, steps_per_epoch=10, warmup_fraction=0.1)
    factors = [lr_factor(step, 100, config) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert factors[-1] == pytest.approx(0.05, abs=0.01)


class _Stream:
    """Fresh Gaussian-blob fields and Poisson noise every call: a stand-in microscope."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def batch(self, batch_size: int, patch_px: int):
        self.calls += 1
        yy, xx = np.mgrid[:patch_px, :patch_px]
        clean = np.stack([0.2 + (np.cos(xx / 3.0 + self.rng.uniform(0, 6)) * np.cos(yy / 3.0)) ** 2
                          for _ in range(batch_size)]).astype(np.float32)
        noisy = self.rng.poisson(clean * 20).astype(np.float32) / 20
        return noisy, clean


def test_training_from_a_stream_draws_every_step_afresh_and_learns(one_torch_thread):
    torch.manual_seed(0)
    stream = _Stream(1)
    val_noisy, val_clean = _Stream(2).batch(2, 64)
    config = TrainConfig(epochs=4, steps_per_epoch=20, batch_size=8, patch_px=32, lr=1e-2)
    result = train(build_model(SMALL), config, train_data=stream, val_data=(val_noisy, val_clean), progress=False)
    assert stream.calls == 80
    assert result.best_val_psnr > result.noisy_val_psnr + 1.5
