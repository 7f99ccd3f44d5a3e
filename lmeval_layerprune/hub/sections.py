"""The model card's section builders: what the card says about the selection, the size and speed, the
recovery and how to reproduce the checkpoint (each returns the values the Jinja template fills in).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import MISSING, is_dataclass
from dataclasses import fields as fields_of
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.guard import is_generated_card
from lmeval_layerprune.core.layout import (
    BENCH_FILE,
    CARD_FILE,
    MERGEKIT_FILE,
    RECIPE_FILE,
    SELECTION_PLOT,
)
from lmeval_layerprune.core.output import check_replace, write_output
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.errors import PublishError
from lmeval_layerprune.hub.facts import (
    PLAN_FILES,
    Identity,
    estimated_parent_params,
    is_local_path,
    parameter_counts,
)
from lmeval_layerprune.hub.portable import Portable
from lmeval_layerprune.hub.scores import rel_change
from lmeval_layerprune.lmeval.results import Run
from lmeval_layerprune.methods.registry import get_method, method_names
from lmeval_layerprune.speed.bench_result import load_bench

logger = logging.getLogger(__name__)

_RECOVERY_METHOD = {
    "selfgen": "responses the unpruned parent generated itself (self-generated data)",
    "original": "the original instruction data",
    "kd": "knowledge distillation from the teacher",
    "cpt": "plain text (continued pretraining: language-modelling loss on every token)",
}
#: recorded settings that are facts of one machine or one run, never shown
_RUN_FACTS = {"output_dir", "logging_dir", "base_model_name_or_path", "peft_version", "revision", "run_name"}


# ------------------------------------------------------------------ settings


def _default_of(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        try:
            return f.default_factory()  # type: ignore[misc]
        except Exception:
            return MISSING
    return MISSING


def _norm(v: Any) -> Any:
    if hasattr(v, "value") and not isinstance(v, int | float | str):
        v = v.value  # enums
    if isinstance(v, tuple | set | frozenset):
        v = sorted(v, key=str) if isinstance(v, set | frozenset) else list(v)
    return v


def non_default(settings: dict[str, Any] | None, config_cls: Any = None) -> dict[str, Any]:
    """``settings`` without ``None`` values, run facts (paths, versions) and, when ``config_cls``
    (a dataclass such as ``SFTConfig`` or ``LoraConfig``) is given, values equal to its defaults."""
    if not settings:
        return {}
    defaults: dict[str, Any] = {}
    if config_cls is not None and is_dataclass(config_cls):
        defaults = {f.name: _default_of(f) for f in fields_of(config_cls)}
    out = {}
    for k, v in settings.items():
        if v is None or k in _RUN_FACTS:
            continue
        if k in defaults and defaults[k] is not MISSING and _norm(defaults[k]) == _norm(v):
            continue
        out[k] = v
    return out


def _import(module: str, name: str) -> Any:
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except Exception:  # the heal extra is not installed: show every recorded value
        return None


def shown_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The recovery settings worth showing: what differs from TRL's / PEFT's / bitsandbytes' defaults."""
    if not settings:
        return {}
    classes = {
        "sft": ("trl", "SFTConfig"),
        "lora": ("peft", "LoraConfig"),
        "quantization": ("transformers", "BitsAndBytesConfig"),
    }
    out: dict[str, Any] = {}
    for section, value in settings.items():
        if isinstance(value, dict):
            cls = _import(*classes[section]) if section in classes else None
            kept = non_default(value, cls)
            if kept:
                out[section] = kept
        elif value is not None:
            out[section] = value
    return out


# ------------------------------------------------------------------ sections


def _legacy_selection_plot(path: Path) -> bool:
    """A selection plot copied before the manifest of written files: shown by the generated card beside it."""
    card = path.with_name(CARD_FILE)
    try:
        return is_generated_card(card) and f"]({path.name})" in card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def check_selection_plot(folder: Path, plot: str | Path) -> bool:
    """Check ``card --plot``'s copy before anything is written; False when ``plot`` already is the folder's
    ``layer_selection.png`` (nothing to copy).

    Raises:
        PublishError: ``plot`` does not exist.
        OutputError: a ``layer_selection.png`` in the way is a link, or a file this tool did not write.
    """
    src = Path(plot).expanduser()
    if not src.is_file():
        raise PublishError(f"plot {str(src)!r} does not exist")
    target = Path(folder).expanduser() / SELECTION_PLOT
    if not target.is_symlink() and target.exists() and os.path.samefile(src, target):
        return False
    check_replace(target, overwrite=True, owned=_legacy_selection_plot, what="selection plot", flag="--plot")
    return True


def selection_section(plan: dict[str, Any], folder: Path, plot: str | Path | None) -> dict[str, Any]:
    """How the layers were chosen: the method, the greedy rounds, the plots (copied into ``folder``)."""
    drop = [int(i) for i in plan["drop"]]
    spec_text = str(plan.get("spec") or format_indices(drop))
    sel = plan.get("selection") if isinstance(plan.get("selection"), dict) else None
    plan_file = None
    if spec_text.startswith("plan:"):
        p = Path(spec_text[5:].split("@")[0]).expanduser()
        plan_file = p.name
        if sel is None and p.is_file():
            try:
                sel = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                sel = None
        for cand in (p.with_suffix(".png"), Path(str(p) + ".png")):
            if plot is None and cand.is_file():
                plot = cand
    sel = sel or {}
    method = sel.get("method") or plan.get("method") or "explicit"
    settings = sel.get("settings") or {}
    rounds = [
        {"round": r["round"] + 1, "chosen": r["chosen"], "score": f"{r['scores'].get(str(r['chosen']), 0):.4f}"}
        for r in sel.get("rounds", [])
        if "chosen" in r and isinstance(r.get("scores"), dict)
    ]
    if plot is not None and check_selection_plot(folder, plot):
        write_output(folder / SELECTION_PLOT, Path(plot).expanduser().read_bytes(), overwrite=True,
                     owned=_legacy_selection_plot, what="selection plot", flag="--plot")  # fmt: skip
    registered = get_method(method) if method in method_names() else None
    transform = (plan.get("extra") or {}).get("transform") or plan.get("transform") or "drop"
    return {
        "method": method,
        "text": selection_text(method),
        "definition": registered.definition if registered is not None else "",
        "url": registered.url if registered is not None else "",
        "transform": transform,
        "plan_file": plan_file,
        "tasks": ", ".join(settings.get("tasks") or []) if _objective(method) == "tasks" else "",
        "rounds": rounds,
        "plots": sorted(p.name for p in folder.glob("*.png")),
    }


def selection_text(method: str) -> str:
    """How a plan's layers were chosen, in words: the registered method's description and citation."""
    if method in ("explicit", "none"):
        return "given by hand (a fixed drop spec)"
    if method == "plan":
        return "taken from a plan file"
    if method in method_names():
        return get_method(method).describe()
    return method


def _objective(method: str) -> str | None:
    return get_method(method).objective if method in method_names() else None


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "unknown"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit} ({n:,})"
    return f"{n:,}"


def bench_rows(
    folder: Path, bench: str | Path | None, drop: Sequence[int]
) -> tuple[float | None, str, list[tuple[str, str, str]]] | None:
    """Measured speed and memory from a ``lmeval-prune bench`` result (``bench``, or the folder's own
    :data:`~lmeval_layerprune.core.layout.BENCH_FILE`): the decode speed-up, a note saying where it was
    measured, and size/speed table rows. ``None`` when there is no bench result."""
    if bench is None and not (folder / BENCH_FILE).is_file():
        return None
    result = load_bench(bench if bench is not None else folder)
    variant = result.variant(drop) or (result.pruned[0] if result.pruned else None)
    if variant is None:
        return None
    batch = min(variant.batches) if variant.batches else None

    def x(metric: str) -> str:
        g = variant.gain(metric, batch)
        return f"{g:.2f}x" if g else "n/a"

    rows = [
        (f"prefill tokens/s (batch {batch})", "1.00x", x("prefill_tps")),
        ("memory (weights + KV cache)", "1.00x", f"{x('peak_memory_bytes')} less"),
        ("KV cache per token", "1.00x", f"{x('kv_bytes_per_token')} less"),
    ]
    note = (
        f"decode tokens/s at batch {batch} (the ideal for removing {variant.removed} of {result.num_layers} layers, "
        f"ignoring embedding and head, is {variant.ideal:.2f}x), measured by `lmeval-prune bench` "
        f"({result.conditions()})"
    )
    return variant.gain("decode_tps", batch), note, rows


def size_section(
    folder: Path,
    ident: Identity,
    n_dropped: int,
    speedup: float | None,
    speedup_note: str | None,
    size_rows: Sequence[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    counted = parameter_counts(folder)
    params = counted[0] if counted else None
    base_counted = parameter_counts(ident.parent) if ident.parent is not None else None
    estimated = False
    base_params: int | None = None
    if base_counted:
        base_params = base_counted[0]
    elif counted:
        base_params, estimated = estimated_parent_params(folder, counted[1], n_dropped), True
    text = _fmt_params(params)
    if params and base_params:
        text += f", {rel_change(params, base_params)}"
    return {
        "base_params": _fmt_params(base_params),
        "params": text,
        "estimated": estimated,
        "n_dropped": n_dropped,
        "speedup": f"{speedup:.2f}x" if speedup else "",
        "speedup_note": speedup_note or "",
        "rows": [list(r) for r in size_rows],
    }


def _trained_weights(train: dict[str, Any] | None) -> str | None:
    """What a partial finetune trained, in words (``train`` of the recovery settings)."""
    if not train:
        return None
    parts = []
    if train.get("layers"):
        spec = f" (`{train['spec']}`)" if train.get("spec") else ""
        parts.append(f"layers {', '.join(map(str, train['layers']))}{spec} of the pruned model")
    if train.get("lm_head"):
        parts.append("the LM head" + (" (tied to the input embeddings)" if train.get("tied_embeddings") else ""))
    if train.get("embeddings") and not (train.get("lm_head") and train.get("tied_embeddings")):
        parts.append("the input embeddings")
    if train.get("norm"):
        parts.append("the final norm")
    return ", ".join(parts) + "; every other weight frozen"


def _recovery_cost(recovery: dict[str, Any]) -> dict[str, Any]:
    """What the recovery cost: trainable parameters, training tokens, training time (None when not recorded)."""
    trainable, total = recovery.get("trainable_parameters"), recovery.get("total_parameters")
    tokens, seconds = recovery.get("training_tokens"), recovery.get("train_seconds")
    share = f" of {total:,} ({100 * trainable / total:.2f}%)" if trainable is not None and total else ""
    return {
        "trainable": f"{trainable:,}{share}" if trainable is not None else None,
        "trained_weights": _trained_weights((recovery.get("settings") or {}).get("train")),
        "training_tokens": f"{tokens:,}" if tokens is not None else None,
        "train_seconds": f"{seconds:.0f} s" if seconds is not None else None,
    }


def recovery_section(plan: dict[str, Any], folder: Path, portable: Portable) -> dict[str, Any]:
    recovery = plan.get("recovery") or {}
    if not recovery:
        return {}
    recipe_path = folder / RECIPE_FILE
    settings = recovery.get("settings") or {}
    data = str(recovery.get("data") or "")
    shown = shown_settings({k: v for k, v in settings.items() if k != "examples"})
    return {
        "recipe": recovery.get("recipe", "?"),
        "method": recovery.get("method", "?"),
        "method_text": _RECOVERY_METHOD.get(recovery.get("method", ""), str(recovery.get("method", "?"))),
        "finetune": recovery.get("finetune", "?"),
        "data": portable.text(data) if data else "?",
        "data_is_local": any(is_local_path(t) for t in re.split(r"[\s,;|]+|(?<=selfgen):", data) if t),
        "teacher": portable.text(str(recovery["teacher"])) if recovery.get("teacher") else None,
        "steps": recovery.get("steps"),
        "examples": settings.get("examples"),
        **_recovery_cost(recovery),
        "settings": json.dumps(portable.value(shown), indent=2) if shown else "",
        "recipe_yaml": portable.recipe_yaml(recipe_path.read_text()).strip() if recipe_path.is_file() else "",
    }


def _lm_eval_cmd(run: Run, *, model: str, pretrained: str, drop: str | None = None) -> str:
    args = dict(run.model_args)
    for k in ("pretrained", "drop", "device", "device_map", "parallelize", "trust_remote_code", "peft"):
        args.pop(k, None)
    ordered = {"pretrained": pretrained, **({"drop": drop} if drop else {}), **args}
    margs = ",".join(f"{k}={v}" for k, v in ordered.items())
    cmd = ["lm_eval", "--model", model, "--model_args", margs, "--tasks", ",".join(run.top_tasks)]
    limit = run.limit
    if limit:
        cmd += ["--limit", str(int(limit)) if float(limit).is_integer() else str(limit)]
    gen = run.config.get("gen_kwargs")
    if gen:
        cmd += ["--gen_kwargs", ",".join(f"{k}={v}" for k, v in gen.items()) if isinstance(gen, dict) else str(gen)]
    if run.chat_template:
        cmd.append("--apply_chat_template")
    if run.fewshot_as_multiturn:
        cmd.append("--fewshot_as_multiturn")
    if run.system_instruction:
        cmd += ["--system_instruction", run.system_instruction]
    if run.config.get("batch_size") not in (None, ""):
        cmd += ["--batch_size", str(run.config["batch_size"])]
    return " ".join(shlex.quote(c) for c in cmd)


def reproduce_section(
    folder: Path,
    plan: dict[str, Any],
    ident: Identity,
    target: str,
    short_name: str,
    runs: dict[str, Run | None],
    portable: Portable,
) -> dict[str, Any]:
    drop = format_indices([int(i) for i in plan["drop"]])
    base = ident.base_model or "PARENT"
    dtype = plan.get("dtype") or (plan.get("extra") or {}).get("dtype")
    slice_cmd = ["lmeval-prune", "slice", base, "--drop", drop, "--out", f"./{short_name}"]
    slice_cmd += ["--dtype", dtype] if dtype else []
    healed = bool(plan.get("recovery"))
    heal_cmd = ""
    if healed:
        recipe = RECIPE_FILE if (folder / RECIPE_FILE).is_file() else str(plan["recovery"].get("recipe", "RECIPE"))
        heal_cmd = " ".join(
            shlex.quote(c)
            for c in ["lmeval-prune", "heal", "--recipe", recipe, "--base", base, "--drop", drop]
            + ["--out", f"./{short_name}"]
        )
    eval_cmds = []
    if runs.get("base") is not None:
        eval_cmds.append(("the parent", _lm_eval_cmd(runs["base"], model="hf", pretrained=base)))
    if runs.get("pruned") is not None:
        cmd = _lm_eval_cmd(runs["pruned"], model="pruned-hf", pretrained=base, drop=drop)
        eval_cmds.append(("pruned, before healing", cmd))
    own = runs.get("own") or runs.get("base") or runs.get("pruned")
    if own is not None:
        eval_cmds.append(("this model", _lm_eval_cmd(own, model="hf", pretrained=target)))
    mk = folder / MERGEKIT_FILE
    return {
        "mergekit_yaml": portable.mergekit_yaml(mk.read_text()).strip() if mk.is_file() else "",
        "slice_cmd": " ".join(shlex.quote(c) for c in slice_cmd),
        "heal_cmd": heal_cmd,
        "eval_cmds": [{"label": label, "cmd": portable.text(cmd)} for label, cmd in eval_cmds],
        "plan_file": next((n for n in PLAN_FILES if (folder / n).is_file()), None),
        "has_parent_id": ident.base_model is not None,
    }


# ------------------------------------------------------------------ the card
