"""HTTP serving of a condition's registered denoiser.

- :mod:`~stemreg.platform.serving.http_io`: request/answer bodies (JSON checks, images in memory);
- :mod:`~stemreg.platform.serving.holder`: the loaded model version, following its alias;
- :mod:`~stemreg.platform.serving.server`: the HTTP server and :func:`make_server`.
"""
from __future__ import annotations

from stemreg.platform.serving.holder import DEFAULT_ALIAS, ModelHolder, RefreshResult, ServedModel
from stemreg.platform.serving.http_io import (ACCEPTED_IMAGE, ACCEPTED_JSON, RequestError, check_image_array,
                                              decode_image, detect_image_format, encode_image, peek_image_shape)
from stemreg.platform.serving.server import (DEFAULT_HOST, DEFAULT_MAX_PIXELS, DEFAULT_POLL_SECONDS, DEFAULT_PORT,
                                             DenoiserHTTPServer, configure_threads, make_server, usable_cores)

__all__ = ["ACCEPTED_IMAGE", "ACCEPTED_JSON", "DEFAULT_ALIAS", "DEFAULT_HOST", "DEFAULT_MAX_PIXELS",
           "DEFAULT_POLL_SECONDS", "DEFAULT_PORT", "DenoiserHTTPServer", "ModelHolder", "RefreshResult",
           "RequestError", "ServedModel", "check_image_array", "configure_threads", "decode_image",
           "detect_image_format", "encode_image", "make_server", "peek_image_shape", "usable_cores"]
