"""Training: supervised, noise2noise and blind-spot each improve PSNR on tiny data, in seconds."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from model_test_data import make_pairs, make_repeats
from stemreg.models import ReverseHourglass, TrainConfig, denoise_array, pick_device, psnr_batch, train
from stemreg.models.training import blind_spot_mask, prepare_training_arrays

# Two cores shared by many processes: more torch threads only spin (6-15x slower training).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = dict(epochs=3, steps_per_epoch=25, batch_size=8, patch_px=32, lr=3e-3, device="cpu")


def small_model(seed: int = 0) -> ReverseHourglass:
    torch.manual_seed(seed)
    return ReverseHourglass(4, [8, 16, 8])


def mean_psnr(model, degraded, clean) -> float:
    return float(np.mean(psnr_batch(denoise_array(model, degraded), clean)))


def test_supervised_training_raises_validation_psnr_and_keeps_the_best_epoch(train_pairs, val_pairs):
    result = train(small_model(), TrainConfig(mode="supervised", **QUICK), train_data=train_pairs,
                   val_data=val_pairs, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.best_val_psnr > result.noisy_val_psnr + 3.0
    assert result.best_val_psnr == max(h["val_psnr"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_psnr"] == result.best_val_psnr
    # the returned model carries the best epoch's weights
    assert mean_psnr(result.model, *val_pairs) == pytest.approx(result.best_val_psnr, abs=1e-3)


def test_noise2noise_improves_psnr_without_any_clean_image_in_the_call(val_pairs):
    repeats, _clean_kept_out = make_repeats(4, 4, 64, seed=7)
    # no clean image goes in: not in train_data, and no validation set either
    result = train(small_model(), TrainConfig(mode="noise2noise", **QUICK), train_data=repeats,
                   val_data=None, progress=False)
    assert np.isnan(result.best_val_psnr) and result.best_epoch == 3
    degraded, clean = val_pairs
    noisy_psnr = float(np.mean(psnr_batch(degraded, clean)))
    assert mean_psnr(result.model, degraded, clean) > noisy_psnr + 3.0


def test_blind_spot_improves_psnr_from_single_noisy_images_only(val_pairs):
    noisy_only, _clean_kept_out = make_pairs(6, 64, seed=8)
    result = train(small_model(), TrainConfig(mode="blind-spot", **QUICK), train_data=noisy_only,
                   val_data=None, progress=False)
    degraded, clean = val_pairs
    noisy_psnr = float(np.mean(psnr_batch(degraded, clean)))
    assert mean_psnr(result.model, degraded, clean) > noisy_psnr + 2.0
    assert result.model.residual is False  # the noisy centre pixel must not pass straight through


@pytest.mark.parametrize("mode", ["noise2noise", "blind-spot"])
def test_self_supervised_modes_refuse_a_clean_image(mode, train_pairs):
    with pytest.raises(ValueError, match="never uses a clean image"):
        prepare_training_arrays(mode, train_pairs)


def test_train_signature_has_no_other_door_for_clean_data():
    params = inspect.signature(train).parameters
    # `synthetic` is the condition's *simulated* stream mixed in against forgetting (stemreg adapt): the
    # lab's own data still come in only through train_data, never with a clean image
    assert list(params) == ["model", "config", "train_data", "val_data", "on_epoch", "checkpoint_dir", "progress",
                            "synthetic", "synthetic_fraction"]


def test_noise2noise_target_is_the_mean_of_the_other_repeats():
    repeats, _ = make_repeats(1, 3, 16, seed=2)
    inputs, targets = prepare_training_arrays("noise2noise", repeats)
    k = repeats.shape[1]
    for i in range(k):
        others = np.delete(repeats[0], i, axis=0).mean(axis=0)
        scale = repeats[0, i].std(dtype=np.float64)
        offset = repeats[0, i].mean(dtype=np.float64)
        np.testing.assert_allclose(targets[i], (others - offset) / scale, rtol=1e-4, atol=1e-4)
        assert not np.allclose(targets[i], inputs[i])


def test_noise2noise_needs_at_least_two_repeats():
    with pytest.raises(ValueError, match="k >= 2"):
        prepare_training_arrays("noise2noise", np.zeros((2, 1, 16, 16), np.float32))


def test_blind_spot_mask_replaces_only_masked_pixels_with_a_neighbour():
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(4, 16, 16)).astype(np.float32)
    masked, mask = blind_spot_mask(patches, fraction=0.05, radius_px=2, rng=rng)
    assert mask.sum() == 4 * round(0.05 * 256)
    unchanged = mask == 0
    np.testing.assert_array_equal(masked[unchanged], patches[unchanged])
    for b, y, x in zip(*np.nonzero(mask)):
        window = patches[b, max(0, y - 2):y + 3, max(0, x - 2):x + 3]
        assert masked[b, y, x] != patches[b, y, x]  # continuous noise: a copy from elsewhere
        assert np.any(np.isclose(window, masked[b, y, x]))


def test_structured_blind_spot_masks_the_neighbours_along_x_from_another_row():
    rng = np.random.default_rng(1)
    patches = rng.normal(size=(2, 16, 16)).astype(np.float32)
    masked, mask = blind_spot_mask(patches, fraction=0.02, radius_px=2, rng=rng, struct_px=2)
    for b, y, x in zip(*np.nonzero(mask)):
        for d in range(-2, 3):  # the centre and two neighbours either side along x: all replaced
            if 0 <= x + d < 16:
                assert masked[b, y, x + d] != patches[b, y, x + d]
        # ... by values of one other row (scan lines' noise is independent), never of row y itself
        assert not np.any(np.isclose(patches[b, y], masked[b, y, x]))


def test_on_epoch_returning_true_stops_training_and_keeps_the_best(train_pairs, val_pairs):
    config = TrainConfig(mode="supervised", epochs=4, steps_per_epoch=2, batch_size=4, patch_px=24, device="cpu")
    result = train(small_model(), config, train_data=train_pairs, val_data=val_pairs,
                   on_epoch=lambda epoch, metrics: epoch == 2, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.best_epoch in (1, 2)


def test_same_seed_same_result_on_cpu(train_pairs, val_pairs):
    config = TrainConfig(mode="supervised", epochs=1, steps_per_epoch=5, batch_size=4, patch_px=24, device="cpu")
    runs = [train(small_model(), config, train_data=train_pairs, val_data=val_pairs, progress=False)
            for _ in range(2)]
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]
    for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values()):
        assert torch.equal(a, b)
    other = train(small_model(), config.model_copy(update={"seed": 1}), train_data=train_pairs,
                  val_data=val_pairs, progress=False)
    assert other.history[0]["train_loss"] != runs[0].history[0]["train_loss"]


def test_on_epoch_sees_each_epoch_and_its_exception_stops_training(train_pairs, val_pairs, tmp_path):
    seen = []

    class Pruned(Exception):
        pass

    def on_epoch(epoch, metrics):
        seen.append((epoch, metrics))
        if epoch == 2:
            raise Pruned

    config = TrainConfig(mode="supervised", epochs=5, steps_per_epoch=3, batch_size=4, patch_px=24, device="cpu")
    with pytest.raises(Pruned):
        train(small_model(), config, train_data=train_pairs, val_data=val_pairs, on_epoch=on_epoch,
              checkpoint_dir=tmp_path, progress=False)
    assert [e for e, _ in seen] == [1, 2]
    assert {"train_loss", "val_psnr", "val_ssim"} <= set(seen[0][1])
    assert all(np.isfinite(m["val_psnr"]) and np.isfinite(m["train_loss"]) for _, m in seen)
    # the pruned epoch's checkpoint was still written before the callback ran
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_001.pt", "epoch_002.pt"]


def test_checkpoints_are_state_dicts_and_best_matches_the_result(train_pairs, val_pairs, tmp_path):
    config = TrainConfig(mode="supervised", epochs=2, steps_per_epoch=4, batch_size=4, patch_px=24, device="cpu")
    result = train(small_model(), config, train_data=train_pairs, val_data=val_pairs, checkpoint_dir=tmp_path,
                   progress=False)
    assert (tmp_path / "epoch_001.pt").is_file() and (tmp_path / "epoch_002.pt").is_file()
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    for key, value in result.model.state_dict().items():
        assert torch.equal(best[key], value.cpu())
    fresh = small_model(seed=5)
    fresh.load_state_dict(torch.load(tmp_path / f"epoch_{result.best_epoch:03d}.pt", weights_only=True))


def test_bad_configs_and_data_are_refused(train_pairs, val_pairs):
    with pytest.raises(ValidationError):
        TrainConfig(learning_rate=1e-3)
    with pytest.raises(ValidationError):
        TrainConfig(mode="self-taught")
    with pytest.raises(ValueError, match="patch_px"):
        train(small_model(), TrainConfig(patch_px=128, device="cpu"), train_data=train_pairs, val_data=val_pairs,
              progress=False)
    with pytest.raises(ValueError, match="differ in shape"):
        train(small_model(), TrainConfig(device="cpu"), train_data=(train_pairs[0], train_pairs[1][:2]),
              val_data=val_pairs, progress=False)


def test_pick_device_resolves_auto_and_refuses_nonsense():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="accepted"):
        pick_device("gpu-please")


def test_held_out_noise2noise_loss_picks_the_epoch_and_its_excess_tracks_the_true_error(one_torch_thread):
    train_repeats, _ = make_repeats(4, 4, 64, seed=11)
    held_out, clean_kept_out = make_repeats(2, 4, 64, seed=12)
    result = train(small_model(), TrainConfig(mode="noise2noise", **QUICK), train_data=train_repeats,
                   val_data=held_out, progress=False)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_val_loss == min(losses) and losses[result.best_epoch - 1] == result.best_val_loss
    assert np.isnan(result.best_val_psnr)  # nothing claims a PSNR without a clean image
    # loss = error against the unseen clean field + the noise floor (noise2noise's promise)
    frames = held_out.reshape(-1, 64, 64)
    pred = denoise_array(result.model, frames)
    scale = frames.std(axis=(1, 2))[:, None, None]
    true_error = float(np.mean(((pred - np.repeat(clean_kept_out, 4, axis=0)) / scale) ** 2))
    excess = result.best_val_loss - result.val_noise_floor
    assert excess == pytest.approx(true_error, rel=0.25)


def test_held_out_blind_spot_loss_is_logged_per_epoch(one_torch_thread):
    noisy_only, _ = make_pairs(4, 64, seed=13)
    held_out, _ = make_pairs(2, 64, seed=14)
    seen = []
    result = train(small_model(), TrainConfig(mode="blind-spot", **QUICK), train_data=noisy_only,
                   val_data=held_out, on_epoch=lambda e, m: seen.append(m["val_loss"]), progress=False)
    assert len(seen) == 3 and all(np.isfinite(seen))
    assert result.best_val_loss == min(seen)
    assert seen[-1] < seen[0]  # training lowers the held-out masked-pixel loss
