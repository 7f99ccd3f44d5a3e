"""The one resolver: (model, drop spec) -> :class:`~lmeval_layerprune.core.plan.PruningPlan`.

Every tool that turns a spec into layers goes through :func:`resolve_drop`: ``pruned-hf``,
``pruned-vllm``, ``slice``, ``heal``, ``bench``, ``speculate``, ``resolve``. Explicit indices need
only the config; ``plan:PATH`` reads the plan file; ``METHOD:K`` asks the method registry
(:mod:`lmeval_layerprune.methods.registry`), and methods that score hidden states read them on
calibration text (:mod:`lmeval_layerprune.methods.capture`) from the loaded model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.collapse import MERGE, mark_merge
from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.plan import PruningPlan, file_sha256, plan_for, plan_of_spec, read_plan_record
from lmeval_layerprune.core.spec import VALID_FORMS, DropSpec
from lmeval_layerprune.errors import DropSpecError
from lmeval_layerprune.methods.capture import Calibration, calibration_states
from lmeval_layerprune.methods.registry import LayerMethod, get_method, method_names, not_one_pass

SpecLike = DropSpec | str | int | Sequence[str | int] | None


def parse_spec(spec: SpecLike) -> DropSpec:
    """Parse a ``drop=`` spec and check it as far as it can be checked without a model.

    The method of ``METHOD:K`` must be registered and one-pass (a greedy search runs through
    ``select``); a ``plan:PATH`` file must exist and hold a plan. Bad input fails here, before any
    weight is read.
    """
    parsed = DropSpec.parse(spec)
    if parsed.method == "plan":
        assert parsed.path is not None
        read_plan_record(parsed.path)
    elif parsed.method is not None:
        try:
            method = get_method(parsed.method)
        except DropSpecError:
            raise DropSpecError(
                f"invalid drop spec {parsed.text!r}: unknown method {parsed.method!r} (known: "
                f"{', '.join(method_names())}, plan). Valid forms: {VALID_FORMS}."
            ) from None
        if method.kind == "greedy":
            raise not_one_pass(method, parsed.count if parsed.count is not None else "K")
        if parsed.parts and not method.takes_layers:
            layers = parsed.text.split(":", 1)[1]
            raise DropSpecError(
                f"invalid drop spec {parsed.text!r}: {method.name} chooses the layers itself; give a count "
                f"({method.name}:8) or a share ({method.name}:25%), or the layers alone ({layers})"
            )
    return parsed


def method_of(spec: DropSpec) -> LayerMethod | None:
    """The registered method a ``METHOD:K`` spec names (``None`` for indices, ``plan:`` and ``none``)."""
    if spec.method is None or spec.method == "plan":
        return None
    return get_method(spec.method)


def needs_model(spec: SpecLike) -> bool:
    """True when ``spec`` needs the loaded model, not only its config: hidden states to score, or the
    removed layers' weights to merge (then only the kept layers cannot be loaded alone)."""
    method = method_of(parse_spec(spec))
    return method is not None and (method.needs_states or method.needs_weights)


def merges(spec: SpecLike) -> bool:
    """True when ``spec``'s method merges the removed layers into kept ones (layer collapse)."""
    method = method_of(parse_spec(spec))
    return method is not None and method.needs_weights


def choose_layers(
    method: str | LayerMethod, num_layers: int, count: int, states: Any = None
) -> tuple[tuple[int, ...], list[float] | None]:
    """The layers ``method`` removes (``count`` of ``num_layers``) and the scores that chose them.

    ``states``: boundary states on calibration text (:func:`~lmeval_layerprune.methods.capture.calibration_states`),
    for methods that score them; computed once, they serve every count and every method.
    """
    m = get_method(method) if isinstance(method, str) else method
    scores = None
    if m.needs_states:
        if states is None:
            raise ValueError(f"method {m.name!r} scores hidden states: pass the calibration states")
        scores = [float(x) for x in m.scores(states, count)]
    return tuple(sorted(m.choose(num_layers, count, scores))), scores


def resolve_indices(spec: SpecLike, num_layers: int, scores: Sequence[float] | None = None) -> tuple[int, ...]:
    """The layers ``spec`` removes from a ``num_layers``-layer model, without a model.

    For the forms that need only the depth (indices, ``last:``, ``plan:``), or a method's scores
    given as ``scores`` (one per layer, or per block start). Same errors as :func:`resolve_drop`.
    """
    parsed = parse_spec(spec)
    if parsed.is_noop:
        return ()
    if parsed.method == "plan":
        return plan_of_spec(parsed, num_layers).drop
    method = method_of(parsed)
    if method is None or parsed.parts:
        return parsed.indices(num_layers)
    count = parsed.check_count(num_layers)
    if method.needs_states and scores is None:
        raise ValueError(f"drop spec {parsed.text!r} needs the layer scores of {method.name!r} (pass scores=)")
    return tuple(sorted(method.choose(num_layers, count, None if scores is None else list(scores))))


def method_scores(
    method: str, model: Any, tokenizer: Any, count: int, calibration: Calibration | None = None
) -> list[float]:
    """The scores ``method`` gives ``model``'s layers (per layer, or per block start of ``count`` layers)."""
    m = get_method(method)
    states = calibration_states(model, tokenizer, calibration or Calibration())
    return [float(x) for x in m.scores(states, count)]


def _config_of(model_or_path: Any, model: Any, revision: str | None) -> tuple[Any, str | None, str | None]:
    """(config, path when given one, the parent's name as given)."""
    if isinstance(model_or_path, str | os.PathLike):
        path = str(resolve_pretrained(str(model_or_path)))
        if model is not None:
            return model.config, path, base_model_name(str(model_or_path))
        config = AutoConfig.from_pretrained(path, **({"revision": revision} if revision else {}))
        return config, path, base_model_name(str(model_or_path))
    if hasattr(model_or_path, "config") and hasattr(model_or_path, "forward"):  # a loaded model
        return model_or_path.config, None, None
    return model_or_path, None, None  # a config (maybe nested)


def resolve_drop(
    model_or_path: Any,
    spec: SpecLike,
    *,
    model: Any = None,
    tokenizer: Any = None,
    calibration: Calibration | None = None,
    base_model: str | None = None,
    revision: str | None = None,
    load_kwargs: dict[str, Any] | None = None,
) -> PruningPlan:
    """Resolve a drop spec against a model: the one resolver every tool uses.

    Args:
        model_or_path: a checkpoint folder, a Hub id, ``"embedded"``, a transformers config,
            or a loaded model.
        spec: any ``drop=`` spec (text, int, list or :class:`~lmeval_layerprune.core.spec.DropSpec`).
        model: the loaded model to score for methods that read hidden states; without it such specs
            load the model once (``load_kwargs`` go to ``from_pretrained``). Other specs read only the config.
        tokenizer: for scoring (loaded from the path if omitted).
        calibration: the calibration text scoring methods read (default: the bundled text, 32 texts).
        base_model: the name to record as the parent (default: as given; ``embedded`` -> its Hub id).
        revision: Hub revision for the config (and the model, when it has to be loaded).

    Returns:
        The plan, in the indices of the *unpruned* parent: when ``model_or_path`` is itself a
        pruned checkpoint, the spec numbers its remaining layers and the plan composes both steps
        (``plan.on_parent(PruningPlan.from_config(config)).drop`` gives the indices to remove
        from the checkpoint).

    Raises:
        DropSpecError / PlanError: a spec that does not fit the model (names the value and the valid range).
    """
    parsed = parse_spec(spec)
    if model is None and hasattr(model_or_path, "config") and hasattr(model_or_path, "forward"):
        model = model_or_path  # a loaded model: score it
    config, path, given = _config_of(model_or_path, model, revision)
    name = base_model or given
    n = arch_num_layers(config)
    fields: dict[str, Any] = {"method": parsed.method or "explicit", "spec": parsed.text}
    method = method_of(parsed)
    if parsed.is_noop:
        local: tuple[int, ...] = ()
    elif parsed.method == "plan":
        src = plan_of_spec(parsed, n)
        local = src.drop
        extra: dict[str, Any] = {"plan_file": parsed.path, "plan_method": src.method}
        if parsed.path is not None and Path(parsed.path).expanduser().is_file():
            extra["plan_file_sha256"] = file_sha256(Path(parsed.path).expanduser())
        fields.update(order=src.order, scores=src.scores, selection=src.selection, extra=extra)
    elif method is None or parsed.parts:
        local = parsed.indices(n)
    else:
        count = parsed.check_count(n)
        states = None
        if method.needs_states:
            model, tokenizer = _scoring_model(parsed, path, config, model, tokenizer, revision, load_kwargs)
            states = calibration_states(model, tokenizer, calibration or Calibration())
        local, scores = choose_layers(method, n, count, states)
        if scores is not None:
            fields["scores"] = scores
    plan = plan_for(config, local, base_model=name, **fields)
    if method is not None and method.transform == MERGE:
        parent = PruningPlan.from_config(config)
        mark_merge(plan, local, parent.kept if parent is not None else None)  # local -> parent indices
    return plan


def _scoring_model(
    spec: DropSpec, path: str | None, config: Any, model: Any, tokenizer: Any, revision: str | None, load_kwargs: Any
) -> tuple[Any, Any]:
    if model is None:
        if path is None:
            raise ValueError(f"drop spec {spec.text!r} needs layer scores: pass the loaded model as model=")
        kw = dict(load_kwargs or {})
        if revision:
            kw.setdefault("revision", revision)
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path or getattr(config, "_name_or_path", None))
    return model, tokenizer
