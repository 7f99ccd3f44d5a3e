"""The bench record on disk and on screen: :func:`write_bench` (JSON + PNG), :func:`format_bench` (the table
``lmeval-prune bench`` prints) and :func:`plot_bench` (matplotlib, an optional dependency imported there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.layout import BENCH_FILE, BENCH_PLOT
from lmeval_layerprune.core.output import OutputFolder
from lmeval_layerprune.speed.bench_result import SCHEMA, bench_from_dict, gain_text


def _is_bench_file(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("schema") == SCHEMA
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def _is_bench_plot(path: Path) -> bool:
    return _is_bench_file(path.with_name(BENCH_FILE))


def bench_folder(out: str | Path) -> OutputFolder:
    """``out`` checked for the bench's two files (before anything is measured): a file of either name that
    this tool did not write is refused; its own earlier bench result is replaced."""
    folder = OutputFolder(out, overwrite=True, what="bench folder")
    folder.check(BENCH_FILE, owned=_is_bench_file)
    folder.check(BENCH_PLOT, owned=_is_bench_plot)
    return folder


def write_bench(record: dict[str, Any], out: str | Path) -> Path:
    """Write ``record`` as ``out/BENCH_FILE`` and its plot as ``out/BENCH_PLOT`` (the safe-write rule of
    :mod:`lmeval_layerprune.core.output`); returns the JSON path."""
    folder = bench_folder(out)  # both names checked before either is written
    path = folder.write(BENCH_FILE, json.dumps(record, indent=2), owned=_is_bench_file)
    folder.write(BENCH_PLOT, lambda tmp: plot_bench(record, tmp), owned=_is_bench_plot)
    return path


def _h(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def format_bench(record: dict[str, Any]) -> str:
    """The table ``lmeval-prune bench`` prints: medians (min-max) and gains beside the ideal L/(L-k)."""
    res = bench_from_dict(record)
    lines = [f"{res.model}: {res.num_layers} layers; {res.conditions()}"]
    lines.append(f"{'variant':<14} {'layers':>6} {'ideal':>6} {'params':>16} {'no-emb params':>16} {'KV/token':>14}")
    for v in res.variants:
        g = v.gains
        lines.append(
            f"{v.name[:14]:<14} {v.layers:>6} {v.ideal:>5.2f}x "
            f"{v.params_total / 1e6:>8.1f}M {gain_text(g.get('params')):>6} "
            f"{v.params_no_embeddings / 1e6:>8.1f}M {gain_text(g.get('params_no_embeddings')):>6} "
            f"{_h(v.kv_bytes_per_token):>8} {gain_text(g.get('kv_bytes_per_token')):>5}"
        )
    for b in res.settings.get("batch_sizes", []):
        lines.append(f"batch {b}:")
        lines.append(
            f"  {'variant':<14} {'decode tok/s':>22} {'prefill tok/s':>24} {'first token':>22} "
            f"{'memory (weights+KV)':>22} {'ideal':>6}"
        )
        for v in res.variants:
            m = v.batches[int(b)]
            d, p, t = m["decode_tps"], m["prefill_tps"], m["ttft_s"]
            gb = v.gains.get("batches", {}).get(str(b), {})
            lines.append(
                f"  {v.name[:14]:<14} {d['median']:>8.1f} ({d['min']:.0f}-{d['max']:.0f}) "
                f"{gain_text(gb.get('decode_tps')):>6} "
                f"{p['median']:>9.0f} ({p['min']:.0f}-{p['max']:.0f}) {gain_text(gb.get('prefill_tps')):>6} "
                f"{t['median'] * 1000:>7.1f} ms ({t['min'] * 1000:.0f}-{t['max'] * 1000:.0f}) "
                f"{gain_text(gb.get('ttft_s')):>6} {_h(m['peak_memory_bytes']):>12} "
                f"{gain_text(gb.get('peak_memory_bytes')):>6} "
                f"{v.ideal:>5.2f}x"
            )
    lines.append("gains: speed variant/parent, time and sizes parent/variant; ideal = L/(L-k)")
    return "\n".join(lines)


def plot_bench(record: dict[str, Any], path: str | Path) -> None:
    """Speed-up (decode and prefill, per batch size) against layers removed, with the ideal line (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = bench_from_dict(record)
    n = res.num_layers
    variants = sorted(res.variants, key=lambda v: (v.removed, v.name))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ks = sorted({v.removed for v in variants})
    xs = [k for k in range(0, max(ks) + 1)]
    ax.plot(xs, [n / (n - k) for k in xs], "k--", lw=1, label="ideal L/(L-k)")
    markers = "o^sv"
    for i, b in enumerate(res.settings.get("batch_sizes", [])):
        for metric, fill in (("decode_tps", None), ("prefill_tps", "none")):
            pts = [(v.removed, v.gain(metric, b)) for v in variants]
            pts = [(k, g) for k, g in pts if g is not None]
            label = f"{'decode' if metric == 'decode_tps' else 'prefill'}, batch {b}"
            ys = [g for _, g in pts]
            ax.plot([k for k, _ in pts], ys, markers[i % 4], mfc=fill, ls="none", label=label, alpha=0.8)
    for v in variants:
        if v.drop:
            ax.annotate(v.name, (v.removed, v.gain("decode_tps") or 1), fontsize=6, alpha=0.7)
    ax.set_xlabel(f"layers removed (of {n})")
    ax.set_ylabel("speed-up vs parent")
    ax.set_title(f"{res.model}: {res.device}, {res.dtype}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
