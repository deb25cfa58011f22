"""The quality-latency front of a distillation search, as a plot for the study's parent run."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stemreg.tuning.result import StudyResult


def pareto(points: list[tuple[float, float, Any]]) -> list[Any]:
    """Keys of the points ``(psnr, ms, key)`` that no other point beats on both (higher PSNR, fewer ms)."""
    front = []
    for psnr, ms, key in points:
        if not any((p >= psnr and m <= ms) and (p > psnr or m < ms) for p, m, _ in points):
            front.append(key)
    return front


def front_figure(result: "StudyResult") -> Any:
    """Benchmark PSNR against ms per megapixel: every complete student, the front, the teacher, the
    0.5-dB band under it, and the students chosen as ``challenger`` (quality) and ``fast``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stemreg.tuning.result import PSNR_TOLERANCE_DB

    rows = [r for r in result.trials if r["state"] == "complete" and r["val_psnr"] is not None
            and r["ms_per_mpx"] is not None]
    front = set(pareto([(r["val_psnr"], r["ms_per_mpx"], r["trial"]) for r in rows]))
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    others = [r for r in rows if r["trial"] not in front]
    axes.scatter([r["ms_per_mpx"] for r in others], [r["val_psnr"] for r in others], c="0.6", label="student")
    on_front = sorted((r for r in rows if r["trial"] in front), key=lambda r: r["ms_per_mpx"])
    axes.plot([r["ms_per_mpx"] for r in on_front], [r["val_psnr"] for r in on_front], "o-", c="tab:red",
              label="Pareto front")
    for r in rows:
        axes.annotate(f"#{r['trial']}", (r["ms_per_mpx"], r["val_psnr"]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    if result.teacher_psnr is not None:
        axes.axhline(result.teacher_psnr - PSNR_TOLERANCE_DB, ls="--", c="tab:blue", lw=0.8,
                     label=f"teacher - {PSNR_TOLERANCE_DB} dB")
        if result.teacher_ms_per_mpx is not None:
            axes.scatter([result.teacher_ms_per_mpx], [result.teacher_psnr], marker="*", s=160, c="tab:blue",
                         label="teacher", zorder=3)
    for number, name in ((result.quality_trial, "challenger"), (result.fast_trial, "fast")):
        row = result.trial(number)
        if row is not None and row["ms_per_mpx"] is not None:
            axes.annotate(name, (row["ms_per_mpx"], row["val_psnr"]), xytext=(6, -12), textcoords="offset points",
                          fontsize=8, color="tab:green", weight="bold")
    axes.set_xscale("log")
    axes.set_xlabel("inference ms per megapixel (log)")
    axes.set_ylabel("benchmark PSNR (dB, mean over bins)")
    axes.set_title(f"students of {result.teacher_uri}", fontsize=9)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure
