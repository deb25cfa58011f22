"""Single-image prediction through a loaded MLflow pyfunc of a stemreg denoiser.

The registered models are signed for stacks `(N, H, W)`; a lone image `(H, W)`
goes as a stack of one and comes back `(H, W)`. Every caller (the CLI, the
server, the benchmark, :func:`stemreg.denoise`) predicts through here.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np


def takes_stacks_only(pyfunc: Any) -> bool:
    """True when the pyfunc's signature declares one rank-3 tensor `(N, H, W)` input."""
    metadata = getattr(pyfunc, "metadata", None)
    schema = metadata.get_input_schema() if metadata is not None else None
    if schema is None or not getattr(schema, "is_tensor_spec", lambda: False)():
        return False
    shapes = [tuple(getattr(spec, "shape", ()) or ()) for spec in schema.inputs]
    return len(shapes) == 1 and len(shapes[0]) == 3


def network_of(pyfunc: Any) -> Any:
    """The torch network behind a stemreg pyfunc (loaded or bare :class:`DenoiserModel`); None if unknown."""
    try:
        return pyfunc.get_raw_model()
    except (AttributeError, NotImplementedError):
        return None


def request_options(pyfunc: Any, params: dict | None) -> dict:
    """The options ``pyfunc.predict(data, params)`` runs with: the signature's param defaults (what
    MLflow fills in for a missing param; None in models registered now, 256 / 16 px tiles in older
    ones) overridden by ``params``, checked (:func:`stemreg.models.mlflow_model.resolve_params`)."""
    from stemreg.models.mlflow_model import resolve_params

    metadata = getattr(pyfunc, "metadata", None)
    schema = metadata.get_params_schema() if metadata is not None else None
    defaults = {spec.name: spec.default for spec in schema.params} if schema is not None else {}
    return resolve_params({**defaults, **(params or {})})


def predict(pyfunc: Any, data: Any, params: dict | None = None) -> Any:
    """Run the pyfunc on `data`; a lone `(H, W)` array comes back `(H, W)` even from a stack-signed model.

    Other inputs (stacks, DataFrames) go to the pyfunc unchanged and come back as it answers.
    """
    lone = isinstance(data, np.ndarray) and data.ndim == 2 and takes_stacks_only(pyfunc)
    batch = data[None] if lone else data
    out = pyfunc.predict(batch, params=params) if params else pyfunc.predict(batch)
    return np.asarray(out)[0] if lone else out


def predict_fn(pyfunc: Any) -> Callable[[np.ndarray], np.ndarray]:
    """`(H, W) -> (H, W)` float32 through :func:`predict` (what the scorer times)."""
    def run(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        return np.asarray(predict(pyfunc, image), dtype=np.float32).reshape(image.shape)

    return run


class ModelLoadError(ValueError):
    """A stored model this package refuses to load: one line naming what is wrong."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_data(local: Path, conf: dict) -> Path | None:
    """The folder holding ``weights.pt`` and ``architecture.json``: the flavor's ``data`` folder, or
    ``artifacts/`` for a model logged from code before ``loader_module``. Never outside ``local``."""
    from stemreg.models.mlflow_model import ARCHITECTURE_FILE, WEIGHTS_FILE

    folder = (local / str(conf["data"])) if conf.get("data") else local / "artifacts"
    try:
        folder = folder.resolve()
        folder.relative_to(local.resolve())
    except (OSError, ValueError):
        return None
    if (folder / WEIGHTS_FILE).is_file() and (folder / ARCHITECTURE_FILE).is_file():
        return folder
    return None


def verify_integrity(data: Path, expected: dict[str, str] | None) -> None:
    """Compare the stored weights and architecture with the sha256 recorded at registration.

    ``expected`` holds ``weights_sha256`` and/or ``architecture_sha256`` (a version's tags); a missing
    figure is not checked. Raises :class:`ModelLoadError` on a mismatch.
    """
    from stemreg.models.mlflow_model import ARCHITECTURE_FILE, WEIGHTS_FILE

    expected = expected or {}
    want = expected.get("weights_sha256")
    if want and _sha256(data / WEIGHTS_FILE) != want.strip().lower():
        raise ModelLoadError(f"its weights do not match the weights_sha256 recorded at registration "
                             f"({want[:12]}...): the stored file is damaged or replaced")
    want = expected.get("architecture_sha256")
    if want:
        raw = (data / ARCHITECTURE_FILE).read_bytes()
        candidates = {hashlib.sha256(raw).hexdigest()}
        try:
            canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
            candidates.add(hashlib.sha256(canonical.encode()).hexdigest())
            candidates.add(hashlib.sha256(json.dumps(json.loads(raw), sort_keys=True).encode()).hexdigest())
        except ValueError:
            pass
        if want.strip().lower() not in candidates:
            raise ModelLoadError(f"its architecture does not match the architecture_sha256 recorded at "
                                 f"registration ({want[:12]}...): the stored file is damaged or replaced")


def load_pyfunc(model_uri: str, *, expected: dict[str, str] | None = None) -> Any:
    """Load a stemreg pyfunc without executing any code from the artifact store.

    A model saved with ``loader_module`` is loaded by MLflow, which imports the installed
    :mod:`stemreg.models.mlflow_model`; an older models-from-code model is rebuilt from its weights
    and architecture by the same installed code (its stored ``pyfunc_entry.py`` is not run).
    ``expected`` (a version's tags) carries sha256 figures to verify first.

    Raises
    ------
    ModelLoadError
        Not a stemreg denoiser, a sha256 mismatch, or weights that cannot be read (truncated).
    """
    import mlflow.pyfunc  # heavy: only when a model is loaded
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from stemreg.models.mlflow_model import LOADER_MODULE, DenoiserModel, _load_pyfunc

    try:
        local = Path(download_artifacts(artifact_uri=model_uri))
    except Exception as exc:  # noqa: BLE001 - missing folder, unreachable store: one line
        raise ModelLoadError(f"its artifacts cannot be read at {model_uri}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'not found'}") from None
    if not (local / "MLmodel").is_file():
        raise ModelLoadError("it has no MLmodel file; it is not an MLflow model")
    meta = Model.load(str(local / "MLmodel"))
    conf = meta.flavors.get("python_function") or {}
    data = _find_data(local, conf)
    if data is None:
        raise ModelLoadError("it holds no weights.pt + architecture.json; it is not a stemreg denoiser")
    verify_integrity(data, expected)
    if conf.get("loader_module") != LOADER_MODULE and "model_code_path" not in conf:
        raise ModelLoadError(f"its loader is {conf.get('loader_module')!r}, not {LOADER_MODULE}; "
                             "stemreg loads only its own denoisers")
    try:
        impl: DenoiserModel = _load_pyfunc(str(data))
    except Exception as exc:  # noqa: BLE001 - torch/json fail many ways on a damaged file
        raise ModelLoadError(f"its weights or architecture cannot be read (truncated or corrupt?): "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from exc
    return mlflow.pyfunc.PyFuncModel(model_meta=meta, model_impl=impl,
                                      model_id=getattr(meta, "model_id", None))
