"""Facts of a config: its :class:`~lmeval_layerprune.core.arch.table.ArchInfo` (the table entry, else what
discovery infers, cached), its depth, and the checked config values of a slice."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from lmeval_layerprune.core.arch.checks import check_slice
from lmeval_layerprune.core.arch.discover import discover
from lmeval_layerprune.core.arch.table import ARCHITECTURES, ArchInfo, config_values, refuse, text_config
from lmeval_layerprune.errors import UnsupportedArchitectureError

logger = logging.getLogger(__name__)


def text_config_of(config: Any, info: ArchInfo | None = None) -> Any:
    """The (possibly nested) config of the decoder whose layers are pruned."""
    return text_config(config, info or arch_for(config))


def _fingerprint(config: Any) -> str:
    try:
        blob = config.to_json_string(use_diff=False)
    except Exception:  # not a transformers config: identity is the best we have
        blob = repr(sorted(vars(config).items(), key=lambda kv: kv[0]))
    return hashlib.sha256(f"{type(config).__qualname__}|{blob}".encode()).hexdigest()


_DISCOVERED: dict[str, ArchInfo | UnsupportedArchitectureError] = {}


_CHECKED: dict[tuple[str, tuple[int, ...]], dict[str, dict[str, Any]] | UnsupportedArchitectureError] = {}


def arch_for(config: Any) -> ArchInfo:
    """Facts for ``config``: its table entry, else what :func:`discover` infers.

    Raises:
        UnsupportedArchitectureError: the table refuses the family, or discovery
            found something it cannot slice safely (the message says what).
    """
    model_type = getattr(config, "model_type", None)
    info = ARCHITECTURES.get(model_type)
    if info is not None:
        if info.unsupported:
            raise refuse(model_type, info.unsupported)
        if not info.partial:
            return info
    key = f"{_fingerprint(config)}|{info!r}"  # a table hint changes what is discovered
    found = _DISCOVERED.get(key)
    if found is None:
        try:
            found = discover(config, hints=info)
            logger.info(
                "layer pruning: %s is not in the table; inferred the decoder stack %s (%d layers), "
                "per-layer config %s, layer indices in %s",
                model_type,
                found.layers,
                int(getattr(text_config_of(config, found), found.count)),
                list(found.lists) or "none",
                sorted({f"{p + '.' if p else ''}{a}" for p, a, _ in found.renumber or ()}) or "none",
            )
        except UnsupportedArchitectureError as e:
            found = e
        _DISCOVERED[key] = found
    if isinstance(found, UnsupportedArchitectureError):
        raise found
    return found


def num_layers(config: Any) -> int:
    """The decoder-layer count of a (supported) config, nested text configs included."""
    info = arch_for(config)
    return int(getattr(text_config_of(config, info), info.count))


def check_inferred_slice(config: Any, keep: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Check an inferred slice structurally; return the settings outside the stack to update.

    The model built (on ``meta``) from the pruned config must have, layer for layer, the
    modules, tensor shapes and settings of the kept original layers, and the same tensors
    outside the stack. The returned ``{module path: {attribute: value}}`` are settings
    outside the stack (e.g. "has sliding layers") that a freshly built pruned model has.

    Raises:
        UnsupportedArchitectureError: what differs, naming the layer and the setting.
    """
    info = arch_for(config)
    keep = tuple(keep)
    key = (f"{_fingerprint(config)}|{info!r}", keep)
    done = _CHECKED.get(key)
    if done is None:
        try:
            done = check_slice(config, info, keep)
        except UnsupportedArchitectureError as e:
            done = e
        _CHECKED[key] = done
    if isinstance(done, UnsupportedArchitectureError):
        raise done
    return done


def sliced_config_values(config: Any, keep: Sequence[int]) -> dict[str, Any]:
    """Config attribute values for a model that keeps only the layers ``keep``.

    ``keep`` are original indices in ascending order. The result maps attribute
    names of the *text* config (:func:`text_config_of`; ``config`` itself unless the
    config nests one) to new values; callers apply it to a copy (loading) or in place
    (slicing a live model), so both paths agree by construction. An inferred
    architecture is checked structurally first (:func:`check_inferred_slice`).
    """
    info = arch_for(config)
    values = config_values(config, info, keep)
    if info.inferred:
        check_inferred_slice(config, keep)
    return values
