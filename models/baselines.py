"""CNN baselines the reverse hourglass is compared with.

- :class:`StemAutoencoder`: a convolutional denoising autoencoder after
  Gambini et al. (Mach. Learn.: Sci. Technol. 4, 2023): an encoder that
  down-samples with strided convolutions and a decoder that up-samples back,
  no skip connections, predicting the clean image directly. The paper gives
  no code; this follows its description (conv encoder / decoder, ReLU,
  a few down-sampling stages, trained on simulated low-dose STEM).
- :class:`DnCNN`: the plain residual CNN SDnDTI (Tian et al., NeuroImage 253,
  2022) builds on: ``depth`` 3x3 conv layers, batch norm + ReLU in the
  middle, the network predicts the noise and the output is ``x - noise``.
  How it is *trained* (noise2noise on repeated acquisitions, blind-spot) is
  up to :func:`stemreg.models.train`; the architecture does not care.

Both are plain ``torch.nn.Module`` s taking ``(N, 1, H, W)`` and returning
the same shape, with ``from_config(dict)`` / ``config() -> dict`` so that
:func:`stemreg.models.build_model` can rebuild them from a JSON-able
architecture (kinds ``"autoencoder"`` and ``"dncnn"``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["StemAutoencoder", "DnCNN"]


def _check_keys(config: dict[str, Any], kind: str, accepted: set[str]) -> dict[str, Any]:
    """Refuse unknown keys and a wrong kind, saying what is accepted."""
    config = dict(config)
    given_kind = config.pop("kind", kind)
    if given_kind != kind:
        raise ValueError(f"architecture kind {given_kind!r} given to the {kind!r} builder; expected kind {kind!r}")
    unknown = set(config) - accepted
    if unknown:
        raise ValueError(
            f"unknown {kind} architecture keys {sorted(unknown)}; accepted: {sorted(accepted | {'kind'})}"
        )
    return config


class StemAutoencoder(nn.Module):
    """Convolutional denoising autoencoder (encoder down-samples, decoder up-samples).

    Parameters
    ----------
    base_width
        Filters in the first encoder stage; each down-sampling stage doubles them.
    levels
        Number of down-sampling (stride-2) stages; the image is shrunk by ``2**levels``.
    kernel_size
        Odd convolution kernel size.

    Notes
    -----
    Inputs whose sides are not multiples of ``2**levels`` are reflect-padded
    and the output cropped back, so any image size works (tiling included).
    """

    kind = "autoencoder"

    def __init__(self, base_width: int = 32, levels: int = 2, *, kernel_size: int = 3) -> None:
        super().__init__()
        if base_width < 1 or levels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"autoencoder needs base_width >= 1, levels >= 1 and an odd kernel_size; "
                f"got base_width={base_width}, levels={levels}, kernel_size={kernel_size}"
            )
        self.base_width = int(base_width)
        self.levels = int(levels)
        self.kernel_size = int(kernel_size)
        pad = kernel_size // 2
        widths = [base_width * 2**i for i in range(levels + 1)]

        encoder: list[nn.Module] = [nn.Conv2d(1, widths[0], kernel_size, padding=pad), nn.ReLU(inplace=True)]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            encoder += [
                nn.Conv2d(w_in, w_out, kernel_size, stride=2, padding=pad),
                nn.ReLU(inplace=True),
                nn.Conv2d(w_out, w_out, kernel_size, padding=pad),
                nn.ReLU(inplace=True),
            ]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = []
        for w_in, w_out in zip(widths[:0:-1], widths[-2::-1]):
            decoder += [
                nn.ConvTranspose2d(w_in, w_out, kernel_size=2, stride=2),
                nn.ReLU(inplace=True),
                nn.Conv2d(w_out, w_out, kernel_size, padding=pad),
                nn.ReLU(inplace=True),
            ]
        decoder.append(nn.Conv2d(widths[0], 1, kernel_size, padding=pad))
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise a ``(N, 1, H, W)`` batch; returns the same shape."""
        height, width = x.shape[-2:]
        factor = 2**self.levels
        pad_h, pad_w = (-height) % factor, (-width) % factor
        if pad_h or pad_w:
            # reflect needs pad < size; replicate covers the tiny-image case
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        y = self.decoder(self.encoder(x))
        return y[..., :height, :width]

    def config(self) -> dict[str, Any]:
        """The JSON-able architecture this module was built from."""
        return {"kind": self.kind, "base_width": self.base_width, "levels": self.levels,
                "kernel_size": self.kernel_size}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "StemAutoencoder":
        """Build from ``{"kind": "autoencoder", "base_width", "levels", "kernel_size"}`` (all optional)."""
        return cls(**_check_keys(config, cls.kind, {"base_width", "levels", "kernel_size"}))


class DnCNN(nn.Module):
    """Plain residual CNN (DnCNN; the network SDnDTI trains self-supervised).

    Parameters
    ----------
    depth
        Number of conv layers (first: conv + ReLU, middle: conv + BN + ReLU, last: conv).
    width
        Filters in every hidden layer.
    kernel_size
        Odd convolution kernel size.
    batch_norm
        Batch norm in the middle layers, as in DnCNN and SDnDTI.

    Notes
    -----
    Residual learning: the body estimates the noise, the output is ``x - body(x)``.
    """

    kind = "dncnn"

    def __init__(self, depth: int = 10, width: int = 48, *, kernel_size: int = 3, batch_norm: bool = True) -> None:
        super().__init__()
        if depth < 2 or width < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"DnCNN needs depth >= 2, width >= 1 and an odd kernel_size; "
                f"got depth={depth}, width={width}, kernel_size={kernel_size}"
            )
        self.depth = int(depth)
        self.width = int(width)
        self.kernel_size = int(kernel_size)
        self.batch_norm = bool(batch_norm)
        pad = kernel_size // 2
        layers: list[nn.Module] = [nn.Conv2d(1, width, kernel_size, padding=pad), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(width, width, kernel_size, padding=pad, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(width, 1, kernel_size, padding=pad))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise a ``(N, 1, H, W)`` batch; returns the same shape."""
        return x - self.body(x)

    def config(self) -> dict[str, Any]:
        """The JSON-able architecture this module was built from."""
        return {"kind": self.kind, "depth": self.depth, "width": self.width,
                "kernel_size": self.kernel_size, "batch_norm": self.batch_norm}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DnCNN":
        """Build from ``{"kind": "dncnn", "depth", "width", "kernel_size", "batch_norm"}`` (all optional)."""
        return cls(**_check_keys(config, cls.kind, {"depth", "width", "kernel_size", "batch_norm"}))
