"""Floating-point operations per input pixel of a convolutional denoiser.

Counted as 2 FLOP per multiply-accumulate of every Conv2d, ConvTranspose2d
and Linear layer (bias adds, activations and pooling are left out: they are
a few per cent at most). Counted by running the network once on a probe
image with forward hooks, so any conv net works, down-sampling or not, and
the figure is divided by the probe's pixel count.

The default reverse hourglass (depth 8, widths 8-16-32-64-32-16-8, 3x3)
costs 2 * 9 * (1*8 + 8*16 + 16*32 + 32*64 + 64*32 + 32*16 + 16*8 + 8*1)
= 97,056 FLOP per pixel.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def flops_per_pixel(arch_or_model: dict[str, Any] | nn.Module, *, probe_px: int = 64) -> float:
    """FLOPs of one forward pass per input pixel.

    Parameters
    ----------
    arch_or_model : dict or torch.nn.Module
        An architecture dict (built with ``build_model``) or a module taking
        ``(B, 1, H, W)``.
    probe_px : int
        Edge of the square probe image; a multiple of the model's
        down-sampling factor (64 suits every built-in kind).

    Returns
    -------
    float
        FLOP per pixel (2 per multiply-accumulate).
    """
    if isinstance(arch_or_model, dict):
        from stemreg.models.architectures import build_model

        model = build_model(arch_or_model)
    elif isinstance(arch_or_model, nn.Module):
        model = arch_or_model
    else:
        raise ValueError(f"flops_per_pixel takes an architecture dict or a torch module, "
                         f"got {type(arch_or_model).__name__}")
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            # each input element scatters into kh*kw*out/groups outputs
            k = module.kernel_size[0] * module.kernel_size[1]
            total += 2 * inputs[0].numel() * k * module.out_channels // module.groups
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += 2 * output.numel() * k * module.in_channels // module.groups
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(conv_hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 1, probe_px, probe_px, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total / float(probe_px * probe_px)
