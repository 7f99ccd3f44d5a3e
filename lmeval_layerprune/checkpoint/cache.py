"""The content-addressed cache of materialized checkpoints (``pruned-vllm``, ``materialize=true``).

An entry's key is the base model's identity (its files' names, sizes and mtimes), the dropped
layers, the dtype and the tool version. Entries are written atomically and under a per-key lock,
so concurrent runs produce one checkpoint and a killed run leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from lmeval_layerprune import __version__
from lmeval_layerprune.checkpoint.materialize import DTYPES, config_dtype, local_path, materialize
from lmeval_layerprune.core.collapse import MERGE, apply_plan, is_merge
from lmeval_layerprune.core.embedded import base_model_name, cache_root, resolve_pretrained
from lmeval_layerprune.core.fsutil import dir_size, file_lock, tmp_dir_is_live
from lmeval_layerprune.core.layout import CACHE_COMPLETE
from lmeval_layerprune.core.plan import PruningPlan, find_plan_file
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_drop

logger = logging.getLogger(__name__)

#: the name of a cache entry (:func:`cache_key`)
_KEY = re.compile(r"[0-9a-f]{16}")


def cache_dtype(dtype: Any) -> str | None:
    """A model arg ``dtype`` as a cache dtype name (``None`` when it names none: the model's own)."""
    name = str(dtype).replace("torch.", "") if dtype is not None else None
    return name if name in DTYPES else None


def cache_dir() -> Path:
    """Where materialized checkpoints are cached (``$LMEVAL_LAYERPRUNE_CACHE/checkpoints``)."""
    return cache_root() / "checkpoints"


def cache_key(src: Path, drop: Sequence[int], dtype: str, revision: str | None = None, merge: bool = False) -> str:
    """Content address: the base model's files (name, size, mtime in ns), drop, dtype, tool version, and
    whether the layers are merged (layer collapse) rather than dropped."""
    files = sorted(
        (p.relative_to(src).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in src.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)
    )
    fields = {
        "src": str(src),
        "revision": revision,
        "files": files,
        "drop": sorted(drop),
        "dtype": dtype,
        "v": __version__,
    }
    if merge:  # drop entries keep the keys they always had
        fields["transform"] = MERGE
    blob = json.dumps(fields)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_checkpoint(
    pretrained: str,
    drop: Any,
    *,
    dtype: str | None = None,
    calibration: Calibration | None = None,
    revision: str | None = None,
) -> Path:
    """A verified checkpoint of ``pretrained`` without ``drop``, from the cache or made now.

    A hit reads only ``config.json`` and file metadata; specs of methods that score hidden states are scored
    on the model first (their layers depend on the calibration data), then looked up.
    """
    src = local_path(str(resolve_pretrained(pretrained)), revision)
    config = json.loads((src / "config.json").read_text())
    dtype = dtype or config_dtype(config)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    spec = parse_spec(drop)
    name = base_model_name(pretrained) or str(src)
    reference = None
    scored = needs_model(spec)
    if scored:
        # Metric specs depend on the calibration data: score the full model (loaded once; on a miss
        # the same model, sliced in memory, is the reference the checkpoint is verified against).
        full = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype))
        plan = resolve_drop(str(src), spec, model=full, calibration=calibration, base_model=name)
    else:
        plan = resolve_drop(str(src), spec, base_model=name)  # the config only
    local_drop = list(plan.on_parent(PruningPlan.from_config(config)).drop)
    key = cache_key(src, local_drop, dtype, revision, merge=is_merge(plan))
    target = cache_dir() / key
    if not target.is_symlink() and (target / CACHE_COMPLETE).is_file():
        return target
    with file_lock(cache_dir() / f".{key}.lock"):
        if target.is_symlink():  # not an entry of ours: the link goes (never what it points to), the entry is made
            logger.warning("cache: %s is a symbolic link, not a cache entry; removing the link", target)
            target.unlink()
        if (target / CACHE_COMPLETE).is_file():  # another process made it while we waited
            return target
        if target.exists():  # incomplete leftovers can only come from an older, interrupted layout
            shutil.rmtree(target)
        if scored:
            reference = apply_plan(full, local_drop, plan)
        materialize(pretrained, plan, target, dtype=dtype, revision=revision, reference=reference)
        (target / CACHE_COMPLETE).write_text(f"{time.time()}\n")
    return target


def cache_entries() -> list[dict[str, Any]]:
    """Complete cache entries: key, path, size in bytes and the recorded plan."""
    root = cache_dir()
    out = []
    if not root.is_dir():
        return out
    for path in sorted(root.iterdir()):
        if not path.is_symlink() and path.is_dir() and (path / CACHE_COMPLETE).is_file():
            found = find_plan_file(path)  # entries of older versions hold layer_pruning_plan.json
            plan = json.loads(found.read_text()) if found is not None else {}
            out.append({"key": path.name, "path": str(path), "bytes": dir_size(path), "plan": plan})
    return out


def clear_cache() -> int:
    """Remove every cached checkpoint (and abandoned partial writes); returns bytes freed.

    Only cache entries (folders carrying the cache's ``.complete`` marker) and this tool's own dead
    ``.tmp-*`` writes are deleted; anything else under the cache folder is left alone and named.
    Nothing outside the cache folder is ever touched: a symbolic link is never followed. A link that
    poses as an entry (named like a key or a temporary write, or pointing at a folder with the marker)
    is removed as a link, its target left as it is; any other link is left alone and named.
    """
    root = cache_dir()
    if root.is_symlink() or not root.is_dir():
        if root.is_symlink():
            logger.warning("cache clear: %s is a symbolic link; not following it (nothing removed)", root)
        return 0
    freed = 0
    for path in sorted(root.iterdir()):
        if path.is_symlink():
            if _KEY.fullmatch(path.name) or path.name.startswith(".tmp-") or (path / CACHE_COMPLETE).is_file():
                path.unlink()  # the link only
            elif not path.name.endswith(".lock"):
                logger.warning("cache clear: leaving %s alone (a symbolic link, not a cache entry)", path)
            continue
        if not path.is_dir() or (path.name.startswith(".tmp-") and tmp_dir_is_live(path)):
            continue  # lock files stay (others may hold them); live partial writes are not ours
        if not path.name.startswith(".tmp-") and not (path / CACHE_COMPLETE).is_file():
            logger.warning("cache clear: leaving %s alone (not a cache entry: no %s marker)", path, CACHE_COMPLETE)
            continue
        if not path.name.startswith(".tmp-"):
            with file_lock(root / f".{path.name}.lock"):
                freed += dir_size(path)
                shutil.rmtree(path, ignore_errors=True)
        else:
            freed += dir_size(path)
            shutil.rmtree(path, ignore_errors=True)
    return freed
