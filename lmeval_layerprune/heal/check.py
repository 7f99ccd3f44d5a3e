"""What a heal run is asked to do (:class:`HealSettings`) and everything checked before any work
(:func:`check_run`): nothing is generated, loaded or written for a run that would fail on its arguments.

The recipe (keys and typed values), the drop spec against the base model's depth, the ``train``
layers against the pruned depth, the base and teacher (decoder-only, readable weights), the data
source (readable; responses where the method needs them; plain text for ``cpt``), and the output
(never an input; ``--overwrite`` only over a heal run, and only when the folder holds nothing the
user put there, which is named; a resume only with the same settings, named when they differ).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.arch import arch_for, num_layers
from lmeval_layerprune.core.embedded import resolve_pretrained
from lmeval_layerprune.core.guard import check_causal_lm, check_weights, guard_output
from lmeval_layerprune.core.journal import RunManifest, describe_diff, json_safe
from lmeval_layerprune.core.layout import CHECKPOINTS, HEAL_COMPLETE, HEAL_STATE_FILE
from lmeval_layerprune.core.spec import DropSpec
from lmeval_layerprune.errors import DropSpecError, HealError, SelfGenError
from lmeval_layerprune.heal.checkpoints import last_complete_checkpoint
from lmeval_layerprune.heal.folder import refuse_foreign_in_run
from lmeval_layerprune.heal.recipe import TRAIN_LAYER_FORMS, Recipe, apply_overrides, load_recipe, validate
from lmeval_layerprune.heal.selfgen import is_selfgen_file, read_records
from lmeval_layerprune.heal.sources import Prompt, load_prompts, load_texts
from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_drop, resolve_indices

logger = logging.getLogger(__name__)

DEFAULT_MIN_EXAMPLES = 8
#: Files that make a folder a heal output of this tool (what --overwrite may replace).
MARKERS = (HEAL_STATE_FILE, HEAL_COMPLETE)


@dataclass
class HealSettings:
    """One heal request: :func:`~lmeval_layerprune.heal.run.heal` and :func:`check_run` take it, and the
    ``heal`` command's flags are generated from its fields (``--keep-adapter``, ``--min-examples`` ...)."""

    recipe: str | Recipe = field(metadata={"help": "bundled recipe name (see 'lmeval-prune recipes') or a .yaml path"})
    base: str = field(metadata={"help": "the unpruned parent: checkpoint directory, Hub id, or 'embedded'"})
    out: str | Path = field(metadata={"help": "output folder (the healed checkpoint; also holds checkpoints)"})
    drop: str | None = field(
        default=None, metadata={"help": "drop spec (default: the recipe's), e.g. last:25%%, 20-25, plan:PATH"}
    )
    data: str | None = field(
        default=None,
        metadata={"help": "prompt source ('bundled', 'mixed', a file, a Hub id), a selfgen JSONL, or for cpt "
                  "recipes a text source ('corpus', a .txt file, a file or Hub id with a text column)"},
    )  # fmt: skip
    overrides: Sequence[str] = ()
    keep_adapter: bool = field(default=False, metadata={"help": "save the LoRA adapter instead of merging it"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep OUT/checkpoints after success"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace an earlier heal run in OUT (only a heal run) instead of resuming"}
    )
    verify: bool = field(
        default=True, metadata={"help": "reload the result and compare its logits with the trained model"}
    )
    min_examples: int = field(
        default=DEFAULT_MIN_EXAMPLES,
        metadata={"help": f"refuse to train on fewer examples than this after filtering (default: "
                  f"{DEFAULT_MIN_EXAMPLES}; 0: none)"},
    )  # fmt: skip
    progress: bool = True
    callbacks: Sequence[Any] = ()


@dataclass
class HealRun:
    """A heal request after every check (:func:`check_run`); nothing has been written or loaded yet.

    ``train_layers`` are the layers a partial finetune trains, as indices of the pruned model.
    """

    settings: HealSettings
    recipe: Recipe
    base_path: str
    drop: str
    out: Path
    source: str
    teacher: str | None = None
    records: list[dict[str, Any]] | None = None
    prompts: list[Prompt] | None = None
    texts: list[str] | None = None
    train_layers: tuple[int, ...] = ()

    @property
    def base(self) -> str:
        return self.settings.base

    @property
    def dtype_name(self) -> str:
        return str(self.recipe.get("dtype", "float32"))

    def manifest(self) -> RunManifest:
        """The settings a resume must match (saved as ``OUT/heal_state.json``)."""
        s = self.settings
        state = {"recipe": self.recipe.name, "raw": json_safe(self.recipe.raw), "base": s.base,
                 "drop": self.drop, "data": s.data, "keep_adapter": s.keep_adapter}  # fmt: skip
        return RunManifest(self.out / HEAL_STATE_FILE, "heal", state)


def _progress_in(out: Path) -> str | None:
    """What a run in ``out`` has achieved that other settings must not mix with (None: nothing)."""
    if (out / HEAL_COMPLETE).is_file():
        return "a finished healed checkpoint"
    ckpt = last_complete_checkpoint(out / CHECKPOINTS)
    return f"training checkpoints (up to {ckpt.name})" if ckpt else None


def state_diff(run: HealRun) -> list[tuple[str, Any, Any]]:
    """Settings saved in ``OUT/heal_state.json`` that differ from ``run``'s (recipe keys without a prefix)."""
    manifest = run.manifest()
    old = manifest.load()
    if old is None:
        return []
    return [(k.removeprefix("raw."), a, b) for k, a, b in manifest.differences(old)]


def _model_config(path: str, name: str, role: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise HealError(
            f"the {role} {name!r} cannot be read ({str(e).splitlines()[0]}); expected a checkpoint folder, "
            "a Hub id (online) or 'embedded'"
        ) from None


def _warn(msg: str) -> None:
    logger.warning(msg)
    print(f"heal: {msg}", file=sys.stderr, flush=True)


def _recipe_of(settings: HealSettings) -> Recipe:
    missing = [m for m in ("trl", "peft", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        raise HealError(f"heal needs {', '.join(missing)}: pip install 'lmeval-layerprune[heal]'")
    recipe, overrides = settings.recipe, list(settings.overrides)
    if isinstance(recipe, Recipe):
        if not overrides:
            return recipe
        return validate(apply_overrides(recipe.raw, overrides), name=recipe.name, path=recipe.path)
    return load_recipe(recipe, overrides)


def _check_use(rec: Recipe, settings: HealSettings) -> None:
    """The recipe against the request and this machine (adapter, GPU, minimum, steps and budget)."""
    import torch

    if settings.keep_adapter and rec.finetune not in ("lora", "qlora"):
        raise HealError(f"--keep-adapter needs a LoRA recipe; {rec.name!r} is a {rec.finetune} finetune")
    if rec.quantization and not torch.cuda.is_available():
        raise HealError(
            f"recipe {rec.name!r} trains a 4-bit (QLoRA) base, which needs a CUDA GPU with bitsandbytes; "
            "none is available here. On CPU use selfgen-lora (or override lora/quantization)."
        )
    m = settings.min_examples
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise HealError(f"--min-examples must be a whole number >= 0 (0: no minimum), got {m!r}")
    max_steps, warmup = rec.sft.get("max_steps"), rec.sft.get("warmup_steps")
    if rec.budget is not None:
        unused = {k: rec.sft[k] for k in ("max_steps", "num_train_epochs") if k in rec.sft and rec.sft[k] != -1}
        if unused:
            shown = ", ".join(f"sft.{k}={v}" for k, v in unused.items())
            _warn(f"budget.tokens={rec.budget.tokens} sets the length of training; {shown} is not used")
    elif isinstance(max_steps, int) and max_steps > 0 and isinstance(warmup, int | float) and 1 <= warmup:
        if warmup >= max_steps:
            _warn(f"warning: sft.warmup_steps={warmup:g} is not below sft.max_steps={max_steps}: the learning rate "
                  "never leaves warmup (lower warmup_steps, e.g. sft.warmup_steps=0)")  # fmt: skip


def _check_base(base: str, drop: str) -> tuple[str, DropSpec, int]:
    """The base (a decoder-only model of a supported architecture, readable weights), the parsed spec,
    and the depth of the pruned model."""
    base_path = str(resolve_pretrained(base))
    config = _model_config(base_path, base, "base model")
    check_causal_lm(config, role="base model", name=base)
    arch_for(config)
    spec = parse_spec(drop)
    if spec.is_noop:
        raise HealError("drop spec 'none' removes nothing; heal needs a pruned model (e.g. --drop last:25%)")
    n = num_layers(config)
    if needs_model(spec):
        removed = spec.layer_count(n)
        if removed >= n:
            raise HealError(f"drop spec {drop!r} removes every layer of {base!r} ({n} layers)")
    else:
        resolve_drop(config, spec)  # out-of-range indices, a plan for another depth: refused now, not after generating
        removed = len(resolve_indices(spec, n))
    check_weights(base_path)
    return base_path, spec, n - removed


def _train_layers(rec: Recipe, depth: int) -> tuple[int, ...]:
    """``train.layers`` as indices of the pruned model (``depth`` layers)."""
    text = rec.train.layers if rec.train is not None else None
    if not text:
        return ()
    where = f"recipe {rec.name!r}: train.layers = {text!r}"
    forms = f"valid forms, counted on the pruned model: {TRAIN_LAYER_FORMS}"
    try:
        spec = parse_spec(text)
    except DropSpecError as e:
        raise HealError(f"{where} is not a layer spec ({str(e).split('. Valid')[0]}); {forms}") from None
    if spec.method == "plan" or needs_model(spec):
        raise HealError(f"{where} chooses layers by a model's scores or a plan; name them by position ({forms})")
    try:
        return resolve_indices(spec, depth)
    except (DropSpecError, ValueError) as e:
        raise HealError(f"{where} does not fit the pruned model ({depth} layers): {e}") from None


def _check_teacher(rec: Recipe, base: str) -> str | None:
    if rec.method not in ("selfgen", "kd"):
        return None
    teacher = str(rec.get("teacher") or base)
    if teacher != base:
        teacher_path = str(resolve_pretrained(teacher))
        check_causal_lm(_model_config(teacher_path, teacher, "teacher"), role="teacher", name=teacher)
        check_weights(teacher_path)
    return teacher


def _check_data(rec: Recipe, source: str) -> tuple[list[dict[str, Any]] | None, list[Prompt] | None, list[str] | None]:
    """(selfgen records, prompts, plain texts): the one the source and the method call for."""
    records = prompts = texts = None
    where = {"columns": rec.get("columns"), "split": rec.get("split", "train"), "subset": rec.get("subset")}
    try:
        if rec.method == "cpt":
            texts = load_texts(source, n=rec.selfgen.get("n"), **where)
        elif is_selfgen_file(source):
            records = read_records(source)
        else:
            prompts = load_prompts(source, n=rec.selfgen.get("n"), system=rec.selfgen.get("system"), **where)
    except SelfGenError as e:
        raise HealError(str(e)) from None
    if rec.method == "original" and prompts is not None and not any(p.reference for p in prompts):
        raise HealError(
            f"recipe {rec.name!r} trains on the source's original responses, but {source!r} has none "
            "(expected an 'output'/'response'/'completion' column or a final assistant message)"
        )
    return records, prompts, texts


def _check_output(run: HealRun, spec: DropSpec) -> None:
    """The output: never an input, ``--overwrite`` only over a heal run, a resume only with the same settings."""
    out, s = run.out, run.settings
    inputs = [run.base_path, run.source, run.recipe.path, getattr(spec, "plan_path", None)]
    if run.teacher:
        inputs.append(str(resolve_pretrained(run.teacher)))
    if spec.method == "plan" and spec.text.startswith("plan:"):
        inputs.append(spec.text[len("plan:") :].split("@")[0])
    guard_output(out, inputs=inputs, overwrite=s.overwrite, owned=MARKERS, what="output folder")
    if s.overwrite:  # the earlier run goes as a whole: nothing of the user's may be in it
        refuse_foreign_in_run(out, why="--overwrite replaces only lmeval-prune's own heal run and would lose them")
    elif out.is_dir() and (out / HEAL_STATE_FILE).is_file() and not (out / HEAL_COMPLETE).is_file():
        refuse_foreign_in_run(out, why="the healed checkpoint replaces this folder as a whole and would lose them")
    if not s.overwrite and out.is_dir() and any(out.iterdir()):
        if not (out / HEAL_STATE_FILE).is_file():
            raise HealError(
                f"output folder {out} exists and is not a heal run (no {HEAL_STATE_FILE}); choose another --out "
                "(--overwrite only replaces heal runs)"
            )
        diff = state_diff(run)
        progress_made = _progress_in(out)
        if diff and progress_made:
            raise HealError(
                f"output folder {out} holds {progress_made} made with other settings ({describe_diff(diff)}); "
                "rerun with the same arguments to resume it, choose another --out, or pass --overwrite to start over"
            )
    elif out.exists() and not out.is_dir():
        raise HealError(f"--out {out} is a file; heal writes a checkpoint folder")


def check_run(settings: HealSettings) -> HealRun:
    """Step 1: check everything before any teacher is loaded or anything is written (see the module)."""
    rec = _recipe_of(settings)
    drop = settings.drop or rec.get("drop")
    if not drop:
        raise HealError(f"recipe {rec.name!r} has no drop spec; pass --drop (e.g. last:25%)")
    drop = str(drop)
    _check_use(rec, settings)
    base_path, spec, depth = _check_base(settings.base, drop)
    train_layers = _train_layers(rec, depth)
    teacher = _check_teacher(rec, settings.base)
    source = settings.data or rec.get("data")
    if not source:
        what = "a text source" if rec.method == "cpt" else "a prompt source or a selfgen JSONL"
        raise HealError(f"recipe {rec.name!r} names no data; pass --data ({what})")
    source = str(source)
    records, prompts, texts = _check_data(rec, source)
    run = HealRun(
        settings=settings, recipe=rec, base_path=base_path, drop=drop, out=Path(settings.out).expanduser(),
        source=source, teacher=teacher, records=records, prompts=prompts, texts=texts, train_layers=train_layers,
    )  # fmt: skip
    _check_output(run, spec)
    return run
