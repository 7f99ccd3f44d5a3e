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

The pieces: :mod:`~lmeval_layerprune.sweep.grid` (cells), :mod:`~lmeval_layerprune.sweep.settings`,
:mod:`~lmeval_layerprune.sweep.cell` (:func:`run_cell`: one cell, usable alone),
:mod:`~lmeval_layerprune.sweep.store` (complete cells, atomic publishing),
:mod:`~lmeval_layerprune.sweep.manifest` (``sweep.json`` rebuilt from the cell folders) and the
executors behind :mod:`~lmeval_layerprune.sweep.protocol`: in process (the default) or Ray workers.

A cell is written into a hidden sibling folder and renamed into place when complete, so a
killed sweep never leaves a half-written cell; restarted with the same command it evaluates
only the cells that are missing or damaged. Each cell's results record its plan (the resolved layers)
in ``config["layer_pruning"]`` and the cell in ``config["sweep"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmeval_layerprune.core.interrupt import keeping
from lmeval_layerprune.errors import SweepError
from lmeval_layerprune.heal.budget import shared_budget
from lmeval_layerprune.heal.recipe import load_recipe
from lmeval_layerprune.methods.registry import method_names
from lmeval_layerprune.sweep.cell import num_layers_of, task_manager
from lmeval_layerprune.sweep.executors import make_executor
from lmeval_layerprune.sweep.grid import Cell, layer_count, plan_grid
from lmeval_layerprune.sweep.manifest import ManifestWriter, open_out
from lmeval_layerprune.sweep.progress import GridProgress
from lmeval_layerprune.sweep.protocol import Executor, SweepJob
from lmeval_layerprune.sweep.settings import ExecutorSettings, SweepSettings
from lmeval_layerprune.sweep.store import check_cell, clear_partials, discard_cell


class Sweep:
    """Plans, runs and resumes one sweep folder (see the module docstring)."""

    def __init__(self, settings: SweepSettings, out: str | Path, progress: bool = True) -> None:
        self.settings = settings
        self.out = Path(out)
        self.progress = progress
        if settings.recipe is None and settings.heal_cells:
            raise SweepError("healed cells need a recovery recipe (--recipe)")
        self.num_layers = num_layers_of(settings.model)
        heal = list(settings.heal_cells) if settings.recipe else []
        recipes = settings.recipes
        if heal:  # a typo in a recipe or an override, or unequal budgets, fail now, not after the in-memory cells
            shared_budget([load_recipe(rec, settings.heal_overrides) for rec in recipes])
        self.cells = plan_grid(settings.methods, settings.ratios, self.num_layers, heal, recipes or (None,))

    def describe(self) -> list[str]:
        """One line per ratio: how many layers it removes."""
        lines = []
        for r in self.settings.ratios:
            k = layer_count(r, self.num_layers)
            lines.append(f"ratio {r:g}: remove {k} of {self.num_layers} layers (keep {self.num_layers - k})")
        return lines

    def pending(self, announce: bool = False) -> list[Cell]:
        """The cells that are not complete in the folder; a damaged one is moved away (one line each)."""
        s = self.settings
        out = []
        for cell in self.cells:
            check = check_cell(self.out, cell, s.tasks, bool(s.token_agreement))
            if check.complete:
                continue
            if check.problem is not None:
                if announce:
                    print(f"sweep: cell {cell.name} is incomplete ({check.problem}); running it again", flush=True)
                    discard_cell(self.out, cell)
            out.append(cell)
        return out

    def searches(self, pending: list[Cell]) -> dict[str, int]:
        """Greedy method -> the grid's largest count of it, for the methods with pending cells."""
        greedy = method_names("greedy")
        methods = dict.fromkeys(c.method for c in pending if c.method in greedy)
        return {m: max(c.layers for c in self.cells if c.method == m) for m in methods}

    def run(self, executor: Executor | ExecutorSettings | None = None) -> dict[str, Any]:
        """Evaluate every missing cell with ``executor`` (default: in process); returns the manifest
        (cell name -> plan and results file), rebuilt from the cell folders."""
        if not hasattr(executor, "run"):
            executor = make_executor(executor)  # type: ignore[arg-type]
        open_out(self.out, self.settings)
        clear_partials(self.out)
        writer = ManifestWriter(self.out, self.settings)
        pending = self.pending(announce=True)
        done = len(self.cells) - len(pending)
        for line in self.describe():
            print(f"sweep: {line}", flush=True)
        print(f"sweep: {len(self.cells)} cells, {done} already done, {len(pending)} to run -> {self.out}", flush=True)
        if not pending:
            return writer.rebuild()
        job = SweepJob(
            self.settings,
            self.out,
            self.num_layers,
            searches=self.searches(pending),
            inner_progress=self.progress,
            task_manager=task_manager(self.settings),  # unknown tasks fail before any work
        )
        bar = GridProgress(len(pending), enabled=self.progress)
        results = executor.run(job, pending, bar)  # type: ignore[union-attr]
        finished = [done]

        def kept() -> str:  # read only when an interrupt arrives
            return (
                f"{finished[0]} of {len(self.cells)} cells complete in {self.out} (a cell is published only once "
                "complete: the cells that were running are not kept)"
            )

        try:
            with keeping(kept, resume="rerun the same command to run the rest"):
                for _ in results:
                    finished[0] += 1
                    writer.rebuild()
        finally:
            getattr(results, "close", lambda: None)()  # an executor's session (Ray) ends here, not at collection
            bar.close()
            clear_partials(self.out)
        reruns = getattr(executor, "reruns", None)
        if reruns:
            print(f"sweep: {len(reruns)} cell run(s) repeated after a worker died or timed out: {', '.join(reruns)}")
        return writer.rebuild()


def run_sweep(
    settings: SweepSettings,
    out: str | Path,
    progress: bool = True,
    executor: Executor | ExecutorSettings | None = None,
) -> dict[str, Any]:
    """Run (or finish) the sweep ``settings`` describes into ``out``; see :class:`Sweep`.

    ``executor``: where the cells run (an :class:`ExecutorSettings`, or an executor); default in process."""
    return Sweep(settings, out, progress=progress).run(executor)


__all__ = ["ExecutorSettings", "Sweep", "SweepSettings", "run_sweep"]  # the settings travel with the entry point
