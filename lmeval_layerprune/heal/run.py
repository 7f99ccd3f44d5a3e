"""Heal a pruned model with a recovery recipe (``lmeval-prune heal``): TRL's SFTTrainer + PEFT.

One call, :func:`heal` (``settings`` a :class:`~lmeval_layerprune.heal.check.HealSettings`), builds the
pruned student (only the kept layers are read), prepares the training data (self-generated responses
of the unpruned parent, the source's original responses, the same sequences for logit distillation,
or plain text for continued pretraining), trains with checkpoints, and writes a standalone checkpoint:

``OUT/``
    ``config.json`` + weights (LoRA merged) or ``adapter_*`` (``keep_adapter``), the tokenizer,
    ``recovery_recipe.yaml`` (the recipe after overrides), ``layer_pruning.json`` (the plan with its
    ``recovery`` record), ``heal_state.json``, ``HEAL_COMPLETE``; for selfgen/kd recipes
    ``selfgen_responses.jsonl``; ``checkpoints/`` while training (kept only with ``keep_checkpoints``).

The steps, one module each: :func:`~.check.check_run` (everything, before any work), :func:`prepare_output`,
:func:`~.data.prepare_data`, :func:`~.train.load_student`, :func:`~.train.make_trainer`,
:func:`~.train.train_or_resume`, :func:`write_checkpoint` (built beside ``OUT``, verified by
:func:`verify_written`, swapped in whole: :mod:`.folder`), :func:`finish`. A killed run started again
with the same settings resumes from the last complete checkpoint (a damaged newest one is set aside
with a warning); Ctrl-C says which checkpoint was kept and how to resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from transformers import AutoConfig, AutoModelForCausalLM

from lmeval_layerprune.checkpoint.load import load_pruned_model
from lmeval_layerprune.checkpoint.materialize import verify_checkpoint
from lmeval_layerprune.core.embedded import base_model_name
from lmeval_layerprune.core.guard import replace_atomically
from lmeval_layerprune.core.interrupt import keeping
from lmeval_layerprune.core.journal import describe_diff, json_safe
from lmeval_layerprune.core.layout import HEAL_COMPLETE, PLAN_ATTR, PLAN_FILE, RECIPE_FILE, TRAINER_FINAL
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.core.written import record_folder
from lmeval_layerprune.errors import HealError
from lmeval_layerprune.heal.check import DEFAULT_MIN_EXAMPLES, HealRun, HealSettings, check_run, state_diff
from lmeval_layerprune.heal.checkpoints import last_complete_checkpoint
from lmeval_layerprune.heal.data import prepare_data
from lmeval_layerprune.heal.folder import carry_state, kept_in, refuse_foreign_in_run, resume_hint
from lmeval_layerprune.heal.folder import previous as previous_run
from lmeval_layerprune.heal.recipe import Recipe
from lmeval_layerprune.heal.train import Trained, Training, load_student, make_trainer, torch_dtype, train_or_resume

logger = logging.getLogger(__name__)


def prepare_output(run: HealRun) -> bool:
    """Step 2: create ``OUT`` and its state file; True when a finished run with the same settings is there.

    ``--overwrite`` sets the old run aside (``.OUT.heal-previous``) and deletes it only once the new
    checkpoint is complete, so a kill never leaves neither. A previous attempt that made no progress
    (no checkpoint) is restarted with the new settings.
    """
    out = run.out
    manifest = run.manifest()
    if run.settings.overwrite and out.exists():
        previous = previous_run(out)
        if previous.exists() and not (out / HEAL_COMPLETE).is_file():
            shutil.rmtree(out)  # an unfinished new run; the last complete one is already set aside
        else:
            shutil.rmtree(previous, ignore_errors=True)
            os.rename(out, previous)
    if manifest.path.is_file():
        diff = state_diff(run)
        if not diff:
            return (out / HEAL_COMPLETE).is_file()
        logger.warning("%s: the previous attempt made no progress; starting over with the new settings (%s)",
                       out, describe_diff(diff))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    manifest.write()
    return False


def eval_command(out: Path, base: str, drop: str, keep_adapter: bool, tasks: str = "arith_probe") -> str:
    """The lm_eval command line that evaluates a heal result."""
    if keep_adapter:
        return f"lm_eval --model pruned-hf --model_args pretrained={base},drop={drop},peft={out} --tasks {tasks}"
    return f"lm_eval --model hf --model_args pretrained={out} --tasks {tasks}"


def _build_final(run: HealRun, staging: Path, plan: PruningPlan) -> Any:
    """The merged model (LoRA merged into an unquantized pruned base), or the full / partial finetune reloaded."""
    rec = run.recipe
    if run.settings.keep_adapter:
        return None
    if rec.lora is None:
        return AutoModelForCausalLM.from_pretrained(staging, dtype=torch_dtype(run.dtype_name))
    from peft import PeftModel

    base_config = AutoConfig.from_pretrained(run.base_path)
    rel = plan.on_parent(PruningPlan.from_config(base_config)).drop  # the base may itself be pruned
    merge_dtype = run.dtype_name
    if rec.quantization:
        merge_dtype = str(rec.quantization.get("bnb_4bit_compute_dtype") or "bfloat16").replace("torch.", "")
    pruned = load_pruned_model(run.base, format_indices(rel) if rel else "none", dtype=torch_dtype(merge_dtype))
    merged = PeftModel.from_pretrained(pruned, staging).merge_and_unload()
    setattr(merged.config, PLAN_ATTR, plan.to_dict())
    return merged


def recovery_record(run: HealRun, training: Training, counts: dict[str, Any], trained: Trained) -> dict[str, Any]:
    """The plan's ``recovery`` record: the recipe, the data, the settings used, and what training cost.

    ``trainable_parameters``, ``total_parameters``, ``training_tokens`` (non-padding input tokens
    trained on) and ``train_seconds`` (wall time of training) are what the report reads per recipe.
    """
    rec, args = run.recipe, training.args
    return {
        "recipe": rec.name,
        "method": rec.method,
        "finetune": rec.finetune,
        "data": counts["source"],
        "teacher": base_model_name(training.teacher_name) if training.teacher_name else None,
        "settings": json_safe(
            {
                "sft": {k: getattr(args, k) for k in training.sft_kwargs},
                "lora": training.peft_config.to_dict() if training.peft_config is not None else None,
                "quantization": rec.quantization,
                "kd": dataclasses.asdict(rec.kd) if rec.method == "kd" else None,
                "selfgen": rec.selfgen or None,
                "train": training.partial,
                "budget": {"tokens": rec.budget.tokens, **dataclasses.asdict(training.budget)}
                if rec.budget is not None and training.budget is not None
                else None,
                "dtype": run.dtype_name,
                "examples": counts["examples"],
            }
        ),
        "steps": trained.steps,
        "trainable_parameters": training.trainable_parameters,
        "total_parameters": training.total_parameters,
        "training_tokens": trained.tokens,
        "train_seconds": trained.seconds,
    }


def _write_files(run: HealRun, training: Training, counts: dict[str, Any], final: Any, tmp: Path) -> None:
    """The checkpoint's own files in the new folder ``tmp``: weights or adapter, tokenizer, plan, recipe as used."""
    rec, args, plan = run.recipe, training.args, training.plan
    if run.settings.keep_adapter:
        shutil.copytree(run.out / TRAINER_FINAL, tmp, dirs_exist_ok=True)
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


def write_checkpoint(run: HealRun, training: Training, counts: dict[str, Any], trained: Trained, dist: Any) -> Any:
    """Step 7: the standalone checkpoint (merged or adapter, tokenizer, plan, recipe as used) built beside
    ``OUT``, verified (:func:`verify_written`), marked complete (``HEAL_COMPLETE``), recorded as written by this
    tool, and swapped in for ``OUT`` in one step, the run's own state carried with it (:mod:`.folder`).

    A kill at any moment leaves the run in progress (a rerun resumes and writes it again) or the finished
    checkpoint. Returns the model written (None for an adapter, or on a process other than the main one).
    """
    out, trainer = run.out, training.trainer
    trainer.save_model(str(out / TRAINER_FINAL))
    if not dist.is_main_process:
        return None
    # Build the standalone checkpoint from what the trainer saved (works under DDP / ZeRO-3 / FSDP too).
    final = _build_final(run, out / TRAINER_FINAL, training.plan)
    training.plan.recovery = recovery_record(run, training, counts, trained)
    # anything the user put into OUT while it trained would go with the old folder: refused, the training kept
    refuse_foreign_in_run(out, why="the healed checkpoint replaces this folder as a whole and would lose them "
                          "(the training is kept: rerun the same command once they are moved)")  # fmt: skip
    with replace_atomically(out) as tmp:
        tmp.mkdir()
        _write_files(run, training, counts, final, tmp)
        verify_written(run, training, final, dist, tmp)
        carry_state(out, tmp, checkpoints=run.settings.keep_checkpoints)
        (tmp / HEAL_COMPLETE).write_text(json.dumps({"steps": trained.steps}) + "\n")
        record_folder(tmp)  # what a later --overwrite may replace: these files, while unchanged
    return final


def verify_written(run: HealRun, training: Training, final: Any, dist: Any, where: Path | None = None) -> None:
    """Reload the checkpoint in ``where`` (default ``OUT``) and compare its logits with the trained model
    (single process, unquantized)."""
    rec = run.recipe
    if not (run.settings.verify and dist.num_processes == 1 and not rec.quantization and not run.settings.keep_adapter):
        return
    where = run.out if where is None else where
    trainer = training.trainer
    # 1. what was written is exactly the model in memory (merged, or the full / partial finetune)
    exact = 1e-4 if run.dtype_name == "float32" else 1e-1
    verify_checkpoint(where, final if final is not None else trainer.model, atol=exact, what="the model saved")
    if rec.lora is not None:
        # 2. merging W + BA only reorders float rounding: the merged logits stay within a small share of
        # the logit scale of the trained adapter model (a wrong merge or a missing layer is far off). The
        # absolute difference grows with the adapter's size (1e-3 to 2e-2 on the 135M model, float32).
        verify_checkpoint(where, trainer.model, atol=exact, rtol=3e-3, what="the trained adapter model")


def finish(run: HealRun) -> None:
    """Step 8: delete the earlier run that ``--overwrite`` set aside (the new checkpoint is complete)."""
    shutil.rmtree(previous_run(run.out), ignore_errors=True)


def heal(settings: HealSettings) -> Path:
    """Prune ``settings.base`` by ``settings.drop``, finetune it with ``settings.recipe``, and save a
    standalone checkpoint in ``settings.out``; returns ``out``.

    ``settings`` (:class:`~lmeval_layerprune.heal.check.HealSettings`): the recipe (a bundled name, a YAML
    path, or a loaded :class:`~lmeval_layerprune.heal.recipe.Recipe`) and its ``SECTION.KEY=VALUE``
    overrides, the base, the output folder, the drop spec and data (default: the recipe's),
    ``keep_adapter``, ``keep_checkpoints``, ``overwrite`` (replace an earlier heal run; otherwise a run
    with the same settings resumes), ``verify`` (reload and compare logits), ``min_examples``,
    ``progress`` and extra ``transformers.TrainerCallback`` objects (``callbacks``). Example::

        heal(HealSettings("demo-selfgen-lora", "embedded", "healed-demo"))
    """
    from accelerate import PartialState

    run = check_run(settings)
    out, overwrite = run.out, settings.overwrite
    with keeping(lambda: kept_in(out), resume=lambda: resume_hint(out, overwrite)):
        if prepare_output(run):
            logger.warning("%s is already complete; nothing to do (use --overwrite to train again)", run.out)
            return run.out
        rows, counts = prepare_data(run)
        dist = PartialState()
        student, tokenizer, plan = load_student(run, dist)
        training = make_trainer(run, student, tokenizer, plan, rows)
        trained = train_or_resume(run, training)
        write_checkpoint(run, training, counts, trained, dist)
        if dist.is_main_process:
            finish(run)
    return run.out


__all__ = [
    "DEFAULT_MIN_EXAMPLES",
    "HealError",
    "HealSettings",
    "Recipe",
    "eval_command",
    "heal",
    "last_complete_checkpoint",
    "prepare_output",
    "recovery_record",
]
