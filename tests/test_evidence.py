"""The figures that README.md, docs/results.md and docs/results/*/README.md print agree, to the printed
digits, with the report.json they cite.

A table or paragraph that cites a report carries a marker on the line before it::

    <!-- checked: docs/results/sweep-smollm2/report.json -->

(the path relative to the repository root). Every table in these files that prints an interval
``v [lo, hi]`` must carry one. For a marked table every number of every row is checked; for a
marked paragraph or list, every interval, p-value and share of the loss won back, against any
record of the report. A table's number is checked against the records of the runs its row names
(run labels from the report; a shorter label covers the runs whose labels start with it, e.g.
``last-0.1`` its healed runs), restricted to the task type its column names: retentions, gaps,
recovery changes (p, share won back), recipe contrasts (either order), scores, layers removed.
Nothing here is specific to one report: after a report is regenerated, the test fails exactly
where a printed figure no longer matches it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "results.md", *sorted((ROOT / "docs" / "results").glob("*/README.md"))]
MARKER = re.compile(r"<!--\s*checked:\s*(\S+)\s*-->")
NUM = r"[+\-−]?\d+(?:\.\d+)?"
TRIPLE = re.compile(rf"({NUM})\s*\[({NUM}),\s*({NUM})\]")
P_VALUE = re.compile(r"\bp\s*(=|<|<=|≤)\s*(\d+(?:\.\d+)?)")
SHARE = re.compile(r"(-?\d+)%")
#: in prose only shares of the loss are checked ("73% of the loss"); "90% retention" is a threshold
PROSE_SHARE = re.compile(r"(-?\d+)% of the (?:loss|lost)")
LAYERS = re.compile(r"^\d+(?:-\d+)?(?:\s*[,+]\s*\d+(?:-\d+)?)*$")
COUNT = re.compile(r"^(\d+)\s*/\s*(\d+)$")
KINDS = {"classification": "likelihood", "likelihood": "likelihood", "generative": "generative", "gap": "gap"}
#: cost columns of a recovery table -> the key of a recovery record's ``cost``
COSTS = {
    "trainable parameters": "trainable_parameters",
    "training tokens": "training_tokens",
    "training time": "train_seconds",
}
COST = re.compile(r"^([\d,]+(?:\.\d+)?)\s*(M|k|min|s)?(?:\s*\((\d+(?:\.\d+)?)%\))?$")


@dataclass
class Fact:
    """Numbers of the report about some runs (labels), for one column kind (None: any)."""

    labels: frozenset[str]
    kind: str | None
    triples: list[tuple[float, float, float]] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    p: list[tuple[float, bool]] = field(default_factory=list)  # (p, below resolution)
    shares: list[float] = field(default_factory=list)
    layers: list[set[int] | str] = field(default_factory=list)


def _iv(d: dict | None) -> tuple[float, float, float] | None:
    if not d or d.get("value") is None or d.get("low") is None:
        return None
    return d["value"], d["low"], d["high"]


def _p(record: dict) -> tuple[float, bool]:
    """(p, below) from a report record of either layout: ``p_below`` (with ``p`` the bound) or a bare
    ``p`` that is 0 when no resample crossed (reports before the resolution was recorded)."""
    p = record["p"]
    return (p, True) if record.get("p_below") or p == 0 else (p, False)


def facts_of(report: dict) -> list[Fact]:
    out = []
    for run in report["runs"]:
        labels = frozenset([run["label"]])
        n, removed = run.get("num_layers"), run.get("layers_removed")
        layers: list[set[int] | str] = [f"{removed} / {n}", f"{removed}/{n}", set(run.get("drop") or [])]
        out.append(Fact(labels, None, layers=layers, values=[removed or 0, n or 0]))
        for kind, t in run["types"].items():
            iv = _iv(t["retention"])
            out.append(Fact(labels, kind, triples=[iv] if iv else [], values=[t["retention"]["value"]]))
        gap = run.get("gap") or {}
        if gap:
            iv = _iv(gap["gap"])
            out.append(Fact(labels, "gap", triples=[iv] if iv else [], values=[iv[0]] if iv else [], p=[_p(gap)]))
        for task in run["tasks"].values():
            out.append(Fact(labels, task["kind"], values=[task["score"], task["base"]]))
    for r in report.get("recovery", []):
        iv = _iv(r["change"])
        share = [100 * r["share_recovered"]] if r.get("share_recovered") is not None else []
        before, after = r["before"]["value"], r["after"]["value"]
        fact = Fact(frozenset([r["healed"], r["unhealed"]]), r["kind"], [iv] if iv else [], [before, after, iv[0]])
        fact.p, fact.shares = [_p(r)], share
        out.append(fact)
    for c in report.get("recipe_contrasts", []):
        v, lo, hi = _iv(c["difference"])
        fact = Fact(frozenset([c["first"], c["second"]]), c["kind"], [(v, lo, hi), (-v, -hi, -lo)], [v, -v])
        fact.p = [_p(c)]
        out.append(fact)
    return out


def _num(text: str) -> float:
    return float(text.replace("−", "-"))


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _same(printed: str, value: float) -> bool:
    """``printed`` is ``value`` rounded to the printed digits (either way at an exact half)."""
    d = _decimals(printed)
    return abs(_num(printed) - value) <= 0.5 * 10**-d + 1e-9


def labels_in(text: str, labels: list[str]) -> set[str]:
    """Run labels named in ``text`` (longest first, whole words, non-overlapping)."""
    found, rest = set(), text
    for label in sorted(labels, key=len, reverse=True):
        pattern = re.compile(rf"(?<![\w.-]){re.escape(label)}(?![\w.-]|-\w)")
        if pattern.search(rest):
            found.add(label)
            rest = pattern.sub(" ", rest)
    return found


def candidates(facts: list[Fact], named: set[str], kind: str | None) -> list[Fact]:
    """Facts about the runs ``named`` covers (a label of the fact is a named one or starts with it:
    ``last-0.1`` covers ``last-0.1-healed-...``); all facts when the row names no run."""
    out = []
    for f in facts:
        if named and not any(lbl == n or lbl.startswith(n + "-") for n in named for lbl in f.labels):
            continue
        if kind is not None and f.kind is not None and f.kind != kind:
            continue
        out.append(f)
    return out


@dataclass
class Block:
    source: str
    line: int
    report: Path | None
    lines: list[str]
    table: bool


def blocks(path: Path) -> list[Block]:
    """Tables (with their marker, if any) and marked paragraphs / lists, outside code fences."""
    text = path.read_text().splitlines()
    out, i, marker, fenced = [], 0, None, False
    while i < len(text):
        line = text[i]
        if line.startswith("```"):
            fenced = not fenced
            i += 1
            continue
        m = MARKER.search(line)
        if m and not fenced:
            marker = ROOT / m.group(1)
            i += 1
            continue
        if fenced or not line.strip():
            i += 1
            continue
        start, chunk = i, []
        while i < len(text) and text[i].strip() and not MARKER.search(text[i]) and not text[i].startswith("```"):
            chunk.append(text[i])
            i += 1
        table = chunk[0].startswith("|")
        if table or marker is not None:
            out.append(Block(f"{path.relative_to(ROOT)}:{start + 1}", start + 1, marker, chunk, table))
        marker = None
    return out


def check_block(block: Block) -> list[str]:
    report = json.loads(block.report.read_text())
    facts, labels = facts_of(report), [r["label"] for r in report["runs"]]
    resolution = 2 / report["bootstrap"]
    problems = []
    if block.table:
        rows = [line for line in block.lines if not re.fullmatch(r"\|[\s:|-]+\|?", line)]
    else:  # prose: one row per list item (or the whole paragraph), however its lines wrap
        rows = []
        for line in block.lines:
            if re.match(r"\s*(?:[-*]|\d+\.)\s", line) or not rows:
                rows.append(line)
            else:
                rows[-1] += " " + line.strip()
    header = [c.strip() for c in rows[0].strip("|").split("|")] if block.table else []
    for n, row in enumerate(rows[1:] if block.table else rows):
        named = labels_in(row, labels) if block.table else set()  # prose: a sentence may speak of every run
        cells = [c.strip() for c in row.strip("|").split("|")] if block.table else [row]
        for col, cell in enumerate(cells):
            title = header[col].lower() if block.table and col < len(header) else ""
            kind = next((k for word, k in KINDS.items() if word in title), None)
            where = f"{block.source} row {n + 1} ({cells[0][:40]!r})"
            cost = next((key for word, key in COSTS.items() if word in title), None)
            if cost is not None:
                problems += check_cost(cell, report, named, cost, where)
                continue
            found = candidates(facts, named, kind)
            problems += check_cell(cell, found, resolution, where, strict=block.table, labels=named)
    return problems


def check_cell(
    cell: str, facts: list[Fact], resolution: float, where: str, *, strict: bool, labels: set[str] = frozenset()
) -> list[str]:
    problems = []
    text = re.sub(r"\*\*|`", "", cell)
    for label in labels:
        text = text.replace(label, " ")
    for m in TRIPLE.finditer(text):
        v, lo, hi = m.groups()
        if not any(_same(v, a) and _same(lo, b) and _same(hi, c) for f in facts for a, b, c in f.triples):
            problems.append(f"{where}: {m.group(0)} is not in the report (near: {_near(facts, v)})")
    text = TRIPLE.sub(" ", text)
    for m in P_VALUE.finditer(text):
        op, value = m.groups()
        if _num(value) < resolution * (1 - 1e-9):
            problems.append(f"{where}: p {op} {value} is finer than the resamples resolve ({resolution:g})")
        elif op == "=" and not any(_same(value, p) and not below for f in facts for p, below in f.p):
            problems.append(f"{where}: p = {value} is not in the report ({sorted({p for f in facts for p, _ in f.p})})")
        elif op == "<" and not any(below and p <= _num(value) * (1 + 1e-9) for f in facts for p, below in f.p):
            problems.append(f"{where}: p < {value}: no p-value here is a bound at or below {value}")
        elif op in ("<=", "≤") and not any(p <= _num(value) * (1 + 1e-9) for f in facts for p, _ in f.p):
            problems.append(f"{where}: p {op} {value}: no p-value here is that small")
    text = P_VALUE.sub(" ", text)
    shares = SHARE if strict else PROSE_SHARE
    for m in shares.finditer(text):
        if not any(round(s) == int(m.group(1)) for f in facts for s in f.shares):
            problems.append(f"{where}: {m.group(0)} won back is not in the report")
    text = shares.sub(" ", text)
    if not strict:
        return problems
    bare = text.strip().removesuffix(", healed").strip()
    if LAYERS.match(bare) and "." not in bare:
        return (
            problems
            if any(_indices(bare) == lay for f in facts for lay in f.layers)
            else [f"{where}: layers {bare} are not the run's"]
        )
    if any(bare == lay for f in facts for lay in f.layers):
        return problems
    count = COUNT.match(text.strip())
    if count:
        return problems + [f"{where}: {text.strip()} layers is not in the report"]
    for m in re.finditer(NUM, text):
        if not any(_same(m.group(0), v) for f in facts for v in f.values):
            problems.append(f"{where}: {m.group(0)} is not in the report (cell {cell!r})")
    return problems


def check_cost(cell: str, report: dict, named: set[str], key: str, where: str) -> list[str]:
    """A cost cell (``2,198,016 (1.7%)``, ``35.4M``, ``8,192``, ``8.19k``, ``1.4 min``, ``51 s``) against the
    heal records of the runs its row names, to the printed digits (the share: of the model's parameters)."""
    m = COST.match(cell.replace("**", "").strip())
    if m is None:
        return [f"{where}: cost {cell!r} is not a number this check reads"]
    number, unit, share = m.groups()
    scale = {"M": 1e6, "k": 1e3, "min": 60.0}.get(unit or "", 1.0)
    for r in report.get("recovery", []):
        c = r.get("cost") or {}
        if r["healed"] not in named or c.get(key) is None:
            continue
        ok = _same(number.replace(",", ""), c[key] / scale)
        if share is not None:
            ok = ok and c.get("total_parameters") and _same(share, 100 * c[key] / c["total_parameters"])
        if ok:
            return []
    return [f"{where}: {cell} is not the {key} of {sorted(named)} in the report"]


def _indices(text: str) -> set[int]:
    out: set[int] = set()
    for part in re.split(r"\s*[,+]\s*", text):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def _near(facts: list[Fact], value: str) -> str:
    close = sorted((abs(a - _num(value)), (a, b, c)) for f in facts for a, b, c in f.triples)[:2]
    return ", ".join(f"{a:.4f} [{b:.4f}, {c:.4f}]" for _, (a, b, c) in close)


ALL = [b for path in DOCS for b in blocks(path)]


def test_every_table_with_intervals_cites_its_report() -> None:
    unmarked = [b.source for b in ALL if b.table and b.report is None and any(TRIPLE.search(x) for x in b.lines)]
    assert not unmarked, f"tables printing intervals without a '<!-- checked: PATH -->' marker: {unmarked}"
    assert all(b.report.is_file() for b in ALL if b.report is not None)
    assert len([b for b in ALL if b.report is not None]) >= 6  # the sweep, recovery and their README summaries


@pytest.mark.parametrize("block", [b for b in ALL if b.report is not None], ids=lambda b: b.source)
def test_printed_figures_equal_the_report(block: Block) -> None:
    assert check_block(block) == []


def test_the_check_catches_a_changed_figure(tmp_path: Path) -> None:
    """The checker is not vacuous: one digit changed in a real table, or an interval moved to another
    run's row, or a p below the resolution, is reported."""
    block = next(b for b in ALL if b.report is not None and b.table and "sweep-smollm2" in str(b.report))
    assert check_block(block) == []
    row = next(k for k, line in enumerate(block.lines) if TRIPLE.search(line) and k > 1)
    m = TRIPLE.search(block.lines[row])
    last = m.group(3)
    bumped = f"{_num(last) + 10 ** -_decimals(last):.{_decimals(last)}f}"
    changed = [*block.lines]
    changed[row] = changed[row][: m.start(3)] + bumped + changed[row][m.end(3) :]
    assert len(check_block(Block(block.source, block.line, block.report, changed, True))) == 1
    # two rows' intervals swapped: each is a real figure, of another run
    rows = [k for k, line in enumerate(block.lines) if TRIPLE.search(line) and k > 1][:2]
    a, b = (TRIPLE.search(block.lines[k]).group(0) for k in rows)
    swapped = [*block.lines]
    swapped[rows[0]] = swapped[rows[0]].replace(a, b, 1)
    swapped[rows[1]] = swapped[rows[1]].replace(b, a, 1)
    assert len(check_block(Block(block.source, block.line, block.report, swapped, True))) >= 2
    report = json.loads(block.report.read_text())
    fine = f"{2 / report['bootstrap'] / 10:.7f}"
    assert check_cell(f"p < {fine}", facts_of(report), 2 / report["bootstrap"], "x", strict=False)
