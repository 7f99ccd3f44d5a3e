"""Write pruned checkpoints to disk through mergekit, verify them, and cache them.

``materialize()`` writes a standalone Hugging Face checkpoint with the dropped layers
removed, using mergekit's passthrough merge (``slices`` of half-open ``layer_range``),
and leaves the mergekit YAML beside it (``mergekit.yaml``) so anyone can rebuild it
with ``mergekit-yaml``. Every checkpoint is reloaded and its logits compared with the
in-memory slice before it is trusted: a mismatch is an error, never a silently wrong model.

mergekit 0.1.5 workarounds live here and only here (drop them when upstream fixes them):

* it sets ``num_hidden_layers`` but never slices ``layer_types`` (and other per-layer
  config lists), which crashes config validation under transformers 5 (Qwen2/3, Gemma2/3,
  Cohere2, ...): :func:`_fixed_out_config` builds the output config with
  :func:`lmeval_layerprune.core.arch.sliced_config_values` instead;
* for architectures it has no (or an outdated) definition of, it crashes or writes
  checkpoints that lack tensors (transformers 5's fused MoE experts, Cohere's q/k norms,
  GPT-NeoX's attention buffers, an untied Gemma head): verification catches it, and the
  checkpoint is then written by transformers from the verified in-memory slice, with
  ``"writer": "transformers"`` and mergekit's error recorded in the plan.

The content-addressed cache of materialized checkpoints is :mod:`lmeval_layerprune.checkpoint.cache`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mergekit.merge as mm
import torch
import yaml
from huggingface_hub import snapshot_download
from mergekit.architecture import arch_info_for_config
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmeval_layerprune import __version__
from lmeval_layerprune.checkpoint.load import load_pruned_model
from lmeval_layerprune.core.arch import arch_for, num_layers, sliced_config_values, text_config_of
from lmeval_layerprune.core.collapse import apply_plan, is_merge, merge_slices, merge_targets
from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.fsutil import atomic_dir, space_error
from lmeval_layerprune.core.guard import check_weights, guard_output, is_generated_card, replace_atomically
from lmeval_layerprune.core.interrupt import keeping
from lmeval_layerprune.core.layout import (
    CACHE_COMPLETE,
    CHECKPOINT_FILES,
    MERGEKIT_FILE,
    OTHER_COMMANDS_FILES,
    PLAN_ATTR,
    PLAN_FILE,
)
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import keep_from_drop
from lmeval_layerprune.core.written import read_written, record_folder, refuse_foreign
from lmeval_layerprune.errors import DiskFullError, LayerPruneError, VerificationError
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_drop

logger = logging.getLogger(__name__)

#: What marks a folder as a checkpoint this tool wrote (what --overwrite may replace).
OWNED_MARKERS = (PLAN_FILE, "layer_pruning_plan.json", CACHE_COMPLETE)

DTYPES = ("float32", "bfloat16", "float16")


def kept_ranges(keep: Sequence[int]) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` ranges covering ``keep`` (no empty ranges)."""
    ranges: list[list[int]] = []
    for i in keep:
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return [(a, b) for a, b in ranges]


def mergekit_config(
    model: str, keep: Sequence[int], dtype: str, targets: dict[int, list[int]] | None = None
) -> dict[str, Any]:
    """The passthrough merge that keeps only ``keep`` (original indices); with ``targets`` (a layer
    collapse: kept layer -> removed layers merged into it), the task-arithmetic merge that folds them in."""
    if targets:
        return {"slices": merge_slices(model, keep, targets), "merge_method": "task_arithmetic",
                "base_model": model, "dtype": dtype}  # fmt: skip
    return {
        "slices": [{"sources": [{"model": model, "layer_range": [a, b]}]} for a, b in kept_ranges(keep)],
        "merge_method": "passthrough",
        "dtype": dtype,
    }


def config_dtype(config: Any) -> str:
    """The checkpoint's own dtype, from a config object or a parsed config.json."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    dt = get("dtype") or get("torch_dtype")
    name = str(dt).replace("torch.", "") if dt is not None else "float32"
    return name if name in DTYPES else "float32"


def local_path(pretrained: str, revision: str | None = None) -> Path:
    """A local folder of ``pretrained``: the folder itself, or the Hub snapshot of its config, weights and tokenizer."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path.resolve()
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*"]
    return Path(snapshot_download(pretrained, revision=revision, allow_patterns=patterns))


# ------------------------------------------------------------------ mergekit


@contextlib.contextmanager
def _fixed_out_config(full_config: Any, keep: Sequence[int], dtype: str) -> Iterator[None]:
    """Patch mergekit 0.1.5's output-config builder to slice every per-layer config list."""
    original = mm._model_out_config

    def patched(config: Any, arch_info: Any, trust_remote_code: bool = False) -> Any:
        res = config.referenced_models()[0].config(trust_remote_code=trust_remote_code)
        # set all at once: transformers validates num_hidden_layers against layer_types
        text_config_of(res, arch_for(full_config)).__dict__.update(sliced_config_values(full_config, keep))
        res.dtype = getattr(torch, dtype)
        return res

    mm._model_out_config = patched
    try:
        yield
    finally:
        mm._model_out_config = original


def _run_mergekit(config: dict[str, Any], full_config: Any, keep: Sequence[int], out: Path) -> None:
    options = MergeOptions(quiet=True, write_model_card=False, copy_tokenizer=True, lazy_unpickle=True)
    with _fixed_out_config(full_config, keep, config["dtype"]):
        run_merge(MergeConfiguration.model_validate(config), str(out), options)


# --------------------------------------------------------------- verification


def verify_checkpoint(
    path: Path, reference: Any, atol: float = 1e-5, rtol: float = 0.0, what: str = "the in-memory slice"
) -> None:
    """Reload ``path`` and compare its logits with ``reference`` (the in-memory slice).

    The check passes when the largest absolute logit difference is at most
    ``atol + rtol * max|reference logits|``.

    Raises:
        VerificationError: tensors missing or unexpected, or logits that differ; the
            message names the architecture and what differs.
    """
    model_type = reference.config.model_type
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=reference.dtype, output_loading_info=True, device_map=None
    )
    problems = {k: sorted(v)[:5] for k, v in info.items() if k in ("missing_keys", "unexpected_keys") and v}
    if problems:
        raise VerificationError(f"{model_type}: the written checkpoint does not load cleanly: {problems}")
    got_n, want_n = num_layers(model.config), num_layers(reference.config)
    if got_n != want_n:
        raise VerificationError(f"{model_type}: the checkpoint has {got_n} layers, the in-memory slice {want_n}")
    vocab = int(text_config_of(reference.config).vocab_size)
    ids = torch.arange(3, 3 + 16).remainder(vocab).unsqueeze(0)
    with torch.no_grad():
        got = model.eval()(input_ids=ids).logits.float()
        want = reference.eval()(input_ids=ids.to(reference.device)).logits.float().cpu()
    diff = (got - want).abs().max().item()
    bound = atol + rtol * want.abs().max().item()
    if not diff <= bound:
        raise VerificationError(
            f"{model_type}: logits of the written checkpoint differ from {what} "
            f"(max abs difference {diff:.3g} > {bound:.3g})"
        )


# -------------------------------------------------------------- materialize


def materialize(
    pretrained: str,
    drop: Any,
    out: str | Path,
    *,
    dtype: str | None = None,
    calibration: Calibration | None = None,
    revision: str | None = None,
    overwrite: bool = False,
    reference: Any = None,
) -> Path:
    """Write ``pretrained`` without the layers named by ``drop`` to ``out`` and verify it.

    Args:
        pretrained: a checkpoint directory, a Hub id, or ``"embedded"``.
        drop: any ``drop=`` spec (``plan:PATH`` and the metric forms included), or an already
            resolved :class:`~lmeval_layerprune.core.plan.PruningPlan` (indices of the unpruned parent).
        out: the output directory (must not exist unless ``overwrite``).
        dtype: ``float32``, ``bfloat16`` or ``float16``; default: the model's own.
        calibration: the calibration text of methods that score hidden states (``bi:``, ``angular:``).
        reference: the in-memory slice of ``drop`` at ``dtype``, when the caller has it (a scored
            model); otherwise it is built here, loading the full model at most once.

    Returns:
        ``out``, holding the checkpoint, ``mergekit.yaml`` and ``layer_pruning.json``.
    """
    out = Path(out).expanduser()
    if out.is_symlink():
        guard_output(out, what="output folder")  # refused, naming where it points: a link is never followed
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty (pass overwrite=True / --overwrite)")
    name = base_model_name(pretrained)
    src = local_path(str(resolve_pretrained(pretrained)), revision)
    # never over an input; --overwrite only over a checkpoint this tool wrote (it is replaced atomically)
    calib = calibration.path if calibration is not None else None
    guard_output(out, inputs=[src, calib, _plan_path(drop)], overwrite=overwrite, owned=OWNED_MARKERS,
                 what="output folder", folder=True)  # fmt: skip
    if occupied:
        check_only_ours(out)
    check_weights(src)
    full_config = AutoConfig.from_pretrained(src)
    arch_for(full_config)
    dtype = dtype or config_dtype(full_config)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    parent = PruningPlan.from_config(full_config)
    torch_dtype = getattr(torch, dtype)
    if isinstance(drop, PruningPlan):
        plan = PruningPlan.from_dict(drop.to_dict())  # a copy: the writer's fields are added below
    else:
        spec = parse_spec(drop)
        if spec.is_noop:
            raise ValueError("drop spec 'none' removes nothing; there is nothing to materialize")
        if needs_model(spec) and reference is None:
            # score the full model, then slice that same model in memory: it is loaded once
            full = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype)
            plan = resolve_drop(str(src), spec, model=full, calibration=calibration, base_model=name or str(src))
            reference = apply_plan(full, plan.on_parent(parent).drop, plan)
        else:
            plan = resolve_drop(full_config, spec, base_model=name or str(src))
    local_drop = plan.on_parent(parent).drop  # indices of the source's layers (the source may be pruned)
    if not local_drop:
        raise ValueError(f"the plan removes nothing from {src} (layers {list(plan.drop)}); nothing to materialize")
    if reference is None and is_merge(plan):  # a collapse: the removed layers' weights are merged in
        reference = apply_plan(AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype), list(local_drop), plan)
    elif reference is None:
        # the in-memory slice is the reference we verify against (only the kept layers are read)
        reference = load_pruned_model(str(src), list(local_drop), dtype=torch_dtype)
    reference = reference.eval()
    drop_idx = list(plan.drop)
    keep = keep_from_drop(num_layers(full_config), local_drop)
    targets = merge_targets(num_layers(full_config), local_drop) if is_merge(plan) else None
    merge_cfg = mergekit_config(str(src), keep, dtype, targets)
    plan.extra.update({"dtype": dtype, "tool": f"lmeval-layerprune {__version__}"})

    with keeping(f"nothing was written: {out} is as it was (a checkpoint is published only once complete)"):
        try:
            _write_checkpoint(out, src, full_config, plan, reference, keep, merge_cfg, replace=occupied)
        except DiskFullError as e:
            needed = _estimate_bytes(src, len(keep), num_layers(full_config), dtype)
            raise space_error(out, e, needed=needed) from e
    logger.info("materialized %s without layers %s to %s (%s)", name, drop_idx, out, plan.extra["writer"])
    return out


def check_only_ours(out: Path) -> None:
    """Refuse ``--overwrite`` over a checkpoint folder that holds files this tool did not write.

    The user's notes, an ``eval/`` folder of results, a hand-written README: they would be lost with the
    old checkpoint, so the message names them (nothing is moved or deleted).
    """
    known = OTHER_COMMANDS_FILES if read_written(out) else (*CHECKPOINT_FILES, *OTHER_COMMANDS_FILES)
    why = "--overwrite replaces only lmeval-prune's own checkpoint and would lose them with it"
    refuse_foreign(out, known=known, owned=is_generated_card, why=why)


def _estimate_bytes(src: Path, kept: int, total: int, dtype: str) -> int | None:
    """About how many bytes the sliced checkpoint takes (the source's weights, scaled by layers and dtype)."""
    try:
        size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        src_dtype = config_dtype(json.loads((src / "config.json").read_text()))
    except (OSError, ValueError):
        return None
    width = {"float32": 4, "bfloat16": 2, "float16": 2}
    return int(size * kept / max(total, 1) * width[dtype] / width.get(src_dtype, 4)) or None


def _write_checkpoint(out: Path, src: Path, full_config: Any, plan: PruningPlan, reference: Any,
                      keep: Sequence[int], merge_cfg: dict[str, Any], *, replace: bool) -> None:  # fmt: skip
    """Write, verify and publish the checkpoint: through mergekit, or from the verified in-memory slice."""
    model_type = full_config.model_type

    def writing(target: Path) -> Any:
        # an occupied --out is swapped for the new checkpoint in one rename, after it is complete and verified
        return _replacing(target) if replace else atomic_dir(target)

    def finish(tmp: Path, writer: str) -> None:
        _write_mergekit_yaml(tmp / MERGEKIT_FILE, merge_cfg, model_type, writer)
        plan.save(tmp / PLAN_FILE)
        verify_checkpoint(tmp, reference)
        record_folder(tmp)  # what --overwrite may replace later: these files, while unchanged

    try:
        unknown = _mergekit_unknown(full_config)
        if unknown:  # no definition: mergekit would guess; write the verified slice directly
            raise LayerPruneError(unknown)
        with writing(out) as tmp:
            plan.extra["writer"] = "mergekit"
            _run_mergekit(merge_cfg, full_config, keep, tmp)
            cfg_path = tmp / "config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg[PLAN_ATTR] = plan.to_dict()
            cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
            finish(tmp, "mergekit")
    except DiskFullError:
        raise  # no room: the fallback would run out of it too
    except Exception as e:  # mergekit crashed or wrote a checkpoint that fails verification
        logger.warning(
            "mergekit could not slice %s correctly (%s); writing the verified in-memory slice instead", model_type, e
        )
        plan.extra.update({"writer": "transformers", "mergekit_error": f"{type(e).__name__}: {e}"[:500]})
        with writing(out) as tmp:
            setattr(reference.config, PLAN_ATTR, plan.to_dict())
            reference.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
            finish(tmp, "transformers")


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    with replace_atomically(target) as tmp:
        tmp.mkdir()
        yield tmp


def _plan_path(drop: Any) -> str | None:
    """The plan file a ``plan:PATH[@K]`` spec reads (an input the output must not overwrite)."""
    text = drop.strip() if isinstance(drop, str) else ""
    if not text.startswith("plan:"):
        return None
    path, at, k = text[len("plan:") :].rpartition("@")
    return path if at and k.isdigit() else text[len("plan:") :]


def _mergekit_unknown(config: Any) -> str | None:
    """Why mergekit cannot be trusted to slice ``config``'s architecture (``None``: it knows it)."""
    if arch_for(config).inferred:
        # Discovery knows more than mergekit's guesswork for a type outside our table; mergekit
        # is still used where it has its own definition of the architecture.
        try:
            if arch_info_for_config(config) is None:
                return f"mergekit has no architecture definition for {(config.architectures or ['?'])[0]}"
        except Exception as e:  # noqa: BLE001 - any failure means "do not use mergekit"
            return f"mergekit cannot read the architecture ({type(e).__name__}: {e})"
    return None


def _write_mergekit_yaml(path: Path, config: dict[str, Any], model_type: str, writer: str) -> None:
    head = "# Reproduce with: mergekit-yaml mergekit.yaml OUT_DIR\n"
    if writer != "mergekit":
        head = (
            f"# mergekit 0.1.5 could not slice {model_type!r} correctly (see 'mergekit_error' in the plan);\n"
            "# lmeval-layerprune wrote this checkpoint from its verified in-memory slice instead.\n"
            "# The merge it corresponds to:\n"
        )
    if config.get("merge_method") == "task_arithmetic":
        head += (
            "# Layer collapse (LaCo): each kept layer t takes theta_t + sum_k (theta_k - theta_t) over the removed\n"
            "# layers k after it; 'MODEL/.', 'MODEL/./.', ... are the same folder under other names (mergekit keys a\n"
            "# slice's inputs by model, so each removed layer needs its own reference).\n"
        )
    path.write_text(head + yaml.safe_dump(config, sort_keys=False))
