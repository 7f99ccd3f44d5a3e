"""``pruned-hf``: lm-eval's ``HFLM`` with some decoder layers removed.

Everything HFLM accepts keeps working (dtype, batch_size incl. ``auto``, device,
peft, chat templates, ...); we add three model args and pop them before HFLM
forwards the rest to ``from_pretrained``:

* ``drop``: the spec (see :mod:`lmeval_layerprune.core.spec`);
* ``calib``: a calibration file for methods that score hidden states (``bi:``, ``angular:``);
* ``calib_samples``: how many calibration texts to use;
* ``materialize``: evaluate through an on-disk checkpoint from the materialization
  cache (the path ``pruned-vllm`` always takes) instead of slicing while loading;
* ``draft``: a spec in the same grammar, naming layers *of the model as loaded* (after ``drop``)
  to skip for drafting: greedy generation requests are decoded by speculative decoding with the
  model as verifier and itself without those layers as drafter (shared weights, see
  :mod:`lmeval_layerprune.lmeval.draft`); output is token-identical to plain greedy decoding, and
  log-likelihood requests do not use the draft. Where exactness cannot hold (sampling, beams,
  a batch of several prompts: use ``batch_size=1``) it warns once and decodes without the draft;
* ``draft_tokens``: draft tokens proposed per verification step (default 4).

``pretrained`` may be a path, a Hub id, ``embedded`` or a model instance.

Provenance: both models record the resolved plan (:meth:`~lmeval_layerprune.core.plan.PruningPlan.provenance`:
parent, layers removed and kept, method, the spec as given and resolved, hashes, the recovery record
of a healed checkpoint) through ``get_model_info()``, which lm-eval merges into the results file's
``config`` under ``"layer_pruning"``.

``pruned-vllm`` (:mod:`lmeval_layerprune.lmeval.vllm`) materializes the pruned checkpoint (through the
same cache) and hands it to lm-eval's own ``vllm`` model with every other argument passed through.
"""

from __future__ import annotations

import difflib
import gc
import inspect
import logging
import re
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM, stop_sequences_criteria

from lmeval_layerprune.checkpoint.cache import cache_dtype, cached_checkpoint
from lmeval_layerprune.core.arch import arch_for, num_layers
from lmeval_layerprune.core.collapse import apply_plan
from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.guard import check_weights
from lmeval_layerprune.core.layout import RESULTS_KEY
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import load_only_kept_layers, prune_model, pruned_config
from lmeval_layerprune.core.spec import DropSpec
from lmeval_layerprune.errors import DropSpecError, LayerPruneError, ModelArgError
from lmeval_layerprune.lmeval.draft import DEFAULT_DRAFT_TOKENS, build_drafter, resolve_draft
from lmeval_layerprune.methods.capture import DEFAULT_CALIB_SAMPLES, Calibration
from lmeval_layerprune.methods.resolve import merges, needs_model, parse_spec, resolve_drop

logger = logging.getLogger(__name__)


class PrunedHFLM(HFLM):
    """An ``HFLM`` whose model has the layers named by ``drop`` removed."""

    def __init__(
        self,
        pretrained: str | torch.nn.Module,
        drop: Any = None,
        calib: str | None = None,
        calib_samples: int = DEFAULT_CALIB_SAMPLES,
        materialize: bool | str = False,
        draft: Any = None,
        draft_tokens: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        check_model_args(kwargs)
        materialize = strict_bool("materialize", materialize)
        self._drop_spec = parse_spec(drop)
        self._draft_spec = _parse_draft(draft)
        self._drafter: Any = None
        self._draft_warned: set[str] = set()
        self._calibration = Calibration.of(calib, int(calib_samples))
        self.drop: tuple[int, ...] = ()
        #: the resolved plan (indices of the unpruned parent), recorded in lm-eval's results
        self.plan: PruningPlan | None = None
        self._base_name = base_model_name(pretrained)
        materialized: PruningPlan | None = None
        if _truthy(materialize) and not self._drop_spec.is_noop:
            if not isinstance(pretrained, str):
                raise ValueError("materialize=true needs pretrained to be a path or Hub id, not a model instance")
            path = cached_checkpoint(
                pretrained,
                self._drop_spec,
                dtype=cache_dtype(kwargs.get("dtype")),
                calibration=self._calibration,
                revision=kwargs.pop("revision", None),
            )
            materialized = PruningPlan.load(path)
            pretrained = str(path)
            self._drop_spec = DropSpec.parse(None)  # the checkpoint is already pruned
        pretrained = resolve_pretrained(pretrained)
        if isinstance(pretrained, str):
            check_weights(pretrained)  # a truncated weights file is named, not a SafetensorError from the loader
        if kwargs.get("device") is None and not torch.cuda.is_available():
            kwargs["device"] = "cpu"  # HFLM defaults to "cuda" even on machines without one
        try:
            super().__init__(pretrained=pretrained, **kwargs)
        except TypeError as e:
            m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
            if m is None:
                raise
            raise ModelArgError(
                f"model arg {m.group(1)!r} is not accepted: pruned-hf takes {', '.join(OUR_ARGS)} and lm-eval's "
                f"HFLM arguments, and passes the rest to from_pretrained, where the model class refused it ({e})"
            ) from None
        if materialized is not None:
            self.drop = materialized.drop
            self.plan = materialized
        if not isinstance(pretrained, str) and not self._drop_spec.is_noop:
            # A model instance: HFLM took it as is; slice it in place now.
            arch_for(self._model.config)
            self.drop = self._resolve(self._model)
            apply_plan(self._model, self.drop, self.plan)
            self._config = self._model.config
        if self.plan is None:  # nothing removed here: record what the checkpoint itself says (if pruned)
            self.plan = _plan_of_unpruned(self._model.config if hasattr(self, "_model") else self._config, pretrained)
        if self._draft_spec is not None:
            self._setup_draft(draft_tokens)

    # ------------------------------------------------------------------ helpers
    def _resolve(self, scoring_model: torch.nn.Module | None) -> tuple[int, ...]:
        """Resolve the spec on the loaded config (scores on ``scoring_model``); sets ``self.plan``;
        returns the indices to remove from this checkpoint's layers."""
        self.plan = resolve_drop(
            self._config,
            self._drop_spec,
            model=scoring_model,
            tokenizer=self.tokenizer,
            calibration=self._calibration,
            base_model=self._base_name,
        )
        drop = self.plan.on_parent(PruningPlan.from_config(self._config)).drop
        n = num_layers(self._config)
        logger.info("pruned-hf: dropping layers %s of %d (%s)", list(drop), n, self._drop_spec.text)
        return drop

    def get_model_info(self) -> dict[str, Any]:
        """HFLM's model info plus the resolved plan under ``"layer_pruning"`` (lm-eval puts it in the results
        ``config``)."""
        info = super().get_model_info()
        if self.plan is not None:
            info[RESULTS_KEY] = self.plan.provenance()
        return info

    # ------------------------------------------------------------------ draft=
    def _setup_draft(self, draft_tokens: int | str | None) -> None:
        layers = resolve_draft(self._model, self._draft_spec, self.tokenizer, calibration=self._calibration)
        tokens = DEFAULT_DRAFT_TOKENS if draft_tokens in (None, "") else int(draft_tokens)
        self._drafter = build_drafter(self._model, layers, tokens)
        self.draft = layers
        self._draft_tokens = tokens
        logger.info(
            "pruned-hf: greedy generation drafts with layers %s of %d skipped (%d draft tokens per step)",
            list(layers),
            num_layers(self._model.config),
            tokens,
        )

    def _draft_blocker(self, context: torch.Tensor, kwargs: dict[str, Any]) -> str | None:
        if context.shape[0] != 1:
            return (
                f"a batch of {context.shape[0]} prompts (transformers' assisted generation decodes one at a time; "
                "use batch_size=1 to draft)"
            )
        if kwargs.get("do_sample"):
            return "sampling (do_sample=true): drafted output would not be token-identical to plain sampling"
        for key in ("num_beams", "num_return_sequences"):
            if int(kwargs.get(key) or 1) > 1:
                return f"{key}={kwargs[key]} (assisted generation is greedy, one sequence)"
        return None

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **kwargs: Any) -> torch.Tensor:
        if self._drafter is None:
            return super()._model_generate(context, max_length=max_length, stop=stop, **kwargs)
        kwargs["temperature"] = kwargs.get("temperature", 0.0)
        if kwargs["temperature"] == 0.0 and kwargs.get("do_sample") is None:
            kwargs["do_sample"] = False
        if kwargs.get("do_sample") is False and kwargs["temperature"] == 0.0:
            kwargs.pop("temperature")
        reason = self._draft_blocker(context, kwargs)
        if reason is not None:
            if reason not in self._draft_warned:
                self._draft_warned.add(reason)
                logger.warning("pruned-hf: draft= not used for %s; decoding these requests without the draft", reason)
            return super()._model_generate(context, max_length=max_length, stop=stop, **kwargs)
        criteria = stop_sequences_criteria(self.tokenizer, stop, context.shape[1], context.shape[0])
        for criterion in criteria:
            # one verification step can add draft_tokens + 1 tokens: look back far enough to see a stop sequence
            if hasattr(criterion, "sequence_id_len"):
                criterion.sequence_id_len += self._draft_tokens + 1
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.mixed_precision_dtype,
            enabled=self.mixed_precision_dtype is not None,
        ):
            return self.model.generate(
                input_ids=context,
                max_length=max_length,
                stopping_criteria=criteria,
                pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
                assistant_model=self._drafter,
                **kwargs,
            )

    # ------------------------------------------------------------ HFLM override
    def _create_model(self, pretrained: str, **kwargs: Any) -> None:
        if self._drop_spec.is_noop:
            super()._create_model(pretrained, **kwargs)
            return
        arch_for(self._config)  # unsupported architectures fail before any weight is read
        if merges(self._drop_spec):
            # Layer collapse needs the removed layers' weights: load the whole model, merge, then slice in memory.
            if kwargs.get("peft") or kwargs.get("delta"):
                raise ModelArgError(
                    f"drop={self._drop_spec.text} merges layers; peft=/delta= adapters cannot be applied to a merged "
                    "model here (materialize it with `lmeval-prune slice`, then load the adapter on that checkpoint)"
                )
            super()._create_model(pretrained, **kwargs)
            self.drop = self._resolve(self._model)
            apply_plan(self._model, self.drop, self.plan)
            self._config = self._model.config
            return
        if needs_model(self._drop_spec):
            # Score on the full model (no adapters), then load again with only the kept layers.
            super()._create_model(pretrained, **{**kwargs, "peft": None, "delta": None})
            self.drop = self._resolve(self._model)
            del self._model
            gc.collect()
        else:
            self.drop = self._resolve(None)

        full_config = self._config
        plan = self.plan
        if kwargs.get("gguf_file"):
            # GGUF checkpoints are dequantized into a full state dict; slice after loading.
            super()._create_model(pretrained, **kwargs)
            prune_model(self._model, self.drop, plan)
        else:
            config = pruned_config(full_config, self.drop, plan)
            with load_only_kept_layers(full_config, self.drop):
                super()._create_model(pretrained, config=config, **kwargs)
        self._config = self._model.config


def _plan_of_unpruned(config: Any, pretrained: Any) -> PruningPlan | None:
    """The plan a checkpoint evaluated as is records: its own (a pruned or healed checkpoint), or
    "nothing removed" for an unpruned one (``None`` when the depth is unknown)."""
    try:
        own = PruningPlan.from_config(config)
    except LayerPruneError as e:
        logger.warning("the checkpoint's layer_pruning record is unreadable (%s); results will not record it", e)
        return None
    if own is not None:
        return own
    try:
        n = num_layers(config)
    except (AttributeError, TypeError, ValueError):
        return None
    if n < 1:
        return None
    name = base_model_name(pretrained) or getattr(config, "_name_or_path", None) or None
    return PruningPlan(base_model=name, num_layers=n, drop=(), spec="none")


#: The model args pruned-hf adds to HFLM's.
OUR_ARGS = ("drop", "calib", "calib_samples", "materialize", "draft", "draft_tokens")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def strict_bool(name: str, value: Any) -> bool:
    """A boolean model arg: True/False, or the text true/false, 1/0, yes/no (any case); anything else is an error."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ModelArgError(f"model arg {name}={value!r} is not a boolean; use true or false (also 1/0, yes/no)")


def check_model_args(kwargs: dict[str, Any]) -> None:
    """Refuse a model arg that is a near miss of one pruned-hf or HFLM knows (``dorp`` for ``drop``).

    Other unknown args pass through to ``from_pretrained`` (``attn_implementation``, ...), as HFLM does.
    """
    known = {*OUR_ARGS, *(p for p in inspect.signature(HFLM.__init__).parameters if p not in ("self", "kwargs"))}
    for key in kwargs:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        if close:
            raise ModelArgError(
                f"unknown model arg {key!r} (did you mean {close[0]!r}?); pruned-hf's own: {', '.join(OUR_ARGS)}"
            )


def _parse_draft(draft: Any) -> DropSpec | None:
    """``draft=`` parsed now (a bad spec fails before any weight is read); ``None`` for no draft."""
    if draft is None or (isinstance(draft, str) and draft.strip() == ""):
        return None
    try:
        spec = parse_spec(draft)
    except DropSpecError as e:
        raise DropSpecError(str(e).replace("invalid drop spec", "invalid draft spec", 1)) from None
    if spec.is_noop:
        raise DropSpecError(f"invalid draft spec {draft!r}: it skips no layer (omit draft= to decode without a draft)")
    return spec


def _truthy(value: Any) -> bool:
    return strict_bool("materialize", value)
