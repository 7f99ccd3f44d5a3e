"""``pruned-vllm``: lm-eval's ``vllm`` model on a materialized pruned checkpoint.

vLLM loads checkpoints from disk, so the pruned model is materialized first (through the
checkpoint cache, :mod:`lmeval_layerprune.checkpoint.cache`) and lm-eval's own ``VLLM`` serves it;
the resolved plan is recorded in the results ``config`` as ``pruned-hf`` records it.
"""

from __future__ import annotations

import json
import logging
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM

from lmeval_layerprune.checkpoint.cache import cache_dtype, cached_checkpoint
from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.layout import RESULTS_KEY
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import parse_spec

logger = logging.getLogger(__name__)


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
        spec = parse_spec(drop)
        plan: PruningPlan | None = None
        if spec.is_noop:
            path = str(resolve_pretrained(pretrained))
            if revision is not None:
                kwargs["revision"] = revision
            plan = _plan_of_local_checkpoint(path, pretrained)
        else:
            path = str(
                cached_checkpoint(
                    pretrained,
                    spec,
                    dtype=cache_dtype(dtype),
                    calibration=Calibration.of(calib, calib_samples),
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
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    config = json.loads(cfg.read_text())
    own = PruningPlan.from_config(config)
    if own is not None:
        return own
    n = config.get("num_hidden_layers") or (config.get("text_config") or {}).get("num_hidden_layers")
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
