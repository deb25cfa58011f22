"""Figures per benchmark bin: sampling x dose heat maps of the PSNR gain over the noisy input.

One map per method (rows: column spacing in px, the sampling; columns: dose scale; colour and the
number in each cell: the PSNR gain over the noisy input in dB), the seed's bin beside it; and one
figure comparing the hourglass rows against BM3D bin by bin (gain difference).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from stemreg.platform.evaluation.leaderboard import Leaderboard, grid_bin
from stemreg.platform.evaluation.methods import NOISY

HOURGLASS_ROWS = ("hourglass", "hourglass-family")
REFERENCE = "bm3d"


def _grid(board: Leaderboard, values: dict[str, float]) -> tuple[list[float], list[float], np.ndarray]:
    """(spacings, doses, matrix spacing x dose) of the sampling x dose bins of ``values``."""
    cells = {grid_bin(b): v for b, v in values.items() if grid_bin(b) is not None}
    spacings = sorted({s for s, _ in cells})
    doses = sorted({d for _, d in cells})
    matrix = np.full((len(spacings), len(doses)), np.nan)
    for (s, d), v in cells.items():
        matrix[spacings.index(s), doses.index(d)] = v
    return spacings, doses, matrix


def _seed_bins(values: dict[str, float]) -> dict[str, float]:
    return {b: v for b, v in values.items() if grid_bin(b) is None}


def _label(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:+.2f}"


def _draw(fig, grid_spec, values: dict[str, float], *, title: str, cmap: str, limits: tuple[float, float],
          board: Leaderboard) -> None:
    spacings, doses, matrix = _grid(board, values)
    seeds = _seed_bins(values)
    ax = fig.add_subplot(grid_spec[0])
    panel = [ax]
    image = ax.imshow(matrix, cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto")
    ax.set_xticks(range(len(doses)), [f"{d:g}x" for d in doses])
    ax.set_yticks(range(len(spacings)), [f"{s:g} px" for s in spacings])
    ax.set_xlabel("dose (x the condition's)")
    ax.set_ylabel("column spacing (sampling)")
    ax.set_title(title, fontsize=9)
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, _label(v), ha="center", va="center", fontsize=8, color=_ink(v, limits, cmap))
    if seeds:
        side = fig.add_subplot(grid_spec[1])
        panel.append(side)
        row = np.array([list(seeds.values())])
        side.imshow(row, cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto")
        side.set_xticks(range(len(seeds)), [f"seed point\n{b.removeprefix('seed:')}" for b in seeds], fontsize=8)
        side.set_yticks([])
        for j, v in enumerate(seeds.values()):
            side.text(j, 0, _label(v), ha="center", va="center", fontsize=8, color=_ink(v, limits, cmap))
    fig.colorbar(image, ax=panel, shrink=0.85, pad=0.04, label="dB")


def _ink(value: float, limits: tuple[float, float], cmap: str = "RdBu") -> str:
    """Black on light cells, white on dark ones (viridis is dark at its low end only, RdBu at both)."""
    if not math.isfinite(value):
        return "black"
    low, high = limits
    share = (value - low) / (high - low) if high > low else 0.5
    if cmap == "viridis":
        return "white" if share < 0.45 else "black"
    return "white" if share < 0.2 or share > 0.8 else "black"


def _figure(n_panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(5.6 * n_panels, 4.0))
    outer = fig.add_gridspec(1, n_panels, wspace=0.45)
    specs = [outer[k].subgridspec(1, 2, width_ratios=[5, 1.2], wspace=0.1) for k in range(n_panels)]
    return plt, fig, specs


def gain_heatmap(board: Leaderboard, method: str, path: Path) -> Path:
    """One method's PSNR gain over the noisy input per sampling x dose bin, the seed's bin beside it."""
    per_bin = board.per_bin()
    gains = {b: v["psnr_gain_db"] for b, v in per_bin[method].items()}
    finite = [v for m, rows in per_bin.items() if m != NOISY for v in
              (r["psnr_gain_db"] for r in rows.values()) if math.isfinite(v)]
    limits = (min(0.0, min(finite, default=0.0)), max(1.0, max(finite, default=1.0)))  # one scale for all methods
    plt, fig, specs = _figure(1)
    _draw(fig, specs[0], gains, title=f"{method}: PSNR gain over noisy (dB)\n{board.condition}, "
                                      f"{board.benchmark_id}", cmap="viridis", limits=limits, board=board)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def hourglass_vs_bm3d(board: Leaderboard, path: Path) -> Path | None:
    """Gain difference per bin, hourglass row(s) minus BM3D (dB; > 0: the hourglass is better); None
    when the board lacks BM3D or every hourglass row."""
    per_bin = board.per_bin()
    rows = [m for m in HOURGLASS_ROWS if m in per_bin]
    if REFERENCE not in per_bin or not rows:
        return None
    diffs = {m: {b: per_bin[m][b]["psnr"] - per_bin[REFERENCE][b]["psnr"] for b in board.bins} for m in rows}
    span = max([abs(v) for d in diffs.values() for v in d.values() if math.isfinite(v)], default=1.0)
    span = max(span, 0.5)
    plt, fig, specs = _figure(len(rows))
    for spec, method in zip(specs, rows):
        _draw(fig, spec, diffs[method], title=f"{method} minus BM3D (oracle noise model): PSNR, dB",
              cmap="RdBu", limits=(-span, span), board=board)
    fig.suptitle(f"{board.condition}: where the CNN beats BM3D (blue) and where it does not (red)",
                 fontsize=10, y=1.02)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
