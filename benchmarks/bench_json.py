"""CPU time of one `/invocations` frame's JSON work: MLflow's way against `stemreg serve`'s.

For a 256^2 and a 1024^2 float32 image (one image as `{"inputs": [[[...]]]}`), in this process, the
best of --repeats runs of each step:

- parse the body: the standard library's `json.loads` (what MLflow's scoring server uses) against
  orjson (`stemreg.platform.serving.json_io.parse_json_body`);
- build the array: MLflow's `infer_and_parse_data` against `parse_inputs` (MLflow's own
  `convert_data_type`, without the deep copy of the parsed lists);
- encode the answer: MLflow's `predictions_to_json`, the standard library's C encoder (what
  `stemreg serve` used before), and `predictions_json` (orjson from the array).

    python benchmarks/bench_json.py [--sizes 256,1024] [--repeats 3]
"""
from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np


def best_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from mlflow.models.signature import infer_signature
    from mlflow.pyfunc.scoring_server import infer_and_parse_data, predictions_to_json

    from stemreg.platform.serving.json_io import parse_inputs, parse_json_body, predictions_json

    schema = infer_signature(np.zeros((1, 8, 8), np.float32)).inputs  # the denoisers' signature
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        image = (rng.poisson(20.0, size=(1, n, n)) / 20.0).astype(np.float32)
        body = json.dumps({"inputs": image.tolist()}).encode()
        answer = (image * 0.9 + 0.01).astype(np.float32)
        parsed = json.loads(body)

        def mlflow_encode():
            out = io.StringIO()
            predictions_to_json(answer, out)

        rows = [
            ("parse body", best_ms(lambda: json.loads(body), args.repeats),
             best_ms(lambda: parse_json_body(body), args.repeats)),
            # parse_inputs reads the lists without copying them: each run gets its own parsed copy
            ("build array", best_ms(lambda: infer_and_parse_data({"inputs": parsed["inputs"]}, schema), args.repeats),
             best_ms(lambda: parse_inputs("inputs", parsed["inputs"], schema), args.repeats)),
            ("encode answer", best_ms(mlflow_encode, args.repeats),
             best_ms(lambda: predictions_json(answer), args.repeats)),
        ]
        stdlib = best_ms(lambda: json.dumps({"predictions": answer.tolist()}).encode(), args.repeats)
        print(f"{n}^2 image, body {len(body) / 1e6:.1f} MB; ms per frame, best of {args.repeats}")
        print(f"  {'step':14s} {'MLflow':>9s} {'stemreg':>9s}")
        for name, theirs, ours in rows:
            print(f"  {name:14s} {theirs:9.1f} {ours:9.1f}")
        total_theirs, total_ours = sum(r[1] for r in rows), sum(r[2] for r in rows)
        print(f"  {'total':14s} {total_theirs:9.1f} {total_ours:9.1f}   ({total_theirs / total_ours:.1f}x)")
        print(f"  (the standard library's C encoder, stemreg's before: {stdlib:.1f} ms)")


if __name__ == "__main__":
    main()
