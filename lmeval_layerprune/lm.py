"""``pruned-hf``: lm-eval's ``HFLM`` with some decoder layers removed.

Everything HFLM accepts keeps working (dtype, batch_size incl. ``auto``, device,
peft, chat templates, ...); we add three model args and pop them before HFLM
forwards the rest to ``from_pretrained``:

* ``drop``: the spec (see :mod:`lmeval_layerprune.spec`);
* ``calib``: a calibration file for the ``bi:`` / ``angular:`` specs;
* ``calib_samples``: how many calibration texts to use.

``pretrained`` may be a path, a Hub id, ``embedded`` or a model instance.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM

from .arch import arch_for
from .embedded import resolve_pretrained
from .importance import DEFAULT_CALIB_SAMPLES, compute_scores
from .slicing import compose_plan, load_only_kept_layers, prune_model, pruned_config
from .spec import DropSpec

logger = logging.getLogger(__name__)


class PrunedHFLM(HFLM):
    """An ``HFLM`` whose model has the layers named by ``drop`` removed."""

    def __init__(
        self,
        pretrained: str | torch.nn.Module,
        drop: Any = None,
        calib: str | None = None,
        calib_samples: int = DEFAULT_CALIB_SAMPLES,
        **kwargs: Any,
    ) -> None:
        self._drop_spec = DropSpec.parse(drop)
        self._calib = calib
        self._calib_samples = int(calib_samples)
        self.drop: tuple[int, ...] = ()
        pretrained = resolve_pretrained(pretrained)
        if kwargs.get("device") is None and not torch.cuda.is_available():
            kwargs["device"] = "cpu"  # HFLM defaults to "cuda" even on machines without one
        super().__init__(pretrained=pretrained, **kwargs)
        if not isinstance(pretrained, str) and not self._drop_spec.is_noop:
            # A model instance: HFLM took it as is; slice it in place now.
            arch_for(self._model.config)
            self.drop = self._resolve(self._model)
            prune_model(self._model, self.drop, self._plan(self._model.config))
            self._config = self._model.config

    # ------------------------------------------------------------------ helpers
    def _plan(self, config: Any) -> dict[str, Any]:
        return compose_plan(
            config,
            self.drop,
            method=self._drop_spec.method or "explicit",
            spec=self._drop_spec.text,
        )

    def _resolve(self, scoring_model: torch.nn.Module | None) -> tuple[int, ...]:
        n = int(self._config.num_hidden_layers)

        def scores(method: str) -> list[float]:
            assert scoring_model is not None
            return compute_scores(
                method,
                scoring_model,
                self.tokenizer,
                self._drop_spec.count or 0,
                calib=self._calib,
                samples=self._calib_samples,
            )

        drop = self._drop_spec.resolve(n, scores if scoring_model is not None else None)
        logger.info("pruned-hf: dropping layers %s of %d (%s)", list(drop), n, self._drop_spec.text)
        return drop

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
        plan = self._plan(full_config)
        if kwargs.get("gguf_file"):
            # GGUF checkpoints are dequantized into a full state dict; slice after loading.
            super()._create_model(pretrained, **kwargs)
            prune_model(self._model, self.drop, plan)
        else:
            config = pruned_config(full_config, self.drop, plan)
            with load_only_kept_layers(full_config, self.drop):
                super()._create_model(pretrained, config=config, **kwargs)
        self._config = self._model.config
