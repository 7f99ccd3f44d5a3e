"""What pruning buys reaches the card and the report: both read a `lmeval-prune bench` result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_model
from test_report import binary, degrade, write_run

from lmeval_layerprune.core.layout import BENCH_FILE, TRADEOFF_PLOT_FILE
from lmeval_layerprune.report.plots import pareto_front
from lmeval_layerprune.report.write import write_report
from lmeval_layerprune.speed.bench import bench_model
from lmeval_layerprune.speed.bench_output import write_bench
from lmeval_layerprune.speed.bench_result import BenchWorkload, load_bench

WORKLOAD = BenchWorkload(batch_sizes=(1,), prompt_len=8, new_tokens=3, rounds=2, warmup=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pareto_front_by_hand() -> None:
    # (speed, retention): (1, 1) unpruned; (1.2, 0.9) and (1.5, 0.5) trade off; (1.1, 0.8) is beaten by (1.2, 0.9)
    pts = [(1.0, 1.0), (1.1, 0.8), (1.2, 0.9), (1.5, 0.5)]
    assert pareto_front(pts) == [0, 2, 3]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # equal points beat neither


def test_report_reads_the_bench_beside_a_sweep(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    base = {"cls_a": binary(rng, 60, 0.8), "gen_a": binary(rng, 60, 0.7)}
    write_run(tmp_path / "runs" / "base", base, num_layers=6)
    for k in (1, 2):
        vals = {t: degrade(rng, v, 0.9 - 0.3 * k) for t, v in base.items()}
        write_run(tmp_path / "runs" / f"last-{k}", vals, drop=list(range(6 - k, 6)), num_layers=6)
    record = bench_model(
        tiny_model("llama"), [("last:1", (5,)), ("last:2", (4, 5))], WORKLOAD, model_name="tiny", progress=False
    )
    write_bench(record, tmp_path / "runs")  # found beside the runs without --bench
    bench = load_bench(tmp_path / "runs")

    report, out = write_report([tmp_path / "runs"], tmp_path / "rep", iters=200)
    by_label = {i.label: i for i in report.infos}
    for label, drop in (("last:1/6", (5,)), ("last:2/6", (4, 5))):
        assert by_label[label].extras["speedup"] == pytest.approx(bench.variant(drop).gain("decode_tps", 1))
    assert by_label["unpruned"].extras["speedup"] == 1.0
    assert (out / TRADEOFF_PLOT_FILE).stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "decode speed-up" in text and TRADEOFF_PLOT_FILE in text
    assert json.loads((out / "report.json").read_text())  # extras serialise


def test_card_shows_the_measured_speedup_unless_overridden(tmp_path: Path, llama_dir: Path) -> None:
    from lmeval_layerprune.checkpoint.load import load_pruned_model
    from lmeval_layerprune.hub import render

    ckpt = tmp_path / "ckpt"
    load_pruned_model(str(llama_dir), "2-3").save_pretrained(ckpt)
    record = bench_model(tiny_model("llama"), [("2-3", (2, 3))], WORKLOAD, model_name="tiny", progress=False)
    write_bench(record, ckpt)  # what `slice --bench` leaves in the checkpoint
    gain = load_bench(ckpt).variant((2, 3)).gain("decode_tps", 1)

    text = str(render(ckpt, base_model="me/tiny", license="apache-2.0").card)
    assert f"**{gain:.2f}x**" in text and "measured by `lmeval-prune bench`" in text
    assert "KV cache per token" in text and "ideal" in text
    typed = str(render(ckpt, base_model="me/tiny", license="apache-2.0", speedup=1.5).card)
    assert "**1.50x**" in typed  # a typed --speedup stays an override

    elsewhere = tmp_path / "bench"
    (ckpt / BENCH_FILE).rename(tmp_path / BENCH_FILE)
    write_bench(record, elsewhere)
    assert "measured speed-up" not in str(render(ckpt, base_model="me/tiny", license="apache-2.0").card)
    assert f"**{gain:.2f}x**" in str(render(ckpt, base_model="me/tiny", license="apache-2.0", bench=elsewhere).card)


def test_report_and_bench_never_replace_files_they_did_not_write(tmp_path: Path) -> None:
    import numpy as np

    from lmeval_layerprune.errors import OutputError

    rng = np.random.default_rng(1)
    base = {"cls_a": binary(rng, 20, 0.8)}
    write_run(tmp_path / "runs" / "base", base)
    write_run(tmp_path / "runs" / "last-1", {"cls_a": degrade(rng, base["cls_a"], 0.8)}, drop=[9])
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "report.md").write_text("# my own report\n")
    with pytest.raises(OutputError, match="report.md"):
        write_report([tmp_path / "runs"], mine, iters=100, plots=False)
    assert (mine / "report.md").read_text() == "# my own report\n" and sorted(p.name for p in mine.iterdir()) == [
        "report.md"
    ]
    write_report([tmp_path / "runs"], tmp_path / "rep", iters=100, plots=False)
    write_report([tmp_path / "runs"], tmp_path / "rep", iters=100, plots=False)  # its own: replaced
    (mine / BENCH_FILE).write_text('{"mine": true}\n')
    record = bench_model(tiny_model("llama"), [("last:1", (5,))], WORKLOAD, model_name="tiny", progress=False)
    with pytest.raises(OutputError, match=BENCH_FILE):
        write_bench(record, mine)
    assert (mine / BENCH_FILE).read_text() == '{"mine": true}\n'
