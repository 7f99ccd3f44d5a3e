"""Heal a pruned model with a recovery recipe (``lmeval-prune heal``): TRL's SFTTrainer + PEFT.

One call builds the pruned student (only the kept layers are read), prepares the training data
(self-generated responses of the unpruned parent, the source's original responses, or the same
sequences for logit distillation), trains with checkpoints, and writes a standalone checkpoint:

``OUT/``
    ``config.json`` + weights (LoRA merged) or ``adapter_*`` (``keep_adapter``), the tokenizer,
    ``recovery_recipe.yaml`` (the recipe after overrides), ``layer_pruning.json`` (the plan with its
    ``recovery`` record), ``HEAL_COMPLETE``; while training also ``checkpoints/`` (removed at the
    end unless ``keep_checkpoints``) and, for selfgen/kd recipes, ``selfgen_responses.jsonl``.

A killed run started again with the same arguments resumes from the last complete checkpoint (a
damaged newest one is set aside with a warning). Everything is checked before any work
(:func:`check_run`): nothing is generated or written for a run that would fail on its arguments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmeval_layerprune.core.journal import RunManifest, describe_diff, json_safe
from lmeval_layerprune.core.layout import (
    CHECKPOINTS,
    HEAL_COMPLETE,
    HEAL_STATE_FILE,
    PLAN_ATTR,
    PLAN_FILE,
    RECIPE_FILE,
    RESPONSES_FILE,
)
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.errors import HealError
from lmeval_layerprune.heal.recipe import KDSettings, Recipe, load_recipe

logger = logging.getLogger(__name__)


_SFT_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "save_strategy": "steps",
    "save_steps": 50,
    "save_total_limit": 2,
    "logging_steps": 10,
    "completion_only_loss": True,
    "seed": 42,
}


# ------------------------------------------------------------------ steps


DEFAULT_MIN_EXAMPLES = 8
#: Files that make a folder a heal output of this tool (what --overwrite may replace).
MARKERS = (HEAL_STATE_FILE, HEAL_COMPLETE)


@dataclass
class HealRun:
    """A heal request after every check (:func:`check_run`); nothing has been written or loaded yet."""

    recipe: Recipe
    base: str
    base_path: str
    drop: str
    out: Path
    data: str | None
    source: str
    teacher: str | None = None
    records: list[dict[str, Any]] | None = None
    prompts: list[Any] | None = None
    keep_adapter: bool = False
    keep_checkpoints: bool = False
    overwrite: bool = False
    verify: bool = True
    progress: bool = True
    min_examples: int = DEFAULT_MIN_EXAMPLES
    callbacks: Sequence[Any] = ()

    @property
    def dtype_name(self) -> str:
        return str(self.recipe.get("dtype", "float32"))

    def manifest(self) -> RunManifest:
        """The settings a resume must match (saved as ``OUT/heal_state.json``)."""
        state = {"recipe": self.recipe.name, "raw": json_safe(self.recipe.raw), "base": self.base,
                 "drop": self.drop, "data": self.data, "keep_adapter": self.keep_adapter}  # fmt: skip
        return RunManifest(self.out / HEAL_STATE_FILE, "heal", state)


def _progress_in(out: Path) -> str | None:
    """What a run in ``out`` has achieved that other settings must not mix with (None: nothing)."""
    if (out / HEAL_COMPLETE).is_file():
        return "a finished healed checkpoint"
    ckpt = last_complete_checkpoint(out / CHECKPOINTS)
    return f"training checkpoints (up to {ckpt.name})" if ckpt else None


def _state_diff(run: HealRun) -> list[tuple[str, Any, Any]]:
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


def check_run(
    recipe: str | Recipe,
    base: str,
    out: str | Path,
    *,
    drop: str | None = None,
    data: str | None = None,
    overrides: Sequence[str] = (),
    keep_adapter: bool = False,
    keep_checkpoints: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    verify: bool = True,
    min_examples: int = DEFAULT_MIN_EXAMPLES,
) -> HealRun:
    """Step 1: check everything before any teacher is loaded or anything is written.

    The recipe (keys and typed values), the drop spec against the base model's depth, the base and
    teacher (decoder-only, readable weights), the data source (readable; responses where the method
    needs them), and the output (never an input; ``--overwrite`` only over a heal run; a resume only
    with the same settings, named when they differ).
    """
    import importlib.util

    import torch

    from lmeval_layerprune.core.arch import arch_for, num_layers
    from lmeval_layerprune.core.embedded import resolve_pretrained
    from lmeval_layerprune.core.guard import check_causal_lm, check_weights, guard_output
    from lmeval_layerprune.errors import SelfGenError
    from lmeval_layerprune.heal.selfgen import is_selfgen_file, load_prompts, read_records
    from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_drop

    missing = [m for m in ("trl", "peft", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        raise HealError(f"heal needs {', '.join(missing)}: pip install 'lmeval-layerprune[heal]'")
    if isinstance(recipe, Recipe):
        rec = recipe
        if overrides:
            from lmeval_layerprune.heal.recipe import apply_overrides, validate

            rec = validate(apply_overrides(recipe.raw, list(overrides)), name=recipe.name, path=recipe.path)
    else:
        rec = load_recipe(recipe, list(overrides))
    drop = drop or rec.get("drop")
    if not drop:
        raise HealError(f"recipe {rec.name!r} has no drop spec; pass --drop (e.g. last:25%)")
    drop = str(drop)
    if keep_adapter and rec.finetune == "full":
        raise HealError(f"--keep-adapter needs a LoRA recipe; {rec.name!r} is a full finetune")
    if rec.quantization and not torch.cuda.is_available():
        raise HealError(
            f"recipe {rec.name!r} trains a 4-bit (QLoRA) base, which needs a CUDA GPU with bitsandbytes; "
            "none is available here. On CPU use selfgen-lora (or override lora/quantization)."
        )
    if isinstance(min_examples, bool) or not isinstance(min_examples, int) or min_examples < 0:
        raise HealError(f"--min-examples must be a whole number >= 0 (0: no minimum), got {min_examples!r}")
    max_steps, warmup = rec.sft.get("max_steps"), rec.sft.get("warmup_steps")
    if isinstance(max_steps, int) and max_steps > 0 and isinstance(warmup, int | float) and 1 <= warmup:
        if warmup >= max_steps:
            msg = (f"warning: sft.warmup_steps={warmup:g} is not below sft.max_steps={max_steps}: the learning rate "
                   "never leaves warmup (lower warmup_steps, e.g. sft.warmup_steps=0)")  # fmt: skip
            logger.warning(msg)
            print(f"heal: {msg}", file=sys.stderr, flush=True)

    # the base: a decoder-only model of a supported architecture with readable weights; the spec fits its depth
    base_path = str(resolve_pretrained(base))
    config = _model_config(base_path, base, "base model")
    check_causal_lm(config, role="base model", name=base)
    arch_for(config)
    spec = parse_spec(drop)
    if spec.is_noop:
        raise HealError("drop spec 'none' removes nothing; heal needs a pruned model (e.g. --drop last:25%)")
    n = num_layers(config)
    if needs_model(spec):
        if spec.layer_count(n) >= n:
            raise HealError(f"drop spec {drop!r} removes every layer of {base!r} ({n} layers)")
    else:
        resolve_drop(config, spec)  # out-of-range indices, a plan for another depth: refused now, not after generating
    check_weights(base_path)

    teacher = None
    if rec.method in ("selfgen", "kd"):
        teacher = str(rec.get("teacher") or base)
        if teacher != base:
            teacher_path = str(resolve_pretrained(teacher))
            check_causal_lm(_model_config(teacher_path, teacher, "teacher"), role="teacher", name=teacher)
            check_weights(teacher_path)

    # the data
    source = data or rec.get("data")
    if not source:
        raise HealError(f"recipe {rec.name!r} names no data; pass --data (a prompt source or a selfgen JSONL)")
    source = str(source)
    records = prompts = None
    try:
        if is_selfgen_file(source):
            records = read_records(source)
        else:
            sg = rec.selfgen
            prompts = load_prompts(source, columns=rec.get("columns"), split=rec.get("split", "train"),
                                   n=sg.get("n"), system=sg.get("system"))  # fmt: skip
    except SelfGenError as e:
        raise HealError(str(e)) from None
    if rec.method == "original" and prompts is not None and not any(p.reference for p in prompts):
        raise HealError(
            f"recipe {rec.name!r} trains on the source's original responses, but {source!r} has none "
            "(expected an 'output'/'response'/'completion' column or a final assistant message)"
        )

    # the output
    out = Path(out).expanduser()
    inputs = [base_path, source, rec.path, getattr(spec, "plan_path", None)]
    if teacher:
        inputs.append(str(resolve_pretrained(teacher)))
    if spec.method == "plan" and spec.text.startswith("plan:"):
        inputs.append(spec.text[len("plan:") :].split("@")[0])
    guard_output(out, inputs=inputs, overwrite=overwrite, owned=MARKERS, what="output folder")
    run = HealRun(
        recipe=rec, base=base, base_path=base_path, drop=drop, out=out, data=data, source=source, teacher=teacher,
        records=records, prompts=prompts, keep_adapter=keep_adapter, keep_checkpoints=keep_checkpoints,
        overwrite=overwrite, verify=verify, progress=progress, min_examples=min_examples, callbacks=callbacks,
    )  # fmt: skip
    if not overwrite and out.is_dir() and any(out.iterdir()):
        if out.is_file() or not (out / HEAL_STATE_FILE).is_file():
            raise HealError(
                f"output folder {out} exists and is not a heal run (no {HEAL_STATE_FILE}); choose another --out "
                "(--overwrite only replaces heal runs)"
            )
        diff = _state_diff(run)
        progress_made = _progress_in(out)
        if diff and progress_made:
            raise HealError(
                f"output folder {out} holds {progress_made} made with other settings ({describe_diff(diff)}); "
                "rerun with the same arguments to resume it, choose another --out, or pass --overwrite to start over"
            )
    elif out.exists() and not out.is_dir():
        raise HealError(f"--out {out} is a file; heal writes a checkpoint folder")
    return run


def prepare_output(run: HealRun) -> bool:
    """Step 2: create ``OUT`` and its state file; True when a finished run with the same settings is there.

    ``--overwrite`` sets the old run aside (``.OUT.heal-previous``) and deletes it only once the new
    checkpoint is complete, so a kill never leaves neither. A previous attempt that made no progress
    (no checkpoint) is restarted with the new settings.
    """
    out = run.out
    manifest = run.manifest()
    if run.overwrite and out.exists():
        previous = _previous(out)
        if previous.exists() and not (out / HEAL_COMPLETE).is_file():
            shutil.rmtree(out)  # an unfinished new run; the last complete one is already set aside
        else:
            shutil.rmtree(previous, ignore_errors=True)
            os.rename(out, previous)
    if manifest.path.is_file():
        diff = _state_diff(run)
        if not diff:
            return (out / HEAL_COMPLETE).is_file()
        logger.warning("%s: the previous attempt made no progress; starting over with the new settings (%s)",
                       out, describe_diff(diff))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    manifest.write()
    return False


def _previous(out: Path) -> Path:
    return out.with_name(f".{out.name}.heal-previous")


def prepare_data(run: HealRun) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Step 3: the conversational prompt-completion rows, and how many examples survived each filter.

    ``selfgen`` / ``kd``: the teacher's responses, read from a selfgen JSONL (``--data``) or generated
    into ``OUT/selfgen_responses.jsonl`` (resumable). ``original``: the source's own responses.
    Refuses to go on below ``run.min_examples``.
    """
    from lmeval_layerprune.heal.selfgen import (
        FILTERS,
        FilterSettings,
        GenerationSettings,
        generate_responses,
        read_records,
        training_pairs,
    )

    rec = run.recipe
    if run.records is not None:
        use = "reference" if rec.method == "original" else "response"
        records = run.records
        rows = training_pairs(records, use=use)
        if not rows:
            what = "original responses" if use == "reference" else "responses"
            raise HealError(f"{run.source} has no usable {what}")
    elif rec.method == "original":
        records = None
        rows = [
            {"prompt": p.messages, "completion": [{"role": "assistant", "content": p.reference}]}
            for p in run.prompts or []
            if p.reference
        ]
    else:
        sg = {k: v for k, v in rec.selfgen.items() if k != "n"}
        gen_keys = {f.name for f in dataclasses.fields(GenerationSettings)}
        gen = GenerationSettings(**{k: v for k, v in sg.items() if k in gen_keys})
        flt = FilterSettings(**{k: v for k, v in sg.items() if k not in gen_keys})
        from accelerate import PartialState

        with PartialState().main_process_first():  # one process generates; the others then find it complete
            generate_responses(str(run.teacher), run.prompts or [], run.out / RESPONSES_FILE, generation=gen,
                               filters=flt, source=run.source, progress=run.progress)  # fmt: skip
        wanted = {p.id for p in run.prompts or []}
        records = [r for r in read_records(run.out / RESPONSES_FILE) if r["id"] in wanted]
        rows = training_pairs(records)
    # how many survived each filter, in the order they are applied
    counts: dict[str, Any] = {"source": run.source, "examples": len(rows)}
    if records is not None and rec.method != "original":
        counts["total"] = len(records)
        counts["filtered"] = {f: sum(1 for r in records if r.get("filtered") == f) for f in FILTERS}
        left, steps = len(records), []
        for f in FILTERS:
            if counts["filtered"][f]:
                left -= counts["filtered"][f]
                steps.append(f"-{counts['filtered'][f]} {f} -> {left}")
        funnel = f"{len(records)} responses" + (f" ({', '.join(steps)})" if steps else ", none filtered")
    else:
        total = len(run.prompts) if run.prompts is not None else len(records or [])
        counts["total"] = total
        funnel = f"{total} prompts, {len(rows)} with an original response"
    print(f"heal: training data from {run.source}: {funnel}; {len(rows)} examples", flush=True)
    if not rows:
        where = f"; see {run.out / RESPONSES_FILE}" if records is not None and run.records is None else ""
        raise HealError(f"every generated response was filtered out ({funnel}){where}")
    if len(rows) < run.min_examples:
        raise HealError(
            f"only {len(rows)} training examples survived ({funnel}); fewer than --min-examples "
            f"{run.min_examples}, so the healed model would mostly memorise them and say little about recovery. "
            "Raise selfgen.n or selfgen.max_new_tokens, relax selfgen.filters, or pass "
            f"--min-examples {len(rows)} to train anyway"
        )
    return rows, counts


# ------------------------------------------------------------------- training


def kd_loss(
    student_logits: Any,
    teacher_logits: Any,
    labels: Any,
    temperature: float = 2.0,
    alpha: float = 1.0,
    num_items: Any = None,
) -> Any:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy, summed over the positions whose
    next-token label is not -100 and divided by their number (or by ``num_items``, as Trainer passes it
    under gradient accumulation)."""
    import torch
    import torch.nn.functional as F

    mask = labels[:, 1:] != -100
    student = student_logits[:, :-1][mask].float()
    teacher = teacher_logits[:, :-1][mask].float()
    n = mask.sum() if num_items is None else num_items
    n = torch.as_tensor(n, device=student.device).clamp(min=1)
    s_logp = F.log_softmax(student / temperature, dim=-1)
    t_logp = F.log_softmax(teacher / temperature, dim=-1)
    loss = alpha * temperature**2 * (t_logp.exp() * (t_logp - s_logp)).sum() / n
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(student, labels[:, 1:][mask], reduction="sum") / n
    return loss


def _kd_trainer_class() -> type:
    import torch
    from trl import SFTTrainer

    class KDTrainer(SFTTrainer):
        """SFTTrainer whose loss is logit distillation from a frozen teacher on the completion tokens."""

        def __init__(self, *args: Any, teacher_model: Any, kd: KDSettings, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.kd = kd
            self.teacher = teacher_model.eval().requires_grad_(False).to(self.accelerator.device)

        def compute_loss(  # type: ignore[override]
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            labels = inputs["labels"]
            fwd = {k: v for k, v in inputs.items() if k != "labels"}
            fwd["use_cache"] = False
            outputs = model(**fwd)
            with torch.no_grad():
                teacher_logits = self.teacher(**fwd).logits
            loss = kd_loss(
                outputs.logits, teacher_logits, labels, self.kd.temperature, self.kd.alpha, num_items_in_batch
            )
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return KDTrainer


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` with a ``trainer_state.json`` (written last, so the checkpoint is whole)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file() and p.name[11:].isdigit()]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a trainer checkpoint cannot be resumed from (unreadable state, weights or optimizer files), or None."""
    import zipfile

    from lmeval_layerprune.core.guard import check_weights
    from lmeval_layerprune.errors import CorruptFileError

    try:
        state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "global_step" not in state:
            return "trainer_state.json has no global_step"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"trainer_state.json is unreadable ({type(e).__name__})"
    try:
        check_weights(ckpt)
    except CorruptFileError as e:
        return str(e).split(";")[0]
    for path in sorted([*ckpt.glob("*.pt"), *ckpt.glob("*.pth"), *ckpt.glob("*.bin")]):
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one lacks its directory
            return f"{path.name} is truncated or damaged"
    return None


def usable_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint that can be read; damaged newer ones are set aside with a warning."""
    while (ckpt := last_complete_checkpoint(folder)) is not None:
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        aside = ckpt.with_name(f"damaged-{ckpt.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(ckpt, aside)
        msg = f"warning: {ckpt} is damaged ({problem}); set aside as {aside.name}, resuming from the one before"
        logger.warning(msg)
        print(f"heal: {msg}", flush=True)
    return None


_json_safe = json_safe


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def eval_command(out: Path, base: str, drop: str, keep_adapter: bool, tasks: str = "arith_probe") -> str:
    """The lm_eval command line that evaluates a heal result."""
    if keep_adapter:
        return f"lm_eval --model pruned-hf --model_args pretrained={base},drop={drop},peft={out} --tasks {tasks}"
    return f"lm_eval --model hf --model_args pretrained={out} --tasks {tasks}"


@dataclass
class Training:
    """What :func:`make_trainer` built: the trainer and the settings it actually used."""

    trainer: Any
    args: Any
    sft_kwargs: dict[str, Any]
    peft_config: Any
    tokenizer: Any
    plan: PruningPlan
    teacher_name: str | None


def load_student(run: HealRun, dist: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Step 4: the pruned student (only the kept layers are read), its tokenizer, and the plan."""
    from transformers import AutoTokenizer

    from lmeval_layerprune.checkpoint.load import load_pruned_model
    from lmeval_layerprune.heal.selfgen import ensure_chat_template

    rec = run.recipe
    tokenizer = AutoTokenizer.from_pretrained(run.base_path)
    ensure_chat_template(tokenizer)
    load_kwargs: dict[str, Any] = {"dtype": _torch_dtype(run.dtype_name)}
    if rec.quantization:
        from transformers import BitsAndBytesConfig

        q = dict(rec.quantization)
        if isinstance(q.get("bnb_4bit_compute_dtype"), str):
            q["bnb_4bit_compute_dtype"] = _torch_dtype(q["bnb_4bit_compute_dtype"])
        load_kwargs["quantization_config"] = BitsAndBytesConfig(**q)
        load_kwargs["device_map"] = {"": dist.local_process_index}
    student = load_pruned_model(run.base, run.drop, tokenizer=tokenizer, **load_kwargs)
    plan = PruningPlan.from_config(student.config)
    if rec.quantization:
        from peft import prepare_model_for_kbit_training

        student = prepare_model_for_kbit_training(
            student, use_gradient_checkpointing=bool(rec.sft.get("gradient_checkpointing", True))
        )
    return student, tokenizer, plan


def make_trainer(run: HealRun, student: Any, tokenizer: Any, plan: PruningPlan, rows: list[dict[str, Any]]) -> Training:
    """Step 5: the SFT (or distillation) trainer with the recipe's TRL and PEFT configs."""
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from lmeval_layerprune.core.embedded import resolve_pretrained

    rec = run.recipe
    sft_kwargs = {**_SFT_DEFAULTS, **rec.sft}
    if not torch.cuda.is_available() and (sft_kwargs.get("bf16") or sft_kwargs.get("fp16")):
        logger.warning("no CUDA: training in %s without bf16/fp16 mixed precision", run.dtype_name)
    if not torch.cuda.is_available():
        sft_kwargs["bf16"] = False
        sft_kwargs["fp16"] = False
        sft_kwargs.setdefault("dataloader_pin_memory", False)
    sft_kwargs.setdefault("disable_tqdm", not run.progress)
    try:
        args = SFTConfig(output_dir=str(run.out / CHECKPOINTS), **sft_kwargs)
    except (TypeError, ValueError) as e:
        raise HealError(f"recipe {rec.name!r}: TRL refuses the sft settings: {e}") from None
    peft_config = None
    if rec.lora is not None:
        from peft import LoraConfig

        try:
            peft_config = LoraConfig(**{"task_type": "CAUSAL_LM", **rec.lora})
        except (TypeError, ValueError) as e:
            raise HealError(f"recipe {rec.name!r}: PEFT refuses the lora settings: {e}") from None
    trainer_kwargs: dict[str, Any] = {}
    trainer_cls: type = SFTTrainer
    if rec.method == "kd":
        from transformers import AutoModelForCausalLM

        teacher = AutoModelForCausalLM.from_pretrained(
            str(resolve_pretrained(str(run.teacher))), dtype=_torch_dtype(run.dtype_name)
        )
        trainer_cls = _kd_trainer_class()
        trainer_kwargs = {"teacher_model": teacher, "kd": rec.kd}
    trainer = trainer_cls(
        model=student,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(run.callbacks),
        **trainer_kwargs,
    )
    return Training(trainer, args, sft_kwargs, peft_config, tokenizer, plan, run.teacher)


def train_or_resume(run: HealRun, training: Training) -> int:
    """Step 6: train, or continue from the newest readable checkpoint; returns the steps done."""
    trainer = training.trainer
    resume = usable_checkpoint(run.out / CHECKPOINTS)
    if resume:
        logger.warning("resuming from %s", resume)
        print(f"heal: resuming from {resume}", flush=True)
    saved = json.loads((resume / "trainer_state.json").read_text()) if resume else {}
    if resume and 0 < int(saved.get("max_steps", 0)) <= int(saved.get("global_step", 0)):
        # Killed after the last checkpoint: Trainer would take one more step; load the finished state instead.
        from transformers import TrainerState

        trainer._load_from_checkpoint(str(resume))
        trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return int(trainer.state.global_step)


def write_checkpoint(run: HealRun, training: Training, counts: dict[str, Any], steps: int, dist: Any) -> Any:
    """Step 7: the standalone checkpoint in ``OUT`` (merged or adapter, tokenizer, plan, recipe as used).

    Returns the model written (None for an adapter, or on a process other than the main one).
    """
    from lmeval_layerprune.core.embedded import base_model_name

    rec, out, trainer, args = run.recipe, run.out, training.trainer, training.args
    staging = out / ".trainer-final"
    trainer.save_model(str(staging))
    if not dist.is_main_process:
        return None
    # Build the standalone checkpoint from what the trainer saved (works under DDP / ZeRO-3 / FSDP too).
    plan = training.plan
    final = _build_final(rec, run.base, run.base_path, staging, plan, run.dtype_name, run.keep_adapter)
    teacher_name = training.teacher_name
    plan.recovery = {
        "recipe": rec.name,
        "method": rec.method,
        "finetune": rec.finetune,
        "data": counts["source"],
        "teacher": base_model_name(teacher_name) if teacher_name else None,
        "settings": json_safe(
            {
                "sft": {k: getattr(args, k) for k in training.sft_kwargs},
                "lora": training.peft_config.to_dict() if training.peft_config is not None else None,
                "quantization": rec.quantization,
                "kd": dataclasses.asdict(rec.kd) if rec.method == "kd" else None,
                "selfgen": rec.selfgen or None,
                "dtype": run.dtype_name,
                "examples": counts["examples"],
            }
        ),
        "steps": steps,
    }
    tmp = out / ".final-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if run.keep_adapter:
        shutil.copytree(staging, tmp)
    else:
        setattr(final.config, PLAN_ATTR, plan.to_dict())
        final.save_pretrained(tmp)
    training.tokenizer.save_pretrained(tmp)
    plan.save(tmp / PLAN_FILE)
    used = json_safe(rec.raw)
    used.update(drop=run.drop, data=counts["source"], dtype=run.dtype_name)
    used["sft"] = {**(used.get("sft") or {}), "bf16": args.bf16, "fp16": args.fp16}
    (tmp / RECIPE_FILE).write_text(
        f"# recipe {rec.name!r} as used (overrides applied; base={run.base}); rerun with --recipe {RECIPE_FILE}\n"
        + yaml.safe_dump(used, sort_keys=False)
    )
    # a kill while moving leaves no HEAL_COMPLETE: the rerun loads the finished trainer state and writes again
    for item in tmp.iterdir():
        os.replace(item, out / item.name)
    tmp.rmdir()
    return final


def verify_written(run: HealRun, training: Training, final: Any, dist: Any) -> None:
    """Step 8: reload the checkpoint and compare its logits with the trained model (single process, unquantized)."""
    rec = run.recipe
    if not (run.verify and dist.num_processes == 1 and not rec.quantization and not run.keep_adapter):
        return
    from lmeval_layerprune.checkpoint.materialize import verify_checkpoint

    trainer = training.trainer
    # 1. what was written is exactly the model in memory (merged, or the full finetune)
    exact = 1e-4 if run.dtype_name == "float32" else 1e-1
    verify_checkpoint(run.out, final if final is not None else trainer.model, atol=exact, what="the model saved")
    if rec.lora is not None:
        # 2. merging W + BA only reorders float rounding: the merged logits stay within a small share of
        # the logit scale of the trained adapter model (a wrong merge or a missing layer is far off). The
        # absolute difference grows with the adapter's size (1e-3 to 2e-2 on the 135M model, float32).
        verify_checkpoint(run.out, trainer.model, atol=exact, rtol=3e-3, what="the trained adapter model")


def finish(run: HealRun, steps: int) -> None:
    """Step 9: drop the staging folders (and the checkpoints unless kept), then mark the run complete."""
    out = run.out
    shutil.rmtree(out / ".trainer-final", ignore_errors=True)
    if not run.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    (out / HEAL_COMPLETE).write_text(json.dumps({"steps": steps}) + "\n")
    shutil.rmtree(_previous(out), ignore_errors=True)  # the run --overwrite replaced


def heal(
    recipe: str | Recipe,
    base: str,
    out: str | Path,
    *,
    drop: str | None = None,
    data: str | None = None,
    overrides: Sequence[str] = (),
    keep_adapter: bool = False,
    keep_checkpoints: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    verify: bool = True,
    min_examples: int = DEFAULT_MIN_EXAMPLES,
) -> Path:
    """Prune ``base`` by ``drop``, finetune it with ``recipe``, and save a standalone checkpoint in ``out``.

    Args:
        recipe: a bundled recipe name (``selfgen-lora``), a YAML path, or a loaded :class:`Recipe`.
        base: the unpruned parent: a checkpoint directory, a Hub id, or ``"embedded"``.
        out: the output folder (also holds the training checkpoints while it runs).
        drop: drop spec (default: the recipe's ``drop``).
        data: prompt source or selfgen JSONL (default: the recipe's ``data``).
        overrides: ``SECTION.KEY=VALUE`` recipe overrides, e.g. ``sft.max_steps=5``.
        keep_adapter: save the LoRA adapter instead of merging it (evaluate with ``pruned-hf``'s ``peft=``).
        keep_checkpoints: keep ``out/checkpoints`` after success.
        overwrite: replace an earlier heal run in ``out`` (only a heal run; it is deleted once the new one is
            complete); otherwise a run with the same arguments resumes.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        progress: show progress bars.
        verify: reload the written checkpoint and compare its logits with the trained model (single process).
        min_examples: refuse to train on fewer examples than this (0: no minimum).

    Returns:
        ``out``.

    The steps, each a function of this module: :func:`check_run` (everything, before any work),
    :func:`prepare_output`, :func:`prepare_data`, :func:`load_student`, :func:`make_trainer`,
    :func:`train_or_resume`, :func:`write_checkpoint`, :func:`verify_written`, :func:`finish`.
    """
    from accelerate import PartialState

    run = check_run(recipe, base, out, drop=drop, data=data, overrides=overrides, keep_adapter=keep_adapter,
                    keep_checkpoints=keep_checkpoints, overwrite=overwrite, callbacks=callbacks, progress=progress,
                    verify=verify, min_examples=min_examples)  # fmt: skip
    if prepare_output(run):
        logger.warning("%s is already complete; nothing to do (use --overwrite to train again)", run.out)
        return run.out
    rows, counts = prepare_data(run)
    dist = PartialState()
    student, tokenizer, plan = load_student(run, dist)
    training = make_trainer(run, student, tokenizer, plan, rows)
    steps = train_or_resume(run, training)
    final = write_checkpoint(run, training, counts, steps, dist)
    if not dist.is_main_process:
        return run.out
    verify_written(run, training, final, dist)
    finish(run, steps)
    return run.out


def _build_final(
    rec: Recipe, base: str, path: str, staging: Path, plan: PruningPlan, dtype_name: str, keep_adapter: bool
) -> Any:
    """The merged model (LoRA merged into an unquantized pruned base), or the full finetune reloaded."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmeval_layerprune.checkpoint.load import load_pruned_model
    from lmeval_layerprune.core.spec import format_indices

    if keep_adapter:
        return None
    if rec.lora is None:
        return AutoModelForCausalLM.from_pretrained(staging, dtype=_torch_dtype(dtype_name))
    from peft import PeftModel

    base_config = AutoConfig.from_pretrained(path)
    rel = plan.on_parent(PruningPlan.from_config(base_config)).drop  # the base may itself be pruned
    merge_dtype = dtype_name
    if rec.quantization:
        merge_dtype = str(rec.quantization.get("bnb_4bit_compute_dtype") or "bfloat16").replace("torch.", "")
    pruned = load_pruned_model(base, format_indices(rel) if rel else "none", dtype=_torch_dtype(merge_dtype))
    merged = PeftModel.from_pretrained(pruned, staging).merge_and_unload()
    setattr(merged.config, PLAN_ATTR, plan.to_dict())
    return merged


__all__ = [
    "heal",
    "prepare_data",
    "eval_command",
    "last_complete_checkpoint",
]
