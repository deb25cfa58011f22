"""The reverse hourglass, the architecture table, FLOPs, and the layering of stemreg.models."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from stemreg.models import ReverseHourglass, architecture_of, build_model, flops_per_pixel


def conv_widths(model: torch.nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_default_is_eight_convolutions_growing_to_the_middle_then_shrinking():
    widths = conv_widths(ReverseHourglass())[:-1]  # the last conv maps back to 1 channel
    assert len(conv_widths(ReverseHourglass())) == 8
    middle = int(np.argmax(widths))
    assert 0 < middle < len(widths) - 1
    assert all(a < b for a, b in zip(widths[:middle], widths[1:middle + 1]))
    assert all(a > b for a, b in zip(widths[middle:-1], widths[middle + 1:]))


@pytest.mark.parametrize("depth", [4, 5, 10])
def test_other_depths_keep_the_hourglass_profile(depth):
    widths = ReverseHourglass(depth).widths
    assert len(widths) == depth - 1
    assert widths == widths[::-1]
    assert max(widths) > widths[0]


@pytest.mark.parametrize("shape", [(1, 1, 17, 33), (2, 1, 64, 40), (1, 1, 5, 5)])
def test_any_image_size_comes_out_the_same_size(shape):
    model = ReverseHourglass()
    with torch.no_grad():
        assert model(torch.rand(shape)).shape == shape


def test_untrained_model_starts_near_the_identity():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ReverseHourglass()(x), x, atol=0.05)


def test_architecture_round_trips_through_json_with_the_same_weights_shape():
    model = ReverseHourglass(6, [4, 8, 12, 8, 4])
    arch = architecture_of(model)
    import json

    rebuilt = build_model(json.loads(json.dumps(arch)))
    assert architecture_of(rebuilt) == arch
    rebuilt.load_state_dict(model.state_dict())  # same parameter shapes, strict


@pytest.mark.parametrize("arch, needle", [
    ({"kind": "unet"}, "reverse-hourglass"),
    ({"depth": 8}, "kind"),
    ({"kind": "reverse-hourglass", "depth": 4, "widths": [8, 8]}, "3 hidden widths"),
    ({"kind": "reverse-hourglass", "depth": 3, "widths": [8, 0]}, "integer in 1.."),
    ({"kind": "reverse-hourglass", "depth": 3, "widths": [8, 2.5]}, "integer"),
    ({"kind": "reverse-hourglass", "depth": 1}, "depth"),
    ({"kind": "reverse-hourglass", "kernel_size": 4}, "odd"),
    ({"kind": "reverse-hourglass", "dropout": 0.1}, "accepted"),
])
def test_bad_architectures_are_refused_naming_what_is_accepted(arch, needle):
    with pytest.raises(ValueError, match=needle):
        build_model(arch)


def test_flops_per_pixel_matches_the_hand_count_and_grows_with_width():
    arch = {"kind": "reverse-hourglass", "depth": 4, "widths": [2, 3, 2], "kernel_size": 3}
    by_hand = 2 * 9 * (1 * 2 + 2 * 3 + 3 * 2 + 2 * 1)
    assert flops_per_pixel(arch) == pytest.approx(by_hand)
    assert flops_per_pixel(ReverseHourglass(4, [2, 3, 2])) == pytest.approx(by_hand)
    assert flops_per_pixel({"kind": "reverse-hourglass", "base_width": 16}) > flops_per_pixel(
        {"kind": "reverse-hourglass"})


def test_flops_count_strided_and_transposed_convolutions_per_input_pixel():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1),
                              torch.nn.ConvTranspose2d(4, 1, 2, stride=2))
    # conv: output has 1/4 of the pixels, 4 channels x 9 MACs; transposed: 4 inputs x 4 taps per input pixel/4
    expected = 2 * (4 * 9 / 4) + 2 * (4 * 4 / 4)
    assert flops_per_pixel(net) == pytest.approx(expected)


def test_models_layer_imports_neither_acquisition_tuning_nor_platform():
    package = Path(__file__).resolve().parents[2] / "models"
    forbidden = ("stemreg.acquisition", "stemreg.tuning", "stemreg.platform")
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(forbidden), f"{source.name} imports {name}"


def test_blind_spot_architecture_has_no_residual_path():
    from stemreg.models import architecture_for_mode

    arch = {"kind": "reverse-hourglass", "depth": 4, "widths": [4, 8, 4]}
    model = build_model(architecture_for_mode(arch, "blind-spot"))
    assert architecture_of(model)["residual"] is False
    with torch.no_grad():
        x = torch.randn(1, 1, 16, 16)
        assert not torch.allclose(model(x), x, atol=0.05)  # no longer the identity at start
    assert architecture_for_mode(arch, "supervised") == arch
