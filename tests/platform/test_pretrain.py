"""The pretrained base: the command that makes it, its card, and loading it safely."""
from __future__ import annotations

import json

import pytest

from stemreg.models import pretrained
from stemreg.platform.pretrain import pretrain_base

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pretrain_writes_weights_and_a_card_that_load_back_and_catch_tampering(tmp_path):
    card = pretrain_base("low-dose", steps=4, steps_per_epoch=2, batch_size=2, patch_px=64, n_fields=3, n_val=2,
                         name="tiny-base", directory=tmp_path, progress=False)
    assert card["training"]["steps"] == 4 and card["condition"]["name"] == "low-dose"
    assert card["condition"]["pixel_size_pm"] == [4.0, 64.0]
    assert card["architecture"]["levels"] == 4 and card["receptive_radius_px"] > 100
    bench = card["benchmark"]
    assert set(bench["model_psnr_by_bin"]) == set(bench["noisy_psnr_by_bin"])
    assert "seed:8pm@1x" in bench["model_psnr_by_bin"] and len(bench["model_psnr_by_bin"]) == 13
    model, loaded = pretrained.load_pretrained("tiny-base", tmp_path)
    assert loaded["weights_sha256"] == card["weights_sha256"]
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]

    weights = pretrained.weights_path("tiny-base", tmp_path)
    weights.write_bytes(weights.read_bytes()[:-100])  # a damaged file
    with pytest.raises(ValueError, match="does not match its card"):
        pretrained.load_pretrained("tiny-base", tmp_path)
    with pytest.raises(pretrained.PretrainedMissingError, match="stemreg pretrain"):
        pretrained.load_pretrained("no-such", tmp_path)


@pytest.mark.skipif(not pretrained.available(), reason="no pretrained base in this checkout")
def test_the_shipped_base_has_a_card_made_by_the_committed_command():
    card = pretrained.load_card()
    assert card["command"].startswith("stemreg pretrain --condition low-dose")
    assert card["training"]["steps"] >= 1000
    assert card["benchmark"]["benchmark_id"] and card["commit"] != "unknown"
    assert pretrained.weights_path().stat().st_size < 8 * 2**20  # a few MB
    model, _ = pretrained.load_pretrained()
    assert json.loads(json.dumps(card["architecture"])) == model.config()
