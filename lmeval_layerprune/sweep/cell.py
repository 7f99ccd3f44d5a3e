"""One cell of a sweep, evaluated and published: :func:`run_cell` and the :class:`CellRunner` behind it.

A :class:`CellRunner` is one loaded base model serving many in-memory cells: the cell's layers are
swapped out in place for its lm-eval run and put back afterwards
(:func:`lmeval_layerprune.core.slicing.layer_subset`); ``bi`` / ``angular`` read the calibration
hidden states once; greedy methods take prefixes of their search's order. A healed cell heals the
pruned model into ``OUT/checkpoints/<cell>/`` and evaluates that checkpoint (no base model held).
Every cell is written in lm-eval's own layout into a hidden folder, checked, and renamed into
place (:mod:`lmeval_layerprune.sweep.store`), whoever runs it: the in-process loop or a Ray worker.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lm_eval import simple_evaluate
from lm_eval.loggers import EvaluationTracker
from lm_eval.tasks import TaskManager
from transformers import AutoConfig

from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.collapse import MERGE, collapsed, is_merge, mark_merge, merge_spec
from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.layout import CHECKPOINTS, PLAN_FILE, RESULTS_KEY
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import layer_subset
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.errors import SweepError
from lmeval_layerprune.heal.run import HealSettings, heal
from lmeval_layerprune.lmeval.hf import PrunedHFLM
from lmeval_layerprune.lmeval.plugin import register
from lmeval_layerprune.methods.capture import Calibration, calibration_states
from lmeval_layerprune.methods.registry import get_method
from lmeval_layerprune.methods.resolve import choose_layers
from lmeval_layerprune.sweep.fidelity import AgreementProbe
from lmeval_layerprune.sweep.greedy import greedy_plan, plan_path
from lmeval_layerprune.sweep.grid import Cell
from lmeval_layerprune.sweep.settings import SweepSettings
from lmeval_layerprune.sweep.store import cell_dir, check_cell, check_run, plan_file, publish_dir, write_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellResult:
    """A published cell: its results file in place, its plan (provenance), and who ran it."""

    cell: Cell
    results: Path
    plan: dict[str, Any]
    checkpoint: Path | None = None
    seconds: float = 0.0
    worker: str = "local"


def num_layers_of(model: str) -> int:
    """The parent's decoder depth, read from its config (no weights loaded)."""
    return int(arch_num_layers(AutoConfig.from_pretrained(str(resolve_pretrained(model)))))


def make_plan(
    settings: SweepSettings, n: int, drop: Sequence[int], method: str, spec: str, **fields: Any
) -> PruningPlan:
    """A cell's plan, as every other part of the package records one."""
    base = base_model_name(settings.model)
    return PruningPlan(
        base_model=base, num_layers=n, drop=tuple(int(i) for i in drop), method=method, spec=spec, **fields
    )


def task_manager(settings: SweepSettings) -> TaskManager:
    """lm-eval's task index with the sweep's include path; refuses unknown tasks in one line."""
    tm = TaskManager(include_path=settings.include_path, metadata=dict(settings.metadata) or None)
    unknown = [t for t in settings.tasks if t not in tm.all_tasks]
    if unknown:
        raise SweepError(
            f"unknown task(s) {', '.join(unknown)}; see `lm_eval ls tasks` (and --include-path for your own)"
        )
    return tm


def published(
    out: Path, cell: Cell, settings: SweepSettings, seconds: float = 0.0, worker: str = "local"
) -> CellResult:
    """The :class:`CellResult` of a cell already in place (raises when it is not complete)."""
    check = check_cell(out, cell, settings.tasks, bool(settings.token_agreement))
    if not check.complete or check.results is None:
        raise SweepError(f"cell {cell.name} in {out} is not complete: {check.problem or 'no results'}")
    config = json.loads(check.results.read_text())["config"]
    ckpt = Path(out) / CHECKPOINTS / cell.name if cell.healed else None
    return CellResult(cell, check.results, config.get(RESULTS_KEY) or {}, ckpt, seconds, worker)


def _heal_checkpoint(settings: SweepSettings, cell: Cell, drop: str, ckpt: Path, progress: bool) -> None:
    """The sweep's only call of :func:`lmeval_layerprune.heal.run.heal`."""
    assert cell.recipe is not None
    overrides = settings.heal_overrides
    heal(HealSettings(cell.recipe, settings.model, ckpt, drop=drop, overrides=overrides, progress=progress))


class CellRunner:
    """Runs cells of one sweep folder; holds one loaded base model for the in-memory cells.

    ``lm``: an already loaded ``PrunedHFLM`` of the unpruned parent to serve the cells (else it is
    loaded on first use). ``name`` labels the results (``local``, a Ray worker's name)."""

    def __init__(
        self,
        settings: SweepSettings,
        out: str | Path,
        *,
        lm: Any = None,
        progress: bool = False,
        name: str = "local",
        task_manager: TaskManager | None = None,
    ) -> None:
        self.settings = settings
        self.out = Path(out)
        self.progress = progress
        self.name = name
        self._lm = lm
        self._num_layers: int | None = None
        self._states: Any = None
        self._tm = task_manager
        self._agreement = AgreementProbe(settings.token_agreement, settings.token_agreement_tokens)

    # ---------------------------------------------------------------- model
    @property
    def num_layers(self) -> int:
        if self._num_layers is None:
            if self._lm is not None:
                self._num_layers = int(arch_num_layers(self._lm.model.config))
            else:
                self._num_layers = num_layers_of(self.settings.model)
        return self._num_layers

    def load(self) -> Any:
        """The loaded parent (loaded now if needed)."""
        if self._lm is None:
            register()
            s = self.settings
            self._lm = PrunedHFLM(pretrained=s.model, dtype=s.dtype, batch_size=s.batch_size, device=s.device)
        return self._lm

    def release(self) -> None:
        """Free the loaded model and what was computed with it."""
        self._lm = None
        self._states = None
        self._agreement = AgreementProbe(self.settings.token_agreement, self.settings.token_agreement_tokens)
        gc.collect()

    @property
    def task_manager(self) -> TaskManager:
        if self._tm is None:
            self._tm = task_manager(self.settings)
        return self._tm

    # ---------------------------------------------------------------- plans
    def _boundary_states(self) -> Any:
        if self._states is None:
            lm = self.load()
            calibration = Calibration.of(self.settings.calib, self.settings.calib_samples)
            self._states = calibration_states(lm.model, lm.tokenizer, calibration)
        return self._states

    def resolve(self, cell: Cell) -> PruningPlan:
        """The plan of an in-memory cell (its resolved layers)."""
        n, k, s = self.num_layers, cell.layers, self.settings
        if k == 0:
            return make_plan(s, n, [], "none", "none")
        method = get_method(cell.method)
        if method.kind != "greedy":  # one pass; the calibration states are read once for every cell
            states = self._boundary_states() if method.needs_states else None
            drop, scores = choose_layers(method, n, k, states)
            fields = {"scores": scores} if scores is not None else {}
            plan = make_plan(s, n, drop, cell.method, f"{cell.method}:{k}", **fields)
            return mark_merge(plan, drop) if method.transform == MERGE else plan
        path = plan_path(self.out, cell.method)
        if not path.is_file():  # normally searched before any cell runs (see the executors)
            greedy_plan(s, self.out, cell.method, k, progress=self.progress)
        searched = PruningPlan.load(path, num_layers=n)
        # the first k layers of the search's greedy order: the same as drop=plan:PATH@k
        return replace(searched.prefix(k), base_model=searched.base_model or s.model, spec=f"plan:{path}@{k}")

    def parent_plan(self, cell: Cell) -> PruningPlan:
        """The plan of a healed cell's parent: its published plan file, else resolved on the model."""
        path = plan_file(self.out, cell.parent)
        if path.is_file():
            return PruningPlan.load(path, num_layers=self.num_layers)
        return self.resolve(cell.parent)

    # ------------------------------------------------------------- evaluate
    def _evaluate(self, lm: Any, plan: PruningPlan, cell: Cell, model_args: dict[str, Any], folder: Path) -> None:
        """One lm-eval run of ``lm`` (as it is now), saved as ``lm_eval --output_path folder --log_samples``."""
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
            task_manager=self.task_manager,
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
        # lm-eval logs a failed write ("could not save results") as a warning: for a sweep it is an error
        check = check_run(folder, s.tasks)
        if not check.complete:
            raise SweepError(
                f"lm-eval could not save cell {cell.name} into {cell_dir(self.out, cell)}: {check.problem}; "
                "the cell was not published (disk full or a file-size limit?)"
            )

    # ------------------------------------------------------------------ run
    def run(self, cell: Cell, parent: PruningPlan | None = None) -> CellResult:
        """Evaluate ``cell`` and publish it into the sweep folder; returns where it landed.

        ``parent``: a healed cell's pruned plan, when the caller resolved it already."""
        t0 = time.perf_counter()
        if cell.healed:
            self._run_healed(cell, parent)
        else:
            self._run_memory(cell)
        return published(self.out, cell, self.settings, time.perf_counter() - t0, self.name)

    def _run_memory(self, cell: Cell) -> None:
        lm = self.load()
        plan = self.resolve(cell)
        drop = list(plan.drop)
        spec = merge_spec(drop) if is_merge(plan) else format_indices(drop)
        model_args = {"pretrained": self.settings.model, "drop": spec, "dtype": self.settings.dtype}
        print(
            f"\nsweep: cell {cell.name}: removing {format_indices(drop)} ({len(drop)} of {self.num_layers})",
            flush=True,
        )
        saved = getattr(lm, "drop", ()), getattr(lm, "plan", None)
        with publish_dir(self.out, cell) as folder:
            # a collapse merges the removed layers into their neighbours for the cell, then restores them
            with collapsed(lm.model, drop) if is_merge(plan) else nullcontext(), layer_subset(lm.model, drop):
                lm.drop, lm.plan = tuple(drop), plan  # what pruned-hf's own provenance reports
                try:
                    self._evaluate(lm, plan, cell, model_args, folder)
                finally:
                    lm.drop, lm.plan = saved
            if self.settings.token_agreement:
                self._agreement.write(lm, drop, folder)
            write_json(
                folder / PLAN_FILE, plan.to_dict(), what="cell plan"
            )  # the full record, read by its healed cells

    def _run_healed(self, cell: Cell, pruned: PruningPlan | None) -> None:
        s = self.settings
        pruned = pruned or self.parent_plan(cell)
        self.release()  # no base model held while training
        ckpt = self.out / CHECKPOINTS / cell.name
        print(f"\nsweep: cell {cell.name}: healing {pruned.drop_text} with {cell.recipe!r} -> {ckpt}", flush=True)
        spec = merge_spec(pruned.drop) if is_merge(pruned) else pruned.drop_text
        _heal_checkpoint(s, cell, spec, ckpt, self.progress)
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
            with publish_dir(self.out, cell) as folder:
                self._evaluate(lm, plan, cell, model_args, folder)
        finally:
            del lm
            gc.collect()


def run_cell(settings: SweepSettings, cell: Cell, out: str | Path, lm: Any = None) -> CellResult:
    """Evaluate one cell of the sweep ``settings`` into the sweep folder ``out`` and publish it atomically.

    With ``lm`` (a loaded ``PrunedHFLM`` of the unpruned parent) the cell's layers are swapped out
    of that model in place and restored; without it, what the cell needs is loaded (and freed).
    A cell already published (by another writer) is left as it is. Returns the published cell."""
    return CellRunner(settings, out, lm=lm).run(cell)
