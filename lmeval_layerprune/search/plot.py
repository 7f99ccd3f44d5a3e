"""The PNG of a selected plan: per-round normalised scores by layer (greedy), or the metric profile
(one-pass). matplotlib is optional (``pip install 'lmeval-layerprune[plot]'``), imported when plotting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmeval_layerprune.methods.registry import get_method, method_names


def plot_plan(plan: dict[str, Any], path: str | Path) -> None:
    """PNG: per-round normalised scores by layer (greedy), or the metric profile (one-pass)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'lmeval-layerprune[plot]'") from None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    n_layers = plan["num_layers"]
    if plan.get("rounds"):
        cmap = plt.get_cmap("viridis", max(len(plan["rounds"]), 2))
        for r in plan["rounds"]:
            xs = sorted(int(k) for k in r["scores"])
            ax.plot(
                xs,
                [r["scores"][str(x)] for x in xs],
                marker="o",
                ms=3,
                color=cmap(r["round"]),
                label=f"round {r['round'] + 1}: drop {r['chosen']}",
            )
            ax.plot([r["chosen"]], [r["scores"][str(r["chosen"])]], marker="*", ms=12, color=cmap(r["round"]))
        ax.set_ylabel("score / full-model score")
        ax.legend(fontsize=7, ncol=2)
    elif plan.get("scores"):
        xs = list(range(len(plan["scores"])))
        colors = ["tab:red" if x in plan["drop"] else "tab:blue" for x in xs]
        ax.bar(xs, plan["scores"], color=colors)
        kind = get_method(plan["method"]).kind if plan["method"] in method_names() else "per-layer"
        ax.set_ylabel(f"{plan['method']} score" + (" (block start)" if kind == "block" else ""))
    else:
        ax.bar(range(n_layers), [1 if i in plan["drop"] else 0 for i in range(n_layers)], color="tab:red")
        ax.set_ylabel("removed")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer index (original model)")
    ax.set_title(f"{plan['method']}: removing {plan['drop']} of {n_layers} layers", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
