"""The dock widget: pick a condition and an alias, denoise the chosen image layer into a new layer."""
import napari  # at run time: magicgui resolves the Viewer and Image parameters through it
from magicgui import magic_factory

from stemreg_napari._denoise import ALIASES, denoise_image


def condition_names() -> list[str]:
    """The built-in acquisition conditions, by name (see `stemreg conditions`)."""
    from stemreg.acquisition import list_conditions

    return [cond.name for cond in list_conditions()]


def _condition_choices(_widget=None) -> list[str]:
    return condition_names()


def result_name(layer_name: str, condition: str, version: str) -> str:
    """`<layer> denoised (<condition> v<version>)`."""
    return f"{layer_name} denoised ({condition} v{version})"


@magic_factory(call_button="Denoise",
               condition={"choices": _condition_choices, "tooltip": "Acquisition condition of the image"},
               alias={"choices": list(ALIASES), "tooltip": "Registered model to use"})
def denoise_widget(viewer: napari.Viewer, image: napari.layers.Image, condition: str = "low-dose",
                   alias: str = "champion") -> None:
    """Denoise `image` with `stem-denoiser-<condition>@<alias>`; add the result with the same scale.

    The model comes from the MLflow store in force (`MLFLOW_TRACKING_URI`, else
    `sqlite:///mlflow.db` in napari's working directory).
    """
    if image is None:
        raise ValueError("no image layer chosen: open or select an image first")
    result = denoise_image(image.data, condition=condition, alias=alias)
    viewer.add_image(
        result.data, name=result_name(image.name, result.condition, result.version),
        scale=image.scale, translate=image.translate, units=image.units,
        metadata={**image.metadata, "stemreg": {"model": result.model_name, "version": result.version,
                                                "alias": alias, "condition": result.condition}})
    add_trust_layer(viewer, image, result)


def trust_name(layer_name: str, verdicts: list[str]) -> str:
    """`<layer> trust: <verdict>` (the worst verdict of a stack)."""
    order = ("out of range", "doubtful", "ok")
    return f"{layer_name} trust: {min(verdicts, key=order.index)}"


def add_trust_layer(viewer: napari.Viewer, image: napari.layers.Image, result) -> None:
    """The trust map as a layer above the output: residual structure as z-scores (red: signal the
    model removed, blue: structure it added), hidden until the user looks; the verdict in its name."""
    reports = result.trust if isinstance(result.trust, list) else [result.trust]
    if not reports or reports[0] is None:
        return
    import numpy as np

    data = np.stack([r.map for r in reports]) if isinstance(result.trust, list) else reports[0].map
    viewer.add_image(data, name=trust_name(image.name, [r.verdict for r in reports]), colormap="bwr",
                     contrast_limits=(-6.0, 6.0), opacity=0.6, visible=False, scale=image.scale,
                     translate=image.translate, units=image.units,
                     metadata={"stemreg_trust": [r.to_dict() for r in reports]})
