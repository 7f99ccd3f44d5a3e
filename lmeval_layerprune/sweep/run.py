"""A grid of pruned models, each evaluated by lm-eval: ``lmeval-prune sweep``.

Every (method, ratio[, healed]) cell is one lm-eval run saved in lm-eval's own output layout
(``OUT/<cell>/<model>/results_<date>.json`` plus ``samples_<task>_<date>.jsonl`` per task), so
``lm_eval`` tooling, :mod:`lmeval_layerprune.lmeval.results` and ``lmeval-prune report`` read it as they
read any run. Cheaper than running the grid cell by cell:

* one loaded base model serves every in-memory cell: the pruned layers are swapped out in
  place for the cell and put back afterwards (:func:`lmeval_layerprune.core.slicing.layer_subset`,
  as the layer search does); no checkpoint is written, no model reloaded;
* the unpruned baseline (ratio 0) is evaluated once and shared by every method;
* ``bi`` and ``angular`` read the calibration hidden states once for every ratio;
* ``iterative`` (and ``ppl``) run one greedy search to the largest ratio; smaller ratios take
  the first K layers of its order (the same as ``drop=plan:PATH@K``);
* healed cells (``--recipe``) heal the pruned model with :func:`lmeval_layerprune.heal.run.heal`
  after every in-memory cell is done, then evaluate the healed checkpoint. Several recipes
  (``--recipe selfgen-lora,original-lora``: the paper's recovery comparison, same prompts and budget through
  ``--heal-override``) give one healed cell per recipe, named ``<cell>-healed-<recipe>``.

A cell is written into a hidden sibling folder and renamed into place when complete, so a
killed sweep never leaves a half-written cell; restarted with the same command it evaluates
only the cells that are missing. Each cell's results record its plan (the resolved layers)
in ``config["layer_pruning"]`` and the cell in ``config["sweep"]``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.layout import BASE_CELL, CHECKPOINTS, RESULTS_KEY, SWEEP_MANIFEST
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.spec import DropSpec, format_indices
from lmeval_layerprune.errors import SweepError
from lmeval_layerprune.methods.capture import Calibration, calibration_states
from lmeval_layerprune.methods.registry import get_method, method_names
from lmeval_layerprune.methods.resolve import choose_layers

logger = logging.getLogger(__name__)

#: methods a sweep knows: one-pass (``last``, ``bi``, ``angular``) and greedy searches
DEFAULT_METHODS = ("last", "bi", "angular")
DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3)
DEFAULT_TASKS = ("layerprune_probes",)
_PARTIAL = ".partial-"
_FORMAT = 1


# ----------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Cell:
    """One run of the grid: ``method`` at ``ratio`` (``layers`` of the parent removed)."""

    method: str
    ratio: float
    layers: int
    healed: bool = False
    recipe: str | None = None  # healed cells: the recipe that healed it
    tagged: bool = False  # the recipe is part of the name (a sweep with several recipes)

    @property
    def name(self) -> str:
        if self.ratio == 0:
            return BASE_CELL
        name = f"{self.method}-{self.ratio:g}" + ("-healed" if self.healed else "")
        return f"{name}-{recipe_tag(self.recipe)}" if self.tagged and self.recipe else name


def recipe_tag(recipe: str) -> str:
    """A recipe's name in cell names: the bundled name, or a recipe file's stem."""
    return Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe


def parse_recipes(text: str | None) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``; refuses repeats and two recipes with one name in cell names."""
    items = tuple(r.strip() for r in (text or "").split(",") if r.strip())
    tags = [recipe_tag(r) for r in items]
    if len(set(tags)) != len(tags):
        raise SweepError(f"recipe listed twice (or two recipe files with one name) in {text!r}")
    return items


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"last,bi"`` -> ``("last", "bi")``, refusing unknown or repeated methods."""
    items = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    known = method_names()
    if not items:
        raise SweepError(f"no methods given; choose from {', '.join(known)}")
    unknown = [m for m in items if m not in known]
    if unknown:
        raise SweepError(f"unknown method(s) {', '.join(map(repr, unknown))}; valid: {', '.join(known)}")
    if len(set(items)) != len(items):
        raise SweepError(f"method listed twice in {','.join(items)}")
    return tuple(items)


def parse_ratios(text: str | Sequence[float | str]) -> tuple[float, ...]:
    """``"0,0.1,25%"`` -> ``(0.0, 0.1, 0.25)``: fractions of the layers to remove, each in [0, 1)."""
    items = [str(r).strip() for r in (text.split(",") if isinstance(text, str) else text) if str(r).strip()]
    if not items:
        raise SweepError("no ratios given (e.g. --ratios 0,0.1,0.2,0.3)")
    out = []
    for item in items:
        try:
            value = float(item[:-1]) / 100 if item.endswith("%") else float(item)
        except ValueError:
            raise SweepError(f"ratio {item!r} is not a number (fractions like 0.25, or percentages like 25%)") from None
        if not (0 <= value < 1) or math.isnan(value):
            raise SweepError(f"ratio {item!r} is outside [0, 1): it is the fraction of the layers to remove")
        out.append(value)
    if len(set(out)) != len(out):
        raise SweepError(f"ratio listed twice in {','.join(items)}")
    return tuple(sorted(out))


def layer_count(ratio: float, num_layers: int) -> int:
    """Layers a ratio removes from ``num_layers``, as ``drop=last:R%`` counts them (half rounds up)."""
    if ratio == 0:
        return 0
    spec = DropSpec(text=f"{ratio:g}", fraction=ratio)
    try:
        k = spec.layer_count(num_layers)
    except ValueError:
        raise SweepError(
            f"ratio {ratio:g} removes {ratio * num_layers:.2f} of {num_layers} layers, which rounds to 0; "
            f"the smallest ratio that removes a layer is {1 / (2 * num_layers):.3g}"
        ) from None
    if k >= num_layers:
        raise SweepError(
            f"ratio {ratio:g} removes {k} of {num_layers} layers, i.e. every layer; "
            f"the largest ratio that keeps one is below {(num_layers - 0.5) / num_layers:.3g}"
        )
    return k


def plan_grid(
    methods: Sequence[str],
    ratios: Sequence[float],
    num_layers: int,
    heal: Sequence[tuple[str, float]] = (),
    recipes: Sequence[str | None] = (None,),
) -> list[Cell]:
    """The cells of a grid, the shared baseline first; refuses ratios that remove the same count.

    Every cell in ``heal`` is healed once per recipe; with several recipes the name carries it."""
    counts = {r: layer_count(r, num_layers) for r in ratios}
    seen: dict[int, float] = {}
    for r, k in counts.items():
        if k in seen:
            raise SweepError(
                f"ratios {seen[k]:g} and {r:g} both remove {k} of {num_layers} layers; give ratios that differ "
                f"by at least {1 / num_layers:.3g} on this model"
            )
        seen[k] = r
    cells: list[Cell] = []
    if 0 in counts.values():
        cells.append(Cell("none", 0.0, 0))
    for m in methods:
        cells.extend(Cell(m, r, k) for r, k in counts.items() if k > 0)
    for m, r in heal:
        if m not in methods or r not in counts or counts[r] == 0:
            raise SweepError(
                f"healed cell {m}:{r:g} is not a pruned cell of the grid (methods {','.join(methods)}, "
                f"ratios {','.join(f'{x:g}' for x in ratios if x > 0)})"
            )
        cells.extend(Cell(m, r, counts[r], True, rec, len(recipes) > 1) for rec in recipes)
    return cells


def parse_heal_cells(text: str | None, methods: Sequence[str], ratios: Sequence[float]) -> list[tuple[str, float]]:
    """``"last:0.2,angular:0.2"`` -> cells to heal; ``None`` / ``"all"``: every pruned cell."""
    if text is None or text.strip().lower() == "all":
        return [(m, r) for m in methods for r in ratios if r > 0]
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        method, sep, ratio = item.partition(":")
        if not sep:
            raise SweepError(f"healed cell {item!r} is not METHOD:RATIO (e.g. last:0.2)")
        out.append((parse_methods(method)[0], parse_ratios(ratio)[0]))
    return out


# ------------------------------------------------------------------- settings


@dataclass
class SweepSettings:
    """What a sweep evaluates. The fields in :meth:`fixed` must match to resume a sweep folder;
    the grid (methods, ratios, healed cells) may grow or shrink between runs."""

    model: str
    methods: tuple[str, ...] = DEFAULT_METHODS
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    tasks: tuple[str, ...] = DEFAULT_TASKS
    limit: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    num_fewshot: int | None = None
    include_path: str | None = None
    dtype: str = "float32"
    batch_size: str = "8"
    device: str | None = None
    calib: str | None = None
    calib_samples: int | None = None
    # greedy methods
    search_tasks: tuple[str, ...] | None = None
    search_limit: int | None = 100
    selection_seed: int | None = None
    protect: tuple[int, ...] = (0,)
    # healing: one recipe, or several comma-separated (one healed cell each)
    recipe: str | None = None
    heal_cells: tuple[tuple[str, float], ...] = ()
    heal_overrides: tuple[str, ...] = ()
    # fidelity: token agreement with the parent's greedy text on this many bundled prompts (0: off)
    token_agreement: int = 0
    token_agreement_tokens: int = 32

    @property
    def recipes(self) -> tuple[str, ...]:
        return parse_recipes(self.recipe)

    def fixed(self) -> dict[str, Any]:
        """The settings every cell of a folder shares (not the grid, not where it runs)."""
        d = asdict(self)
        # the grid, where it runs, and extra measurements that do not change any task score
        grid = ("methods", "ratios", "heal_cells", "batch_size", "device", "token_agreement", "token_agreement_tokens")
        for k in grid:
            d.pop(k)
        return json.loads(json.dumps(d))


def _settings_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} (in the folder) vs {new.get(k)!r} (now)" for k in keys if old.get(k) != new.get(k)]


# ------------------------------------------------------------------ the sweep


def _num_layers(model: str) -> int:
    from transformers import AutoConfig

    from lmeval_layerprune.core.arch import num_layers
    from lmeval_layerprune.core.embedded import resolve_pretrained

    return int(num_layers(AutoConfig.from_pretrained(str(resolve_pretrained(model)))))


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / cell.name


def cell_done(out: Path, cell: Cell) -> bool:
    """A cell is done when its folder exists: it is renamed into place only once complete."""
    return any(cell_dir(out, cell).glob("*/results_*.json"))


def _open_out(out: Path, settings: SweepSettings) -> dict[str, Any]:
    """Check (or create) the sweep folder; returns its manifest."""
    manifest_path = out / SWEEP_MANIFEST
    fixed = settings.fixed()
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        diff = _settings_diff(manifest.get("settings", {}), fixed)
        if diff:
            raise SweepError(
                f"{out} holds a sweep with other settings ({'; '.join(diff)}); rerun with the same settings to "
                "complete it, or give another --out for a new sweep"
            )
        return manifest
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SweepError(f"--out {out} exists and is not a sweep folder (no {SWEEP_MANIFEST}); choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": _FORMAT, "settings": fixed, "cells": {}}
    _write_json(manifest_path, manifest)
    return manifest


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _clear_partials(out: Path) -> None:
    """Remove the half-written cells of a killed run (hidden folders only this module writes)."""
    for p in out.glob(f"{_PARTIAL}*"):
        if p.is_dir():
            shutil.rmtree(p)


@contextlib.contextmanager
def _publish_dir(out: Path, cell: Cell) -> Iterator[Path]:
    """A hidden folder to write ``cell`` into, renamed to the cell's name when the block succeeds."""
    tmp = out / f"{_PARTIAL}{cell.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    target = cell_dir(out, cell)
    if target.exists():  # an empty folder left by hand: nothing of ours to lose
        target.rmdir()
    os.replace(tmp, target)


def _plan(
    settings: SweepSettings, num_layers: int, drop: Sequence[int], method: str, spec: str, **fields: Any
) -> PruningPlan:
    """The cell's plan, as every other part of the package records one."""
    from lmeval_layerprune.core.embedded import base_model_name

    return PruningPlan(
        base_model=base_model_name(settings.model),
        num_layers=num_layers,
        drop=tuple(int(i) for i in drop),
        method=method,
        spec=spec,
        **fields,
    )


class Sweep:
    """Plans, runs and resumes one sweep folder (see the module docstring)."""

    def __init__(self, settings: SweepSettings, out: str | Path, progress: bool = True) -> None:
        self.settings = settings
        self.out = Path(out)
        self.progress = progress
        if settings.recipe is None and settings.heal_cells:
            raise SweepError("healed cells need a recovery recipe (--recipe)")
        self.num_layers = _num_layers(settings.model)
        heal = list(settings.heal_cells) if settings.recipe else []
        recipes = settings.recipes
        if heal:  # a typo in a recipe or an override fails now, not after the in-memory cells
            from lmeval_layerprune.heal.recipe import load_recipe

            for rec in recipes:
                load_recipe(rec, settings.heal_overrides)
        self.cells = plan_grid(settings.methods, settings.ratios, self.num_layers, heal, recipes or (None,))
        self._lm: Any = None
        self._states: Any = None

    # ------------------------------------------------------------- planning
    def describe(self) -> list[str]:
        """One line per ratio: how many layers it removes."""
        lines = []
        for r in self.settings.ratios:
            k = layer_count(r, self.num_layers)
            lines.append(f"ratio {r:g}: remove {k} of {self.num_layers} layers (keep {self.num_layers - k})")
        return lines

    def pending(self) -> list[Cell]:
        return [c for c in self.cells if not cell_done(self.out, c)]

    # ---------------------------------------------------------------- model
    def _load(self) -> Any:
        if self._lm is None:
            from lmeval_layerprune.lmeval.hf import PrunedHFLM
            from lmeval_layerprune.lmeval.plugin import register

            register()
            self._lm = PrunedHFLM(
                pretrained=self.settings.model,
                dtype=self.settings.dtype,
                batch_size=self.settings.batch_size,
                device=self.settings.device,
            )
        return self._lm

    def _release(self) -> None:
        self._lm = None
        self._states = None
        gc.collect()

    def _boundary_states(self) -> Any:
        if self._states is None:
            lm = self._load()
            calibration = Calibration.of(self.settings.calib, self.settings.calib_samples)
            self._states = calibration_states(lm.model, lm.tokenizer, calibration)
        return self._states

    def _greedy_plan(self, method: str) -> dict[str, Any]:
        """One greedy search to the grid's largest count (resumable through its journal)."""
        from lmeval_layerprune.search.select import SelectionSettings, select_layers

        path = self.out / f"{method}_plan.json"
        k_max = max(c.layers for c in self.cells if c.method == method)
        if path.is_file():
            plan = json.loads(path.read_text())
            if len(plan.get("order") or []) >= k_max:
                return plan
        s = self.settings
        kwargs: dict[str, Any] = dict(
            tasks=list(s.search_tasks or s.tasks),
            include_path=s.include_path,
            limit=s.search_limit,
            protect=list(s.protect),
            calib=s.calib,
            dtype=s.dtype,
            batch_size=int(s.batch_size) if str(s.batch_size).isdigit() else 8,
        )
        if s.selection_seed is not None:
            kwargs["selection_seed"] = s.selection_seed
        if s.calib_samples:
            kwargs["calib_samples"] = s.calib_samples
        print(f"sweep: {method} search for {k_max} layers (plan {path})", flush=True)
        search = SelectionSettings(model=s.model, method=method, n=k_max, **kwargs)
        plan = select_layers(search, device=s.device, out=path, progress=self.progress)
        plan = plan.to_dict() if hasattr(plan, "to_dict") else dict(plan)
        return plan

    def resolve(self, cell: Cell) -> PruningPlan:
        """The plan of an in-memory cell (its resolved layers)."""
        n, k, s = self.num_layers, cell.layers, self.settings
        if k == 0:
            return _plan(s, n, [], "none", "none")
        method = get_method(cell.method)
        if method.kind != "greedy":  # one pass; the calibration states are read once for every cell
            states = self._boundary_states() if method.needs_states else None
            drop, scores = choose_layers(method, n, k, states)
            fields = {"scores": scores} if scores is not None else {}
            return _plan(s, n, drop, cell.method, f"{cell.method}:{k}", **fields)
        self._greedy_plan(cell.method)
        path = self.out / f"{cell.method}_plan.json"
        searched = PruningPlan.load(path, num_layers=n)
        # the first k layers of the search's greedy order: the same as drop=plan:PATH@k
        return replace(searched.prefix(k), base_model=searched.base_model or s.model, spec=f"plan:{path}@{k}")

    # ------------------------------------------------------------- evaluate
    def _evaluate(
        self, lm: Any, plan: PruningPlan, cell: Cell, model_args: dict[str, Any], task_manager: Any, folder: Path
    ) -> Path:
        """One lm-eval run of ``lm`` (as it is now), saved as ``lm_eval --output_path folder --log_samples``."""
        from lm_eval import simple_evaluate
        from lm_eval.loggers import EvaluationTracker

        s = self.settings
        tracker = EvaluationTracker(output_path=str(folder))
        results = simple_evaluate(
            model=lm,
            model_args=model_args,
            tasks=list(s.tasks),
            num_fewshot=s.num_fewshot,
            batch_size=s.batch_size,
            device=s.device,
            limit=s.limit,
            log_samples=True,
            evaluation_tracker=tracker,
            task_manager=task_manager,
            metadata=dict(s.metadata) or None,
        )
        if results is None:  # pragma: no cover - non-zero ranks
            raise SweepError("lm-eval returned no results (not the main process?)")
        samples = results.pop("samples")
        results["config"]["model"] = "pruned-hf"
        results["config"][RESULTS_KEY] = plan.provenance()
        results["config"]["sweep"] = {
            "cell": cell.name,
            "method": cell.method,
            "ratio": cell.ratio,
            "layers_removed": cell.layers,
            "num_layers": self.num_layers,
            "healed": cell.healed,
            "recipe": cell.recipe if cell.healed else None,
        }
        tracker.save_results_aggregated(results=results, samples=samples)
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
        written = list(folder.glob("*/results_*.json"))
        if len(written) != 1:  # lm-eval logs write failures as warnings; a cell must not pass silently
            raise SweepError(f"lm-eval did not write the results of cell {cell.name} into {folder}")
        return written[0]

    def _token_agreement(self, lm: Any, drop: Sequence[int], folder: Path) -> None:
        """Write ``token_agreement.json`` into the cell: the share of the parent's greedy tokens this
        cell's model predicts as its top-1 (teacher-forced; the parent's responses made once)."""
        from lmeval_layerprune.core.layout import TOKEN_AGREEMENT_FILE
        from lmeval_layerprune.speed.speculate import greedy_generate, source_prompts, token_agreement

        s = self.settings
        if getattr(self, "_ta_prompts", None) is None:  # the parent's greedy responses, once per sweep
            import torch

            self._ta_prompts = source_prompts(lm.tokenizer, "bundled", s.token_agreement)
            with torch.no_grad():
                self._ta_responses = [
                    greedy_generate(lm.model, torch.tensor([p]), s.token_agreement_tokens, lm.tokenizer)[0]
                    for p in self._ta_prompts
                ]
        result = token_agreement(
            lm.model,
            lm.tokenizer,
            self._ta_prompts,
            self._ta_responses,
            drop=list(drop),
            max_new_tokens=s.token_agreement_tokens,
        )
        _write_json(folder / TOKEN_AGREEMENT_FILE, result.to_dict())

    def _task_manager(self) -> Any:
        from lm_eval.tasks import TaskManager

        tm = TaskManager(include_path=self.settings.include_path, metadata=dict(self.settings.metadata) or None)
        unknown = [t for t in self.settings.tasks if t not in tm.all_tasks]
        if unknown:
            raise SweepError(
                f"unknown task(s) {', '.join(unknown)}; see `lm_eval ls tasks` (and --include-path for your own)"
            )
        return tm

    def run(self) -> dict[str, Any]:
        """Evaluate every missing cell; returns the manifest (cell name -> plan and results file)."""
        from tqdm.auto import tqdm

        from lmeval_layerprune.core.slicing import layer_subset

        manifest = _open_out(self.out, self.settings)
        _clear_partials(self.out)
        pending = self.pending()
        done = len(self.cells) - len(pending)
        for line in self.describe():
            print(f"sweep: {line}", flush=True)
        print(f"sweep: {len(self.cells)} cells, {done} already done, {len(pending)} to run -> {self.out}", flush=True)
        if not pending:
            return manifest
        task_manager = self._task_manager()
        # greedy searches first, before the sweep's own copy of the model is loaded
        greedy = method_names("greedy")
        for method in dict.fromkeys(c.method for c in pending if c.method in greedy):
            self._greedy_plan(method)
        memory = [c for c in pending if not c.healed]
        healed = [c for c in pending if c.healed]
        bar = tqdm(total=len(pending), desc="sweep", unit="cell", disable=not self.progress)
        try:
            for cell in memory:
                bar.set_postfix_str(cell.name)
                lm = self._load()
                plan = self.resolve(cell)
                drop = list(plan.drop)
                model_args = {
                    "pretrained": self.settings.model,
                    "drop": format_indices(drop),
                    "dtype": self.settings.dtype,
                }
                print(
                    f"\nsweep: cell {cell.name}: removing {format_indices(drop)} ({len(drop)} of {self.num_layers})",
                    flush=True,
                )
                saved = getattr(lm, "drop", ()), getattr(lm, "plan", None)
                with _publish_dir(self.out, cell) as folder:
                    with layer_subset(lm.model, drop):
                        lm.drop, lm.plan = tuple(drop), plan  # what pruned-hf's own provenance reports
                        try:
                            path = self._evaluate(lm, plan, cell, model_args, task_manager, folder)
                        finally:
                            lm.drop, lm.plan = saved
                    if self.settings.token_agreement:
                        self._token_agreement(lm, drop, folder)
                manifest["cells"][cell.name] = {
                    "plan": plan.provenance(),
                    "results": str(cell_dir(self.out, cell) / path.relative_to(folder)),
                }
                _write_json(self.out / SWEEP_MANIFEST, manifest)
                bar.update(1)
            if healed:
                # every in-memory cell is done: free the base model before training
                pruned_plans = {c.name: self.resolve(Cell(c.method, c.ratio, c.layers)) for c in healed}
                self._release()
                for cell in healed:
                    bar.set_postfix_str(cell.name)
                    manifest["cells"][cell.name] = self._run_healed(cell, pruned_plans[cell.name], task_manager)
                    _write_json(self.out / SWEEP_MANIFEST, manifest)
                    bar.update(1)
        finally:
            bar.close()
        return manifest

    def _run_healed(self, cell: Cell, pruned: PruningPlan, task_manager: Any) -> dict[str, Any]:
        from lmeval_layerprune.heal.run import heal
        from lmeval_layerprune.lmeval.hf import PrunedHFLM
        from lmeval_layerprune.lmeval.plugin import register

        s = self.settings
        assert cell.recipe is not None
        ckpt = self.out / CHECKPOINTS / cell.name
        drop = pruned.drop_text
        print(f"\nsweep: cell {cell.name}: healing {drop} with {cell.recipe!r} -> {ckpt}", flush=True)
        heal(cell.recipe, s.model, ckpt, drop=drop, overrides=list(s.heal_overrides), progress=self.progress)
        register()
        lm = PrunedHFLM(pretrained=str(ckpt), dtype=s.dtype, batch_size=s.batch_size, device=s.device)
        healed = PruningPlan.load(ckpt)
        if healed.drop != pruned.drop:
            raise SweepError(
                f"the healed checkpoint {ckpt} removes {list(healed.drop)}, not the cell's {list(pruned.drop)}"
            )
        # the cell's method and spec, the checkpoint's recovery record
        plan = replace(pruned, recovery=healed.recovery, extra={**pruned.extra, **healed.extra})
        lm.plan = plan
        model_args = {"pretrained": str(ckpt), "dtype": s.dtype}
        try:
            with _publish_dir(self.out, cell) as folder:
                path = self._evaluate(lm, plan, cell, model_args, task_manager, folder)
        finally:
            del lm
            gc.collect()
        return {
            "plan": plan.provenance(),
            "checkpoint": str(ckpt),
            "results": str(cell_dir(self.out, cell) / path.relative_to(folder)),
        }


def run_sweep(settings: SweepSettings, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or finish) the sweep ``settings`` describes into ``out``; see :class:`Sweep`."""
    return Sweep(settings, out, progress=progress).run()
