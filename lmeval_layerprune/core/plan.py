"""The pruning plan: the one typed record of what was removed, how it was chosen and how it was healed.

Every tool that writes a pruned model writes one :class:`PruningPlan`, under one file name
(:data:`PLAN_FILE`) beside the weights and as the ``layer_pruning`` attribute of the model's
config (``config.json``). Every tool that reads one goes through :meth:`PruningPlan.load` /
:meth:`PruningPlan.from_dict`, which also read every older layout:

* sliced checkpoints of earlier versions: ``layer_pruning_plan.json`` (:data:`LEGACY_PLAN_FILES`);
* select's plans: ``{"model": ..., "num_layers", "drop", "method", "order", "rounds", "baseline",
  "evaluations", "settings", "scores"}`` (``model`` is read as ``base_model``);
* hand-written plans holding only ``{"drop": [...]}`` (the layer count then comes from the model);
* a ``config.json`` whose ``layer_pruning`` key holds the plan.

The JSON layout (:meth:`PruningPlan.to_dict`)::

    {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "num_layers": 30,
     "drop": [20, 21, 22, 23, 24, 25], "kept": [0, ..., 19, 26, ..., 29],
     "method": "explicit", "spec": "20-25",
     "order": [...], "scores": [...],              # where a search / metric chose
     "rounds": [...], "baseline": {...}, ...,      # select's record (top level, as select wrote it)
     "recovery": {...},                            # heal's record
     "dtype": "float32", "writer": "mergekit", ... # everything else (``extra``)}

Indices always speak of the *unpruned* parent (``base_model``, ``num_layers`` layers).
:func:`lmeval_layerprune.methods.resolve.resolve_drop` is the one resolver from (model, drop spec) to a plan;
:func:`plan_for` builds the plan of given indices on a model's config.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.guard import owned_json
from lmeval_layerprune.core.layout import CONFIG_KEY, LEGACY_PLAN_FILES, PLAN_FILE
from lmeval_layerprune.core.output import write_output
from lmeval_layerprune.core.spec import DropSpec, format_indices
from lmeval_layerprune.errors import PlanError

#: Keys of select's record, written at the top level of the plan (the layout select always wrote).
SELECTION_KEYS = ("rounds", "baseline", "evaluations", "settings")
_CORE_KEYS = ("base_model", "num_layers", "drop", "kept", "method", "spec", "order", "scores", "recovery")


@dataclass
class PruningPlan:
    """Which layers of an unpruned parent were removed, how they were chosen, how the result was healed.

    Attributes:
        base_model: the unpruned parent as given (Hub id or path); ``None`` when unknown.
        num_layers: depth of the unpruned parent.
        drop: parent indices removed, sorted (normalised on construction).
        method: how the layers were chosen: ``explicit``, ``last``, ``bi``, ``angular``,
            ``iterative``, ``ppl``, ``plan`` (read from a plan file), ...
        spec: the drop spec text as given (e.g. ``"last:25%"``, ``"plan:../x.json@4"``).
        order: the greedy order in which a search removed the layers (``plan:PATH@K`` takes a prefix).
        scores: per-layer (``bi``) or per-block-start (``angular``) scores where a metric chose.
        selection: select's record (``rounds``, ``baseline``, ``evaluations``, ``settings``).
        recovery: heal's record (recipe, method, data, settings, steps).
        extra: everything else (``dtype``, ``writer``, ``tool``, ``mergekit_error``, ``plan_file_sha256``, ...).
    """

    base_model: str | None
    num_layers: int
    drop: tuple[int, ...]
    method: str = "explicit"
    spec: str | None = None
    order: tuple[int, ...] | None = None
    scores: list[float] | None = None
    selection: dict | None = None
    recovery: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        what = self.spec or "the plan"
        if isinstance(self.num_layers, bool) or not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise PlanError(f"{what}: num_layers must be a positive integer, got {self.num_layers!r}")
        self.drop = _indices(self.drop, self.num_layers, what, "drop")
        if len(self.drop) >= self.num_layers:
            raise PlanError(f"{what}: it removes every layer (the model has {self.num_layers})")
        if self.order is not None:
            order = tuple(self.order)
            _indices(order, self.num_layers, what, "order")
            if len(set(order)) != len(order):
                raise PlanError(f"{what}: the greedy order {list(order)} names a layer twice")
            self.order = order

    # ------------------------------------------------------------------ views
    @property
    def kept(self) -> tuple[int, ...]:
        """The parent indices that remain, ascending."""
        gone = set(self.drop)
        return tuple(i for i in range(self.num_layers) if i not in gone)

    @property
    def drop_text(self) -> str:
        """The removed layers as spec text, e.g. ``'20-25'`` (``'none'`` when nothing is removed)."""
        return format_indices(self.drop)

    # ------------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        """The JSON record (lists, not tuples); optional fields only when set."""
        d: dict[str, Any] = {
            "base_model": self.base_model,
            "num_layers": self.num_layers,
            "drop": list(self.drop),
            "kept": list(self.kept),
            "method": self.method,
        }
        if self.spec is not None:
            d["spec"] = self.spec
        if self.order is not None:
            d["order"] = list(self.order)
        if self.scores is not None:
            d["scores"] = list(self.scores)
        for k, v in (self.selection or {}).items():
            d[k] = v
        if self.recovery is not None:
            d["recovery"] = self.recovery
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, num_layers: int | None = None, source: str = "plan") -> PruningPlan:
        """Read a plan record of any layout this package ever wrote (see the module docstring).

        Args:
            d: the record.
            num_layers: the parent's depth, used only when the record lacks ``num_layers``
                (a hand-written ``{"drop": [...]}``).
            source: what to call the record in error messages (e.g. its file name).
        """
        if not isinstance(d, Mapping):
            raise PlanError(f"{source}: expected a JSON object, got {type(d).__name__}")
        if CONFIG_KEY in d and "drop" not in d and isinstance(d[CONFIG_KEY], Mapping):
            d = d[CONFIG_KEY]  # a config.json (or lm-eval results config) holding the plan
        if not isinstance(d.get("drop"), list | tuple):
            raise PlanError(f"{source} has no 'drop' list of layer indices")
        n = d.get("num_layers", num_layers)
        if n is None:
            raise PlanError(
                f"{source} does not record num_layers (the parent's depth); add it, or use the file as "
                "drop=plan:PATH against the model it was made for"
            )
        selection = dict(d["selection"]) if isinstance(d.get("selection"), Mapping) else {}
        selection.update({k: d[k] for k in SELECTION_KEYS if k in d})
        skip = {*_CORE_KEYS, *SELECTION_KEYS, "selection", "model"}
        extra = {k: v for k, v in d.items() if k not in skip}
        base = d.get("base_model", d.get("model"))
        try:
            plan = cls(
                base_model=str(base) if base is not None else None,
                num_layers=int(n),
                drop=tuple(d["drop"]),
                method=str(d.get("method") or "explicit"),
                spec=str(d["spec"]) if d.get("spec") is not None else None,
                order=tuple(d["order"]) if d.get("order") is not None else None,
                scores=list(d["scores"]) if d.get("scores") is not None else None,
                selection=selection or None,
                recovery=dict(d["recovery"]) if d.get("recovery") else None,
                extra=extra,
            )
        except PlanError as e:
            raise PlanError(f"{source}: {e}") from None
        except (TypeError, ValueError) as e:
            raise PlanError(f"{source} is not a valid plan: {e}") from None
        if "kept" in d and list(d["kept"]) != list(plan.kept):
            raise PlanError(f"{source}: 'kept' {list(d['kept'])} does not match 'drop' {list(plan.drop)}")
        return plan

    @classmethod
    def from_config(cls, config: Any) -> PruningPlan | None:
        """The plan a (pruned) model's config records, or ``None`` for an unpruned model.

        ``config``: a transformers config, a model (its ``.config`` is used) or a parsed ``config.json``.
        """
        if not isinstance(config, Mapping) and hasattr(config, "config") and not hasattr(config, "num_hidden_layers"):
            config = config.config
        rec = config.get(CONFIG_KEY) if isinstance(config, Mapping) else getattr(config, CONFIG_KEY, None)
        if not rec:
            return None
        return cls.from_dict(rec, source=f"the config's {CONFIG_KEY!r} record")

    def save(self, path: str | Path, *, folder: bool | None = None, overwrite: bool = True) -> Path:
        """Write the plan to ``path`` and return the file written.

        ``path`` is a folder (``PLAN_FILE`` is written inside) or a file. ``folder=None`` decides
        by the path: an existing folder, or a name without the ``.json`` suffix, is a folder.
        The file is written by :func:`~lmeval_layerprune.core.output.write_output`: atomically, never
        through a link, replacing only a plan this tool wrote (``overwrite``; default: yes) and never
        a file of the user's of that name.
        """
        p = Path(path).expanduser()
        if folder is None:
            folder = p.is_dir() or p.suffix != ".json"
        if folder:
            p = p / PLAN_FILE
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return write_output(p, text, overwrite=overwrite, what="plan file", owned=owned_json("drop", "num_layers"))

    @classmethod
    def load(cls, path: str | Path, *, num_layers: int | None = None) -> PruningPlan:
        """Read a plan from a ``.json`` file or a folder (``PLAN_FILE``, an older name, or ``config.json``)."""
        record, source = read_plan_record(path)
        return cls.from_dict(record, num_layers=num_layers, source=source)

    # ------------------------------------------------------------ operations
    def on_parent(self, parent: PruningPlan | None, base_model: str | None = None) -> PruningPlan:
        """Re-express this plan (indices of the unpruned model) on an already-pruned ``parent``.

        The result's indices number ``parent``'s remaining layers, so removing them from the
        pruned parent gives this plan's model. ``parent=None`` (an unpruned parent) returns
        ``self`` unchanged. ``base_model`` names the pruned parent in the result.

        Raises:
            PlanError: the two plans speak of parents of different depth, or this plan keeps a
                layer the parent has already removed.
        """
        if parent is None:
            return self
        if parent.num_layers != self.num_layers:
            raise PlanError(
                f"the plan speaks of a {self.num_layers}-layer model, the pruned parent of a "
                f"{parent.num_layers}-layer one ({parent.base_model})"
            )
        restored = sorted(set(parent.drop) - set(self.drop))
        if restored:
            raise PlanError(
                f"the plan keeps layers {restored}, which the parent ({parent.base_model}) has already removed"
            )
        index = {orig: i for i, orig in enumerate(parent.kept)}
        return replace(
            self,
            base_model=base_model,
            num_layers=len(parent.kept),
            drop=tuple(index[i] for i in self.drop if i in index),
            order=tuple(index[i] for i in self.order if i in index) if self.order is not None else None,
            scores=None,
            extra=dict(self.extra),
        )

    def then(self, local: PruningPlan | Sequence[int], **fields: Any) -> PruningPlan:
        """The plan of removing ``local`` from this plan's (pruned) model, on the unpruned parent.

        ``local`` numbers this plan's kept layers (a plan made on the pruned model, or indices).
        The result keeps this plan's ``base_model`` and ``num_layers``; ``fields`` (and a
        ``local`` plan's method, spec, order) describe the new step. Scores of the pruned model
        are not carried over (they number other layers).
        """
        kept = self.kept
        if isinstance(local, PruningPlan):
            if local.num_layers != len(kept):
                raise PlanError(
                    f"a plan for a {local.num_layers}-layer model cannot apply to a pruned model of {len(kept)} layers"
                )
            fields = {"method": local.method, "spec": local.spec, "selection": local.selection, **fields}
            if local.order is not None:
                fields.setdefault("order", tuple(kept[i] for i in local.order))
            extra = {**local.extra, **fields.pop("extra", {})}
            local = local.drop
        else:
            extra = fields.pop("extra", {})
            local = _indices(local, len(kept), fields.get("spec") or "the plan", "drop")
        drop = tuple(sorted(set(self.drop) | {kept[i] for i in local}))
        return PruningPlan(
            base_model=self.base_model, num_layers=self.num_layers, drop=drop, extra=dict(extra), **fields
        )

    def prefix(self, k: int) -> PruningPlan:
        """The plan that removes only the first ``k`` layers of the greedy ``order`` (``plan:PATH@K``)."""
        if self.order is None:
            raise PlanError(
                f"the plan (method {self.method!r}) has no greedy 'order', so '@{k}' cannot take its first {k} layers; "
                "plans written by `lmeval-prune select --method iterative` or `--method ppl` have one"
            )
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.order):
            raise PlanError(
                f"'@{k}' is out of range: the plan's greedy order removes {len(self.order)} layers "
                f"({list(self.order)}), so K must be 1..{len(self.order)}"
            )
        order = self.order[:k]
        selection = dict(self.selection) if self.selection else None
        if selection and isinstance(selection.get("rounds"), list):
            selection["rounds"] = selection["rounds"][:k]
        return replace(self, drop=tuple(sorted(order)), order=order, selection=selection, extra=dict(self.extra))

    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_dict` (sorted keys, no spaces)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def portable(self, base_model: str | None = None) -> PruningPlan:
        """A copy fit to leave the machine: ``base_model`` replaced (when given), a spec that names a
        local plan file (``plan:../x.json``) replaced by the resolved layers (the text as given is
        kept as ``extra["spec_given"]``, without its folder)."""
        extra = dict(self.extra)
        spec = self.spec
        if spec and spec.lower().startswith("plan:"):
            extra["spec_given"] = "plan:" + Path(spec[5:]).name
            spec = self.drop_text
        return replace(self, base_model=base_model or self.base_model, spec=spec, extra=extra)

    def provenance(self) -> dict[str, Any]:
        """What a results file records about this plan (lm-eval's results ``config[RESULTS_KEY]``).

        The removed and kept layers, the parent, method and spec as given plus the resolved
        spec text, the greedy order, the recovery record and hashes: ``plan_sha256`` of this
        plan, and ``plan_file_sha256`` of the plan file a ``plan:PATH`` spec read. Bulky search
        records (rounds, scores) stay in the plan file.
        """
        d: dict[str, Any] = {
            "base_model": self.base_model,
            "num_layers": self.num_layers,
            "drop": list(self.drop),
            "kept": list(self.kept),
            "num_removed": len(self.drop),
            "method": self.method,
            "spec": self.spec,
            "spec_resolved": self.drop_text,
        }
        if self.order is not None:
            d["order"] = list(self.order)
        for k in ("plan_file", "plan_file_sha256", "plan_method", "writer", "dtype", "transform", "merged_into"):
            if k in self.extra:
                d[k] = self.extra[k]
        if self.recovery is not None:
            d["recovery"] = self.recovery
        d["plan_sha256"] = self.digest()
        return d


def _indices(values: Any, n: int, what: str, name: str) -> tuple[int, ...]:
    try:
        items = list(values)
    except TypeError:
        raise PlanError(f"{what}: {name} must be a list of layer indices, got {values!r}") from None
    out = set()
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int):
            raise PlanError(f"{what}: layer index {i!r} in {name} is not an integer")
        if not 0 <= i < n:
            raise PlanError(f"{what}: layer {i} in {name} is out of range (the model has {n} layers, 0..{n - 1})")
        out.add(i)
    return tuple(sorted(out))


def find_plan_file(folder: str | Path) -> Path | None:
    """The plan file in ``folder``: :data:`PLAN_FILE`, else an older name; ``None`` if there is none."""
    folder = Path(folder).expanduser()
    for name in (PLAN_FILE, *LEGACY_PLAN_FILES):
        if (folder / name).is_file():
            return folder / name
    return None


def read_plan_record(path: str | Path) -> tuple[dict[str, Any], str]:
    """The raw plan record at ``path`` (a file, or a folder) and a name for messages.

    A folder is searched for :data:`PLAN_FILE`, then :data:`LEGACY_PLAN_FILES`, then the
    ``layer_pruning`` record of its ``config.json``.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        found = find_plan_file(p)
        if found is None:
            cfg = p / "config.json"
            if cfg.is_file():
                rec = _read_json(cfg)
                if isinstance(rec, dict) and isinstance(rec.get(CONFIG_KEY), dict):
                    return rec[CONFIG_KEY], f"{cfg}'s {CONFIG_KEY!r} record"
            raise PlanError(
                f"{str(p)!r} holds no plan: no {PLAN_FILE} (or {', '.join(LEGACY_PLAN_FILES)}) and no "
                f"{CONFIG_KEY!r} record in config.json"
            )
        p = found
    elif not p.is_file():
        raise PlanError(f"plan file {str(p)!r} does not exist (drop=plan:PATH needs a plan JSON)")
    rec = _read_json(p)
    if isinstance(rec, dict) and "drop" not in rec and isinstance(rec.get(CONFIG_KEY), dict):
        rec = rec[CONFIG_KEY]
    if not isinstance(rec, dict) or not isinstance(rec.get("drop"), list):
        raise PlanError(f"plan file {str(p)!r} has no 'drop' list of layer indices")
    return rec, f"plan file {str(p)!r}"


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PlanError(f"plan file {str(p)!r} is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise PlanError(
            f"plan file {str(p)!r} is not text (binary or damaged); point drop=plan: at the JSON written by "
            "`lmeval-prune select` or a checkpoint folder, or write it again"
        ) from None


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------ on a model


def plan_for(config: Any, local: Sequence[int], *, base_model: str | None = None, **fields: Any) -> PruningPlan:
    """The plan of removing ``local`` (indices of ``config``'s layers) from the model ``config`` describes.

    Records what was pruned where it is not obvious (the text decoder of a multimodal model, an
    inferred architecture) and, when ``config`` is itself a pruned checkpoint, composes both steps
    into one plan on the unpruned parent. ``fields`` are :class:`PruningPlan` fields (``method``,
    ``spec``, ``scores``, ...). Default spec: the indices as text.
    """
    n = arch_num_layers(config)
    parent = PruningPlan.from_config(config)
    fields.setdefault("spec", format_indices(local))
    if local:
        info = arch_for(config)
        if info.text_config or info.inferred:  # say what was pruned, and how it was found
            extra = dict(fields.get("extra") or {})
            if info.text_config:
                extra["text_model"] = info.text_model  # multimodal: only the text decoder; other towers stay whole
            if info.inferred:
                extra["arch"] = "inferred"
            fields["extra"] = extra
    name = base_model or getattr(config, "_name_or_path", None) or None
    plan = PruningPlan(base_model=name, num_layers=n, drop=tuple(local), **fields)
    return parent.then(plan) if parent is not None else plan


def plan_of_spec(spec: DropSpec, num_layers: int) -> PruningPlan:
    """The plan a ``plan:PATH`` / ``plan:PATH@K`` spec names, checked against a ``num_layers``-layer model."""
    assert spec.method == "plan" and spec.path is not None
    where = f" (the model has {num_layers} layers, 0..{num_layers - 1})"
    record, _ = read_plan_record(spec.path)
    try:
        src = PruningPlan.from_dict(record, num_layers=num_layers, source=f"plan file {spec.path!r}")
    except PlanError as e:
        raise PlanError(f"invalid drop spec {spec.text!r}: {e}{where}") from None
    if src.num_layers != num_layers:
        made = f"the plan was made for a model with {src.num_layers} layers"
        raise PlanError(f"invalid drop spec {spec.text!r}: {made}{where}")
    if spec.k is not None:
        try:
            src = src.prefix(spec.k)
        except PlanError as e:
            raise PlanError(f"invalid drop spec {spec.text!r}: {e}") from None
    return src


__all__ = [
    "PruningPlan",
    "file_sha256",
    "find_plan_file",
    "read_plan_record",
    "plan_for",
    "plan_of_spec",
]
