"""Loading a stored model: the one verified path that every surface takes.

:func:`stemreg.load_model` (and so `stemreg denoise`), `stemreg serve`, the napari plugin,
`stemreg train --from` / `tune --from` (:func:`open_network`), scoring and promotion/rollback
(:func:`open_version`, :func:`check_runs`) all load here, and nowhere else:

- a registered version's artifacts are read from this store's location (a copied project reads
  its own, :func:`stemreg.platform.store.local_artifacts`);
- the weights and architecture are compared with the sha256 recorded at registration;
- the MLmodel must name stemreg's own ``loader_module`` (nothing else, no ``model_code_path``):
  no Python code from the artifact store ever runs;
- the network is rebuilt by the installed package (weights loaded with ``weights_only=True``);
  a truncated or corrupt file is one line, not a traceback.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemreg.errors import BadInputError, StemregError
from stemreg.models import pretrained
from stemreg.models.mlflow_model import (ARCHITECTURE_FILE, LOADER_MODULE, WEIGHTS_FILE, DenoiserModel,
                                         as_image_array, check_shape)
from stemreg.models.prediction import network_of, predict
from stemreg.platform.registry.naming import CHAMPION, NotRegisteredError
from stemreg.platform.registry.versions import resolve
from stemreg.platform.store import (check_store, explicit_tracking_uri, local_artifacts, store_exists,
                                    tracking_uri as default_tracking_uri)

#: MLflow's loader of a models-from-code pyfunc: what models logged before ``loader_module`` name.
CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"


class ModelLoadError(StemregError, ValueError):
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


def check_loader(conf: dict) -> None:
    """Refuse an MLmodel whose ``python_function`` flavor names any loader but stemreg's own.

    Accepted: ``loader_module`` = :data:`~stemreg.models.mlflow_model.LOADER_MODULE` with no
    ``model_code_path`` or ``code``; or an older models-from-code model (MLflow's own
    :data:`CODE_MODEL_LOADER` with its ``model_code_path``), whose stored code is never run: both
    are rebuilt from their data by this package. A foreign ``loader_module`` is refused, with or
    without a ``model_code_path`` beside it.
    """
    loader = conf.get("loader_module")
    if loader == CODE_MODEL_LOADER and conf.get("model_code_path"):
        return  # logged from code before loader_module: rebuilt from its data, its code is not run
    if loader != LOADER_MODULE:
        raise ModelLoadError(f"its loader is {loader!r}, not {LOADER_MODULE}; stemreg loads only its own "
                             "denoisers")
    if conf.get("model_code_path") or conf.get("code"):
        raise ModelLoadError("its MLmodel names code stored with the model "
                             f"({'model_code_path' if conf.get('model_code_path') else 'code'}); stemreg "
                             "loads only its own denoisers, with no code from the artifact store")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def load_pyfunc(model_uri: str, *, expected: dict[str, str] | None = None, tracking_uri: str | None = None) -> Any:
    """Load a stemreg pyfunc from a folder or artifact URI without executing any stored code.

    ``expected`` (a version's tags) carries sha256 figures to verify first; ``tracking_uri`` is the
    store an ``mlflow-artifacts:`` URI is read from (default MLflow's own). A ``models:/`` URI is
    read through its registered version (:func:`open_uri`), so its figures are always checked.

    Raises
    ------
    ModelLoadError
        Not a stemreg denoiser, a foreign loader, a sha256 mismatch, or weights that cannot be read.
    """
    import mlflow.pyfunc  # heavy: only when a model is loaded
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from stemreg.models.mlflow_model import DenoiserModel, _load_pyfunc

    try:
        local = Path(download_artifacts(artifact_uri=model_uri, tracking_uri=tracking_uri))
    except Exception as exc:  # noqa: BLE001 - missing folder, unreachable store: one line
        raise ModelLoadError(f"its artifacts cannot be read at {model_uri}: {_first_line(exc)}") from None
    if not (local / "MLmodel").is_file():
        raise ModelLoadError("it has no MLmodel file; it is not an MLflow model")
    try:
        meta = Model.load(str(local / "MLmodel"))
    except Exception as exc:  # noqa: BLE001 - a damaged YAML file
        raise ModelLoadError(f"its MLmodel file cannot be read: {_first_line(exc)}") from None
    conf = meta.flavors.get("python_function") or {}
    check_loader(conf)
    data = _find_data(local, conf)
    if data is None:
        raise ModelLoadError("it holds no weights.pt + architecture.json; it is not a stemreg denoiser")
    verify_integrity(data, expected)
    try:
        impl: DenoiserModel = _load_pyfunc(str(data))
    except Exception as exc:  # noqa: BLE001 - torch/json fail many ways on a damaged file
        raise ModelLoadError(f"its weights or architecture cannot be read (truncated or corrupt?): "
                             f"{_first_line(exc)}") from None
    return mlflow.pyfunc.PyFuncModel(model_meta=meta, model_impl=impl, model_id=getattr(meta, "model_id", None))


def open_version(client: Any, version: Any) -> Any:
    """The pyfunc of a registered `ModelVersion`, read from its own artifacts and verified.

    Raises
    ------
    ModelLoadError
        Unreadable or missing artifacts, a sha256 mismatch, a foreign loader, unreadable weights.
    """
    location = local_artifacts(client.get_model_version_download_uri(version.name, version.version),
                               client.tracking_uri)
    return load_pyfunc(location, expected=dict(version.tags or {}), tracking_uri=client.tracking_uri)


def registered_version(client: Any, model_uri: str) -> Any:
    """The `ModelVersion` a ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` URI names.

    Raises
    ------
    NotRegisteredError
        No such model, version or alias (or a URI of another form).
    """
    from mlflow.exceptions import MlflowException

    rest = model_uri[len("models:/"):].strip("/")
    name, at, alias = rest.partition("@")
    if not at:
        name, _, alias = rest.rpartition("/")
    if not name or not alias or "/" in name:
        raise NotRegisteredError(f"{model_uri}: a registered model is models:/<name>/<version> or "
                                 "models:/<name>@<alias>")
    try:
        if at:
            return client.get_model_version_by_alias(name, alias)
        if alias == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise NotRegisteredError(f"{model_uri}: no version of {name} is registered")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(name, alias)
    except MlflowException as exc:
        raise NotRegisteredError(f"{model_uri}: not registered in {client.tracking_uri} "
                                 f"({_first_line(exc)})") from None


def open_uri(model_uri: str, client: Any = None) -> Any:
    """A verified pyfunc from any model URI: a registry URI (``models:/<name>/<version>`` or
    ``models:/<name>@<alias>``) through its registered version (:func:`open_version`, sha256
    checked), any other URI (a logged model's ``models:/m-<id>``, ``runs:/``, a folder) through
    :func:`load_pyfunc`.

    Raises
    ------
    NotRegisteredError
        A ``models:/`` URI that names nothing registered.
    ModelLoadError
        The model cannot be loaded (see :func:`load_pyfunc`).
    """
    rest = str(model_uri)[len("models:/"):].strip("/")
    if str(model_uri).startswith("models:/") and ("@" in rest or "/" in rest):  # not a logged model's m-<id>
        if client is None:
            from stemreg.platform.store import client as make_client

            client = make_client()
        return open_version(client, registered_version(client, model_uri))
    return load_pyfunc(str(model_uri), tracking_uri=getattr(client, "tracking_uri", None))


def open_network(model_uri: str, client: Any = None) -> Any:
    """The torch network of a stored stemreg model, loaded through :func:`open_uri` (verified).

    Raises
    ------
    NotRegisteredError, ModelLoadError
        As :func:`open_uri`.
    """
    network = network_of(open_uri(model_uri, client))
    if network is None:  # pragma: no cover - every pyfunc load_pyfunc builds holds one
        raise ModelLoadError(f"{model_uri}: no network inside the model")
    return network


def check_runs(client: Any, version: Any, image: np.ndarray) -> Any:
    """Open ``version`` (:func:`open_version`) and denoise ``image`` with it; returns the pyfunc.

    Raises
    ------
    ModelLoadError
        It cannot be loaded, fails on the image, or answers a wrong shape or non-finite pixels
        (the message says which; one line).
    """
    pyfunc = open_version(client, version)
    image = np.asarray(image, dtype=np.float32)
    try:
        out = np.asarray(predict(pyfunc, image), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - a damaged network fails in many ways
        raise ModelLoadError(f"it fails on a benchmark image: {_first_line(exc)}") from None
    if out.shape != image.shape:
        raise ModelLoadError(f"it answers shape {list(out.shape)} for a benchmark image of shape "
                             f"{list(image.shape)}")
    bad = int(out.size - np.count_nonzero(np.isfinite(out)))
    if bad:
        raise ModelLoadError(f"its output on a benchmark image is not finite ({bad} of {out.size} pixels "
                             "NaN or Inf)")
    return pyfunc


@dataclass
class LoadedModel:
    """A registered denoiser, loaded: call :meth:`predict` or pass it to :func:`denoise` as ``model=``."""

    pyfunc: Any
    model_uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    condition: str | None = None
    tags: dict[str, str] | None = None
    run_id: str | None = None

    def predict(self, data: Any, params: dict | None = None) -> Any:
        """Denoise `(H, W)` or `(N, H, W)` (float); a lone image comes back `(H, W)`.

        Raises
        ------
        BadInputError
            Not a real-valued `(H, W)` / `(N, H, W)` array (checked here, so a registered model's
            MLflow schema check never answers with its own multi-line message).
        """
        data = as_image_array(data)
        check_shape(data.shape)
        return predict(self.pyfunc, data, params)


def load_version(client: Any, version: Any, *, alias: str | None = None,
                 loader: Any = None) -> LoadedModel:
    """Load a registered `ModelVersion` without touching MLflow's global tracking/registry URIs.

    ``loader`` (``model_uri -> pyfunc``) receives `models:/<name>/<version>` when given (the server's
    hook); by default the version's artifacts are loaded from their own location.
    """
    uri = f"models:/{version.name}/{version.version}"
    if loader is not None:
        pyfunc = loader(uri)
    else:
        try:
            pyfunc = open_version(client, version)  # its own artifacts, sha256 verified
        except ModelLoadError as exc:  # one line naming the version and the way back
            condition = (version.tags or {}).get("condition") or str(version.name).removeprefix("stem-denoiser-")
            raise StemregError(f"{version.name} version {version.version} cannot be loaded: {exc}; point the "
                               f"alias back to a good version with `stemreg rollback --condition {condition}`") from None
    name = str(version.name)
    return LoadedModel(pyfunc=pyfunc, model_uri=uri, name=name, version=str(version.version), alias=alias,
                       condition=(version.tags or {}).get("condition"), tags=dict(version.tags or {}),
                       run_id=version.run_id)


def load_model(condition: Any = None, *, alias: str = CHAMPION, model_uri: str | None = None,
               tracking_uri: str | None = None, fallback_pretrained: bool = True) -> LoadedModel:
    """Load a condition's registered denoiser (its champion by default), or any model URI.

    Parameters
    ----------
    condition
        Condition name or `Condition`; the model is `stem-denoiser-<condition>`.
    alias
        Alias (`champion`, `challenger`) or version number.
    model_uri
        Instead of ``condition``: any MLflow model URI or local path of a stemreg pyfunc.
    tracking_uri
        The MLflow store; default `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db`.
    fallback_pretrained
        When nothing is registered for the condition and the champion is asked for, use the
        pretrained base that ships with stemreg (its ``name`` says so) instead of failing.

    Returns
    -------
    LoadedModel

    Raises
    ------
    BadInputError
        Neither or both of ``condition`` and ``model_uri``; nothing registered behind the alias
        (:class:`~stemreg.platform.registry.NotRegisteredError`).
    """
    if (condition is None) == (model_uri is None):
        raise BadInputError("give a condition (and alias) or a model_uri, not both or neither")
    if tracking_uri is not None and not (isinstance(tracking_uri, str) and tracking_uri.strip()):
        # "" would silently mean the default store: a store the caller did not name.
        raise BadInputError(f"tracking_uri {tracking_uri!r}: give a store URI (sqlite:///path/mlflow.db, "
                            "http://host:5000, ...) or None for MLFLOW_TRACKING_URI / sqlite:///mlflow.db")
    from mlflow import MlflowClient

    from stemreg.acquisition import UnknownConditionError, load_condition

    uri = tracking_uri or default_tracking_uri()
    # Read only: a named store must exist (a typo would create an empty one and fall back to the base),
    # a server must answer; the default store may be absent on a fresh install.
    if model_uri is not None:
        client = None  # a folder needs no store (and none is created for it)
        if str(model_uri).startswith(("models:/", "runs:/", "mlflow-artifacts:")):  # read from the store
            check_store(uri, must_exist=True)
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return LoadedModel(pyfunc=open_uri(model_uri, client), model_uri=model_uri)
    check_store(uri, must_exist=explicit_tracking_uri(tracking_uri))
    try:
        cond = load_condition(condition)
    except UnknownConditionError:
        if not store_exists(uri):
            raise
        cond = None  # a name only the registry may know (a lab's condition, registered from its YAML)
    name = cond.name if cond is not None else condition
    try:
        if not store_exists(uri):  # the default store, not created yet: nothing is registered
            raise NotRegisteredError(f"no model registered for condition '{name}': there is no MLflow store "
                                     f"at {uri} yet; train one first: stemreg train --condition {name}")
        version = resolve(name, alias, client=MlflowClient(tracking_uri=uri, registry_uri=uri))
    except NotRegisteredError:
        # A fresh install: nothing trained yet, but the package ships a pretrained base. Never for a
        # name that is no condition at all (that would answer a typo with the base's output).
        if cond is None or not fallback_pretrained or alias != CHAMPION or not pretrained.available():
            raise
        return load_shipped_base(cond.name)
    loaded = load_version(MlflowClient(tracking_uri=uri, registry_uri=uri), version, alias=alias)
    loaded.condition = name
    return loaded


def load_shipped_base(condition: str | None = None) -> LoadedModel:
    """The pretrained base that ships with stemreg, as a :class:`LoadedModel` (``name`` says so).

    Wrapped in the same :class:`~stemreg.models.mlflow_model.DenoiserModel` a registered model loads
    into: the same params, checks, defaults and tiling, only not read from an MLflow model folder.
    """
    network, card = pretrained.load_pretrained()
    tags = {"pretrained": "true", "trained_pixel_size_pm": json.dumps(card["condition"]["pixel_size_pm"])}
    # what the trust report reads: the detector read-out (revision 4 on), bright field (revision 5 on)
    for key in ("bandwidth_px", "bright_field_fraction"):
        if key in card["condition"]:
            tags[f"condition.{key}"] = json.dumps(card["condition"][key])
    return LoadedModel(pyfunc=DenoiserModel(network), model_uri=f"pretrained:{card['name']}",
                       name=f"pretrained base '{card['name']}' (shipped with stemreg)", version=None,
                       alias=None, condition=condition, tags=tags)
