"""`stemreg adapt`: fine-tune a condition's champion on a lab's own raw noisy files, no clean image.

Built on the self-supervised training that exists (:mod:`stemreg.platform.training.lab`,
:func:`stemreg.models.training.train`):

- single frames train with a blind-spot loss whose mask follows the detector's correlation: the
  input's noise correlation along the fast-scan axis is measured
  (:func:`stemreg.models.trust_stats.input_noise`) and every lag above :data:`STRUCT_CORR` is
  masked too (structN2V); frame series (``frames=True``) train noise2noise after drift alignment;
- the condition's synthetic stream makes up ``synthetic_fraction`` of every batch, so the model
  does not forget the condition's range;
- whole files are held out (the bottom rows of a lone file): the held-out blind-spot (or
  noise2noise) loss picks the epoch; training stops when that loss stops falling or the trust
  verdicts over the held-out files fall below their best (:data:`PATIENCE` epochs), and the final
  held-out trust is compared with the champion's;
- the version is registered with the lab's files in its tags (``lab_files``) and card; with
  ``promote``, it becomes champion only when it loses at most ``tolerance_db`` on the condition's
  simulated benchmark and its held-out trust verdicts are no worse than the champion's.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from scipy import ndimage

from stemreg.acquisition import ImageReadError, read_image
from stemreg.acquisition.stream import FieldPool
from stemreg.models.impulses import DEFAULT_K, repair_impulses
from stemreg.models.inference import denoise_array
from stemreg.models.training import TrainConfig, train
from stemreg.models.trust import TrainedRange, trust_report
from stemreg.models.trust_stats import input_noise
from stemreg.platform.errors import BadInputError, StemregError
from stemreg.platform.registry import as_condition
from stemreg.platform.store import configure
from stemreg.platform.training.lab import load_lab_data
from stemreg.platform.training.runs import log_and_register
from stemreg.platform.trust import trained_range

log = logging.getLogger(__name__)

#: A lag whose input noise correlation exceeds this is masked with the blind spot (structN2V).
STRUCT_CORR = 0.1
#: Epochs without a better held-out loss, or with held-out trust below its best, before adapt stops.
PATIENCE = 2
#: The smallest lab image edge (px) adapt accepts.
MIN_EDGE_PX = 64


@dataclass
class AdaptResult:
    """What :func:`adapt` did; ``trust`` holds the held-out verdicts of the champion and the adapted model."""

    condition: str
    mode: str
    lab_files: list[str]
    held_out_files: list[str]
    noise_corr_x: list[float]
    struct_px: int
    val_loss: float
    trust: dict[str, Any]
    parent: str
    version: str | None = None
    name: str | None = None
    run_id: str | None = None
    benchmark: dict[str, Any] | None = None
    promoted: bool = False
    gate: str = ""
    seconds: float = 0.0
    lab_params: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    network: Any = field(default=None, repr=False)


def read_lab_files(paths: list[str | Path]) -> list[tuple[str, np.ndarray, float | None]]:
    """Read single noisy frames: ``(name, image, pixel_size_pm)`` each.

    Raises
    ------
    BadInputError
        No file, an unreadable, empty or corrupt file, a stack, or an image under 64 px (one line
        naming the file).
    """
    if not paths:
        raise BadInputError("adapt needs one or more lab files (noisy images of the condition)")
    out = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageReadError as exc:
            raise BadInputError(str(exc).splitlines()[0]) from None
        data = np.asarray(image.data, np.float32)
        if min(data.shape) < MIN_EDGE_PX:
            raise BadInputError(f"{path}: {data.shape[0]} x {data.shape[1]} px is too small to adapt on; "
                                f"give images of at least {MIN_EDGE_PX} x {MIN_EDGE_PX} px")
        if float(np.ptp(data)) == 0.0:
            raise BadInputError(f"{path}: every pixel holds the same value; a noisy scan is needed")
        out.append((str(path), data, image.calibration.pixel_size_pm()))
    return out


def noise_corr_along_x(images: list[np.ndarray]) -> list[float]:
    """The input noise's correlation at lags 1-3 along x, averaged over images."""
    values = [input_noise(a, ndimage.gaussian_filter(a, 1.0)).corr_x for a in images]
    return [float(v) for v in np.mean(np.asarray(values), axis=0)]


def struct_span(corr_x: list[float]) -> int:
    """How many neighbours along x the blind spot must cover: the leading lags above :data:`STRUCT_CORR`."""
    span = 0
    for value in corr_x:
        if value <= STRUCT_CORR:
            break
        span += 1
    return span


def _crop_to(images: list[np.ndarray], h: int, w: int) -> np.ndarray:
    return np.stack([a[(a.shape[0] - h) // 2:(a.shape[0] - h) // 2 + h,
                       (a.shape[1] - w) // 2:(a.shape[1] - w) // 2 + w] for a in images]).astype(np.float32)


def _champion_network(cond: Any) -> tuple[Any, str, dict[str, str]]:
    """The condition's champion (sha256 verified, through :func:`stemreg.load_model`) as a trainable copy."""
    from stemreg.platform.prediction import load_model

    loaded = load_model(cond)
    pyfunc = loaded.pyfunc
    inner = pyfunc.unwrap_python_model() if hasattr(pyfunc, "unwrap_python_model") else pyfunc
    network = getattr(inner, "model", None)
    if network is None:
        raise StemregError(f"the champion of {cond.name} ({loaded.model_uri}) holds no network to fine-tune")
    return copy.deepcopy(network), loaded.model_uri, dict(loaded.tags or {})


def held_out_trust(network: Any, images: list[np.ndarray], pixel_sizes: list[float | None],
                   trained: TrainedRange) -> dict[str, Any]:
    """Trust verdicts of ``network`` over held-out images: counts and the mean figures."""
    verdicts, variance, excess, dots = [], [], [], []
    for image, pm in zip(images, pixel_sizes):
        report = trust_report(image, denoise_array(network, image), pixel_size_pm=pm, trained=trained)
        verdicts.append(report.verdict)
        variance.append(report.figures["variance_ratio"])
        excess.append(max(report.figures["excess_corr"], report.figures["missing_corr"]))
        dots.append(report.figures["dots_per_mpx"])
    return {"ok": verdicts.count("ok"), "n": len(verdicts), "verdicts": verdicts,
            "variance_ratio": float(np.mean(variance)), "residual_structure": float(np.mean(excess)),
            "dots_per_mpx": float(np.mean(dots))}


def _repair(data: np.ndarray, k: float) -> tuple[np.ndarray, int]:
    """Every frame of ``(..., H, W)`` with its defective pixels repaired, and how many were."""
    flat = data.reshape((-1,) + data.shape[-2:])
    repaired, mask = repair_impulses(flat, k)
    return repaired.reshape(data.shape).astype(data.dtype, copy=False), int(mask.sum())


def _split(files: list[tuple[str, np.ndarray, float | None]], fraction: float):
    """Held-out files (the last ``fraction``, at least one) or, for a lone file, its bottom quarter."""
    if len(files) >= 2:
        n_held = min(len(files) - 1, max(1, int(round(fraction * len(files)))))
        return files[:-n_held], files[-n_held:]
    name, image, pm = files[0]
    cut = int(round(image.shape[0] * (1 - fraction)))
    if cut < MIN_EDGE_PX or image.shape[0] - cut < 32:
        raise BadInputError(f"{name}: one {image.shape[0]} px-high file cannot be split into training rows and "
                            "held-out rows; give more files or a larger one")
    return [(name, image[:cut], pm)], [(name + " (bottom rows)", image[cut:], pm)]


def adapt(condition: Any, files: list[str | Path], *, frames: bool = False, held_out_fraction: float = 0.25,
          epochs: int = 4, steps_per_epoch: int = 30, batch_size: int = 8, patch_px: int = 64, lr: float = 1e-4,
          synthetic_fraction: float = 0.5, struct_px: int | None = None, keep_residual: bool = True,
          seed: int = 0, register: bool = True, impulses: bool = True,
          score: bool = True, promote: bool = False, tolerance_db: float = 0.5,
          progress: bool = True) -> AdaptResult:
    """Fine-tune a condition's champion on a lab's raw noisy files (see the module docstring).

    Parameters
    ----------
    condition
        The condition the files were acquired under.
    files
        Single noisy frames (any format :func:`stemreg.acquisition.read_image` reads) or, with
        ``frames``, one stack file or folder of repeated frames of one area.
    held_out_fraction
        Share of the files held out (at least one; the bottom rows of a lone file).
    epochs, steps_per_epoch, batch_size, patch_px, lr, seed
        Training budget (``batch_size`` counts lab and synthetic patches together). The rate is a
        fine-tune's: 1e-4 beat 3e-4 on simulated raw frames (+0.4 dB) and lowered the residual structure
        on both public real raw frames, where 3e-4 raised it on one (docs/RESULTS.md, issue 21).
    synthetic_fraction
        Share of each batch drawn fresh from the condition's simulated stream.
    struct_px
        Neighbours masked either side along x; default from the measured noise correlation.
    impulses
        Repair the lab frames' defective pixels (hot, dead, impulse: an outlier test in noise sigmas,
        :mod:`stemreg.models.impulses`) before training, and make the adapted model repair its input
        the same way (architecture ``impulse_k``). Switch off where a lone pixel can be real signal
        (sampling coarser than the probe).
    keep_residual
        Keep the champion's residual skip in blind-spot training (it starts from the champion's own
        function); false switches to direct output as `train --images` does.
    register, score
        Register the version (tags and card list the files) and score it on the condition's benchmark.
    promote, tolerance_db
        Make it champion when it passes the gate (see the module docstring).

    Raises
    ------
    BadInputError
        An unreadable, empty or corrupt file (nothing is trained or registered).
    """
    started = time.perf_counter()
    cond = as_condition(condition)
    if not 0.0 <= synthetic_fraction < 1.0:
        raise BadInputError(f"--synthetic-fraction must be within 0..1 (excluded), got {synthetic_fraction}")
    if frames:
        if len(files) != 1:
            raise BadInputError("--frames takes one stack file or one folder of repeated frames of one area")
        data = load_lab_data("noise2noise", frames=files[0], patch_px=patch_px)
        train_data, val_data, mode = data.train_data, data.val_data, "noise2noise"
        lab_names = list(data.sources)
        held_names = [f"{files[0]} (bottom rows)"]
        held_images = [data.val_data[0, 0]]
        held_pm: list[float | None] = [None]
        lab_params = dict(data.params)  # frames, alignment on or off, the drift shifts found
        corr = noise_corr_along_x([data.train_data[0, 0]])
        span = 0
    else:
        lab = read_lab_files(list(files))
        train_files, held_files = _split(lab, held_out_fraction)
        corr = noise_corr_along_x([a for _, a, _ in train_files])
        span = struct_span(corr) if struct_px is None else int(struct_px)
        h, w = min(a.shape[0] for _, a, _ in train_files), min(a.shape[1] for _, a, _ in train_files)
        if min(h, w) < patch_px:
            raise BadInputError(f"lab images of {h} x {w} px are smaller than the {patch_px} px patches; "
                                "give larger images or a smaller --patch-px")
        train_data = _crop_to([a for _, a, _ in train_files], h, w)
        vh, vw = min(a.shape[0] for _, a, _ in held_files), min(a.shape[1] for _, a, _ in held_files)
        val_data = _crop_to([a for _, a, _ in held_files], vh, vw)
        mode = "blind-spot"
        lab_names = [n for n, _, _ in lab]
        held_names = [n for n, _, _ in held_files]
        held_images = [a for _, a, _ in held_files]
        held_pm = [pm for _, _, pm in held_files]
        lab_params = {"lab.images": len(lab), "lab.image_shape": f"{h}x{w}"}

    n_defects = 0
    if impulses:
        train_data, n_train = _repair(train_data, DEFAULT_K)
        val_data, n_val = _repair(val_data, DEFAULT_K)
        n_defects = n_train + n_val
    defects_per_mpx = n_defects * 1e6 / max(train_data.size + val_data.size, 1)
    configure()
    network, parent, parent_tags = _champion_network(cond)
    base = copy.deepcopy(network).eval()
    if impulses:
        network.impulse_k = DEFAULT_K
    base_range = trained_range(parent_tags, cond)
    adapted_range = TrainedRange(base_range.pixel_size_pm, base_range.peak_counts, base_range.contrast,
                                 noise_corr_x=max(corr[0], base_range.noise_corr_x or 0.0))
    trust_base = held_out_trust(base, held_images, held_pm, base_range)
    config = TrainConfig(mode=mode, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                         patch_px=patch_px, lr=lr, seed=seed, blind_spot_struct_px=span, warmup_fraction=0.1,
                         blind_spot_keep_residual=keep_residual)
    # rendering a field costs more than a training step at small budgets: the pool grows with the budget
    n_fields = min(16, max(2, epochs * steps_per_epoch // 8))
    pool = (FieldPool(cond, n_fields=n_fields, size_px=max(96, patch_px), seed=seed + 4242)
            if synthetic_fraction else None)
    tags = {"stemreg.kind": "adapt", "condition": cond.name, "training_data": "lab-files"}
    with mlflow.start_run(run_name=f"adapt-{cond.name}", tags=tags):
        mlflow.log_params({"adapt.mode": mode, "adapt.parent": parent, "adapt.struct_px": span,
                           "adapt.synthetic_fraction": synthetic_fraction, "adapt.lab_files": len(lab_names),
                           "adapt.held_out_files": len(held_names), "adapt.impulse_k": DEFAULT_K if impulses else "off",
                           "adapt.lab_defects_per_mpx": round(defects_per_mpx, 1),
                           "adapt.noise_corr_x": json.dumps([round(c, 4) for c in corr]),
                           **{k: str(v)[:500] for k, v in lab_params.items()},
                           **{f"train.{k}": getattr(v, "value", v) for k, v in config.model_dump().items()}})
        trust_history: list[int] = []
        losses: list[float] = []

        def on_epoch(epoch: int, metrics: dict[str, float]) -> bool:
            """Log the held-out trust; stop once the held-out loss has not improved for
            :data:`PATIENCE` epochs, or the held-out trust has fallen below its best for as long."""
            trust_now = held_out_trust(network, held_images, held_pm, adapted_range)
            trust_history.append(trust_now["ok"])
            losses.append(float(metrics.get("val_loss", float("nan"))))
            mlflow.log_metrics({**{k: float(v) for k, v in metrics.items() if np.isfinite(v)},
                                "held_out_trust_ok": trust_now["ok"],
                                "held_out_residual_structure": trust_now["residual_structure"]}, step=epoch)
            if len(losses) <= PATIENCE:
                return False
            stale_loss = min(losses[-PATIENCE:]) >= min(losses[:-PATIENCE])
            falling_trust = max(trust_history[-PATIENCE:]) < max(trust_history[:-PATIENCE])
            if stale_loss or falling_trust:
                log.info("adapt stops after epoch %d: %s", epoch,
                         "held-out loss no longer falls" if stale_loss else "held-out trust fell")
                return True
            return False

        result = train(network, config, train_data=train_data, val_data=val_data, on_epoch=on_epoch,
                       progress=progress, synthetic=pool, synthetic_fraction=synthetic_fraction if pool else 0.0)
        network = result.model
        if impulses:
            network.impulse_k = DEFAULT_K
        trust_adapted = held_out_trust(network, held_images, held_pm, adapted_range)
        mlflow.log_metrics({"best_val_loss": float(result.best_val_loss), "trust_ok_base": trust_base["ok"],
                            "trust_ok_adapted": trust_adapted["ok"]})
        out = AdaptResult(condition=cond.name, mode=mode, lab_files=lab_names, held_out_files=held_names,
                          noise_corr_x=corr, struct_px=span, val_loss=float(result.best_val_loss),
                          trust={"champion": trust_base, "adapted": trust_adapted}, parent=parent,
                          history=result.history, network=network, lab_params=lab_params)
        if register:
            listed = json.dumps([Path(n).name for n in lab_names])
            version_tags = {"training_mode": mode, "training_data": "lab-files", "parent": parent,
                            "lab_files": listed[:4900], "lab_held_out": json.dumps([Path(n).name for n in held_names])[:1900],
                            "trust.noise_corr_x": f"{adapted_range.noise_corr_x:.3f}",
                            "trust.held_out": f"{trust_adapted['ok']}/{trust_adapted['n']} ok "
                                              f"(champion {trust_base['ok']}/{trust_base['n']})",
                            "adapt.struct_px": str(span), "adapt.impulse_k": f"{DEFAULT_K:g}" if impulses else "off",
                            "adapt.lab_defects_per_mpx": f"{defects_per_mpx:.0f}", "adapt.synthetic_fraction": f"{synthetic_fraction:g}",
                            "val_metric": f"held-out {mode} loss", "val_loss": f"{result.best_val_loss:.5f}",
                            "benchmark.domain": "simulated"}
            description = (f"{parent} adapted to {len(lab_names)} lab file(s) ({mode}"
                           + (f", blind spot covering {span} px either side along x" if mode == "blind-spot" else "")
                           + (f", defective pixels repaired ({defects_per_mpx:.0f} per Mpx found in the lab frames; the model "
                              f"repairs its input the same way)" if impulses else "")
                           + f", {100 * synthetic_fraction:.0f} % synthetic '{cond.name}' patches against forgetting); "
                           f"lab files: {', '.join(Path(n).name for n in lab_names)[:1500]}; held out: "
                           f"{', '.join(Path(n).name for n in held_names)[:500]}; held-out trust "
                           f"{trust_adapted['ok']}/{trust_adapted['n']} ok vs the champion's {trust_base['ok']}/{trust_base['n']}.")
            registered = log_and_register(network, cond, register=True, alias_policy="none", score=score,
                                          description=description, tags=version_tags, progress=progress)
            out.version, out.name, out.run_id = registered.version, registered.name, registered.run_id
            out.benchmark = registered.benchmark
            if promote:
                out.promoted, out.gate = _gate_and_promote(cond, out, tolerance_db, base)
    out.seconds = time.perf_counter() - started
    return out


def _gate_and_promote(cond: Any, out: AdaptResult, tolerance_db: float, parent_network: Any) -> tuple[bool, str]:
    """Promote ``out.version`` when it loses at most ``tolerance_db`` on the condition's benchmark and its
    held-out trust is no worse than the champion's; the reason is recorded in the promotion history.

    The champion's PSNR is its registered ``benchmark.psnr`` when it was scored on the same benchmark
    (same ``benchmark.id``); otherwise (the shipped base, or a benchmark that changed since) the
    champion's network is scored here on the condition's benchmark, so both figures come from the
    same images.
    """
    from stemreg.platform import registry
    from stemreg.platform.registry.benchmark import score_model
    from stemreg.platform.registry.promotion import benchmark_of

    adapted_psnr = (out.benchmark or {}).get("psnr")
    champion_psnr = None
    try:
        scored = benchmark_of(registry.resolve(cond, "champion"))
        if scored.get("id") == (out.benchmark or {}).get("id"):
            champion_psnr = scored.get("psnr")
    except registry.NotRegisteredError:
        pass
    if champion_psnr is None and adapted_psnr is not None:
        champion_psnr = score_model(lambda image: denoise_array(parent_network, image), cond, columns=False)["psnr"]
    ok_a, ok_c = out.trust["adapted"]["ok"], out.trust["champion"]["ok"]
    if adapted_psnr is None:
        return False, "not promoted: the adapted version was not scored on the condition's benchmark"
    if champion_psnr is not None and adapted_psnr < champion_psnr - tolerance_db:
        return False, (f"not promoted: benchmark PSNR {adapted_psnr:.2f} dB loses more than {tolerance_db:g} dB to "
                       f"the champion's {champion_psnr:.2f} dB")
    if ok_a < ok_c:
        return False, f"not promoted: held-out trust {ok_a} ok, fewer than the champion's {ok_c}"
    reason = (f"adapt gate: benchmark PSNR {adapted_psnr:.2f} dB within {tolerance_db:g} dB of the champion's "
              f"{'?' if champion_psnr is None else f'{champion_psnr:.2f}'} dB; held-out lab trust {ok_a}/"
              f"{out.trust['adapted']['n']} ok (champion {ok_c})")
    registry.promote(cond, out.version, force=True, reason=reason)
    return True, reason
