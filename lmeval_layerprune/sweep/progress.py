"""One progress display for a whole grid: cells done / total, and what each worker is running."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from lmeval_layerprune.sweep.grid import Cell


class GridProgress:
    """A single bar over every cell of a run (``done/total``) whose postfix names each worker's cell;
    one line per finished cell (``[3/6] last-0.2 on w1 in 12.3 s``), printed above the bar."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.running: dict[str, str] = {}
        self.enabled = enabled
        self._bar: Any = tqdm(total=total, desc="sweep", unit="cell", disable=not enabled)

    def _refresh(self) -> None:
        self._bar.set_postfix_str(", ".join(f"{w}: {c}" for w, c in sorted(self.running.items())), refresh=True)

    def start(self, worker: str, cell: Cell) -> None:
        self.running[worker] = cell.name
        self._refresh()

    def note(self, text: str) -> None:
        """A line above the bar (or on stdout without one)."""
        if self.enabled:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def finish(self, worker: str, cell: Cell, seconds: float) -> None:
        self.running.pop(worker, None)
        self.done += 1
        self._bar.update(1)
        self._refresh()
        self.note(f"sweep: [{self.done}/{self.total}] {cell.name} on {worker} in {seconds:.1f} s")

    def idle(self, worker: str) -> None:
        self.running.pop(worker, None)
        self._refresh()

    def close(self) -> None:
        self._bar.close()
