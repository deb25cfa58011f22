"""Distilled students in the registry: the teacher of a condition, and the front's students registered.

A distillation search (:func:`stemreg.tuning.run_study` with a teacher) trains students of the
condition's champion. Here the platform picks the teacher (the champion; with nothing registered,
the pretrained base that ships with the package) and registers what the search found:

- the best-quality student as a new version with alias ``challenger`` (the caller may then promote
  it through the usual benchmark gate);
- the fastest student within :data:`~stemreg.tuning.result.PSNR_TOLERANCE_DB` of the teacher as a
  version with alias ``fast`` (live denoising at the microscope needs speed), once its score on the
  whole benchmark confirms it is within that margin of the champion.

Both are registered as trained in their trial (weights logged on the trial run), not retrained.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow

from stemreg.platform import registry
from stemreg.platform.registry import as_condition, model_name
from stemreg.platform.store import client as make_client

log = logging.getLogger(__name__)

FAST = "fast"


def teacher_for(condition: Any):
    """The teacher of a condition's students: its champion, else the shipped pretrained base.

    Returns
    -------
    stemreg.tuning.distill.Teacher or None
        None when there is neither (no champion and no pretrained base in the package).
    """
    from stemreg.models import architecture_of
    from stemreg.models.pretrained import available, load_pretrained
    from stemreg.platform.training.runs import load_parent
    from stemreg.tuning.distill import Teacher

    cond = as_condition(condition)
    try:
        version = registry.resolve(cond, registry.CHAMPION)
    except registry.NotRegisteredError:
        version = None
    if version is not None:
        uri = f"models:/{model_name(cond)}/{version.version}"
        network, arch = load_parent(uri, None)
        network.eval()
        return Teacher(model=network, architecture=arch, uri=uri)
    if available():
        network, card = load_pretrained()
        return Teacher(model=network, architecture=architecture_of(network), uri=f"pretrained:{card['name']}")
    return None


def _student(run_id: str):
    """The student a trial logged (``student/`` on its run), rebuilt by the installed package."""
    import torch

    from stemreg.models import build_model
    from stemreg.tuning.tracking import STUDENT_ARCHITECTURE, STUDENT_DIR, STUDENT_WEIGHTS

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(make_client().download_artifacts(run_id, STUDENT_DIR, tmp))
        arch = json.loads((local / STUDENT_ARCHITECTURE).read_text())
        network = build_model(arch)
        network.load_state_dict(torch.load(local / STUDENT_WEIGHTS, map_location="cpu", weights_only=True))
    network.eval()
    return network


def register_student(condition: Any, result: Any, trial: int, *, alias_policy: str, role: str,
                     progress: bool = False) -> dict[str, Any]:
    """Register trial ``trial``'s student of ``result`` as a new version (scored on the whole benchmark)."""
    from stemreg.platform.training.runs import log_and_register

    cond = as_condition(condition)
    row = result.trial(trial)
    network = _student(row["run_id"])
    tags = {"optuna.study": result.study_name, "optuna.trial_number": str(trial),
            "optuna.parent_run_id": result.parent_run_id, "teacher": str(result.teacher_uri),
            "parent": str(result.teacher_uri), "student.role": role,
            "student.slice_psnr": f"{row['val_psnr']:.4f}"}
    description = (f"Distilled student of {result.teacher_uri} (trial {trial} of study {result.study_name}), "
                   f"the {role} of its quality-latency front.")
    with mlflow.start_run(run_name=f"student-{cond.name}-{trial}", nested=mlflow.active_run() is not None,
                          tags={"condition": cond.name, "stemreg.role": "student"}):
        out = log_and_register(network, cond, alias_policy=alias_policy, tags=tags, description=description,
                               progress=progress)
    return {"version": out.version, "alias": out.alias, "model_uri": out.model_uri, "trial": trial,
            "run_id": out.run_id, "architecture": out.architecture, "benchmark": out.benchmark}


def register_front(condition: Any, result: Any, *, progress: bool = False) -> dict[str, Any]:
    """Register a distillation search's ``challenger`` (best quality) and ``fast`` students.

    Returns
    -------
    dict
        ``challenger`` and ``fast``: what was registered (None when nothing was), and ``notes``:
        one line each on why a role has no version.
    """
    from stemreg.tuning.result import PSNR_TOLERANCE_DB

    cond = as_condition(condition)
    out: dict[str, Any] = {"challenger": None, "fast": None, "notes": []}
    if result.quality_trial is None:
        out["notes"].append("no complete student: nothing to register")
        return out
    # `auto`: challenger beside a champion; the champion itself where the condition has none yet.
    out["challenger"] = register_student(cond, result, result.quality_trial, alias_policy="auto",
                                         role="best-quality student", progress=progress)
    if result.fast_trial is None:
        out["notes"].append(f"no student within {PSNR_TOLERANCE_DB} dB of the teacher on the benchmark slice: "
                            "no `fast` alias")
        return out
    if result.fast_trial == result.quality_trial:
        fast = dict(out["challenger"])
    else:
        fast = register_student(cond, result, result.fast_trial, alias_policy="none", role="fastest student "
                                f"within {PSNR_TOLERANCE_DB} dB", progress=progress)
    client = make_client()
    champion = registry.resolve(cond, registry.CHAMPION)
    champion_psnr = registry.benchmark_of(champion).get("psnr")
    fast_psnr = (fast.get("benchmark") or {}).get("psnr")
    if champion_psnr is not None and fast_psnr is not None and fast_psnr < champion_psnr - PSNR_TOLERANCE_DB:
        out["notes"].append(f"student v{fast['version']} scores {fast_psnr:.2f} dB on the whole benchmark, more "
                            f"than {PSNR_TOLERANCE_DB} dB under the champion's {champion_psnr:.2f}: no `fast` alias")
        return out
    client.set_registered_model_alias(model_name(cond), FAST, fast["version"])
    client.set_model_version_tag(model_name(cond), fast["version"], "fast.reason",
                                 f"fastest student within {PSNR_TOLERANCE_DB} dB of champion v{champion.version}")
    fast["alias"] = FAST if fast.get("alias") is None else f"{fast['alias']}+{FAST}"
    out["fast"] = fast
    return out
