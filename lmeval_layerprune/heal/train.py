"""Training a pruned student (steps 4 to 6 of a heal run): TRL's ``SFTTrainer`` with the recipe's
``SFTConfig`` / ``LoraConfig``, a small subclass for logit distillation, checkpoints and resume.

What a run costs is measured here: the trainable and total parameters of the model the trainer
optimises, the training tokens (Trainer's count of non-padding input tokens, kept in every
checkpoint), and the wall time of training (:class:`TrainClock`, kept in every checkpoint too, so a
resumed run reports the time of the work that made its weights). TRL, PEFT and ``datasets`` are
imported where used (``sweep`` imports this module before it knows whether it will heal).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainerState
from transformers.trainer_callback import ExportableState

from lmeval_layerprune.checkpoint.load import load_pruned_model
from lmeval_layerprune.core.embedded import resolve_pretrained
from lmeval_layerprune.core.layout import CHECKPOINTS
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.errors import HealError
from lmeval_layerprune.heal.budget import BudgetUse, budget_dataset
from lmeval_layerprune.heal.check import HealRun
from lmeval_layerprune.heal.checkpoints import usable_checkpoint
from lmeval_layerprune.heal.partial import count_parameters, freeze_except
from lmeval_layerprune.heal.recipe import KDSettings
from lmeval_layerprune.heal.selfgen import ensure_chat_template

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


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


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


class TrainClock(TrainerCallback, ExportableState):
    """The wall time of training, saved into each checkpoint's ``trainer_state.json`` (``stateful_callbacks``)
    so that a resumed run adds the time of the work its checkpoint holds."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.offset = float(seconds)
        self.start: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return self.offset + (time.monotonic() - self.start if self.start is not None else 0.0)

    def state(self) -> dict[str, Any]:
        return {"args": {"seconds": round(self.seconds, 3)}, "attributes": {}}

    @classmethod
    def saved(cls, trainer_state: dict[str, Any]) -> float:
        """The seconds a checkpoint's trainer state recorded (0 when it has none)."""
        entry = (trainer_state.get("stateful_callbacks") or {}).get(cls.__name__) or {}
        if isinstance(entry, list):
            entry = entry[-1] if entry else {}
        return float((entry.get("args") or {}).get("seconds", 0.0))


@dataclass
class Training:
    """What :func:`make_trainer` built: the trainer, the settings it actually used, and what trains."""

    trainer: Any
    args: Any
    sft_kwargs: dict[str, Any]
    peft_config: Any
    tokenizer: Any
    plan: PruningPlan
    teacher_name: str | None
    clock: TrainClock = field(default_factory=TrainClock)
    trainable_parameters: int = 0
    total_parameters: int = 0
    partial: dict[str, Any] | None = None
    budget: BudgetUse | None = None


@dataclass
class Trained:
    """What training did: optimizer steps, training tokens (non-padding input tokens) and wall seconds."""

    steps: int
    tokens: int
    seconds: float


def load_student(run: HealRun, dist: Any) -> tuple[Any, Any, PruningPlan]:
    """Step 4: the pruned student (only the kept layers are read), its tokenizer, and the plan."""
    rec = run.recipe
    tokenizer = AutoTokenizer.from_pretrained(run.base_path)
    ensure_chat_template(tokenizer)
    load_kwargs: dict[str, Any] = {"dtype": torch_dtype(run.dtype_name)}
    if rec.quantization:
        from transformers import BitsAndBytesConfig

        q = dict(rec.quantization)
        if isinstance(q.get("bnb_4bit_compute_dtype"), str):
            q["bnb_4bit_compute_dtype"] = torch_dtype(q["bnb_4bit_compute_dtype"])
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


def _sft_config(run: HealRun) -> tuple[Any, dict[str, Any]]:
    """TRL's ``SFTConfig`` from the recipe (CPU: no mixed precision; a budget: one pass, steps from it)."""
    import torch
    from trl import SFTConfig

    rec = run.recipe
    sft_kwargs = {**_SFT_DEFAULTS, **rec.sft, "include_num_input_tokens_seen": "non_padding"}
    if not torch.cuda.is_available() and (sft_kwargs.get("bf16") or sft_kwargs.get("fp16")):
        logger.warning("no CUDA: training in %s without bf16/fp16 mixed precision", run.dtype_name)
    if not torch.cuda.is_available():
        sft_kwargs["bf16"] = False
        sft_kwargs["fp16"] = False
        sft_kwargs.setdefault("dataloader_pin_memory", False)
    if rec.budget is not None:
        sft_kwargs["max_steps"] = -1
        sft_kwargs["num_train_epochs"] = 1
    sft_kwargs.setdefault("disable_tqdm", not run.settings.progress)
    try:
        return SFTConfig(output_dir=str(run.out / CHECKPOINTS), **sft_kwargs), sft_kwargs
    except (TypeError, ValueError) as e:
        raise HealError(f"recipe {rec.name!r}: TRL refuses the sft settings: {e}") from None


def make_trainer(run: HealRun, student: Any, tokenizer: Any, plan: PruningPlan, rows: list[dict[str, Any]]) -> Training:
    """Step 5: the SFT (or distillation) trainer with the recipe's TRL and PEFT configs.

    A ``train:`` section freezes everything but the weights it names; a ``budget:`` replaces the
    prepared training set by exactly ``budget.tokens`` tokens of it (:mod:`.budget`).
    """
    import datasets
    from trl import SFTTrainer

    rec = run.recipe
    args, sft_kwargs = _sft_config(run)
    peft_config = partial = None
    if rec.lora is not None:
        from peft import LoraConfig

        try:
            peft_config = LoraConfig(**{"task_type": "CAUSAL_LM", **rec.lora})
        except (TypeError, ValueError) as e:
            raise HealError(f"recipe {rec.name!r}: PEFT refuses the lora settings: {e}") from None
    if rec.train is not None:
        partial = freeze_except(student, rec.train, run.train_layers)
        if args.gradient_checkpointing:
            student.enable_input_require_grads()  # frozen embeddings: checkpointed layers still get gradients
    trainer_kwargs: dict[str, Any] = {}
    trainer_cls: type = SFTTrainer
    if rec.method == "kd":
        teacher = AutoModelForCausalLM.from_pretrained(
            str(resolve_pretrained(str(run.teacher))), dtype=torch_dtype(run.dtype_name)
        )
        trainer_cls = _kd_trainer_class()
        trainer_kwargs = {"teacher_model": teacher, "kd": rec.kd}
    clock = TrainClock()
    trainer = trainer_cls(
        model=student,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[*run.settings.callbacks, clock],
        **trainer_kwargs,
    )
    use = None
    if rec.budget is not None:
        trainer.train_dataset, use = budget_dataset(trainer.train_dataset, rec.budget.tokens)
        print(f"heal: budget: {use.describe()}", flush=True)
    trainable, total = count_parameters(trainer.model)
    print(f"heal: training {trainable:,} of {total:,} parameters ({rec.finetune})", flush=True)
    return Training(trainer, args, sft_kwargs, peft_config, tokenizer, plan, run.teacher, clock=clock,
                    trainable_parameters=trainable, total_parameters=total, partial=partial, budget=use)  # fmt: skip


def train_or_resume(run: HealRun, training: Training) -> Trained:
    """Step 6: train, or continue from the newest readable checkpoint; returns what training did."""
    trainer, clock = training.trainer, training.clock
    resume = usable_checkpoint(run.out / CHECKPOINTS)
    if resume:
        logger.warning("resuming from %s", resume)
        print(f"heal: resuming from {resume}", flush=True)
    saved = json.loads((resume / "trainer_state.json").read_text()) if resume else {}
    clock.offset = TrainClock.saved(saved)
    if resume and 0 < int(saved.get("max_steps", 0)) <= int(saved.get("global_step", 0)):
        # Killed after the last checkpoint: Trainer would take one more step; load the finished state instead.
        trainer._load_from_checkpoint(str(resume))
        trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
        seconds = clock.offset
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        seconds = clock.seconds
    state = trainer.state
    return Trained(int(state.global_step), int(state.num_input_tokens_seen), round(seconds, 2))
