"""One MLflow run: simulate a condition's data, train a denoiser, log, register, score.

The run holds the condition's parameters, the architecture and training
config, per-epoch `train_loss` / `val_psnr` / `val_ssim`, a before/after/target
PNG panel, and the model as a models-from-code pyfunc (weights as a
state_dict plus architecture JSON; no pickled code). The registered version
gets a description and tags (condition, architecture, validation metrics,
git commit, `parent` when fine-tuned) and is scored on the frozen benchmark
set before it gets its alias, so the first promotion record carries figures.
"""
from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stemreg.platform.errors import BadInput

log = logging.getLogger(__name__)

#: The seed's 8-layer reverse hourglass with stemreg.models' default widths (8 -> 64 -> 8).
DEFAULT_ARCHITECTURE: dict[str, Any] = {"kind": "reverse-hourglass", "depth": 8, "kernel_size": 3}
#: Offset between the training and validation seeds (neither may be the benchmark seed).
VAL_SEED_OFFSET = 100_003


@dataclass
class TrainingRunResult:
    """What :func:`train_and_register` produced."""

    run_id: str
    model_uri: str                      # models:/<name>/<version> when registered, else the logged model
    logged_model_uri: str
    version: str | None
    alias: str | None
    name: str | None
    architecture: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    benchmark: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def git_commit() -> str | None:
    """The commit of the stemreg source tree, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def canonical_architecture(arch: dict[str, Any] | str) -> dict[str, Any]:
    """Validate an architecture (dict or JSON text) by building it; return its canonical dict."""
    from stemreg.models import architecture_of, build_model

    if isinstance(arch, str):
        try:
            arch = json.loads(arch)
        except json.JSONDecodeError as exc:
            raise BadInput(f"--arch is not valid JSON ({exc.msg}); give e.g. "
                           f"'{json.dumps(DEFAULT_ARCHITECTURE)}'") from None
    try:
        return architecture_of(build_model(dict(arch)))
    except (ValueError, TypeError) as exc:
        raise BadInput(f"bad architecture {arch!r}: {exc}") from None


def load_parent(model_uri: str, arch: dict[str, Any] | None):
    """Build the network of a registered/logged model and load its weights (`weights_only=True`).

    Parameters
    ----------
    model_uri
        e.g. `models:/stem-denoiser-low-dose@champion`.
    arch
        The architecture the new run asks for; None takes the parent's.

    Returns
    -------
    (torch.nn.Module, dict)
        The network with the parent's weights, and its architecture.

    Raises
    ------
    BadInput
        The URI does not resolve, or the parent's architecture differs from `arch`.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from stemreg.models import architecture_of
    from stemreg.models.mlflow_model import ARCHITECTURE_FILE, WEIGHTS_FILE, load_denoiser

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except (MlflowException, OSError) as exc:
        raise BadInput(f"--from {model_uri}: cannot load that model ({str(exc).splitlines()[0]})") from None
    weights = sorted(local.rglob(WEIGHTS_FILE))
    architecture_file = sorted(local.rglob(ARCHITECTURE_FILE))
    if not weights or not architecture_file:
        raise BadInput(f"--from {model_uri}: not a stemreg denoiser (no {WEIGHTS_FILE} / {ARCHITECTURE_FILE})")
    network = load_denoiser(weights[0], architecture_file[0], device="cpu")
    network.train()

    parent_arch = architecture_of(network)
    if arch is not None and canonical_architecture(arch) != parent_arch:
        raise BadInput(f"--from {model_uri}: its architecture {json.dumps(parent_arch)} differs from the "
                       f"requested {json.dumps(canonical_architecture(arch))}; drop --arch to fine-tune the "
                       f"parent's architecture, or train from scratch")
    return network, parent_arch


def _datasets(cond, mode: str, n_train: int, n_val: int, seed: int, *, size_px: int | None = None,
              repeats: int = 2):
    train_seed, val_seed = seed, seed + VAL_SEED_OFFSET
    bench_seed = getattr(cond, "benchmark_seed", None)
    while bench_seed is not None and bench_seed in (train_seed, val_seed):
        # The frozen benchmark set must never be seen in training or validation.
        train_seed, val_seed = train_seed + 7919, val_seed + 7919
    train = cond.sample_pairs(n_train, size_px=size_px, seed=train_seed)
    val = cond.sample_pairs(n_val, size_px=size_px, seed=val_seed)
    if mode == "supervised":
        train_data: Any = (train.degraded, train.clean)
    elif mode == "noise2noise":
        train_data = train.repeats(repeats, seed=train_seed)
    else:
        train_data = train.degraded
    return train_data, val, {"train_seed": train_seed, "val_seed": val_seed}


def _log_model(network, *, artifacts_dir: Path):
    import mlflow

    from stemreg.models import mlflow_model

    artifacts = mlflow_model.save_artifacts(network, artifacts_dir)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(mlflow_model.models_from_code_path()),
        artifacts={k: str(v) for k, v in artifacts.items()},
        signature=mlflow_model.model_signature(),
        input_example=mlflow_model.input_example(),
        # Explicit requirements: inferring them loads the model in a subprocess (slow).
        pip_requirements=[f"torch=={_version('torch')}", f"mlflow=={_version('mlflow')}",
                          f"numpy=={_version('numpy')}", "stemreg"],
    )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package).split("+")[0]


def log_and_register(network, condition: Any, *, val: Any = None, register: bool = True,
                     alias_policy: str = "auto", score: bool = True, description: str | None = None,
                     tags: dict[str, str] | None = None, progress: bool = False) -> TrainingRunResult:
    """Log a trained network to the active MLflow run (started here if none), register and score it.

    Parameters
    ----------
    network
        A trained `torch.nn.Module` built by `stemreg.models.build_model`.
    condition
        Condition name or `Condition`.
    val
        A `PairBatch` of validation images for the before/after/target panel (none: no panel).
    register, alias_policy, score
        As in :func:`train_and_register`.
    description
        The version's description.
    tags
        More version tags (validation metrics, parent, ...).
    progress
        Show tqdm progress while scoring.

    Returns
    -------
    TrainingRunResult
        Without training metrics (`metrics` is empty).
    """
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    from stemreg.models import architecture_of, denoise_array
    from stemreg.platform import benchmark, registry
    from stemreg.platform.panels import comparison_panel

    cond = benchmark.as_condition(condition)
    architecture = architecture_of(network)
    with contextlib.ExitStack() as stack:
        run = mlflow.active_run()
        if run is None:
            from stemreg.platform.store import configure

            configure()
            run = stack.enter_context(mlflow.start_run(run_name=f"log-{cond.name}",
                                                       tags={"condition": cond.name}))
        if description:
            # The run's description box in the MLflow UI; the same words as the version's.
            mlflow.set_tag(MLFLOW_RUN_NOTE, description)
        network.eval()
        with tempfile.TemporaryDirectory() as tmp:
            if val is not None:
                shown = slice(0, min(4, len(val.degraded)))
                denoised = denoise_array(network, val.degraded[shown])
                panel = comparison_panel(val.degraded[shown], denoised, val.clean[shown],
                                         Path(tmp) / "validation_panel.png",
                                         title=f"{cond.name}: noisy / denoised / target (validation)")
                mlflow.log_artifact(str(panel), artifact_path="panels")
            info = _log_model(network, artifacts_dir=Path(tmp) / "artifacts")

        out = TrainingRunResult(run_id=run.info.run_id, model_uri=info.model_uri, logged_model_uri=info.model_uri,
                                version=None, alias=None, name=None, architecture=architecture)
        if register:
            version_tags = {"condition": cond.name, **cond.flat_params(), "architecture": json.dumps(architecture),
                            **(tags or {})}
            commit = git_commit()
            if commit:
                version_tags["git_commit"] = commit
            version, _ = registry.register_version(info.model_uri, cond, run_id=run.info.run_id,
                                                   description=description, tags=version_tags,
                                                   alias_policy="none")
            out.version, out.name = str(version.version), registry.model_name(cond)
            out.model_uri = f"models:/{out.name}/{out.version}"
            if score:
                # Scored before it gets an alias, so the first promotion record carries figures.
                out.benchmark = benchmark.score_version(cond, out.version, run_id=run.info.run_id,
                                                        progress=progress)
            out.alias = registry.assign_initial_alias(cond, out.version, policy=alias_policy)
        elif score:
            out.benchmark = benchmark.score_model(lambda image: denoise_array(network, image), cond,
                                                  progress=progress)
            mlflow.log_metrics(benchmark.run_metrics(out.benchmark))
    return out


def _network_params(config, network) -> dict[str, Any]:
    """The training config (`train.*`), parameter count and FLOPs per pixel, as run params."""
    from stemreg.models import flops_per_pixel

    params: dict[str, Any] = {f"train.{k}": getattr(v, "value", v) for k, v in config.model_dump().items()}
    params["n_parameters"] = sum(p.numel() for p in network.parameters())
    try:
        params["flops_per_pixel"] = round(flops_per_pixel(network))
    except Exception as exc:  # noqa: BLE001 - a figure for the UI, never worth failing a run
        log.warning("could not count FLOPs per pixel: %s", exc)
    return params


def train_and_register(condition: Any, *, arch: dict[str, Any] | str | None = None, config: Any = None,
                       n_train: int = 32, n_val: int = 8, seed: int = 0, init_from: str | None = None,
                       run_name: str | None = None, register: bool = True, alias_policy: str = "auto",
                       nested: bool = False, score: bool = True, progress: bool = True,
                       extra_tags: dict[str, str] | None = None, size_px: int | None = None) -> TrainingRunResult:
    """Train a denoiser for a condition in one MLflow run, log it, register it and score it.

    Parameters
    ----------
    condition
        Condition name, YAML path or `Condition`.
    arch
        Architecture dict or JSON; default the seed's 8-layer hourglass, or the
        parent's with `init_from`.
    config
        `stemreg.models.TrainConfig` or a dict of its fields.
    n_train, n_val
        Simulated training and validation images.
    seed
        Seed of the training data (validation uses another, never the benchmark's).
    init_from
        Model URI to fine-tune from, e.g. `models:/stem-denoiser-low-dose@champion`;
        its architecture must match `arch`.
    run_name
        MLflow run name; default `train-<condition>`.
    register
        Register as a new version of `stem-denoiser-<condition>`.
    alias_policy
        `auto` (champion for the first version, else challenger), `challenger`,
        `champion` or `none`.
    nested
        Start the run nested in the active one (pipeline, tuning).
    score
        Score the version on the benchmark set (tags + run metrics).
    progress
        Show tqdm progress.
    extra_tags
        More version and run tags (e.g. the tuning study).
    size_px
        Edge of the simulated training/validation images (default: the condition's).

    Returns
    -------
    TrainingRunResult
    """
    import mlflow

    from stemreg.models import TrainConfig, build_model, train
    from stemreg.platform import benchmark
    from stemreg.platform.store import configure

    started = time.perf_counter()
    cond = benchmark.as_condition(condition)
    if isinstance(config, dict) or config is None:
        try:
            config = TrainConfig(**(config or {}))
        except Exception as exc:  # pydantic's ValidationError names the bad fields
            raise BadInput(f"bad training config: {exc}") from None
    if n_train < 1 or n_val < 1:
        raise BadInput(f"n_train and n_val must be >= 1 (got {n_train}, {n_val})")
    if mlflow.active_run() is None or not nested:
        configure()

    if init_from:
        network, architecture = load_parent(init_from, arch)
    else:
        architecture = canonical_architecture(arch if arch is not None else DEFAULT_ARCHITECTURE)
        network = build_model(architecture)
    mode = getattr(config.mode, "value", str(config.mode))
    train_data, val, seeds = _datasets(cond, mode, n_train, n_val, seed, size_px=size_px)

    tags = {"stemreg.kind": "train", "condition": cond.name, **(extra_tags or {})}
    with mlflow.start_run(run_name=run_name or f"train-{cond.name}", nested=nested, tags=tags) as run:
        params: dict[str, Any] = dict(cond.flat_params())
        params.update({"architecture": json.dumps(architecture), "n_train": n_train, "n_val": n_val,
                       "seed": seed, **seeds, "init_from": init_from or "",
                       "size_px": size_px or getattr(cond, "image_size_px", "")})
        params.update(_network_params(config, network))
        mlflow.log_params(params)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
                               step=epoch)

        result = train(network, config, train_data=train_data, val_data=(val.degraded, val.clean),
                       on_epoch=on_epoch, progress=progress)
        network = result.model
        metrics = {"val_psnr": float(result.best_val_psnr), "val_ssim": float(result.best_val_ssim),
                   "noisy_val_psnr": float(result.noisy_val_psnr), "best_epoch": float(result.best_epoch),
                   "train_seconds": float(result.seconds)}
        mlflow.log_metrics({"best_val_psnr": metrics["val_psnr"], "best_val_ssim": metrics["val_ssim"],
                            "noisy_val_psnr": metrics["noisy_val_psnr"],
                            "train_seconds": metrics["train_seconds"]})

        version_tags = {"val_psnr": f"{metrics['val_psnr']:.4f}", "val_ssim": f"{metrics['val_ssim']:.4f}",
                        "best_epoch": str(result.best_epoch), "training_mode": mode, **(extra_tags or {})}
        if init_from:
            version_tags["parent"] = init_from
        description = (f"{architecture.get('kind')} (depth {architecture.get('depth', '?')}) trained "
                       f"{mode} on {n_train} simulated '{cond.name}' image{'s' if n_train != 1 else ''} "
                       f"for {config.epochs} epoch{'s' if config.epochs != 1 else ''}"
                       + (f", fine-tuned from {init_from}" if init_from else "")
                       + f"; validation PSNR {metrics['val_psnr']:.2f} dB, SSIM {metrics['val_ssim']:.3f}.")
        out = log_and_register(network, cond, val=val, register=register, alias_policy=alias_policy, score=score,
                               description=description, tags=version_tags, progress=progress)
        out.metrics = metrics
    out.seconds = time.perf_counter() - started
    return out


# --------------------------------------------------------------------------- a lab's own noisy files

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
        raise BadInput(f"{what}: {h} x {w} px leaves {h - held_out} x {w} px for training after holding out "
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
    BadInput
        The wrong source for the mode, unreadable files, or frames too small.
    """
    from stemreg.acquisition import ImageReadError
    from stemreg.acquisition.frames import read_frames, read_noisy_images

    if mode == "noise2noise":
        if frames is None or images is not None:
            raise BadInput("--mode noise2noise trains on repeated frames of one area: give --frames PATH "
                           "(a stack file or a folder of frames), not --images")
        try:
            series = read_frames(frames, align=align)
        except ImageReadError as exc:
            raise BadInput(str(exc).splitlines()[0]) from None
        train_rows, val_rows = _split_rows(series.frames, patch_px, str(frames))
        params = {"lab.frames": len(series.frames), "lab.aligned": align,
                  "lab.frame_shape": "x".join(map(str, series.frames.shape[1:])),
                  "lab.drift_shifts_px": json.dumps(np.asarray(series.shifts_px).tolist()),
                  "lab.crop": json.dumps(list(series.crop or ()))}
        return LabData(mode, train_rows[None], val_rows[None], series.sources, params)
    if mode == "blind-spot":
        if images is None or frames is not None:
            raise BadInput("--mode blind-spot trains on single noisy images: give --images DIR, not --frames")
        try:
            loaded, _, sources = read_noisy_images(images)
        except ImageReadError as exc:
            raise BadInput(str(exc).splitlines()[0]) from None
        h = min(a.shape[0] for a in loaded)
        w = min(a.shape[1] for a in loaded)
        if len({a.shape for a in loaded}) > 1:
            log.warning("images differ in size; centre-cropping all to %d x %d px", h, w)
        stack = np.stack([a[(a.shape[0] - h) // 2:(a.shape[0] - h) // 2 + h,
                            (a.shape[1] - w) // 2:(a.shape[1] - w) // 2 + w] for a in loaded]).astype(np.float32)
        train_rows, val_rows = _split_rows(stack, patch_px, str(images))
        params = {"lab.images": len(stack), "lab.image_shape": f"{h}x{w}"}
        return LabData(mode, train_rows, val_rows, sources, params)
    raise BadInput(f"--frames / --images train self-supervised: use --mode noise2noise (--frames) or "
                   f"--mode blind-spot (--images), not {mode!r}")


def _lab_panel(network, data: LabData, path: Path, title: str) -> Path:
    """Held-out rows: noisy / denoised (/ the average of all frames for noise2noise). No clean target exists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stemreg.models import denoise_array

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
    import mlflow

    from stemreg.models import TrainConfig, build_model, train
    from stemreg.platform import benchmark
    from stemreg.platform.store import configure

    started = time.perf_counter()
    cond = benchmark.as_condition(condition)
    try:
        config = TrainConfig(**{**(config.model_dump() if isinstance(config, TrainConfig) else (config or {})),
                                "mode": mode})
    except Exception as exc:  # pydantic's ValidationError names the bad fields
        raise BadInput(f"bad training config: {exc}") from None
    data = load_lab_data(mode, frames=frames, images=images, patch_px=config.patch_px, align=align)
    configure()
    import torch

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
        params.update(_network_params(config, network))
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
