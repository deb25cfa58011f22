"""The reverse-hourglass CNN: filters grow towards the middle and shrink again.

Unlike a U-Net or an autoencoder nothing is down-sampled: every layer keeps the
full image size, so fine atomic-column detail never has to survive a
bottleneck. The network predicts a correction that is added to its input
(residual output), which makes the untrained network start from the identity's
neighbourhood and trains faster on small data.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

KIND = "reverse-hourglass"

#: Default hidden widths for ``depth=8``: 8-16-32-64-32-16-8 filters.
#: About 97 kFLOP per pixel (see ``stemreg.models.flops``): a 1-megapixel image
#: is ~0.1 TFLOP, and a training step on 16 patches of 64x64 px is ~20 GFLOP
#: forward + backward, so several conditions train in minutes on 2 CPU cores.
DEFAULT_BASE_WIDTH = 8
DEFAULT_GROWTH = 2.0
MAX_WIDTH = 1024


def hourglass_widths(depth: int, *, base_width: int = DEFAULT_BASE_WIDTH,
                     growth: float = DEFAULT_GROWTH) -> list[int]:
    """Hidden widths (``depth - 1`` of them) that grow towards the middle and shrink.

    Parameters
    ----------
    depth : int
        Number of convolution layers (>= 2).
    base_width : int
        Filters of the first and last hidden layer.
    growth : float
        Factor between neighbouring layers on the way to the middle (>= 1).

    Returns
    -------
    list of int
        Symmetric width profile, e.g. ``[8, 16, 32, 64, 32, 16, 8]`` for depth 8.
    """
    if depth < 2:
        raise ValueError(f"depth must be an integer >= 2 (got {depth!r})")
    if base_width < 1:
        raise ValueError(f"base_width must be a positive integer (got {base_width!r})")
    if growth < 1.0:
        raise ValueError(f"growth must be >= 1.0 so filters grow towards the middle (got {growth!r})")
    n_hidden = depth - 1
    return [min(MAX_WIDTH, int(round(base_width * growth ** min(i, n_hidden - 1 - i))))
            for i in range(n_hidden)]


def validate_widths(widths: Sequence[Any], depth: int) -> list[int]:
    """Check a hidden-width list: ``depth - 1`` positive integers.

    Raises
    ------
    ValueError
        Saying what was wrong and what is accepted.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise ValueError(f"widths must be a list of {depth - 1} positive integers (got {widths!r})")
    if len(widths) != depth - 1:
        raise ValueError(
            f"widths must hold depth - 1 = {depth - 1} hidden widths for depth {depth} "
            f"(got {len(widths)}: {list(widths)!r})")
    out = []
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WIDTH:
            raise ValueError(
                f"every width must be an integer in 1..{MAX_WIDTH} (got {w!r} in {list(widths)!r})")
        out.append(int(w))
    return out


class ReverseHourglass(nn.Module):
    """Full-resolution residual CNN whose filter count grows then shrinks.

    Parameters
    ----------
    depth : int
        Number of 3x3 (``kernel_size``) convolution layers; 8 as in the seed.
    widths : list of int, optional
        The ``depth - 1`` hidden widths; overrides ``base_width``/``growth``.
    base_width, growth : int, float
        Build the widths with :func:`hourglass_widths`.
    kernel_size : int
        Odd convolution kernel size.
    residual : bool
        ``output = input + net(input)`` (default). Blind-spot training turns
        it off: a residual path hands the noisy centre pixel straight to the
        output, which a blind-spot network must not see.

    Notes
    -----
    Input and output are ``(B, 1, H, W)`` of any H, W (zero padding keeps the
    size).
    """

    kind = KIND

    def __init__(self, depth: int = 8, widths: Sequence[int] | None = None, *,
                 base_width: int = DEFAULT_BASE_WIDTH, growth: float = DEFAULT_GROWTH,
                 kernel_size: int = 3, residual: bool = True) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2 (got {depth!r})")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) \
                or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer (got {kernel_size!r})")
        if not isinstance(residual, bool):
            raise ValueError(f"residual must be true or false (got {residual!r})")
        self.depth = depth
        self.kernel_size = kernel_size
        self.residual = residual
        self.widths = (validate_widths(widths, depth) if widths is not None
                       else hourglass_widths(depth, base_width=base_width, growth=growth))
        channels = [1, *self.widths, 1]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv2d(channels[i], channels[i + 1], kernel_size, padding=kernel_size // 2))
            if i < depth - 1:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)
        # The correction starts near zero: the untrained model is ~ the identity.
        last = layers[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)

    @property
    def receptive_radius_px(self) -> int:
        """Pixels each side that influence one output pixel (tiling overlap needed)."""
        return self.depth * (self.kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x) if self.residual else self.net(x)

    def config(self) -> dict[str, Any]:
        """JSON-able architecture dict that :meth:`from_config` rebuilds."""
        return {"kind": KIND, "depth": self.depth, "widths": list(self.widths),
                "kernel_size": self.kernel_size, "residual": self.residual}

    @classmethod
    def from_config(cls, arch: dict[str, Any]) -> "ReverseHourglass":
        """Build from an architecture dict (see :meth:`config`).

        Accepted keys: ``kind``, ``depth``, ``widths``, ``base_width``,
        ``growth``, ``kernel_size``, ``residual``; anything else is refused.
        """
        allowed = {"kind", "depth", "widths", "base_width", "growth", "kernel_size", "residual"}
        unknown = sorted(set(arch) - allowed)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in a {KIND} architecture; accepted: {sorted(allowed)}")
        if arch.get("kind", KIND) != KIND:
            raise ValueError(f"architecture kind {arch.get('kind')!r} is not {KIND!r}")
        kwargs = {k: arch[k] for k in ("base_width", "growth", "kernel_size", "residual") if k in arch}
        return cls(depth=arch.get("depth", 8), widths=arch.get("widths"), **kwargs)
