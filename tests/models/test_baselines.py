"""The CNN baselines: built from JSON configs, any image size, and they learn to denoise on tiny data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stemreg.models import TrainConfig, architecture_of, build_model, denoise_array, psnr_batch, train
from stemreg.models.baselines import DnCNN, StemAutoencoder

# Two cores shared by many processes: more torch threads only spin (6-15x slower training).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(epochs=2, steps_per_epoch=25, batch_size=8, patch_px=32, lr=2e-3, seed=0, device="cpu")


@pytest.mark.parametrize("arch", [
    {"kind": "autoencoder", "base_width": 8, "levels": 2, "kernel_size": 3},
    {"kind": "dncnn", "depth": 6, "width": 8, "kernel_size": 3, "batch_norm": True},
])
def test_config_round_trip_and_any_size(arch):
    model = build_model(arch)
    assert architecture_of(model) == arch
    rebuilt = build_model(architecture_of(model))
    rebuilt.load_state_dict(model.state_dict())  # same shapes: weights + JSON are enough
    model.eval()
    x = torch.randn(2, 1, 45, 50)  # sides not multiples of the autoencoder's 4x down-sampling
    assert model(x).shape == x.shape


def test_autoencoder_downsamples_and_upsamples():
    model = StemAutoencoder(base_width=4, levels=3)
    strided = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    transposed = [m for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(strided) == 3 and len(transposed) == 3


def test_dncnn_has_the_requested_number_of_conv_layers():
    model = DnCNN(depth=10, width=8)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 10


@pytest.mark.parametrize("arch, problem", [
    ({"kind": "autoencoder", "depth": 3}, "unknown autoencoder architecture keys"),
    ({"kind": "dncnn", "depth": 1}, "depth >= 2"),
    ({"kind": "autoencoder", "kernel_size": 4}, "odd kernel_size"),
])
def test_bad_configs_say_what_is_accepted(arch, problem):
    with pytest.raises(ValueError, match=problem):
        build_model(arch)


@pytest.mark.parametrize("init_seed", [0, 1])
def test_autoencoder_trained_supervised_beats_the_noisy_input(train_pairs, val_pairs, init_seed):
    # The initial weights are the caller's (seeded here); the strided autoencoder needs a few more
    # steps than TINY to leave its start reliably: +4.3 to +5.4 dB over five init seeds.
    torch.manual_seed(init_seed)
    model = build_model({"kind": "autoencoder", "base_width": 16, "levels": 2})
    config = TrainConfig(mode="supervised", **{**TINY, "epochs": 3, "steps_per_epoch": 40})
    result = train(model, config, train_data=train_pairs, val_data=val_pairs, progress=False)
    noisy, clean = val_pairs
    denoised = denoise_array(result.model, noisy)
    assert np.mean(psnr_batch(denoised, clean)) > np.mean(psnr_batch(noisy, clean)) + 1.0


def test_dncnn_trained_noise2noise_beats_the_noisy_input_without_clean_images(train_pairs, val_pairs):
    # SDnDTI: repeated noisy acquisitions of the same fields, no clean image in training
    rng = np.random.default_rng(3)
    dose = 20.0
    _, clean_fields = train_pairs
    repeats = np.stack([[rng.poisson(c * dose) / dose for _ in range(3)] for c in clean_fields]).astype(np.float32)
    torch.manual_seed(0)
    model = build_model({"kind": "dncnn", "depth": 8, "width": 24})
    result = train(model, TrainConfig(mode="noise2noise", **TINY), train_data=repeats, val_data=None,
                   progress=False)
    noisy, clean = val_pairs
    denoised = denoise_array(result.model, noisy)
    assert np.mean(psnr_batch(denoised, clean)) > np.mean(psnr_batch(noisy, clean)) + 1.0
