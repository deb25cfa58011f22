"""One training run: train a denoiser on simulated data, log it to MLflow, register and score it.

:func:`train_and_register` trains from scratch or fine-tunes from a parent
model (`init_from`); :func:`log_and_register` logs, registers and scores any
trained network (also used for a lab's own data, :mod:`.lab`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import mlflow
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from stemreg.acquisition.stream import FieldPool, targets_tags
from stemreg.models import mlflow_model
from stemreg.models.architectures import architecture_of, build_model
from stemreg.models.config import ArchitectureName, architecture, training_seeds
from stemreg.models.flops import flops_per_pixel
from stemreg.models.inference import denoise_array
from stemreg.models.mlflow_model import ARCHITECTURE_FILE, WEIGHTS_FILE
from stemreg.models.training import TrainConfig, train
from stemreg.platform.commit import git_commit  # noqa: F401 - re-exported: stemreg.platform.training.git_commit
from stemreg.platform.errors import BadInputError, StemregError
from stemreg.platform.evaluation.figures import comparison_panel
from stemreg.platform.registry.loading import ModelLoadError, NotRegisteredError, open_network
from stemreg.platform.registry import (artifact_digests, as_condition, assign_initial_alias, model_name,
                                       register_version, run_metrics, score_model, score_version)
from stemreg.platform.store import configure

log = logging.getLogger(__name__)

#: The seed's 8-layer reverse hourglass with stemreg.models' default widths (8 -> 64 -> 8).
DEFAULT_ARCHITECTURE: dict[str, Any] = architecture(ArchitectureName.DEFAULT)


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


def canonical_architecture(arch: dict[str, Any] | str) -> dict[str, Any]:
    """Validate an architecture (dict or JSON text) by building it; return its canonical dict."""

    if isinstance(arch, str):
        try:
            arch = json.loads(arch)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"--arch is not valid JSON ({exc.msg}); give e.g. "
                           f"'{json.dumps(DEFAULT_ARCHITECTURE)}'") from None
    try:
        return architecture_of(build_model(dict(arch)))
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"bad architecture {arch!r}: {exc}") from None


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
    BadInputError
        The URI does not resolve, or the parent's architecture differs from `arch`.
    StemregError
        The model cannot be loaded (a sha256 mismatch, a foreign loader, truncated weights): one line.
    """

    try:  # the one verified path: sha256 of a registered version, stemreg's own loader only
        network = open_network(model_uri)
    except NotRegisteredError as exc:
        raise BadInputError(f"--from {model_uri}: {exc}") from None
    except ModelLoadError as exc:
        raise StemregError(f"--from {model_uri}: that model cannot be loaded: {exc}") from None
    network.train()

    parent_arch = architecture_of(network)
    if arch is not None and canonical_architecture(arch) != parent_arch:
        raise BadInputError(f"--from {model_uri}: its architecture {json.dumps(parent_arch)} differs from the "
                       f"requested {json.dumps(canonical_architecture(arch))}; drop --arch to fine-tune the "
                       f"parent's architecture, or train from scratch")
    return network, parent_arch


def _datasets(cond, mode: str, n_train: int, n_val: int, seed: int, *, size_px: int | None = None,
              repeats: int = 2, targets: list | None = None, target_fraction: float = 0.0):
    train_seed, val_seed = training_seeds(seed, getattr(cond, "benchmark_seed", None))
    val = cond.sample_pairs(n_val, size_px=size_px, seed=val_seed)
    if mode == "supervised":
        # Fresh noise, dose and scan for every patch: `n_train` rendered fields, one re-rendered per step.
        train_data: Any = FieldPool(cond, n_fields=n_train, size_px=size_px or cond.image_size_px, seed=train_seed,
                                    targets=targets, target_fraction=target_fraction)
        return train_data, val, {"train_seed": train_seed, "val_seed": val_seed}
    train = cond.sample_pairs(n_train, size_px=size_px, seed=train_seed)
    if mode == "noise2noise":
        train_data = train.repeats(repeats, seed=train_seed)
    else:
        train_data = train.degraded
    return train_data, val, {"train_seed": train_seed, "val_seed": val_seed}


def _log_model(network, *, artifacts_dir: Path):

    return mlflow.pyfunc.log_model(
        name="model",
        **mlflow_model.log_model_args(network, artifacts_dir),  # loader_module: no code stored
        signature=mlflow_model.model_signature(),
        input_example=mlflow_model.input_example(),
        # Explicit requirements: inferring them loads the model in a subprocess (slow).
        pip_requirements=[f"torch=={_version('torch')}", f"mlflow=={_version('mlflow')}",
                          f"numpy=={_version('numpy')}", "stemreg"],
    )


def _version(package: str) -> str:

    return package_version(package).split("+")[0]


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

    cond = as_condition(condition)
    architecture = architecture_of(network)
    with contextlib.ExitStack() as stack:
        run = mlflow.active_run()
        if run is None:
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
            digests = artifact_digests(Path(tmp) / "artifacts" / WEIGHTS_FILE, Path(tmp) / "artifacts" / ARCHITECTURE_FILE)

        out = TrainingRunResult(run_id=run.info.run_id, model_uri=info.model_uri, logged_model_uri=info.model_uri,
                                version=None, alias=None, name=None, architecture=architecture)
        if register:
            version_tags = {"condition": cond.name, **cond.flat_params(), "architecture": json.dumps(architecture),
                            **digests, **(tags or {})}
            commit = git_commit()
            if commit:
                version_tags["git_commit"] = commit
            version, _ = register_version(info.model_uri, cond, run_id=run.info.run_id,
                                                   description=description, tags=version_tags,
                                                   alias_policy="none")
            out.version, out.name = str(version.version), model_name(cond)
            out.model_uri = f"models:/{out.name}/{out.version}"
            if score:
                # Scored before it gets an alias, so the first promotion record carries figures.
                out.benchmark = score_version(cond, out.version, run_id=run.info.run_id,
                                                        progress=progress)
            out.alias = assign_initial_alias(cond, out.version, policy=alias_policy)
        elif score:
            out.benchmark = score_model(lambda image: denoise_array(network, image), cond,
                                                  progress=progress)
            mlflow.log_metrics(run_metrics(out.benchmark))
    return out


def network_params(config, network) -> dict[str, Any]:
    """The training config (`train.*`), parameter count and FLOPs per pixel, as run params."""

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
                       extra_tags: dict[str, str] | None = None, size_px: int | None = None,
                       targets: list | None = None, target_fraction: float = 0.0) -> TrainingRunResult:
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
    targets, target_fraction
        A lab's clean (high-dose) images as ``(array, pixel_size_pm or None, name)`` and the share
        of training patches cut from them (supervised mode; degraded on the fly like the
        simulated fields).

    Returns
    -------
    TrainingRunResult
    """

    started = time.perf_counter()
    cond = as_condition(condition)
    if isinstance(config, dict) or config is None:
        try:
            config = TrainConfig(**(config or {}))
        except Exception as exc:  # pydantic's ValidationError names the bad fields
            raise BadInputError(f"bad training config: {exc}") from None
    if n_train < 1 or n_val < 1:
        raise BadInputError(f"n_train and n_val must be >= 1 (got {n_train}, {n_val})")
    if mlflow.active_run() is None or not nested:
        configure()

    if init_from:
        network, architecture = load_parent(init_from, arch)
    else:
        architecture = canonical_architecture(arch if arch is not None else DEFAULT_ARCHITECTURE)
        network = build_model(architecture)
    mode = getattr(config.mode, "value", str(config.mode))
    if targets and mode != "supervised":
        raise BadInputError("--targets (a lab's high-dose images) train supervised only")
    train_data, val, seeds = _datasets(cond, mode, n_train, n_val, seed, size_px=size_px, targets=targets,
                                       target_fraction=target_fraction)

    tags = {"stemreg.kind": "train", "condition": cond.name, **(extra_tags or {})}
    with mlflow.start_run(run_name=run_name or f"train-{cond.name}", nested=nested, tags=tags) as run:
        params: dict[str, Any] = dict(cond.flat_params())
        params.update({"architecture": json.dumps(architecture), "n_train": n_train, "n_val": n_val,
                       "seed": seed, **seeds, "init_from": init_from or "",
                       "size_px": size_px or getattr(cond, "image_size_px", "")})
        params.update(network_params(config, network))
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
        if targets:
            version_tags.update(targets_tags(targets, target_fraction))
            mlflow.log_dict({"lab_targets": [name for _, _, name in targets], "fraction": target_fraction},
                            "lab_targets.json")
        data = (f"{n_train} simulated '{cond.name}' field{'s' if n_train != 1 else ''} (fresh noise every step)"
                if mode == "supervised" else f"{n_train} simulated '{cond.name}' image{'s' if n_train != 1 else ''}")
        if targets:
            data += f" and {len(targets)} lab high-dose image(s) ({target_fraction:.0%} of the patches)"
        description = (f"{architecture.get('kind')} (depth {architecture.get('depth', '?')}) trained "
                       f"{mode} on {data} for {config.epochs} epoch{'s' if config.epochs != 1 else ''}"
                       + (f", fine-tuned from {init_from}" if init_from else "")
                       + f"; validation PSNR {metrics['val_psnr']:.2f} dB, SSIM {metrics['val_ssim']:.3f}.")
        out = log_and_register(network, cond, val=val, register=register, alias_policy=alias_policy, score=score,
                               description=description, tags=version_tags, progress=progress)
        out.metrics = metrics
    out.seconds = time.perf_counter() - started
    return out


