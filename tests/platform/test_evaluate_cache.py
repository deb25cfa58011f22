"""A warm `stemreg evaluate` (every row from the store) reports exactly what the cold one computed."""
from __future__ import annotations

import shutil

import pytest

from stemreg.platform.evaluation import evaluate
from tests.platform.conftest import TINY_CONDITION

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _same_figures(cold, warm) -> None:
    assert warm.markdown() == cold.markdown()  # the table the CLI prints
    assert warm.per_bin() == cold.per_bin()
    strip = [{k: v for k, v in r.items() if k != "source"} for r in cold.rows()]
    assert [{k: v for k, v in r.items() if k != "source"} for r in warm.rows()] == strip
    assert warm.provenance == cold.provenance  # the cached rows' draws were checked for test images too


def test_a_warm_evaluate_takes_every_row_from_the_store_and_prints_the_cold_table(mlflow_store, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONDITION.format(name="tiny-warm", current=50.0))
    # the defaults' path: the registry is asked (nothing registered: the hourglass is trained here)
    cold = evaluate(str(path), methods="hourglass,n2v,gaussian", budget="tiny", progress=False)
    warm = evaluate(str(path), methods="hourglass,n2v,gaussian", budget="tiny", progress=False)
    assert not any(r.source.endswith("(cached)") for r in cold.results)
    assert all(r.source.endswith("(cached)") for r in warm.results[1:]), [r.source for r in warm.results]
    assert warm.results[1].source == "trained here (tiny) (cached)"
    _same_figures(cold, warm)


def test_the_registered_champion_row_is_cached_per_model_version(registered_low_dose, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(registered_low_dose.store_dir, store)  # the session's store stays as it was
    monkeypatch.chdir(store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    cold = evaluate("low-dose", methods="hourglass", progress=False)
    warm = evaluate("low-dose", methods="hourglass", progress=False)
    version = registered_low_dose.version
    assert cold.results[1].source == f"registered champion v{version}"
    assert warm.results[1].source == f"registered champion v{version} (cached)"
    _same_figures(cold, warm)


def test_rows_computed_in_worker_processes_equal_the_rows_computed_here(mlflow_store, tmp_path, monkeypatch):
    from stemreg.platform.evaluation import cache

    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONDITION.format(name="tiny-pool", current=50.0))
    here = evaluate(str(path), methods="hourglass,sdndti,tv", budget="tiny", progress=False, log_to_mlflow=False,
                    workers=1)
    monkeypatch.setattr(cache, "PARALLEL_MIN_MPX", 0.0)  # a tiny benchmark goes to the pool too
    pooled = evaluate(str(path), methods="hourglass,sdndti,tv", budget="tiny", progress=False, log_to_mlflow=False,
                      workers=2)
    for a, b in zip(here.results, pooled.results):
        assert (a.method, a.source) == (b.method, b.source)
        for key in ("psnr", "ssim", "column_f1", "column_error_pm"):
            assert getattr(a, key).tolist() == getattr(b, key).tolist(), (a.method, key)
