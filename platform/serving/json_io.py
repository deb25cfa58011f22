"""JSON bodies of `/invocations`: MLflow's scoring protocol, parsed and answered without Python-level
work per pixel.

A 1024^2 image is a 17 MB JSON body of a million numbers. Read the way `mlflow models serve` reads
it (the standard library's parser, then MLflow's `infer_and_parse_data`, which deep-copies the
parsed lists before converting them) and answered with a float's `repr` per pixel, it cost 1.8 s
of CPU per frame (2.6 s with MLflow's own encoder), all of it holding the GIL that the forward
calls also need; here 0.19 s (`benchmarks/bench_json.py`, figures in docs/RESULTS.md):

- the body is parsed by orjson (strict RFC 8259 JSON, in C); a body it refuses goes to the standard
  library's parser, so lenient input (``NaN``) and errors get the same treatment and messages as before;
- one unnamed tensor given as lists is converted by MLflow's own ``convert_data_type`` on the parsed
  lists, without the defensive deep copy (``_cast_schema_type`` copies, then calls the same function);
- a finite float answer is encoded by orjson from the array itself. Its numbers are the shortest
  text that reads back as the same float64, as Python's ``repr`` writes them, so a client parses the
  very same values as from `mlflow models serve`; only the spelling of small and large exponents
  differs (``1e-5`` rather than ``1e-05``). Non-finite and non-array answers go through MLflow's encoder.

`benchmarks/bench_serving.py --compare-mlflow` measures the effect on throughput;
tests/platform/test_serving_speed.py checks the values against MLflow's parser and encoder.
"""
from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np
import orjson
from mlflow.pyfunc.scoring_server import infer_and_parse_data, predictions_to_json
from mlflow.types.schema import TensorSpec
from mlflow.utils.proto_json_utils import convert_data_type

_BOOLEAN = re.compile(rb'(?<!")\b(?:true|false)\b(?!")')


def parse_json_body(body: bytes) -> Any:
    """The request's JSON. orjson first; what it refuses (``NaN``, nesting deeper than 1024, integers
    beyond 64 bits, malformed text) is parsed, or refused, by the standard library's ``json.loads``.

    Raises
    ------
    ValueError, UnicodeDecodeError, RecursionError
        As ``json.loads`` raises them.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def holds_booleans(body: bytes) -> bool:
    """True when the body holds a JSON ``true``/``false`` outside a string (MLflow's parser would turn
    them into 1.0 and 0.0 silently). Scans with the regex only when the words occur at all."""
    return (b"true" in body or b"false" in body) and _BOOLEAN.search(body) is not None


def _one_unnamed_tensor(schema: Any) -> TensorSpec | None:
    if schema is None or schema.has_input_names() or len(schema.inputs) != 1:
        return None
    spec = schema.inputs[0]
    return spec if isinstance(spec, TensorSpec) else None


def parse_inputs(key: str, value: Any, schema: Any) -> Any:
    """What MLflow's ``infer_and_parse_data({key: value}, schema)`` returns, for ``value`` parsed from
    the request (and not used again: it is not copied).

    For ``inputs``/``instances`` holding a non-empty list of lists or numbers and a signature of one
    unnamed tensor, that is ``convert_data_type(value, spec)``: MLflow's conversion called directly.
    Everything else goes through ``infer_and_parse_data`` itself.
    """
    spec = _one_unnamed_tensor(schema)
    if (spec is not None and key in ("inputs", "instances") and isinstance(value, list) and value
            and not any(isinstance(item, dict) for item in value)):
        return convert_data_type(value, spec)
    return infer_and_parse_data({key: value}, schema)


def predictions_json(predictions: Any) -> bytes:
    """The body MLflow's scoring server answers for ``predictions`` (its ``predictions_to_json``):
    ``{"predictions": ...}`` with the same values.

    A finite float array, what the denoiser returns, is encoded by orjson (see the module's notes);
    anything else by MLflow's own encoder, byte for byte.
    """
    if (isinstance(predictions, np.ndarray) and predictions.dtype.kind == "f" and predictions.ndim
            and predictions.size and np.isfinite(predictions).all()):
        values = np.ascontiguousarray(predictions, dtype=np.float64)  # MLflow answers float64 values
        return orjson.dumps({"predictions": values}, option=orjson.OPT_SERIALIZE_NUMPY)
    out = io.StringIO()
    predictions_to_json(predictions, out)
    return out.getvalue().encode()
