"""Model cards and Hugging Face Hub uploads for pruned (and healed) checkpoints.

* :mod:`.facts`: what a checkpoint folder says about itself and its parent (plan, parameter
  counts, the parent's Hub id, checkout and license).
* :mod:`.card`: the model card (section builders; every sentence is in the Jinja template
  ``hub_cards/pruned_model_card.md``).
* :mod:`.portable`: local paths rewritten for what leaves the machine.
* :mod:`.push`: the upload manifest and the one-commit push.

huggingface_hub is imported inside the functions that need it.
"""

from lmeval_layerprune.hub.card import (
    RELATIONS,
    CardResult,
    CardSettings,
    build_card,
    eval_results,
    load_eval,
    render,
    write_card,
)
from lmeval_layerprune.hub.facts import (
    PLAN_FILES,
    Identity,
    gguf_metadata,
    identify,
    parameter_counts,
    read_plan,
    resolve_license,
)
from lmeval_layerprune.hub.portable import Portable
from lmeval_layerprune.hub.push import (
    DRY_RUN_SUFFIX,
    UPLOAD_FILES,
    UPLOAD_PATTERNS,
    PushResult,
    PushSettings,
    describe_manifest,
    get_token,
    human_size,
    push,
    upload_manifest,
    validate_repo,
)

__all__ = [
    "DRY_RUN_SUFFIX",
    "PLAN_FILES",
    "RELATIONS",
    "UPLOAD_FILES",
    "UPLOAD_PATTERNS",
    "CardResult",
    "CardSettings",
    "Identity",
    "Portable",
    "PushResult",
    "PushSettings",
    "build_card",
    "describe_manifest",
    "eval_results",
    "get_token",
    "gguf_metadata",
    "human_size",
    "identify",
    "load_eval",
    "parameter_counts",
    "push",
    "read_plan",
    "render",
    "resolve_license",
    "upload_manifest",
    "validate_repo",
    "write_card",
]
