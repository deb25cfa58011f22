"""Model cards: the Markdown description of each registered model and version.

Written by the code that registers and scores (:func:`refresh_cards`), so the
MLflow UI shows, for every version: what it restores, the benchmark per bin
beside the noisy input (and BM3D where its figures exist), its condition (name,
version, hash, the trained sampling and dose ranges), how to call it, the
lineage, and the condition's full spec as YAML. Per-bin tables are fixed-width
text in a fenced block: the MLflow UI draws Markdown tables without cell
padding. The registered model's card shows the champion against the
challenger. MLflow stores descriptions of up to 5000 characters; a card that
would not fit drops the spec first.
"""
from __future__ import annotations

import math
from typing import Any

import yaml

from stemreg.platform.registry.naming import CHALLENGER, CHAMPION, benchmark_of, model_name

#: Longest description MLflow's SQL stores keep (String(5000)).
MAX_DESCRIPTION_CHARS = 5000
#: The version tag holding the registering code's own summary (e.g. how it was trained).
SUMMARY_TAG = "card.summary"


def _num(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(float(value), spec)


def _span(value: Any, unit: str = "") -> str:
    if isinstance(value, (list, tuple)):
        return f"{_num(value[0], 'g')}–{_num(value[1], 'g')}{unit}"
    return f"{_num(value, 'g')}{unit}"


def condition_section(cond: Any) -> str:
    """What the condition is: name, version, hash and the ranges its training images span."""
    low, high = cond.pixel_size_range_pm()
    return "\n".join([
        f"### Condition `{cond.name}` v{cond.version} (hash `{cond.hash()}`)",
        "",
        "Trained on images drawn per image across:",
        "",
        f"- sampling: {_num(low, 'g')}–{_num(high, 'g')} pm/px (log-uniform)",
        f"- dose: {_span(cond.dose_scale, ' ×')} the condition's {_num(cond.beam_current_pA, 'g')} pA × "
        f"{_num(cond.dwell_time_us, 'g')} µs",
        f"- probe source size: {_span(cond.source_size_pm, ' pm')}",
        f"- specimens: {', '.join(str(getattr(s, 'value', s)) for s in cond.specimens)}",
        "",
        "The full spec is at the end of this card.",
    ])


def spec_section(cond: Any) -> str:
    """The condition's spec as fenced YAML (every parameter; what its hash covers)."""
    dumped = yaml.safe_dump(cond.model_dump(mode="json", exclude={"description"}), sort_keys=False,
                            default_flow_style=None, width=100)
    return "\n".join([f"### Condition spec `{cond.name}` v{cond.version}", "", "```yaml", dumped.rstrip(), "```"])


def text_table(columns: list[tuple[str, dict[str, Any] | None, str, Any]]) -> list[str]:
    """A fixed-width table in a fenced block (reads the same in the MLflow UI and a terminal).

    One row per bin (in the first column's order) and a last row, the mean over bins; each column
    is (header, {bin: value}, number format, mean or None to average the column's bins).
    """
    names: list[str] = []
    for _, values, _, _ in columns:
        names += [n for n in (values or {}) if n not in names]
    first = max(len(n) for n in [*names, "mean over bins"])
    widths = [max(len(head), 6) for head, _, _, _ in columns]
    rows = ["bin".ljust(first) + "".join("  " + h.rjust(w) for (h, _, _, _), w in zip(columns, widths))]
    for name in names:
        rows.append(name.ljust(first) + "".join(
            "  " + _num((values or {}).get(name), spec).rjust(w) for (_, values, spec, _), w in zip(columns, widths)))
    means = []
    for _, values, spec, mean in columns:
        finite = [v for v in (values or {}).values() if v is not None and math.isfinite(v)]
        if mean is None and finite and len(finite) == len(names):
            mean = sum(finite) / len(finite)
        means.append(_num(mean, spec))
    rows.append("mean over bins".ljust(first) + "".join("  " + m.rjust(w) for m, w in zip(means, widths)))
    return ["```text", *rows, "```"]


def _gain(after: dict[str, Any] | None, before: dict[str, Any] | None) -> dict[str, Any]:
    return {b: (v - before[b]) if v is not None and (before or {}).get(b) is not None else None
            for b, v in (after or {}).items()}


def benchmark_section(version) -> str:
    """The version's benchmark figures per bin beside the noisy input's (and BM3D's, where tagged)."""
    bench = benchmark_of(version)
    if "psnr" not in bench:
        return "### Benchmark\n\nNot scored yet (`stemreg promote` scores it before comparing)."
    by_bin = bench.get("by_bin", {})
    lines = [f"### Benchmark `{bench.get('id', '?')}`", ""]
    if not by_bin:
        lines.append(f"Scored before per-bin figures existed: PSNR {_num(bench.get('psnr'))} dB "
                     f"(noisy input {_num(bench.get('noisy_psnr'))} dB), SSIM {_num(bench.get('ssim'), '.3f')}.")
        return "\n".join(lines)
    n_bins = int(bench.get("n_bins") or len(by_bin.get("psnr", {})))
    lines += [f"{_num(bench.get('n_images'), '.0f')} simulated images in {n_bins} bins (column spacing in px @ dose, "
              "relative to the condition's), every bin weighted equally in the mean. PSNR in dB against the noise-free "
              "target; gain = PSNR - noisy PSNR.", ""]
    gain_mean = (bench["psnr"] - bench["noisy_psnr"]) if "noisy_psnr" in bench else None
    columns = [("noisy PSNR", by_bin.get("noisy_psnr"), ".2f", bench.get("noisy_psnr"))]
    if "bm3d_psnr" in by_bin:
        columns.append(("BM3D PSNR", by_bin["bm3d_psnr"], ".2f", bench.get("bm3d_psnr")))
    columns += [("PSNR", by_bin.get("psnr"), ".2f", bench.get("psnr")),
                ("gain", _gain(by_bin.get("psnr"), by_bin.get("noisy_psnr")), "+.2f", gain_mean),
                ("noisy SSIM", by_bin.get("noisy_ssim"), ".3f", bench.get("noisy_ssim"))]
    if "bm3d_ssim" in by_bin:
        columns.append(("BM3D SSIM", by_bin["bm3d_ssim"], ".3f", bench.get("bm3d_ssim")))
    columns.append(("SSIM", by_bin.get("ssim"), ".3f", bench.get("ssim")))
    lines += text_table(columns)
    extras = []
    if "column_f1" in bench:
        extras.append(f"Atom-column F1 {_num(bench['column_f1'], '.3f')}, position error "
                      f"{_num(bench.get('column_error_pm'), '.1f')} pm (means over bins, each image at its own "
                      "pixel size)")
    if "ms_per_mpx" in bench:
        extras.append(f"{_num(bench['ms_per_mpx'], '.0f')} ms per megapixel on the machine that scored it")
    if extras:
        lines += ["", "; ".join(extras) + "."]
    return "\n".join(lines)


def lineage_section(version) -> str:
    """Where the version comes from: run, parent, pretrained base, architecture, weights digest."""
    tags = version.tags
    items = [("run", version.run_id), ("parent", tags.get("parent")),
             ("pretrained base", tags.get("pretrained_base")), ("training mode", tags.get("training_mode")),
             ("lab files", tags.get("lab_files")), ("held-out lab files", tags.get("lab_held_out")),
             ("held-out lab trust", tags.get("trust.held_out")),
             ("git commit", tags.get("git_commit")), ("weights sha256", tags.get("weights_sha256")),
             ("architecture sha256", tags.get("architecture_sha256"))]
    lines = ["### Lineage", ""]
    lines += [f"- {label}: `{value}`" for label, value in items if value]
    if not tags.get("parent") and not tags.get("pretrained_base"):
        lines.append("- trained from scratch (no parent version, no pretrained base)")
    if tags.get("architecture"):
        lines.append(f"- architecture: `{tags['architecture']}`")
    if tags.get(SUMMARY_TAG):
        lines.append(f"- {tags[SUMMARY_TAG]}")
    return "\n".join(lines)


def usage_section(cond: Any, ref: str = CHAMPION) -> str:
    """How to call it: CLI, HTTP server, MLflow serving, Python."""
    name, sep = model_name(cond), ("/" if str(ref).isdigit() else "@")
    alias = "" if ref == CHAMPION else f" --alias {ref}"
    return "\n".join([
        "### Use it", "",
        "```bash",
        f"stemreg denoise scan.tif --condition {cond.name}{alias} -o denoised/",
        f"stemreg serve --condition {cond.name}{alias}",
        f"mlflow models serve -m models:/{name}{sep}{ref} --env-manager local",
        "```", "",
        "```python",
        "import stemreg",
        f'clean = stemreg.denoise(image, condition="{cond.name}"'
        + (f', alias="{ref}")' if ref != CHAMPION else ")"),
        "```",
    ])


def _restores(cond: Any) -> str:
    what = cond.description.rstrip(".") if cond.description else f"images of the '{cond.name}' condition"
    return (f"Denoises STEM images of the `{cond.name}` acquisition condition: {what}. "
            "Give it a raw image (detector counts, any size, at any sampling in the trained range); "
            "it returns the denoised image in the same units.")


def _fit(parts: list[str]) -> str:
    """Join the sections; drop the last (the spec) if the card would pass MLflow's limit, then cut."""
    text = "\n\n".join(parts)
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = "\n\n".join(parts[:-1] + ["(condition spec left out: MLflow descriptions hold 5000 characters; "
                                          "see `stemreg conditions`)"])
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[:MAX_DESCRIPTION_CHARS - 40].rsplit("\n", 1)[0] + "\n\n(card cut to MLflow's limit)"
    return text


def version_card(cond: Any, version) -> str:
    """The Markdown card of one registered version."""
    ref = next((a for a in (CHAMPION, CHALLENGER) if a in (version.aliases or [])), str(version.version))
    return _fit([f"## {model_name(cond)} version {version.version}", "### What it restores\n\n" + _restores(cond),
                 benchmark_section(version), condition_section(cond), usage_section(cond, str(ref)),
                 lineage_section(version), spec_section(cond)])


def model_card(cond: Any, champion=None, challenger=None) -> str:
    """The Markdown card of the registered model: the condition, champion vs challenger per bin."""
    parts = [f"## {model_name(cond)}", "### What it restores\n\n" + _restores(cond)]
    roles = [(role, mv) for role, mv in ((CHAMPION, champion), (CHALLENGER, challenger)) if mv is not None]
    if roles:
        lines = ["### Champion and challenger: benchmark PSNR (dB) per bin", ""]
        first = benchmark_of(roles[0][1])
        columns = [("noisy input", first.get("by_bin", {}).get("noisy_psnr"), ".2f", first.get("noisy_psnr"))]
        for role, mv in roles:
            bench = benchmark_of(mv)
            columns.append((f"{role} v{mv.version}", bench.get("by_bin", {}).get("psnr"), ".2f", bench.get("psnr")))
        if all(c[1] for c in columns):
            lines += text_table(columns)
        else:
            lines += [f"- {role} v{mv.version}: PSNR {_num(benchmark_of(mv).get('psnr'))} dB"
                      for role, mv in roles]
        parts.append("\n".join(lines))
    else:
        parts.append("No champion yet.")
    parts += [condition_section(cond), usage_section(cond), spec_section(cond)]
    return _fit(parts)


def refresh_cards(client, cond: Any, version: str | None = None) -> None:
    """Rewrite the card of `version` (if given) and of the registered model, from the registry's state."""
    name = model_name(cond)
    if version is not None:
        mv = client.get_model_version(name, str(version))
        client.update_model_version(name, str(version), description=version_card(cond, mv))
    model = client.get_registered_model(name)
    found = {alias: client.get_model_version(name, str(number)) for alias, number in model.aliases.items()
             if alias in (CHAMPION, CHALLENGER)}
    client.update_registered_model(name, description=model_card(cond, found.get(CHAMPION), found.get(CHALLENGER)))


def summary_tag(text: str | None) -> dict[str, str]:
    """The version tag that keeps the registering code's summary line for the card."""
    return {SUMMARY_TAG: " ".join(text.split())[:500]} if text else {}


__all__ = ["MAX_DESCRIPTION_CHARS", "SUMMARY_TAG", "benchmark_section", "condition_section", "lineage_section",
           "model_card", "refresh_cards", "spec_section", "summary_tag", "text_table", "usage_section",
           "version_card"]
