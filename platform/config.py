"""Defaults of `stemreg serve` and `stemreg pretrain`, written once, typed.

The CLI options, :func:`stemreg.platform.serving.make_server` (and its handler and holder) and
:func:`stemreg.platform.pretrain.pretrain_base` all take their defaults from :data:`SERVE` and
:data:`PRETRAIN`. Plain frozen dataclasses: importing this module costs nothing, so
`stemreg --help` shows the defaults without loading numpy. Training and search defaults live in
:mod:`stemreg.models.config` and :mod:`stemreg.tuning.budget`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeDefaults:
    """What `stemreg serve` runs with unless told otherwise.

    Attributes
    ----------
    alias
        The registry alias served and followed.
    host, port
        Address bound (the server has no authentication: loopback unless told).
    max_pixels
        Largest request (N x H x W); 4096 x 4096 is a large STEM frame, well within memory tiled.
    poll_seconds
        How often the alias is re-read (0: only on POST /reload).
    workers, queued
        Requests worked on at once (a thread each) and complete requests waiting for one; more get
        503. Only complete requests take a thread: the front end (serving/frontend.py) reads them first.
    batch_images
        Most images of concurrent same-size requests run in one forward call.
    socket_timeout_s
        Seconds a connection may stay silent (idle keep-alive, or a request or answer that stops moving).
    header_timeout_s
        Seconds from a request's first byte to the end of its headers (408 after).
    request_timeout_s
        Seconds from a request's first byte to the end of its body, plus one per MB of body; a trickle
        of bytes does not extend it (408 after).
    max_connections
        Connections held at once; a newcomer beyond pushes out the one idle (else reading headers) longest.
    """

    alias: str = "champion"
    host: str = "127.0.0.1"
    port: int = 8080
    max_pixels: int = 4096 * 4096
    poll_seconds: float = 30.0
    workers: int = 32
    queued: int = 64
    batch_images: int = 16
    socket_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    max_connections: int = 1024


@dataclass(frozen=True)
class PretrainDefaults:
    """The recipe of the pretrained base that ships with stemreg (docs/RESULTS.md: the run that made it).

    Attributes
    ----------
    condition
        The condition it is trained over (the files' name is the package's ``BASE_NAME``).
    steps, steps_per_epoch, batch_size, patch_px, lr
        Optimiser steps (AdamW, 5 % warm-up, cosine decay), batches of ``batch_size`` patches.
    seed, val_seed
        Seeds of the training stream and of the validation set (never the benchmark's).
    n_fields, n_val
        Clean fields cached for the stream (fresh noise every patch) and validation images.
    """

    condition: str = "low-dose"
    steps: int = 4000
    steps_per_epoch: int = 200
    batch_size: int = 16
    patch_px: int = 128
    lr: float = 2e-3
    seed: int = 101
    val_seed: int = 102
    n_fields: int = 256
    n_val: int = 24


SERVE = ServeDefaults()
PRETRAIN = PretrainDefaults()
