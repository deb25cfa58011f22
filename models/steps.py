"""Training that stops and resumes: one optimiser kept across calls, its whole state saved and loaded.

:func:`stemreg.models.train` runs a fixed number of epochs in one call. A comparison trained for
hours on shared CPUs has to survive being stopped; :class:`ResumableTrainer` takes batches as they
come (:meth:`ResumableTrainer.step`), and :meth:`~ResumableTrainer.state_dict` /
:meth:`~ResumableTrainer.load_state_dict` hold the weights, the AdamW moments, the step count and
the learning-rate scale, so a run continues where it stopped.

The recipe is the leaderboard's: AdamW (weight decay 1e-4), linear warm-up, gradient clipping at
norm 1, L2 loss in the input's normalised units; the learning rate is constant after the warm-up
and divided by :data:`LR_DROP` at each plateau (the caller decides when).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from stemreg.models.inference import apply_stats, normalise
from stemreg.models.patches import _dihedral, blind_spot_mask
from stemreg.models.train_config import TrainingMode

#: Factor the learning rate drops by at each plateau.
LR_DROP = 4.0


def prepare_batch(mode: str | TrainingMode, data: Any, rng: np.random.Generator, *, augment: bool = True,
                  blind_spot_fraction: float = 0.02, blind_spot_radius_px: int = 2
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Normalised, augmented (input, target, loss mask or None) ``(B, P, P)`` arrays for one step.

    Parameters
    ----------
    mode
        ``supervised``: ``data = (degraded, clean)``, each ``(B, P, P)``;
        ``noise2noise``: ``data`` = two noisy repeats ``(B, 2, P, P)`` (one is the input, the
        other the target, picked at random per patch); ``blind-spot``: ``data`` = noisy
        ``(B, P, P)`` (masked as in Noise2Void, the loss taken on the masked pixels).
    data
        The batch, in the images' own units; each input is normalised by its own statistics and
        its target by the same ones (as whole images are at inference).
    rng
        Draws the augmentation, the noise2noise order and the blind-spot mask.
    """
    mode = TrainingMode(mode)
    if mode is TrainingMode.SUPERVISED:
        degraded, clean = (np.asarray(a, np.float32) for a in data)
    elif mode is TrainingMode.NOISE2NOISE:
        repeats = np.asarray(data, np.float32)
        if repeats.ndim != 4 or repeats.shape[1] < 2:
            raise ValueError(f"noise2noise batches are repeats (B, k>=2, P, P); got shape {repeats.shape}")
        first = rng.integers(0, 2, len(repeats))
        degraded, clean = repeats[np.arange(len(repeats)), first], repeats[np.arange(len(repeats)), 1 - first]
    else:
        degraded = np.asarray(data, np.float32)
        clean = degraded
    x, stats = normalise(degraded)
    y = apply_stats(clean, stats)
    if augment:
        rot, flip = rng.integers(0, 4, len(x)), rng.integers(0, 2, len(x)).astype(bool)
        x = np.stack([_dihedral(a, r, f) for a, r, f in zip(x, rot, flip)])
        y = np.stack([_dihedral(a, r, f) for a, r, f in zip(y, rot, flip)])
    if mode is TrainingMode.BLIND_SPOT:
        x, mask = blind_spot_mask(x, fraction=blind_spot_fraction, radius_px=blind_spot_radius_px, rng=rng)
        return np.ascontiguousarray(x), np.ascontiguousarray(y), mask
    return np.ascontiguousarray(x), np.ascontiguousarray(y), None


class ResumableTrainer:
    """One network, its AdamW optimiser and its step count; trains a step per :meth:`step` call.

    Parameters
    ----------
    model
        The network (built for its mode: see :func:`~stemreg.models.architectures.architecture_for_mode`).
    lr
        Peak learning rate.
    warmup_steps
        Steps over which the learning rate ramps up linearly from the first step.
    weight_decay, grad_clip
        AdamW's decoupled weight decay; the gradients' global-norm clip (0: none).
    device
        A torch device.
    """

    def __init__(self, model: nn.Module, *, lr: float, warmup_steps: int = 100, weight_decay: float = 1e-4,
                 grad_clip: float = 1.0, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.lr, self.warmup_steps, self.grad_clip = float(lr), int(warmup_steps), float(grad_clip)
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=weight_decay)
        self.steps = 0
        self.lr_scale = 1.0  # divided by LR_DROP at each plateau
        self._warm_from = 0  # the step the (last) warm-up started at

    def current_lr(self) -> float:
        """The learning rate of the next step."""
        ramp = min(1.0, (self.steps + 1 - self._warm_from) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        return self.lr * self.lr_scale * ramp

    def step(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
        """One optimiser step on a prepared batch (see :func:`prepare_batch`); returns the loss."""
        self.model.train()
        for group in self.optimiser.param_groups:
            group["lr"] = self.current_lr()
        xt = torch.from_numpy(x)[:, None].to(self.device).contiguous(memory_format=torch.channels_last)
        yt = torch.from_numpy(y)[:, None].to(self.device)
        per_pixel = (self.model(xt) - yt) ** 2
        if mask is not None:
            mt = torch.from_numpy(mask)[:, None].to(self.device)
            loss = (per_pixel * mt).sum() / mt.sum()
        else:
            loss = per_pixel.mean()
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimiser.step()
        self.steps += 1
        return float(loss.detach())

    def state_dict(self, *, with_optimiser: bool = True) -> dict[str, Any]:
        """Everything a resumed run needs (weights on the CPU; the optimiser's moments unless told not)."""
        state: dict[str, Any] = {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                                 "steps": self.steps, "lr_scale": self.lr_scale}
        if with_optimiser:
            state["optimiser"] = self.optimiser.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output. Without the optimiser's moments (a small,
        weights-only checkpoint) AdamW starts them afresh, with a new warm-up from this step."""
        self.model.load_state_dict({k: v.float() for k, v in state["model"].items()})
        self.steps, self.lr_scale = int(state["steps"]), float(state["lr_scale"])
        if "optimiser" in state:
            self.optimiser.load_state_dict(state["optimiser"])
        else:
            self._warm_from = self.steps  # re-warm the fresh moments
