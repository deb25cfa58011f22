"""Training on a lab's own noisy files: repeated frames (noise2noise) or single images (blind-spot).

No clean image is used at any point; the bottom rows of every frame are held
out for a self-supervised validation loss. The version is registered like any
other and tagged `training_data=lab-files`.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from stemreg.acquisition import ImageReadError
from stemreg.acquisition.frames import read_frames, read_noisy_images
from stemreg.models.architectures import build_model
from stemreg.models.inference import denoise_array
from stemreg.models.training import TrainConfig, train
from stemreg.platform.errors import BadInputError
from stemreg.platform.registry import as_condition
from stemreg.platform.store import configure
from stemreg.platform.training.runs import (DEFAULT_ARCHITECTURE, TrainingRunResult, canonical_architecture,
                                            load_parent, log_and_register, network_params)

log = logging.getLogger(__name__)

#: Share of every frame's rows (the bottom strip) held out for the self-supervised validation.
HELD_OUT_FRACTION = 0.2


@dataclass
class LabData:
    """Training and held-out data read from a lab's own noisy files (no clean image anywhere).

    Attributes
    ----------
    mode
        ``noise2noise`` (``train_data`` repeats ``(1, k, H, W)`` of one area) or ``blind-spot``
        (``train_data`` noisy ``(N, H, W)``).
    train_data, val_data
        The top and bottom (held-out) rows of every frame, in the same layout.
    sources
        The files read.
    params
        What was read and done (frames, shapes, drift shifts, crop), for MLflow params.
    """

    mode: str
    train_data: np.ndarray
    val_data: np.ndarray
    sources: list[str]
    params: dict[str, Any]


def _split_rows(data: np.ndarray, patch_px: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Top rows for training, the bottom HELD_OUT_FRACTION for validation (last two axes are H, W)."""
    h, w = data.shape[-2:]
    held_out = max(16, int(round(HELD_OUT_FRACTION * h)))
    if h - held_out < patch_px or w < patch_px:
        raise BadInputError(f"{what}: {h} x {w} px leaves {h - held_out} x {w} px for training after holding out "
                       f"the bottom {held_out} rows for validation, less than the {patch_px} px patches; "
                       f"give larger frames or a smaller --patch-px")
    return data[..., :h - held_out, :], data[..., h - held_out:, :]


def load_lab_data(mode: str, *, frames: str | Path | None = None, images: str | Path | None = None,
                  patch_px: int = 48, align: bool = True) -> LabData:
    """Read a lab's noisy files for self-supervised training and split off held-out rows.

    Parameters
    ----------
    mode
        ``noise2noise`` (needs ``frames``) or ``blind-spot`` (needs ``images``).
    frames
        A stack file ``(N, H, W)`` or a folder of repeated frames of one area; aligned for drift
        (whole pixels, :func:`stemreg.acquisition.frames.read_frames`) unless ``align`` is false.
    images
        A folder of single noisy images; different sizes are centre-cropped to the smallest.
    patch_px
        Training patch edge: the training rows must hold one.

    Raises
    ------
    BadInputError
        The wrong source for the mode, unreadable files, or frames too small.
    """

    if mode == "noise2noise":
        if frames is None or images is not None:
            raise BadInputError("--mode noise2noise trains on repeated frames of one area: give --frames PATH "
                           "(a stack file or a folder of frames), not --images")
        try:
            series = read_frames(frames, align=align)
        except ImageReadError as exc:
            raise BadInputError(str(exc).splitlines()[0]) from None
        train_rows, val_rows = _split_rows(series.frames, patch_px, str(frames))
        params = {"lab.frames": len(series.frames), "lab.aligned": align,
                  "lab.frame_shape": "x".join(map(str, series.frames.shape[1:])),
                  "lab.drift_shifts_px": json.dumps(np.asarray(series.shifts_px).tolist()),
                  "lab.crop": json.dumps(list(series.crop or ()))}
        return LabData(mode, train_rows[None], val_rows[None], series.sources, params)
    if mode == "blind-spot":
        if images is None or frames is not None:
            raise BadInputError("--mode blind-spot trains on single noisy images: give --images DIR, not --frames")
        try:
            loaded, _, sources = read_noisy_images(images)
        except ImageReadError as exc:
            raise BadInputError(str(exc).splitlines()[0]) from None
        h = min(a.shape[0] for a in loaded)
        w = min(a.shape[1] for a in loaded)
        if len({a.shape for a in loaded}) > 1:
            log.warning("images differ in size; centre-cropping all to %d x %d px", h, w)
        stack = np.stack([a[(a.shape[0] - h) // 2:(a.shape[0] - h) // 2 + h,
                            (a.shape[1] - w) // 2:(a.shape[1] - w) // 2 + w] for a in loaded]).astype(np.float32)
        train_rows, val_rows = _split_rows(stack, patch_px, str(images))
        params = {"lab.images": len(stack), "lab.image_shape": f"{h}x{w}"}
        return LabData(mode, train_rows, val_rows, sources, params)
    raise BadInputError(f"--frames / --images train self-supervised: use --mode noise2noise (--frames) or "
                   f"--mode blind-spot (--images), not {mode!r}")


def _lab_panel(network, data: LabData, path: Path, title: str) -> Path:
    """Held-out rows: noisy / denoised (/ the average of all frames for noise2noise). No clean target exists."""
    import matplotlib  # heavy: only when a panel is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noisy = data.val_data[0, 0] if data.mode == "noise2noise" else data.val_data[0]
    columns = [("noisy (held out)", noisy), ("denoised", denoise_array(network, noisy))]
    if data.mode == "noise2noise":
        columns.append((f"mean of {data.val_data.shape[1]} frames", data.val_data[0].mean(axis=0)))
    low, high = np.percentile(columns[-1][1], [0.5, 99.5])
    h, w = noisy.shape
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.6 * h / w + 0.7), squeeze=False)
    for ax, (label, image) in zip(axes[0], columns):
        ax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def train_from_lab_files(condition: Any, *, mode: str, frames: str | Path | None = None,
                         images: str | Path | None = None, arch: dict[str, Any] | str | None = None,
                         config: Any = None, init_from: str | None = None, align: bool = True,
                         run_name: str | None = None, register: bool = True, alias_policy: str = "auto",
                         score: bool = True, progress: bool = True) -> TrainingRunResult:
    """Train self-supervised on a lab's own noisy files (no clean image), log, register and score.

    Validation is self-supervised too: the bottom rows of every frame are held
    out, and the held-out loss (noise2noise: each frame's prediction against the
    mean of the other frames; blind-spot: masked pixels against their noisy
    values; see :func:`stemreg.models.training.self_supervised_val_loss`) picks
    the best epoch and is logged as ``val_loss`` with ``val_noise_floor`` (the
    loss of a perfect denoiser). No PSNR is claimed from the lab's data. The
    registered version is scored, like every version, on the condition's frozen
    *simulated* benchmark set (tagged ``benchmark.domain=simulated``), so that
    promotion compares versions on one yardstick; it says how the model does
    on the simulated physics, not on the lab's specimen.

    Parameters
    ----------
    condition
        The condition the frames were acquired under (name, YAML path or ``Condition``).
    mode
        ``noise2noise`` (with ``frames``) or ``blind-spot`` (with ``images``).
    frames, images, align
        See :func:`load_lab_data`.
    arch, config, init_from, run_name, register, alias_policy, score, progress
        As in :func:`train_and_register`; ``config.mode`` is set to ``mode``.

    Returns
    -------
    TrainingRunResult
        ``metrics`` holds ``val_loss``, ``val_noise_floor``, ``best_epoch``, ``train_seconds``.
    """


    started = time.perf_counter()
    cond = as_condition(condition)
    try:
        config = TrainConfig(**{**(config.model_dump() if isinstance(config, TrainConfig) else (config or {})),
                                "mode": mode})
    except Exception as exc:  # pydantic's ValidationError names the bad fields
        raise BadInputError(f"bad training config: {exc}") from None
    data = load_lab_data(mode, frames=frames, images=images, patch_px=config.patch_px, align=align)
    configure()

    torch.manual_seed(config.seed)  # the same seed, the same initial weights
    if init_from:
        network, architecture = load_parent(init_from, arch)
    else:
        architecture = canonical_architecture(arch if arch is not None else DEFAULT_ARCHITECTURE)
        network = build_model(architecture)

    source = str(frames if frames is not None else images)
    tags = {"stemreg.kind": "train", "condition": cond.name, "training_data": "lab-files"}
    with mlflow.start_run(run_name=run_name or f"train-{cond.name}-{mode}-lab", tags=tags):
        params: dict[str, Any] = dict(cond.flat_params())
        params.update({"architecture": json.dumps(architecture), "training_data": "lab-files",
                       "lab.source": source[:500], "lab.files": len(data.sources), "init_from": init_from or "",
                       "val.metric": f"held-out {mode} loss", "val.held_out_fraction": HELD_OUT_FRACTION,
                       **data.params})
        params.update(network_params(config, network))
        mlflow.log_params(params)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            # val_psnr / val_ssim are NaN here (no clean image): not logged, so no chart suggests otherwise
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                                if isinstance(v, (int, float)) and np.isfinite(v)}, step=epoch)

        result = train(network, config, train_data=data.train_data, val_data=data.val_data, on_epoch=on_epoch,
                       progress=progress)
        network = result.model
        metrics = {"val_loss": float(result.best_val_loss), "val_noise_floor": float(result.val_noise_floor),
                   "best_epoch": float(result.best_epoch), "train_seconds": float(result.seconds)}
        mlflow.log_metrics({"best_val_loss": metrics["val_loss"], "train_seconds": metrics["train_seconds"],
                            **({"val_noise_floor": metrics["val_noise_floor"]}
                               if np.isfinite(metrics["val_noise_floor"]) else {})})
        with tempfile.TemporaryDirectory() as tmp:
            panel = _lab_panel(network, data, Path(tmp) / "held_out_panel.png",
                               f"{cond.name}: lab data, {mode} (held-out rows; no clean target exists)")
            mlflow.log_artifact(str(panel), artifact_path="panels")

        floor = (f" (noise floor {metrics['val_noise_floor']:.4f})" if np.isfinite(metrics["val_noise_floor"])
                 else "")
        version_tags = {"training_mode": mode, "training_data": "lab-files", "training_source": source[:250],
                        "val_metric": f"held-out {mode} loss", "val_loss": f"{metrics['val_loss']:.5f}",
                        "best_epoch": str(result.best_epoch), "benchmark.domain": "simulated"}
        if np.isfinite(metrics["val_noise_floor"]):
            version_tags["val_noise_floor"] = f"{metrics['val_noise_floor']:.5f}"
        if init_from:
            version_tags["parent"] = init_from
        what = (f"{data.params.get('lab.frames')} aligned frames of one area" if mode == "noise2noise"
                else f"{data.params.get('lab.images')} single noisy images")
        description = (f"{architecture.get('kind')} (depth {architecture.get('depth', '?')}) trained {mode} on "
                       f"{what} from {source} ('{cond.name}'), no clean image, {config.epochs} epochs"
                       + (f", fine-tuned from {init_from}" if init_from else "")
                       + f"; held-out {mode} loss {metrics['val_loss']:.4f}{floor}. Benchmark figures, if any, "
                         "are on the condition's simulated benchmark set.")
        out = log_and_register(network, cond, val=None, register=register, alias_policy=alias_policy,
                               score=score, description=description, tags=version_tags, progress=progress)
        out.metrics = metrics
    out.seconds = time.perf_counter() - started
    return out
