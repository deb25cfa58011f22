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
    def from_config(cls, arch: dict[str, Any]) -> "nn.Module":
        """Build from an architecture dict (see :meth:`config`).

        The plain net: ``kind``, ``depth``, ``widths``, ``base_width``, ``growth``, ``kernel_size``,
        ``residual``. With ``levels`` > 1 or ``unshuffle`` > 1 the multi-scale member of the family
        (:class:`ScaledReverseHourglass`): ``levels``, ``widths`` (one per level), ``convs_per_level``,
        ``unshuffle``, ``dilation``, ``kernel_size``, ``residual``. Anything else is refused.
        """
        if arch.get("kind", KIND) != KIND:
            raise ValueError(f"architecture kind {arch.get('kind')!r} is not {KIND!r}")
        if arch.get("levels", 1) != 1 or arch.get("unshuffle", 1) != 1:
            return ScaledReverseHourglass.from_config(arch)
        allowed = {"kind", "depth", "widths", "base_width", "growth", "kernel_size", "residual", "levels",
                   "unshuffle"}
        unknown = sorted(set(arch) - allowed)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in a plain {KIND} architecture; accepted: {sorted(allowed)}")
        kwargs = {k: arch[k] for k in ("base_width", "growth", "kernel_size", "residual") if k in arch}
        return cls(depth=arch.get("depth", 8), widths=arch.get("widths"), **kwargs)


def _positive_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high} (got {value!r})")
    return value


class ScaledReverseHourglass(nn.Module):
    """The reverse hourglass that sees whole unit cells: filters grow as the resolution shrinks.

    ``x -> pixel-unshuffle by r -> level 0 (widths[0]) -> stride-2 down -> level 1 (widths[1]) ...
    -> the deepest, widest level (optionally dilated) -> up (transposed conv) + additive skip ->
    ... -> level 0 -> pixel-shuffle -> + x``. The widths grow towards the middle of the network
    and shrink back, as in the seed's net, while each level down halves the resolution, so the
    receptive field grows geometrically at little cost per pixel: three levels after an unshuffle
    by 2 see about 150 px for ~30 kFLOP per pixel (the plain 8-layer net: 17 px for 97 kFLOP).

    Parameters
    ----------
    widths : list of int
        Filters per level, growing (``widths[i] <= widths[i + 1]``); ``len(widths)`` levels.
    convs_per_level : int
        3x3 (``kernel_size``) convolutions at each level on the way down and on the way up.
    unshuffle : int
        Space-to-depth factor of the input (1, 2 or 4) and depth-to-space of the output.
    dilation : int
        Dilation of the deepest level's convolutions (more field of view at the same cost).
    residual : bool
        ``output = input + net(input)``; the last layer starts at ~0, so training starts from the
        identity.
    """

    kind = KIND

    def __init__(self, widths: Sequence[int] = (24, 48, 96), *, convs_per_level: int = 2, unshuffle: int = 2,
                 dilation: int = 1, kernel_size: int = 3, residual: bool = True) -> None:
        super().__init__()
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not 1 <= len(widths) <= 5:
            raise ValueError(f"widths must list 1 to 5 per-level widths (got {widths!r})")
        widths = [_positive_int("every width", w, 1, MAX_WIDTH) for w in widths]
        if any(a > b for a, b in zip(widths, widths[1:])):
            raise ValueError(f"widths must grow towards the deepest level (got {widths})")
        self.widths = widths
        self.levels = len(widths)
        self.convs_per_level = _positive_int("convs_per_level", convs_per_level, 1, 8)
        if unshuffle not in (1, 2, 4) or isinstance(unshuffle, bool):
            raise ValueError(f"unshuffle must be 1, 2 or 4 (got {unshuffle!r})")
        self.unshuffle = unshuffle
        self.dilation = _positive_int("dilation", dilation, 1, 8)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
                or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer (got {kernel_size!r})")
        if not isinstance(residual, bool):
            raise ValueError(f"residual must be true or false (got {residual!r})")
        self.kernel_size, self.residual = kernel_size, residual
        r2, k = unshuffle * unshuffle, kernel_size

        def block(width: int, dilation: int = 1) -> nn.Sequential:
            layers: list[nn.Module] = []
            for _ in range(self.convs_per_level):
                layers += [nn.Conv2d(width, width, k, padding=dilation * (k // 2), dilation=dilation),
                           nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        deepest = self.levels - 1
        self.head = nn.Sequential(nn.Conv2d(r2, widths[0], k, padding=k // 2), nn.ReLU(inplace=True))
        self.down_blocks = nn.ModuleList(block(w, self.dilation if i == deepest else 1) for i, w in enumerate(widths))
        self.downs = nn.ModuleList(nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2), nn.ReLU(inplace=True))
                                   for i in range(deepest))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(deepest))
        self.up_blocks = nn.ModuleList(block(widths[i]) for i in range(deepest))
        self.tail = nn.Conv2d(widths[0], r2, k, padding=k // 2)
        # The correction starts near zero: the untrained model is ~ the identity.
        nn.init.normal_(self.tail.weight, std=1e-3)
        nn.init.zeros_(self.tail.bias)

    @property
    def size_multiple(self) -> int:
        """Inputs are padded to a multiple of this (unshuffle x 2 per level down)."""
        return self.unshuffle * 2 ** (self.levels - 1)

    @property
    def depth(self) -> int:
        """Convolution layers on the longest path."""
        return 2 + self.convs_per_level * (2 * self.levels - 1) + 2 * (self.levels - 1)

    @property
    def receptive_radius_px(self) -> int:
        """Input pixels each side that can influence one output pixel (an upper bound)."""
        r, half = self.unshuffle, self.kernel_size // 2
        radius = 2 * (r - 1) + 2 * half * r  # unshuffle/shuffle, head and tail
        for level in range(self.levels):
            scale = r * 2 ** level
            dilation = self.dilation if level == self.levels - 1 else 1
            passes = 1 if level == self.levels - 1 else 2  # down and up, the deepest once
            radius += passes * self.convs_per_level * half * dilation * scale
            if level < self.levels - 1:
                radius += 2 * scale  # the 2x2 stride-2 down and its transposed up
        return radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        h = self.head(h)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h)
            if i < self.levels - 1:
                skips.append(h)
                h = self.downs[i](h)
        for i in reversed(range(self.levels - 1)):
            h = self.up_blocks[i](self.ups[i](h) + skips[i])
        h = self.tail(h)
        h = nn.functional.pixel_shuffle(h, self.unshuffle) if self.unshuffle > 1 else h
        return x + h if self.residual else h

    def config(self) -> dict[str, Any]:
        """JSON-able architecture dict that :meth:`from_config` rebuilds."""
        return {"kind": KIND, "levels": self.levels, "widths": list(self.widths),
                "convs_per_level": self.convs_per_level, "unshuffle": self.unshuffle, "dilation": self.dilation,
                "kernel_size": self.kernel_size, "residual": self.residual}

    @classmethod
    def from_config(cls, arch: dict[str, Any]) -> "ScaledReverseHourglass":
        """Build from an architecture dict (see :meth:`config`); unknown keys are refused."""
        allowed = {"kind", "levels", "widths", "convs_per_level", "unshuffle", "dilation", "kernel_size", "residual"}
        unknown = sorted(set(arch) - allowed)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in a multi-scale {KIND} architecture; "
                             f"accepted: {sorted(allowed)}")
        widths = arch.get("widths", [24, 48, 96])
        if "levels" in arch and (not isinstance(widths, Sequence) or arch["levels"] != len(widths)):
            raise ValueError(f"levels ({arch['levels']!r}) must equal the number of widths ({widths!r})")
        kwargs = {k: arch[k] for k in ("convs_per_level", "unshuffle", "dilation", "kernel_size", "residual")
                  if k in arch}
        return cls(widths, **kwargs)
