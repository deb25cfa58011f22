"""Model cards: the Markdown description of each registered model and version.

Written by the code that registers and scores (:func:`refresh_cards`), so the
MLflow UI shows, for every version: what it restores, its condition (name,
version, hash and spec), the trained sampling and dose ranges, the benchmark per
bin beside the noisy input (and BM3D where its figures exist), the lineage and
how to call it. The registered model's card shows the condition and the
champion against the challenger. MLflow stores descriptions of up to 5000
characters; a card that would not fit drops the condition's YAML first.
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


def condition_section(cond: Any, *, spec: bool = True) -> str:
    """What the condition is: name, version, hash, trained ranges and (with `spec`) its YAML."""
    low, high = cond.pixel_size_range_pm()
    lines = [
        f"### Condition `{cond.name}` v{cond.version} (hash `{cond.hash()}`)",
        "",
        "| trained on, per image | range |",
        "|---|---|",
        f"| sampling | {_num(low, 'g')}–{_num(high, 'g')} pm/px (log-uniform) |",
        f"| dose | {_span(cond.dose_scale, ' ×')} the condition's {_num(cond.beam_current_pA, 'g')} pA × "
        f"{_num(cond.dwell_time_us, 'g')} µs |",
        f"| probe source size | {_span(cond.source_size_pm, ' pm')} |",
        f"| specimens | {', '.join(str(getattr(s, 'value', s)) for s in cond.specimens)} |",
    ]
    if spec:
        dumped = yaml.safe_dump(cond.model_dump(mode="json", exclude={"description"}), sort_keys=False,
                                default_flow_style=None, width=100)
        lines += ["", "Condition spec:", "", "```yaml", dumped.rstrip(), "```"]
    return "\n".join(lines)


def _by_bin_rows(columns: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """Rows of a per-bin table: one column per (header, {bin: value}); bins in the first's order."""
    names: list[str] = []
    for _, values in columns:
        names += [n for n in (values or {}) if n not in names]
    header = "| bin | " + " | ".join(h for h, _ in columns) + " |"
    rows = [header, "|---|" + "---:|" * len(columns)]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(_cell(h, (v or {}).get(name)) for h, v in columns) + " |")
    means = []
    for header_name, values in columns:
        finite = [v for v in (values or {}).values() if v is not None and math.isfinite(v)]
        means.append(_cell(header_name, sum(finite) / len(finite) if finite and len(finite) == len(names) else None))
    rows.append("| **mean over bins** | " + " | ".join(f"**{m}**" for m in means) + " |")
    return rows


def _cell(header: str, value: Any) -> str:
    return _num(value, ".3f" if "SSIM" in header or "F1" in header else ".2f")


def benchmark_section(version) -> str:
    """The version's benchmark figures per bin beside the noisy input's (and BM3D's, where tagged)."""
    bench = benchmark_of(version)
    if "psnr" not in bench:
        return "### Benchmark\n\nNot scored yet (`stemreg promote` scores it, or re-register through `stemreg train`)."
    by_bin = bench.get("by_bin", {})
    lines = [f"### Benchmark `{bench.get('id', '?')}`", ""]
    if not by_bin:
        lines.append(f"Scored before per-bin figures existed: PSNR {_num(bench.get('psnr'))} dB "
                     f"(noisy input {_num(bench.get('noisy_psnr'))} dB), SSIM {_num(bench.get('ssim'), '.3f')}.")
        return "\n".join(lines)
    n_images, n_bins = bench.get("n_images"), bench.get("n_bins") or len(by_bin.get("psnr", {}))
    lines += [f"{_num(n_images, '.0f')} simulated images in {n_bins} bins (column spacing in px @ dose), "
              "each bin weighted equally; PSNR in dB against the noise-free target.", ""]
    columns = [("noisy PSNR", by_bin.get("noisy_psnr"))]
    if "bm3d_psnr" in by_bin:
        columns.append(("BM3D PSNR", by_bin["bm3d_psnr"]))
    columns += [("PSNR", by_bin.get("psnr")), ("noisy SSIM", by_bin.get("noisy_ssim"))]
    if "bm3d_ssim" in by_bin:
        columns.append(("BM3D SSIM", by_bin["bm3d_ssim"]))
    columns.append(("SSIM", by_bin.get("ssim")))
    lines += _by_bin_rows(columns)
    extras = []
    if "column_f1" in bench:
        extras.append(f"atom-column F1 {_num(bench['column_f1'], '.3f')}, position error "
                      f"{_num(bench.get('column_error_pm'), '.1f')} pm (means over bins)")
    if "ms_per_mpx" in bench:
        extras.append(f"{_num(bench['ms_per_mpx'], '.0f')} ms per megapixel where it was scored")
    if extras:
        lines += ["", "; ".join(extras).capitalize() + "."]
    return "\n".join(lines)


def lineage_section(version) -> str:
    """Where the version comes from: run, parent, pretrained base, architecture, weights digest."""
    tags = version.tags
    items = [("run", version.run_id), ("parent", tags.get("parent")),
             ("pretrained base", tags.get("pretrained_base")), ("training mode", tags.get("training_mode")),
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


def _fit(parts: list[str], cond: Any, spec_index: int) -> str:
    text = "\n\n".join(parts)
    if len(text) > MAX_DESCRIPTION_CHARS:
        parts[spec_index] = condition_section(cond, spec=False)
        text = "\n\n".join(parts)
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[:MAX_DESCRIPTION_CHARS - 40].rsplit("\n", 1)[0] + "\n\n(card cut to MLflow's limit)"
    return text


def version_card(cond: Any, version) -> str:
    """The Markdown card of one registered version."""
    ref = next((a for a in (CHAMPION, CHALLENGER) if a in (version.aliases or [])), str(version.version))
    parts = [f"## {model_name(cond)} version {version.version}", "### What it restores\n\n" + _restores(cond),
             condition_section(cond), benchmark_section(version), lineage_section(version),
             usage_section(cond, str(ref))]
    return _fit(parts, cond, 2)


def model_card(cond: Any, champion=None, challenger=None) -> str:
    """The Markdown card of the registered model: the condition, champion vs challenger per bin."""
    parts = [f"## {model_name(cond)}", "### What it restores\n\n" + _restores(cond), condition_section(cond)]
    roles = [(role, mv) for role, mv in ((CHAMPION, champion), (CHALLENGER, challenger)) if mv is not None]
    if roles:
        lines = ["### Champion and challenger (benchmark PSNR, dB)", ""]
        first = benchmark_of(roles[0][1]).get("by_bin", {})
        columns = [("noisy input", first.get("noisy_psnr"))]
        columns += [(f"{role} v{mv.version}", benchmark_of(mv).get("by_bin", {}).get("psnr")) for role, mv in roles]
        if all(c[1] for c in columns):
            lines += _by_bin_rows(columns)
        else:
            lines += [f"- {role} v{mv.version}: PSNR {_num(benchmark_of(mv).get('psnr'))} dB (mean over bins)"
                      for role, mv in roles]
        parts.append("\n".join(lines))
    else:
        parts.append("No champion yet.")
    parts.append(usage_section(cond))
    return _fit(parts, cond, 2)


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
           "model_card", "refresh_cards", "summary_tag", "usage_section", "version_card"]
