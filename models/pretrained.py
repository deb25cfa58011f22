"""The pretrained base that ships with the package: its files, its card, loading it.

``models/pretrained/<name>.pth`` holds a state_dict (loaded with ``weights_only=True``) and
``<name>.json`` its card: architecture, the condition (name and hash) and data it was trained on,
steps and recipe, the commit, and its benchmark figures per bin. The command that makes both is
``stemreg pretrain`` (:mod:`stemreg.platform.pretrain`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stemreg.errors import StemregError
from stemreg.models.architectures import build_model

PRETRAINED_DIR = Path(__file__).with_name("pretrained")
#: The base every condition is fine-tuned from.
BASE_NAME = "low-dose-base"


class PretrainedMissingError(StemregError, FileNotFoundError):
    """The package holds no pretrained weights of that name."""


def weights_path(name: str = BASE_NAME, directory: Path | None = None) -> Path:
    return (directory or PRETRAINED_DIR) / f"{name}.pth"


def card_path(name: str = BASE_NAME, directory: Path | None = None) -> Path:
    return (directory or PRETRAINED_DIR) / f"{name}.json"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def available(name: str = BASE_NAME, directory: Path | None = None) -> bool:
    """Whether the weights and the card of ``name`` are present."""
    return weights_path(name, directory).is_file() and card_path(name, directory).is_file()


def load_card(name: str = BASE_NAME, directory: Path | None = None) -> dict[str, Any]:
    """The card of a pretrained model (a dict)."""
    path = card_path(name, directory)
    if not path.is_file():
        raise PretrainedMissingError(f"no pretrained model {name!r} in {path.parent} (make one with "
                                     "`stemreg pretrain`)")
    return json.loads(path.read_text())


def load_pretrained(name: str = BASE_NAME, directory: Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The pretrained network (eval mode, CPU) and its card; the weights' sha256 is checked against the card.

    Raises
    ------
    PretrainedMissingError
        The files are absent.
    ValueError
        The weights do not match the card's sha256 (a damaged or replaced file).
    """
    card = load_card(name, directory)
    path = weights_path(name, directory)
    if not path.is_file():
        raise PretrainedMissingError(f"no weights {path.name} beside the card in {path.parent}")
    digest = sha256_of(path)
    if card.get("weights_sha256") and card["weights_sha256"] != digest:
        raise ValueError(f"{path.name}: sha256 {digest[:12]}... does not match its card's "
                         f"{card['weights_sha256'][:12]}...; reinstall stemreg or rerun `stemreg pretrain`")
    model = build_model(card["architecture"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    return model, card


def save_pretrained(model: nn.Module, card: dict[str, Any], name: str = BASE_NAME,
                    directory: Path | None = None) -> tuple[Path, Path]:
    """Write the weights and the card (with the weights' sha256 added); returns both paths."""
    directory = directory or PRETRAINED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = weights_path(name, directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".pth.tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    card = {**card, "weights_file": path.name, "weights_sha256": sha256_of(path)}
    card_file = card_path(name, directory)
    tmp_card = card_file.with_suffix(".json.tmp")
    tmp_card.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    tmp_card.replace(card_file)
    return path, card_file
