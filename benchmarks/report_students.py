"""What a main-job (or `stemreg tune`) store holds about its distilled students, per condition.

For every study run (tag ``stemreg.role = study``): its teacher and the teacher's figures on the
benchmark slice, every trial (state, slice PSNR, ms/Mpx, kFLOP/px, receptive field, warm start,
architecture): the front, as Markdown; then the condition's registered versions made from that
study (``optuna.study`` tag) with their role, whole-benchmark PSNR and aliases, and the champion.
Reads only; figures are those the job logged.

    python benchmarks/report_students.py --tracking-uri sqlite:///path/mlflow.db
"""
from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    args = parser.parse_args()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    studies = client.search_runs(experiments, "tags.`stemreg.role` = 'study'", order_by=["attributes.start_time ASC"])
    if not studies:
        raise SystemExit(f"no study run in {args.tracking_uri}")
    for study in studies:
        tags, metrics = study.data.tags, study.data.metrics
        name = tags.get("optuna.study", study.info.run_name)
        print(f"\n### {study.info.run_name} (run {study.info.run_id[:8]}, {study.info.status})")
        print(f"teacher {tags.get('stemreg.teacher', '?')}: {metrics.get('teacher_psnr', float('nan')):.2f} dB on the "
              f"slice, {metrics.get('teacher_ms_per_mpx', float('nan')):.0f} ms/Mpx")
        trials = client.search_runs([study.info.experiment_id],
                                    f"tags.`mlflow.parentRunId` = '{study.info.run_id}'",
                                    order_by=["attributes.start_time ASC"])
        print("\n| trial | state | slice PSNR (dB) | ms/Mpx | kFLOP/px | RF px | warm start | architecture |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for trial in trials:
            p, m, t = trial.data.params, trial.data.metrics, trial.data.tags
            arch = json.loads(p["architecture"]) if "architecture" in p else {}
            shape = f"{arch.get('levels', 1)} lv {'-'.join(map(str, arch.get('widths', [])))} u{arch.get('unshuffle', 1)}"
            print(f"| {t.get('optuna.trial_number', '?')} | {t.get('optuna.state', trial.info.status)} | "
                  f"{m.get('bench_psnr', float('nan')):.2f} | {m.get('ms_per_mpx', float('nan')):.0f} | "
                  f"{p.get('kflop_per_pixel', '?')} | {p.get('receptive_field_px', '?')} | {p.get('warm_start', '')} | "
                  f"{shape} |")
        condition = tags.get("condition.name") or tags.get("condition")
        model = f"stem-denoiser-{condition}" if condition else None
        if model is None:
            continue
        aliases: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(model).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        for version in client.search_model_versions(f"name = '{model}'"):
            vt = version.tags
            if vt.get("optuna.study") != name and "champion" not in aliases.get(str(version.version), []):
                continue
            print(f"- {model} v{version.version} [{', '.join(aliases.get(str(version.version), [])) or 'no alias'}]"
                  f" {vt.get('student.role', 'champion')}: {float(vt.get('benchmark.psnr', 'nan')):.2f} dB "
                  f"(whole benchmark), {vt.get('benchmark.ms_per_mpx', '?')} ms/Mpx")


if __name__ == "__main__":
    main()
