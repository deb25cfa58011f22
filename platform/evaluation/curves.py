"""The converged budget's training curves: validation PSNR against steps, one line per method."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def curves_figure(progress: dict[str, Any], path: str | Path) -> Path:
    """Write a PNG of every method's validation PSNR per round, learning-rate drops marked.

    Parameters
    ----------
    progress
        :meth:`~stemreg.platform.evaluation.converged.ConvergedTraining.progress`'s output.
    path
        Where the PNG goes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for method, info in progress["methods"].items():
        history = info["history"]
        if not history:
            continue
        steps = [h["step"] for h in history]
        line, = ax.plot(steps, [h["val_psnr"] for h in history], marker=".", label=(
            f"{method} ({info['kflop_per_px']:g} kFLOP/px, {info['mode']}"
            f"{', converged' if info['converged'] else ''})"))
        for drop in info.get("lr_drops_at_steps", []):
            ax.axvline(drop, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("optimiser steps (same patches for every method)")
    ax.set_ylabel("validation PSNR (dB)")
    state = "all converged" if progress.get("all_converged") else "not converged yet"
    ax.set_title(f"{progress['condition']}: converged budget, {state}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
