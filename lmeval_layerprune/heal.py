"""Heal a pruned model with a recovery recipe (``lmeval-prune heal``): TRL's SFTTrainer + PEFT.

One call builds the pruned student (only the kept layers are read), prepares the training data
(self-generated responses of the unpruned parent, the source's original responses, or the same
sequences for logit distillation), trains with checkpoints, and writes a standalone checkpoint:

``OUT/``
    ``config.json`` + weights (LoRA merged) or ``adapter_*`` (``keep_adapter``), the tokenizer,
    ``recovery_recipe.yaml`` (the recipe after overrides), ``layer_pruning.json`` (the plan with its
    ``recovery`` record), ``HEAL_COMPLETE``; while training also ``checkpoints/`` (removed at the
    end unless ``keep_checkpoints``) and, for selfgen/kd recipes, ``selfgen_responses.jsonl``.

A killed run started again with the same arguments resumes from the last complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .plan import PLAN_FILE, PruningPlan
from .recipe import KDSettings, Recipe, RecipeError, load_recipe
from .spec import PLAN_ATTR, LayerPruneError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RESPONSES = "selfgen_responses.jsonl"
STATE_FILE = "heal_state.json"
RECIPE_FILE = "recovery_recipe.yaml"
PLAN_JSON = PLAN_FILE
COMPLETE = "HEAL_COMPLETE"

_SFT_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "save_strategy": "steps",
    "save_steps": 50,
    "save_total_limit": 2,
    "logging_steps": 10,
    "completion_only_loss": True,
    "seed": 42,
}


class HealError(LayerPruneError, RuntimeError):
    """A heal run that cannot start or continue (bad data, missing GPU, an output folder of another run)."""


# ----------------------------------------------------------------------- data


def prepare_data(
    recipe: Recipe,
    *,
    base: str,
    data: str | None,
    out: Path,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], str]:
    """Conversational prompt-completion rows for the recipe, and the data source they came from.

    ``selfgen`` / ``kd``: the teacher's responses, read from a selfgen JSONL (``data``) or generated
    into ``OUT/selfgen_responses.jsonl`` from a prompt source (resumable). ``original``: the source's
    own responses.
    """
    from .selfgen import (
        FilterSettings,
        GenerationSettings,
        SelfGenError,
        generate_responses,
        is_selfgen_file,
        load_prompts,
        read_records,
        training_pairs,
    )

    source = data or recipe.get("data")
    if not source:
        raise HealError(f"recipe {recipe.name!r} names no data; pass --data (a prompt source or a selfgen JSONL)")
    source = str(source)
    if is_selfgen_file(source):
        records = read_records(source)
        use = "reference" if recipe.method == "original" else "response"
        rows = training_pairs(records, use=use)
        if not rows:
            raise HealError(f"{source} has no usable {'original responses' if use == 'reference' else 'responses'}")
        return rows, source
    sg = dict(recipe.selfgen)
    n = sg.pop("n", None)
    gen_keys = {f.name for f in dataclasses.fields(GenerationSettings)}
    gen = GenerationSettings(**{k: v for k, v in sg.items() if k in gen_keys})
    try:
        prompts = load_prompts(
            source, columns=recipe.get("columns"), split=recipe.get("split", "train"), n=n, system=gen.system
        )
    except SelfGenError as e:
        raise HealError(str(e)) from None
    if recipe.method == "original":
        rows = [
            {"prompt": p.messages, "completion": [{"role": "assistant", "content": p.reference}]}
            for p in prompts
            if p.reference
        ]
        if not rows:
            raise HealError(
                f"recipe {recipe.name!r} trains on the source's original responses, but {source!r} has none "
                "(expected an 'output'/'response'/'completion' column or a final assistant message)"
            )
        return rows, source
    flt = FilterSettings(**{k: v for k, v in sg.items() if k not in gen_keys})
    teacher = recipe.get("teacher") or base
    from accelerate import PartialState

    with PartialState().main_process_first():  # one process generates; the others then find it complete
        generate_responses(
            teacher, prompts, out / RESPONSES, generation=gen, filters=flt, source=source, progress=progress
        )
    wanted = {p.id for p in prompts}
    rows = training_pairs(r for r in read_records(out / RESPONSES) if r["id"] in wanted)
    if not rows:
        raise HealError(f"every generated response was filtered out; see {out / RESPONSES}")
    return rows, source


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


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in (sorted(value) if isinstance(value, set) else value)]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _state(recipe: Recipe, base: str, drop: str, data: str | None, keep_adapter: bool) -> dict[str, Any]:
    return {"recipe": recipe.name, "raw": _json_safe(recipe.raw), "base": base, "drop": drop, "data": data,
            "keep_adapter": keep_adapter}  # fmt: skip


def _prepare_out(out: Path, state: dict[str, Any], overwrite: bool) -> bool:
    """Create ``out``; True if a finished run with the same settings is already there."""
    state_file = out / STATE_FILE
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()):
        if not state_file.is_file():
            raise HealError(f"output folder {out} exists and is not a heal run; choose another --out or --overwrite")
        old = json.loads(state_file.read_text())
        if old != state:
            diff = sorted(k for k in state if old.get(k) != state[k])
            raise HealError(
                f"output folder {out} holds a run with different {', '.join(diff)}; "
                "use the same arguments to resume it, another --out, or --overwrite"
            )
        return (out / COMPLETE).is_file()
    out.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=2))
    return False


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def eval_command(out: Path, base: str, drop: str, keep_adapter: bool, tasks: str = "arith_probe") -> str:
    """The lm_eval command line that evaluates a heal result."""
    if keep_adapter:
        return f"lm_eval --model pruned-hf --model_args pretrained={base},drop={drop},peft={out} --tasks {tasks}"
    return f"lm_eval --model hf --model_args pretrained={out} --tasks {tasks}"


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
        overwrite: delete ``out`` first; otherwise a run with the same arguments resumes.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        progress: show progress bars.
        verify: reload the written checkpoint and compare its logits with the trained model (single process).

    Returns:
        ``out``.
    """
    import importlib.util

    import torch

    missing = [m for m in ("trl", "peft", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        raise HealError(f"heal needs {', '.join(missing)}: pip install 'lmeval-layerprune[heal]'")
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, list(overrides))
    if isinstance(recipe, Recipe) and overrides:
        from .recipe import apply_overrides, validate

        rec = validate(apply_overrides(recipe.raw, list(overrides)), name=recipe.name, path=recipe.path)
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
    out = Path(out)
    if _prepare_out(out, _state(rec, base, drop, data, keep_adapter), overwrite):
        logger.warning("%s is already complete; nothing to do (use --overwrite to train again)", out)
        return out

    from accelerate import PartialState

    rows, source = prepare_data(rec, base=base, data=data, out=out, progress=progress)
    return _train_and_save(rec, base, drop, out, rows, source, keep_adapter, keep_checkpoints, callbacks,
                           progress, verify, PartialState())  # fmt: skip


def _train_and_save(
    rec: Recipe,
    base: str,
    drop: str,
    out: Path,
    rows: list[dict[str, Any]],
    source: str,
    keep_adapter: bool,
    keep_checkpoints: bool,
    callbacks: Sequence[Any],
    progress: bool,
    verify: bool,
    dist: Any,
) -> Path:
    import datasets
    import torch
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from .embedded import base_model_name, resolve_pretrained
    from .selfgen import ensure_chat_template
    from .slicing import load_pruned_model

    path = str(resolve_pretrained(base))
    dtype_name = rec.get("dtype", "float32")
    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tokenizer)
    load_kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype_name)}
    if rec.quantization:
        from transformers import BitsAndBytesConfig

        q = dict(rec.quantization)
        if isinstance(q.get("bnb_4bit_compute_dtype"), str):
            q["bnb_4bit_compute_dtype"] = _torch_dtype(q["bnb_4bit_compute_dtype"])
        load_kwargs["quantization_config"] = BitsAndBytesConfig(**q)
        load_kwargs["device_map"] = {"": dist.local_process_index}
    student = load_pruned_model(base, drop, tokenizer=tokenizer, **load_kwargs)
    plan = PruningPlan.from_config(student.config)
    if rec.quantization:
        from peft import prepare_model_for_kbit_training

        student = prepare_model_for_kbit_training(
            student, use_gradient_checkpointing=bool(rec.sft.get("gradient_checkpointing", True))
        )

    sft_kwargs = {**_SFT_DEFAULTS, **rec.sft}
    if not torch.cuda.is_available() and (sft_kwargs.get("bf16") or sft_kwargs.get("fp16")):
        logger.warning("no CUDA: training in %s without bf16/fp16 mixed precision", dtype_name)
    if not torch.cuda.is_available():
        sft_kwargs["bf16"] = False
        sft_kwargs["fp16"] = False
        sft_kwargs.setdefault("dataloader_pin_memory", False)
    sft_kwargs.setdefault("disable_tqdm", not progress)
    args = SFTConfig(output_dir=str(out / CHECKPOINTS), **sft_kwargs)
    peft_config = None
    if rec.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**{"task_type": "CAUSAL_LM", **rec.lora})
    trainer_kwargs: dict[str, Any] = {}
    trainer_cls: type = SFTTrainer
    teacher_name = None
    if rec.method == "kd":
        from transformers import AutoModelForCausalLM

        teacher_name = rec.get("teacher") or base
        teacher = AutoModelForCausalLM.from_pretrained(
            str(resolve_pretrained(teacher_name)), dtype=_torch_dtype(dtype_name)
        )
        trainer_cls = _kd_trainer_class()
        trainer_kwargs = {"teacher_model": teacher, "kd": rec.kd}
    elif rec.method == "selfgen":
        teacher_name = rec.get("teacher") or base
    trainer = trainer_cls(
        model=student,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
        **trainer_kwargs,
    )
    resume = last_complete_checkpoint(out / CHECKPOINTS)
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
    steps = int(trainer.state.global_step)

    staging = out / ".trainer-final"
    trainer.save_model(str(staging))
    if not dist.is_main_process:
        return out

    # Build the standalone checkpoint from what the trainer saved (works under DDP / ZeRO-3 / FSDP too).
    final = _build_final(rec, base, path, staging, plan, dtype_name, keep_adapter)
    recovery = {
        "recipe": rec.name,
        "method": rec.method,
        "finetune": rec.finetune,
        "data": source,
        "teacher": base_model_name(teacher_name) if teacher_name else None,
        "settings": _json_safe(
            {
                "sft": {k: getattr(args, k) for k in sft_kwargs},
                "lora": peft_config.to_dict() if peft_config is not None else None,
                "quantization": rec.quantization,
                "kd": dataclasses.asdict(rec.kd) if rec.method == "kd" else None,
                "selfgen": rec.selfgen or None,
                "dtype": dtype_name,
                "examples": len(rows),
            }
        ),
        "steps": steps,
    }
    plan.recovery = recovery
    tmp = out / ".final-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if keep_adapter:
        shutil.copytree(staging, tmp)
    else:
        setattr(final.config, PLAN_ATTR, plan.to_dict())
        final.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    plan.save(tmp / PLAN_JSON)
    used = _json_safe(rec.raw)
    used.update(drop=drop, data=source, dtype=dtype_name)
    used["sft"] = {**(used.get("sft") or {}), "bf16": args.bf16, "fp16": args.fp16}
    (tmp / RECIPE_FILE).write_text(
        f"# recipe {rec.name!r} as used (overrides applied; base={base}); rerun with --recipe {RECIPE_FILE}\n"
        + yaml.safe_dump(used, sort_keys=False)
    )
    for item in tmp.iterdir():
        os.replace(item, out / item.name)
    tmp.rmdir()
    if verify and dist.num_processes == 1 and not rec.quantization and not keep_adapter:
        from .materialize import verify_checkpoint

        # 1. what was written is exactly the model in memory (merged, or the full finetune)
        exact = 1e-4 if dtype_name == "float32" else 1e-1
        verify_checkpoint(out, final if final is not None else trainer.model, atol=exact, what="the model saved")
        if rec.lora is not None:
            # 2. merging W + BA only reorders float rounding: the merged logits stay within a small share of
            # the logit scale of the trained adapter model (a wrong merge or a missing layer is far off). The
            # absolute difference grows with the adapter's size (1e-3 to 2e-2 on the 135M model, float32).
            verify_checkpoint(out, trainer.model, atol=exact, rtol=3e-3, what="the trained adapter model")
    shutil.rmtree(staging, ignore_errors=True)
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    (out / COMPLETE).write_text(json.dumps({"steps": steps}) + "\n")
    return out


def _build_final(
    rec: Recipe, base: str, path: str, staging: Path, plan: PruningPlan, dtype_name: str, keep_adapter: bool
) -> Any:
    """The merged model (LoRA merged into an unquantized pruned base), or the full finetune reloaded."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .slicing import load_pruned_model
    from .spec import format_indices

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


__all__ = ["HealError", "RecipeError", "heal", "prepare_data", "eval_command", "last_complete_checkpoint"]
