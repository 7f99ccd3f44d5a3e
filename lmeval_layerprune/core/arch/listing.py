"""``lmeval-prune archs``: which model types can be sliced, and how."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import CONFIG_MAPPING, AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from lmeval_layerprune.core.arch.facts import arch_for, check_inferred_slice, num_layers
from lmeval_layerprune.core.arch.table import ARCHITECTURES
from lmeval_layerprune.errors import UnsupportedArchitectureError


def arch_status(model_type: str, config: Any = None) -> tuple[str, str]:
    """``("table" | "inferred" | "unsupported", detail)`` for a model type (its default config,
    or ``config``): discovery and the structural check run on the meta device."""
    info = ARCHITECTURES.get(model_type)
    if info is not None and info.unsupported:
        return "unsupported", info.unsupported
    if info is not None and not info.partial:
        return "table", f"layers at {info.layers}"

    try:
        config = AutoConfig.for_model(model_type) if config is None else config
        found = arch_for(config)
        n = num_layers(config)
        check_inferred_slice(config, [i for i in range(n) if i != n // 2])
    except UnsupportedArchitectureError as e:
        return "unsupported", str(e).split(" safely: ", 1)[-1].split(". To support it", 1)[0]
    except Exception as e:  # noqa: BLE001 - a listing reports, it does not crash
        return "unsupported", f"{type(e).__name__}: {e}"[:200]
    nested = f", text model {found.text_model} (other towers left whole)" if found.text_config else ""
    hinted = ", with table hints" if info is not None else ""
    return ("table" if info is not None else "inferred"), f"layers at {found.layers}{nested}{hinted}"


def causal_lm_model_types() -> list[str]:
    """Every ``model_type`` transformers maps to a causal-LM class, plus the table's."""

    return sorted(set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) | set(ARCHITECTURES))


def archs_listing(models: Sequence[str] | None = None, progress: bool = True) -> list[tuple[str, str, str]]:
    """``(model_type, status, detail)`` rows for ``lmeval-prune archs``.

    ``models``: model types, or checkpoint folders / Hub ids (their config is read);
    default: every causal-LM model type transformers knows, plus the table's.
    """

    names = list(models or causal_lm_model_types())
    rows = []
    try:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="archs", unit="type", disable=not progress or len(names) < 5)
    except ImportError:  # pragma: no cover
        it = names
    for name in it:
        if name in CONFIG_MAPPING or name in ARCHITECTURES:
            rows.append((name, *arch_status(name)))
            continue

        try:
            config = AutoConfig.from_pretrained(name)
        except Exception as e:  # noqa: BLE001 - a listing reports, it does not crash
            rows.append((name, "unsupported", f"not a model type, and no config could be read ({type(e).__name__})"))
            continue
        status, detail = arch_status(config.model_type, config)
        rows.append((f"{name} ({config.model_type})", status, detail))
    return rows


def format_archs(rows: Sequence[tuple[str, str, str]]) -> str:
    """The ``archs`` table as text: one line per model type, then the counts."""
    width = max((len(r[0]) for r in rows), default=10)
    lines = [f"{mt:<{width}}  {status:<11}  {detail}" for mt, status, detail in rows]
    counts = {s: sum(r[1] == s for r in rows) for s in ("table", "inferred", "unsupported")}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)
