"""``pruned-hf``: lm-eval's ``HFLM`` with some decoder layers removed.

Everything HFLM accepts keeps working (dtype, batch_size incl. ``auto``, device,
peft, chat templates, ...); we add three model args and pop them before HFLM
forwards the rest to ``from_pretrained``:

* ``drop``: the spec (see :mod:`lmeval_layerprune.spec`);
* ``calib``: a calibration file for the ``bi:`` / ``angular:`` specs;
* ``calib_samples``: how many calibration texts to use;
* ``materialize``: evaluate through an on-disk checkpoint from the materialization
  cache (the path ``pruned-vllm`` always takes) instead of slicing while loading.

``pretrained`` may be a path, a Hub id, ``embedded`` or a model instance.

Provenance: both models record the resolved plan (:meth:`~lmeval_layerprune.plan.PruningPlan.provenance`:
parent, layers removed and kept, method, the spec as given and resolved, hashes, the recovery record
of a healed checkpoint) through ``get_model_info()``, which lm-eval merges into the results file's
``config`` under ``"layer_pruning"``.

``pruned-vllm`` materializes the pruned checkpoint (through the same cache) and hands it
to lm-eval's own ``vllm`` model with every other argument passed through.
"""

from __future__ import annotations

import gc
import logging
from importlib.util import find_spec
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.models.huggingface import HFLM

from .arch import arch_for
from .embedded import base_model_name, resolve_pretrained
from .importance import DEFAULT_CALIB_SAMPLES
from .plan import RESULTS_KEY, PruningPlan, resolve_drop
from .slicing import load_only_kept_layers, prune_model, pruned_config
from .spec import DropSpec, LayerPruneError

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
        **kwargs: Any,
    ) -> None:
        self._drop_spec = DropSpec.parse(drop)
        self._calib = calib
        self._calib_samples = int(calib_samples)
        self.drop: tuple[int, ...] = ()
        #: the resolved plan (indices of the unpruned parent), recorded in lm-eval's results
        self.plan: PruningPlan | None = None
        self._base_name = base_model_name(pretrained)
        materialized: PruningPlan | None = None
        if _truthy(materialize) and not self._drop_spec.is_noop:
            if not isinstance(pretrained, str):
                raise ValueError("materialize=true needs pretrained to be a path or Hub id, not a model instance")
            from .materialize import cached_checkpoint

            path = cached_checkpoint(
                pretrained,
                self._drop_spec,
                dtype=_cache_dtype(kwargs.get("dtype")),
                calib=calib,
                calib_samples=self._calib_samples,
                revision=kwargs.pop("revision", None),
            )
            materialized = PruningPlan.load(path)
            pretrained = str(path)
            self._drop_spec = DropSpec.parse(None)  # the checkpoint is already pruned
        pretrained = resolve_pretrained(pretrained)
        if kwargs.get("device") is None and not torch.cuda.is_available():
            kwargs["device"] = "cpu"  # HFLM defaults to "cuda" even on machines without one
        super().__init__(pretrained=pretrained, **kwargs)
        if materialized is not None:
            self.drop = materialized.drop
            self.plan = materialized
        if not isinstance(pretrained, str) and not self._drop_spec.is_noop:
            # A model instance: HFLM took it as is; slice it in place now.
            arch_for(self._model.config)
            self.drop = self._resolve(self._model)
            prune_model(self._model, self.drop, self.plan)
            self._config = self._model.config
        if self.plan is None:  # nothing removed here: record what the checkpoint itself says (if pruned)
            self.plan = _plan_of_unpruned(self._model.config if hasattr(self, "_model") else self._config, pretrained)

    # ------------------------------------------------------------------ helpers
    def _resolve(self, scoring_model: torch.nn.Module | None) -> tuple[int, ...]:
        """Resolve the spec on the loaded config (scores on ``scoring_model``); sets ``self.plan``;
        returns the indices to remove from this checkpoint's layers."""
        self.plan = resolve_drop(
            self._config,
            self._drop_spec,
            model=scoring_model,
            tokenizer=self.tokenizer,
            calib=self._calib,
            calib_samples=self._calib_samples,
            base_model=self._base_name,
        )
        drop = self.plan.on_parent(PruningPlan.from_config(self._config)).drop
        n = int(self._config.num_hidden_layers)
        logger.info("pruned-hf: dropping layers %s of %d (%s)", list(drop), n, self._drop_spec.text)
        return drop

    def get_model_info(self) -> dict[str, Any]:
        """HFLM's model info plus the resolved plan under ``"layer_pruning"`` (lm-eval puts it in the results
        ``config``)."""
        info = super().get_model_info()
        if self.plan is not None:
            info[RESULTS_KEY] = self.plan.provenance()
        return info

    # ------------------------------------------------------------ HFLM override
    def _create_model(self, pretrained: str, **kwargs: Any) -> None:
        if self._drop_spec.is_noop:
            super()._create_model(pretrained, **kwargs)
            return
        arch_for(self._config)  # unsupported architectures fail before any weight is read
        if self._drop_spec.needs_scores:
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
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 1:
        return None
    name = base_model_name(pretrained) or getattr(config, "_name_or_path", None) or None
    return PruningPlan(base_model=name, num_layers=n, drop=(), spec="none")


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


def _cache_dtype(dtype: Any) -> str | None:
    from .materialize import DTYPES

    name = str(dtype).replace("torch.", "") if dtype is not None else None
    return name if name in DTYPES else None


class PrunedVLLM(TemplateLM):
    """``pruned-vllm``: lm-eval's ``vllm`` model on a materialized pruned checkpoint.

    Takes ``drop`` / ``calib`` plus every argument of lm-eval's ``VLLM``
    (``tensor_parallel_size``, ``data_parallel_size``, ``lora_local_path``,
    ``gpu_memory_utilization``, ...), which are passed through unchanged. Constructing it
    returns the ``VLLM`` instance itself.
    """

    def __new__(  # type: ignore[misc]
        cls,
        pretrained: str,
        drop: Any = None,
        calib: str | None = None,
        calib_samples: int | None = None,
        dtype: str = "auto",
        revision: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if find_spec("vllm") is None:
            raise ModuleNotFoundError(
                "pruned-vllm needs vLLM, which is not installed: pip install 'lmeval-layerprune[vllm]' "
                "(or pip install vllm). Without a GPU, use --model pruned-hf."
            )
        spec = DropSpec.parse(drop)
        plan: PruningPlan | None = None
        if spec.is_noop:
            path = str(resolve_pretrained(pretrained))
            if revision is not None:
                kwargs["revision"] = revision
            plan = _plan_of_local_checkpoint(path, pretrained)
        else:
            from .materialize import cached_checkpoint

            path = str(
                cached_checkpoint(
                    pretrained,
                    spec,
                    dtype=_cache_dtype(dtype),
                    calib=calib,
                    calib_samples=calib_samples,
                    revision=revision,
                )
            )
            logger.info("pruned-vllm: serving %s (layers %s removed) from %s", pretrained, spec.text, path)
            plan = PruningPlan.load(path)
        from lm_eval.models.vllm_causallms import VLLM

        lm = VLLM(pretrained=path, dtype=dtype, **kwargs)
        _record_plan(lm, plan)
        return lm


def _plan_of_local_checkpoint(path: str, pretrained: Any) -> PruningPlan | None:
    """The plan of a checkpoint served as is: its own record if it is a local pruned checkpoint, "nothing
    removed" for a local unpruned one; ``None`` for a Hub id (nothing is downloaded to find out)."""
    import json
    from pathlib import Path

    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    config = json.loads(cfg.read_text())
    own = PruningPlan.from_config(config)
    if own is not None:
        return own
    n = config.get("num_hidden_layers")
    if not isinstance(n, int) or n < 1:
        return None
    return PruningPlan(base_model=base_model_name(pretrained), num_layers=n, drop=(), spec="none")


def _record_plan(lm: Any, plan: PruningPlan | None) -> None:
    """Make ``lm.get_model_info()`` (which lm-eval merges into the results ``config``) include ``plan``."""
    if plan is None:
        return
    own = getattr(lm, "get_model_info", None)

    def get_model_info() -> dict[str, Any]:
        info = dict(own()) if callable(own) else {}
        info[RESULTS_KEY] = plan.provenance()
        return info

    lm.get_model_info = get_model_info
