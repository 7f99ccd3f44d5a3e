"""The model card of a pruned (or healed) checkpoint: small section builders feeding the Jinja
template ``hub_cards/pruned_model_card.md``, which holds every sentence and all table markup.

:func:`build_card` returns a :class:`huggingface_hub.ModelCard` (metadata from
:class:`huggingface_hub.ModelCardData`) and the warnings about what it could not say;
:func:`write_card` saves it as ``DIR/README.md``.

Where other results plug in: ``results=`` / ``base_results=`` / ``pruned_results=`` take lm-eval
results (files or folders, read by :mod:`lmeval_layerprune.lmeval.results`); ``speedup=`` and
``size_rows=`` (extra ``(label, parent, this model)`` rows of the size/speed table, e.g. from a
benchmark) fill the "Size and speed" section.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from lmeval_layerprune import __version__
from lmeval_layerprune.core.layout import CARD_FILE, MERGEKIT_FILE, RECIPE_FILE, SELECTION_PLOT
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.errors import PublishError
from lmeval_layerprune.hub.facts import (
    PLAN_FILES,
    Identity,
    estimated_parent_params,
    hub_datasets,
    identify,
    is_local_path,
    parameter_counts,
    read_plan,
)
from lmeval_layerprune.hub.portable import Portable
from lmeval_layerprune.hub.scores import eval_results, findings, load_eval, rel_change, score_tables
from lmeval_layerprune.lmeval.results import Run
from lmeval_layerprune.methods.registry import get_method, method_names

logger = logging.getLogger(__name__)

TEMPLATE = "pruned_model_card.md"
RELATIONS = ("merge", "finetune", "adapter", "quantized")
_RECOVERY_METHOD = {
    "selfgen": "responses the unpruned parent generated itself (self-generated data)",
    "original": "the original instruction data",
    "kd": "knowledge distillation from the teacher",
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
        defaults = {f.name: _default_of(f) for f in fields(config_cls)}
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
    if plot is not None:
        src = Path(plot).expanduser()
        if not src.is_file():
            raise PublishError(f"plot {str(src)!r} does not exist")
        if src.resolve() != (folder / SELECTION_PLOT).resolve():
            shutil.copyfile(src, folder / SELECTION_PLOT)
    return {
        "method": method,
        "text": selection_text(method),
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
    from lmeval_layerprune.core.layout import BENCH_FILE
    from lmeval_layerprune.speed.bench_result import load_bench

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


@dataclass
class CardResult:
    """A rendered card and what it could not say (see :class:`.facts.Identity`)."""

    card: Any
    identity: Identity
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return str(self.card)

    def save(self, folder: str | Path) -> Path:
        """Write the card to ``folder/README.md`` atomically; return its path."""
        from lmeval_layerprune.core.guard import guard_card, mark_card, replace_atomically

        path = Path(folder).expanduser() / CARD_FILE
        guard_card(path)  # a hand-written README.md is never replaced
        with replace_atomically(path) as tmp:
            tmp.write_text(mark_card(str(self.card)))
        return path


def render(folder: str | Path, **kwargs: Any) -> CardResult:
    """:func:`build_card`, also returning the identity facts and warnings (``strict=False`` by default)."""
    import jinja2
    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    from lmeval_layerprune.resources import bundled_dir

    results = kwargs.pop("results", ())
    base_results = kwargs.pop("base_results", ())
    pruned_results = kwargs.pop("pruned_results", ())
    repo_id = kwargs.pop("repo_id", None)
    relation = kwargs.pop("base_model_relation", None)
    speedup = kwargs.pop("speedup", None)
    plot = kwargs.pop("plot", None)
    size_rows = kwargs.pop("size_rows", ())
    strict = kwargs.pop("strict", False)
    speedup_note = kwargs.pop("speedup_note", None)
    bench = kwargs.pop("bench", None)
    ident_args = {"base_model": kwargs.pop("base_model", None), "license": kwargs.pop("license", None)}
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}")

    folder = Path(folder).expanduser()
    plan = read_plan(folder)
    ident = identify(folder, plan, **ident_args)
    if strict:
        ident.require("write a card for the Hub")
    healed = bool(plan.get("recovery"))
    relation = relation or ("finetune" if healed else "merge")
    if relation not in RELATIONS:
        raise PublishError(f"base_model_relation {relation!r} is not one of {', '.join(RELATIONS)}")
    if speedup is not None and not speedup > 0:
        raise PublishError(f"--speedup must be a positive factor (e.g. 1.25), not {speedup!r}")
    if pruned_results and not healed:
        raise PublishError(f"--pruned-results is for healed checkpoints; {folder} has no recovery record")
    measured = bench_rows(folder, bench, [int(i) for i in plan["drop"]])
    if measured is not None:
        gain, note, rows = measured
        if speedup is None:  # a typed --speedup stays an override
            speedup, speedup_note = gain, speedup_note or note
        size_rows = [*rows, *size_rows]
    own, base = load_eval(results), load_eval(base_results)
    pruned = load_eval(pruned_results) if healed else None

    drop = [int(i) for i in plan["drop"]]
    n_total = int(plan["num_layers"])
    model_name = repo_id.split("/")[-1] if repo_id else folder.resolve().name
    target = repo_id or str(folder)
    portable = Portable.for_checkpoint(folder, plan, ident.base_model, repo_id)

    columns = [(lbl, r) for lbl, r in (("parent", base), ("pruned", pruned if healed else own)) if r is not None]
    if healed and own is not None:
        columns.append(("healed", own))
    selection = selection_section(plan, folder, plot)
    recovery = recovery_section(plan, folder, portable)
    from lmeval_layerprune.core.layout import EMBEDDED_COMPLETE as _COMPLETE

    embedded_source = None
    if ident.parent is not None and (ident.parent / _COMPLETE).is_file():
        src = (ident.parent / _COMPLETE).read_text().split("\n")[0].removeprefix("source=")
        embedded_source = Path(src).name
    ref_run = own or base or pruned

    tags = ["layer-pruning", "lm-eval", f"layer-pruning-{selection['method']}", "text-generation"]
    writer = plan.get("writer") or (plan.get("extra") or {}).get("writer")
    if writer == "mergekit":
        tags.append("mergekit")
    if healed:
        tags += ["healed", f"recovery-{recovery['method']}", str(recovery["finetune"])]
    card_data = ModelCardData(
        base_model=ident.base_model,
        base_model_relation=relation if ident.base_model else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=ident.license,
        tags=tags,
        datasets=hub_datasets((plan.get("recovery") or {}).get("data")) or None,
        model_name=model_name,
        eval_results=eval_results(own) if own is not None else None,
        **ident.license_extra,
    )
    ctx = {
        "model_name": model_name,
        "base_model": ident.base_model,
        "n_dropped": len(drop),
        "num_layers": n_total,
        "num_kept": n_total - len(drop),
        "healed": healed,
        "tool_version": __version__,
        "writer": writer,
        "drop_list": json.dumps(drop),
        "drop_spec": format_indices(drop),
        "selection": selection,
        "size": size_section(folder, ident, len(drop), speedup, speedup_note, size_rows),
        "recovery": recovery,
        "score_tables": score_tables(columns, own, base),
        "findings": findings(own, base, pruned, healed),
        "eval": {
            "lm_eval_version": ref_run.lm_eval_version if ref_run else None,
            "limit": ref_run.limit if ref_run else None,
            "chat_template": ref_run.chat_template if ref_run else False,
        },
        "embedded_source": embedded_source,
        "reproduce": reproduce_section(
            folder, plan, ident, target, model_name, {"own": own, "base": base, "pruned": pruned}, portable
        ),
        "license": {
            "id": ident.license,
            "link": ident.license_extra.get("license_link"),
            "source": ident.license_source,
        },
    }
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    template = env.from_string((bundled_dir("hub_cards") / TEMPLATE).read_text())
    content = template.render(card_data=card_data.to_yaml(), **ctx)
    content = re.sub(r"\n{3,}", "\n\n", content)
    card = ModelCard(content)
    yaml.safe_load(card.content.split("---")[1])  # the metadata block parses (ModelCard checked it too)
    warning = ident.warning()
    return CardResult(card=card, identity=ident, warnings=[warning] if warning else [])


def build_card(
    folder: str | Path,
    *,
    results: Sequence[str | Path] = (),
    base_results: Sequence[str | Path] = (),
    pruned_results: Sequence[str | Path] = (),
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    base_model_relation: str | None = None,
    speedup: float | None = None,
    speedup_note: str | None = None,
    size_rows: Sequence[tuple[str, str, str]] = (),
    bench: str | Path | None = None,
    plot: str | Path | None = None,
    strict: bool = True,
) -> Any:
    """Render the model card of the checkpoint in ``folder`` (a :class:`huggingface_hub.ModelCard`).

    Args:
        results: lm-eval results (files or ``--output_path`` folders) of this checkpoint;
            they become the card's eval results.
        base_results: results of the unpruned parent (the "parent" column).
        pruned_results: for a healed checkpoint, results of the pruned model before healing.
        repo_id: the Hub repository the card is for (used in titles and commands).
        base_model: the parent's Hub id when the checkpoint records a local path.
        license: the license, when the parent's card does not say (see :func:`.facts.resolve_license`).
        base_model_relation: default ``finetune`` for healed checkpoints, else ``merge``.
        speedup: a measured speed-up factor of this model over the parent; ``speedup_note`` says how.
        size_rows: extra ``(label, parent, this model)`` rows for the size/speed table.
        bench: a ``lmeval-prune bench`` result (file or folder); default: the folder's own
            ``layer_pruning_bench.json`` when present. Its decode speed-up fills ``speedup`` unless given.
        plot: a PNG of the layer selection; copied into ``folder`` as ``layer_selection.png``.
        strict: refuse (:class:`PublishError`) when the parent's Hub id or license is unknown;
            with ``strict=False`` the card leaves them out (use :func:`render` to get the warnings).
    """
    return render(
        folder,
        results=results,
        base_results=base_results,
        pruned_results=pruned_results,
        repo_id=repo_id,
        base_model=base_model,
        license=license,
        base_model_relation=base_model_relation,
        speedup=speedup,
        speedup_note=speedup_note,
        size_rows=size_rows,
        bench=bench,
        plot=plot,
        strict=strict,
    ).card


def write_card(folder: str | Path, **kwargs: Any) -> Path:
    """Write the card to ``folder/README.md`` (atomically) and return its path. Unknown parent id or
    license leave fields out with a logged warning unless ``strict=True``. A ``README.md`` this tool
    did not write is refused before any work."""
    from lmeval_layerprune.core.guard import guard_card

    guard_card(Path(folder).expanduser() / CARD_FILE)
    result = render(folder, **kwargs)
    for w in result.warnings:
        logger.warning(w)
    return result.save(folder)
