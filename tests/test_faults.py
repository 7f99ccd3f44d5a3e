"""Fault injection: kills at random points, corrupt and truncated files, outputs pointing at inputs.

Every test checks the same two things: the command ends with one clear message (no traceback) or
the right result, and nothing the user owns is lost or changed. The module keeps a tally (kills
tried, malformed inputs tried, clear errors, files lost) and prints it at the end (``pytest -s``);
docs/reliability.md quotes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, save_tiny
from test_report import binary, degrade, write_run
from test_selfgen import save_chat_tiny

from lmeval_layerprune.core.guard import guard_output, replace_atomically
from lmeval_layerprune.core.layout import (
    BENCH_FILE,
    BENCH_PLOT,
    CARD_FILE,
    PLAN_FILE,
    PLOT_FILE,
    REPORT_FILE,
    REPORT_JSON,
    SELECTION_PLOT,
    SPECULATE_FILE,
    SPECULATE_PLOT,
    TASK_PLOT_FILE,
    WRITTEN_MANIFEST,
)
from lmeval_layerprune.errors import OutputError

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
TALLY = {"kills": 0, "kills_recovered": 0, "inputs": 0, "clear_errors": 0, "files_lost": 0}
TINY_HEAL = ["dtype=float32", "selfgen.n=12", "selfgen.max_new_tokens=8", "selfgen.temperature=0",
             "selfgen.filters=[]", "sft.per_device_train_batch_size=4", "sft.warmup_steps=0", "sft.max_length=128",
             "sft.gradient_checkpointing=false", "sft.learning_rate=0.01", "lora.r=4"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    print(f"\nFAULT TALLY: {json.dumps(TALLY)}")


pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(*roots: Path) -> dict[str, str]:
    """path -> sha256 of every file under ``roots`` (what 'nothing changed' is checked against)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def lost(before: dict[str, str], *roots: Path) -> int:
    after = snapshot(*roots)
    n = sum(1 for k, v in before.items() if after.get(k) != v)
    TALLY["files_lost"] += n
    return n


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Run ``lmeval-prune`` in this process (imports paid once); returns (exit code, stderr)."""
    from lmeval_layerprune.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def clear(code: int, err: str, *needles: str) -> None:
    """A clear refusal: exit 2, one line, every needle in it, no traceback."""
    TALLY["inputs"] += 1
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("lmeval-prune: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    TALLY["clear_errors"] += 1


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> Path:
    return save_chat_tiny(tmp_path_factory.mktemp("chat"))


@pytest.fixture(scope="module")
def responses(chat, tmp_path_factory) -> Path:
    from lmeval_layerprune.heal.selfgen import (
        FilterSettings,
        GenerationSettings,
        SelfgenSettings,
        generate_responses,
        load_prompts,
    )

    out = tmp_path_factory.mktemp("sg") / "responses.jsonl"
    settings = SelfgenSettings(str(chat), out, source="bundled", progress=False,
                               generation=GenerationSettings(max_new_tokens=8, temperature=0),
                               filters=FilterSettings(filters=()))  # fmt: skip
    generate_responses(settings, load_prompts("bundled", n=12))
    return out


# ----------------------------------------------------------------- the guard


def test_guard_refuses_outputs_at_inside_or_around_inputs_and_changes_nothing(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    before = snapshot(tmp_path)
    for out, overwrite, needle in [
        (src, False, "is the input"),
        (src, True, "is the input"),
        (src / "sub", True, "lies inside the input"),
        (tmp_path, True, "contains the input"),
        (tmp_path / "mine", True, "did not write"),
    ]:
        TALLY["inputs"] += 1
        with pytest.raises(OutputError, match=needle):
            guard_output(out, inputs=[str(src)], overwrite=overwrite, owned="layer_pruning.json")
        TALLY["clear_errors"] += 1
    os.symlink(src, tmp_path / "link")  # a link to an input is the input
    with pytest.raises(OutputError, match="is the input"):
        guard_output(tmp_path / "link", inputs=[str(src)])
    (tmp_path / "link").unlink()
    guard_output(tmp_path / "new", inputs=[str(src), "org/hub-id", None], overwrite=True)  # nothing in the way
    assert lost(before, tmp_path) == 0 and snapshot(tmp_path) == before


_SWAP_SCRIPT = """
import sys, time
from pathlib import Path
from lmeval_layerprune.core.guard import replace_atomically
target, gen = Path(sys.argv[1]), sys.argv[2]
while True:
    with replace_atomically(target) as tmp:
        tmp.mkdir()
        for i in range(40):
            (tmp / f"part-{i}").write_text(gen * 2000)
        (tmp / "DONE").write_text(gen)
    print("swapped", flush=True)
"""


def _complete(folder: Path) -> str | None:
    """The generation a folder holds if it is complete and of one generation, else None."""
    if not (folder / "DONE").is_file():
        return None
    gen = (folder / "DONE").read_text()
    parts = sorted(folder.glob("part-*"))
    ok = len(parts) == 40 and all(p.read_text() == gen * 2000 for p in parts)
    return gen if ok else None


def test_atomic_replacement_survives_kills_at_random_points(tmp_path):
    """SIGKILL a writer that keeps replacing a folder: the folder is always one complete generation."""
    target = tmp_path / "out"
    with replace_atomically(target) as tmp:
        tmp.mkdir()
        for i in range(40):
            (tmp / f"part-{i}").write_text("A" * 2000)
        (tmp / "DONE").write_text("A")
    rng = random.Random(0)
    script = tmp_path / "swap.py"
    script.write_text(_SWAP_SCRIPT)
    for k in range(12):
        gen = "BCDEFGHIJKLMN"[k]
        proc = subprocess.Popen([sys.executable, str(script), str(target), gen], env=ENV, stdout=subprocess.PIPE)
        proc.stdout.readline()  # one full swap done: the kill now lands anywhere in the next ones
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        TALLY["kills"] += 1
        from lmeval_layerprune.core.guard import recover

        recover(target)  # what the next writer does first (a no-op where renameat2 swapped)
        got = _complete(target)
        assert got in ("A", *"BCDEFGHIJKLMN"[: k + 1]), sorted(p.name for p in target.iterdir())
        TALLY["kills_recovered"] += 1
    with replace_atomically(target) as tmp:  # the next writer also removes the dead writers' leftovers
        tmp.mkdir()
        (tmp / "DONE").write_text("Z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "swap.py"]


@pytest.mark.slow
def test_slice_overwrite_killed_at_random_points_leaves_old_or_new(tmp_path):
    from lmeval_layerprune.checkpoint.materialize import materialize
    from lmeval_layerprune.core.layout import PLAN_FILE

    model = save_tiny("llama", tmp_path / "tiny")
    out = materialize(str(model), "1", tmp_path / "out")
    cmd = [sys.executable, "-m", "lmeval_layerprune.cli", "slice", str(model), "--drop", "2", "--out", str(out),
           "--overwrite"]  # fmt: skip
    t0 = time.time()
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    full = time.time() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    rng = random.Random(1)
    for drop in ("3", "4", "1"):
        cmd[5] = drop
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.0) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        TALLY["kills"] += 1
        plan = json.loads((out / PLAN_FILE).read_text())  # always a complete, verified checkpoint
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(out)
        assert m.config.num_hidden_layers == 5 and plan["drop"] in ([1], [2], [3], [4])
        TALLY["kills_recovered"] += 1


# ------------------------------------------------------------ selfgen


def test_selfgen_sampled_resume_equals_an_uninterrupted_run(chat, tmp_path):
    """temperature 0.9: a run killed mid-way and resumed (with another batch size) equals an uninterrupted one."""
    from lmeval_layerprune.heal.selfgen import (
        GenerationSettings,
        SelfgenSettings,
        generate_responses,
        load_prompts,
        read_records,
    )

    prompts = load_prompts("bundled", n=16)
    whole = tmp_path / "whole.jsonl"
    gen = GenerationSettings(max_new_tokens=10, temperature=0.9, seed=5, batch_size=4)
    generate_responses(SelfgenSettings(str(chat), whole, generation=gen, source="bundled", progress=False), prompts)
    again = tmp_path / "again.jsonl"
    generate_responses(SelfgenSettings(str(chat), again, generation=gen, source="bundled", progress=False), prompts)
    assert [r["response"] for r in read_records(whole)] == [r["response"] for r in read_records(again)]

    out = tmp_path / "killed.jsonl"
    args = ["selfgen", "--teacher", str(chat), "--n", "16", "--out", str(out), "--max-new-tokens", "10",
            "--temperature", "0.9", "--seed", "5", "--batch-size", "4"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "lmeval_layerprune.cli", *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 4):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    TALLY["kills"] += 1
    with open(out, "ab") as fh:
        fh.write(
            b'{"id": "bundled-0',
        )  # a write cut short
    # resumed with another batch size: sampling is per item, so batches do not matter
    resumed = GenerationSettings(max_new_tokens=10, temperature=0.9, seed=5, batch_size=3)
    generate_responses(SelfgenSettings(str(chat), out, generation=resumed, source="bundled", progress=False), prompts)
    want = {r["id"]: r["response"] for r in read_records(whole)}
    got = {r["id"]: r["response"] for r in read_records(out)}
    assert got == want
    TALLY["kills_recovered"] += 1


def test_selfgen_never_repairs_or_appends_to_a_file_that_is_not_its_own(chat, tmp_path, capsys):
    users = tmp_path / "mine.jsonl"
    users.write_bytes(b'{"question": "a"}\n{"question": "b"}')  # the user's file: no trailing newline
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name a colour"}\n{"prompt": "Name a fruit"}\n')
    before = snapshot(tmp_path)
    base = ["selfgen", "--teacher", str(chat), "--n", "2", "--max-new-tokens", "2", "--temperature", "0"]
    clear(*cli(capsys, *base, "--out", str(users)), str(users), "not a selfgen output")
    clear(*cli(capsys, *base, "--prompts", str(prompts), "--out", str(prompts)), "is the input")
    clear(*cli(capsys, *base, "--out", str(chat)), "is the input")  # the teacher's own folder
    assert lost(before, tmp_path) == 0

    out = tmp_path / "r.jsonl"
    assert cli(capsys, *base, "--out", str(out))[0] == 0
    with open(out, "ab") as fh:
        fh.write(b'{"id": "bundled-0')  # a kill mid-write
    before = snapshot(tmp_path)
    # other settings: refused, naming them; the half-written line is NOT cut (the run is not proven ours)
    code, err = cli(capsys, *base[:-1], "0.5", "--out", str(out))
    clear(code, err, "generation.temperature: 0.0 -> 0.5", "rerun with the same settings")
    assert lost(before, tmp_path) == 0


def test_encoder_only_teacher_is_refused_up_front(tmp_path, capsys):
    from conftest import tiny_tokenizer
    from transformers import BertConfig, BertForMaskedLM

    bert = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(bert)  # fmt: skip
    tiny_tokenizer().save_pretrained(bert)
    code, err = cli(capsys, "selfgen", "--teacher", str(bert), "--n", "2", "--out", str(tmp_path / "o.jsonl"))
    clear(code, err, "'bert'", "cannot generate text")
    assert not (tmp_path / "o.jsonl").exists()
    code, err = cli(capsys, "heal", "--recipe", "selfgen-lora", "--base", str(bert), "--drop", "1",
                    "--out", str(tmp_path / "h"))  # fmt: skip
    clear(code, err, "cannot generate text")
    assert not (tmp_path / "h").exists()


# ---------------------------------------------------------------- heal


def test_heal_refuses_outputs_over_its_inputs_before_deleting_anything(chat, responses, tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data = data_dir / "responses.jsonl"
    data.write_bytes(responses.read_bytes())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = snapshot(chat, data_dir, mine)
    h = ["heal", "--recipe", "selfgen-lora", "--drop", "2-3", "--data", str(data), *TINY_HEAL]
    clear(*cli(capsys, *h, "--base", str(chat), "--out", str(chat), "--overwrite"), "is the input")
    clear(*cli(capsys, *h, "--base", str(chat), "--out", str(data_dir), "--overwrite"), "contains the input")
    clear(*cli(capsys, *h, "--base", str(chat), "--out", str(mine), "--overwrite"), "did not write")
    clear(*cli(capsys, *h, "--base", str(chat), "--out", str(mine)), "not a heal run")
    assert lost(before, chat, data_dir, mine) == 0 and snapshot(chat, data_dir, mine) == before


def test_heal_checks_everything_before_generating(chat, tmp_path, capsys):
    out = tmp_path / "o"
    h = ["heal", "--recipe", "selfgen-lora", "--base", str(chat), "--out", str(out), "--data", "bundled"]
    cases = [
        (["--drop", "2-9"], [], "out of range"),
        (["--drop", "0-5"], [], "every layer"),
        (["--drop", "2"], ["sft.learning_rate=abc"], "sft.learning_rate = 'abc'"),
        (["--drop", "2"], ["lora.r=two"], "expected an integer"),
        (["--drop", "2"], ["sft.lr_scheduler_type=cosinus"], "expected one of"),
        (["--drop", "2", "--data", str(tmp_path / "missing.jsonl")], [], "does not exist"),
        (["--drop", "2", "--min-examples", "-1"], [], "--min-examples"),
    ]
    for opts, overrides, needle in cases:
        t0 = time.time()
        clear(*cli(capsys, *h, *opts, *TINY_HEAL, *overrides), needle)
        assert time.time() - t0 < 30  # no generation, no training
        assert not out.exists()  # no state written: the corrected rerun is never blocked
    h = [*h, *TINY_HEAL]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    clear(*cli(capsys, *h[:2], str(empty), *h[3:], "--drop", "2"), "is empty")
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    clear(*cli(capsys, *h[:2], str(garbage), *h[3:], "--drop", "2"), str(garbage))


def test_heal_announces_survivors_and_refuses_too_few(chat, tmp_path, capsys):
    out = tmp_path / "o"
    h = ["heal", "--recipe", "selfgen-lora", "--base", str(chat), "--out", str(out), "--data", "bundled",
         "--drop", "2", *TINY_HEAL, "selfgen.n=6", "sft.max_steps=1", "sft.warmup_steps=3"]  # fmt: skip
    code, err = cli(capsys, *h)
    clear(code, err, "only 6 training examples survived (6 responses, none filtered)", "--min-examples 6")
    assert "warmup_steps=3 is not below sft.max_steps=1" in err
    assert (out / "selfgen_responses.jsonl").is_file()  # the responses are kept for a rerun


def test_heal_resume_skips_a_damaged_newest_checkpoint(chat, responses, tmp_path, capsys):
    from transformers import TrainerCallback

    from lmeval_layerprune.heal.run import HealSettings, heal

    class StopAfter4(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 4:
                raise KeyboardInterrupt

    out = tmp_path / "o"
    kw = dict(drop="2-3", data=str(responses), progress=False,
              overrides=[*TINY_HEAL, "sft.max_steps=4", "sft.save_steps=2", "sft.save_total_limit=5"])  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        heal(HealSettings("selfgen-lora", str(chat), out, callbacks=[StopAfter4()], **kw))
    TALLY["kills"] += 1
    newest = out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as a full disk would leave it
    capsys.readouterr()
    heal(HealSettings("selfgen-lora", str(chat), out, **kw))
    printed = capsys.readouterr().out
    assert "checkpoint-4 is damaged" in printed and f"resuming from {out / 'checkpoints' / 'checkpoint-2'}" in printed
    assert json.loads((out / "layer_pruning.json").read_text())["recovery"]["steps"] == 4
    TALLY["kills_recovered"] += 1


# ------------------------------------------------------- corrupt inputs


def test_corrupt_and_truncated_files_are_named(tmp_path, capsys):
    model = save_tiny("llama", tmp_path / "tiny")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    clear(*cli(capsys, "slice", str(model), "--drop", "1", "--out", str(tmp_path / "s")), str(weights), "truncated")
    clear(*cli(capsys, "selfgen", "--teacher", str(model), "--n", "1", "--out", str(tmp_path / "r.jsonl")),
          str(weights))  # fmt: skip
    clear(*cli(capsys, "heal", "--recipe", "selfgen-lora", "--base", str(model), "--drop", "1", "--out",
               str(tmp_path / "h"), "--data", "bundled"), str(weights))  # fmt: skip
    from lmeval_layerprune.errors import CorruptFileError
    from lmeval_layerprune.lmeval.hf import PrunedHFLM

    TALLY["inputs"] += 1
    with pytest.raises(CorruptFileError, match=str(weights)):
        PrunedHFLM(pretrained=str(model), drop="1", batch_size=1)
    TALLY["clear_errors"] += 1
    garbage = tmp_path / "prompts.jsonl"
    garbage.write_bytes(os.urandom(256))
    good = save_chat_tiny(tmp_path / "chat")
    clear(*cli(capsys, "selfgen", "--teacher", str(good), "--prompts", str(garbage), "--out",
               str(tmp_path / "g.jsonl")), str(garbage))  # fmt: skip
    bad_lines = tmp_path / "bad.jsonl"
    bad_lines.write_text('{"prompt": "a"}\n{"prompt": \n')
    clear(*cli(capsys, "selfgen", "--teacher", str(good), "--prompts", str(bad_lines), "--out",
               str(tmp_path / "b.jsonl")), str(bad_lines), "line 2")  # fmt: skip
    journal = tmp_path / "j.jsonl"
    journal.write_bytes(b"\x00\xff garbage\n")
    from lmeval_layerprune.core.journal import Journal
    from lmeval_layerprune.search.select import SelectionSettings

    TALLY["inputs"] += 1
    with pytest.raises(ValueError, match=str(journal)):
        Journal.open(journal, SelectionSettings(model="m"))
    TALLY["clear_errors"] += 1
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff binary")
    clear(*cli(capsys, "resolve", str(model), "--drop", f"plan:{plan_file}"), str(plan_file), "not text")


def test_pruned_hf_checks_its_model_args(llama_dir):
    from lmeval_layerprune.errors import ModelArgError
    from lmeval_layerprune.lmeval.hf import PrunedHFLM

    for kwargs, needle in [
        ({"dorp": "1"}, "did you mean 'drop'"),
        ({"drop": "1", "materialise": "true"}, "did you mean 'materialize'"),
        ({"drop": "1", "materialize": "maybe"}, "materialize='maybe' is not a boolean"),
        ({"drop": "1", "no_such_flag": 3}, "'no_such_flag' is not accepted"),
    ]:
        TALLY["inputs"] += 1
        with pytest.raises(ModelArgError, match=needle):
            PrunedHFLM(pretrained=str(llama_dir), batch_size=1, **kwargs)
        TALLY["clear_errors"] += 1


# ------------------------------------------------------ other writers


def test_card_cache_and_select_never_replace_what_they_did_not_write(llama_dir, tmp_path, monkeypatch, capsys):
    from lmeval_layerprune.checkpoint.cache import cache_dir, clear_cache
    from lmeval_layerprune.checkpoint.materialize import materialize
    from lmeval_layerprune.core.guard import CARD_MARKER

    ckpt = materialize(str(llama_dir), "1", tmp_path / "ckpt")
    readme = ckpt / "README.md"
    readme.write_text("# My own notes\nhand-written\n")
    before = snapshot(readme)
    card = ["card", str(ckpt), "--license", "mit", "--base-model", "me/tiny"]
    clear(*cli(capsys, *card), str(readme), "did not write", "README.hand.md")
    assert lost(before, readme) == 0
    readme.rename(ckpt / "README.hand.md")
    code, err = cli(capsys, *card)
    assert code == 0, err
    assert CARD_MARKER in readme.read_text()
    assert cli(capsys, *card)[0] == 0  # its own card it may replace
    clear(
        *cli(capsys, "push", str(ckpt), "--repo", "me/x", "--base-model", "me/tiny", "--dry-run", str(ckpt / "up")),
        "lies inside",
    )

    monkeypatch.setenv("LMEVAL_LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    root = cache_dir()
    (root / "not-an-entry").mkdir(parents=True)
    (root / "not-an-entry" / "keep.bin").write_bytes(b"x")
    entry = root / "0123456789abcdef"
    entry.mkdir()
    (entry / ".complete").write_text("1\n")
    clear_cache()
    assert (root / "not-an-entry" / "keep.bin").is_file() and not entry.exists()

    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "data"}')
    before = snapshot(notes)
    clear(*cli(capsys, "select", str(llama_dir), "--method", "last", "--n", "1", "--out", str(notes)), "did not write")
    assert lost(before, notes) == 0


# ============================================================ issue 27: every write safe
#
# Each case below is counted per fault class (held / tried) and printed as FAULT CASES at the end.

CASES: dict[str, list[int]] = {}


@pytest.fixture(scope="module", autouse=True)
def _cases():
    yield
    print(f"\nFAULT CASES (held, tried): {json.dumps({k: [h, t] for k, (h, t) in sorted(CASES.items())})}")


def case(cls: str, ok: bool, detail: object = "") -> None:
    """Count one fault case of class ``cls`` (held when ``ok``), then assert it."""
    held, tried = CASES.setdefault(cls, [0, 0])
    CASES[cls] = [held + bool(ok), tried + 1]
    assert ok, detail


def refused(cls: str, fn, *needles: str) -> str:
    """``fn()`` raises OutputError whose one-line message holds every needle (a held case of ``cls``)."""
    try:
        fn()
    except OutputError as e:
        msg = str(e)
        case(cls, "\n" not in msg and all(n in msg for n in needles), (needles, msg))
        return msg
    case(cls, False, f"not refused: {needles}")
    return ""


def test_write_output_never_writes_through_links_or_over_the_users_files(tmp_path):
    from lmeval_layerprune.core.layout import WRITTEN_MANIFEST
    from lmeval_layerprune.core.output import OutputFolder, write_output

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    thesis = elsewhere / "thesis.tex"
    thesis.write_text("years of work")
    (out / "notes.txt").write_text("the user's notes")
    (out / "report.md").write_text("the user's own report.md")
    os.symlink(thesis, out / "report.json")  # an output name that is a link to a document elsewhere
    before = snapshot(tmp_path)
    for overwrite in (False, True):
        refused("foreign file", lambda o=overwrite: write_output(out / "report.md", "new", overwrite=o),
                str(out / "report.md"), "--overwrite", "did not write")  # fmt: skip
        refused("symlink", lambda o=overwrite: write_output(out / "report.json", "{}", overwrite=o),
                str(out / "report.json"), "symbolic link")  # fmt: skip
        folder = OutputFolder(out, overwrite=overwrite, what="report folder")
        refused("foreign file", lambda f=folder: f.check("plot.png", "report.md"), "report.md", "did not write")
    case("foreign file", snapshot(tmp_path) == before and lost(before, tmp_path) == 0)

    # the tool's own file: replaced only with overwrite, and then only while unchanged
    mine = write_output(out / "summary.md", "v1")
    refused("own file without --overwrite", lambda: write_output(mine, "v2"), str(mine), "pass --overwrite")
    write_output(mine, "v2", overwrite=True)
    case("own file with --overwrite", mine.read_text() == "v2")
    mine.write_text("v2 with the user's edits")
    refused("edited own file", lambda: write_output(mine, "v3", overwrite=True), "changed since")
    case("edited own file", mine.read_text() == "v2 with the user's edits")

    # a hard link of our file in an archive: the rename gives our name a new file, the archive keeps its own
    fresh = write_output(out / "fresh.md", "archived text")
    archive = elsewhere / "archived.md"
    os.link(fresh, archive)
    write_output(fresh, "new text", overwrite=True)
    case("hard link", archive.read_text() == "archived text" and fresh.read_text() == "new text")

    # an output folder given as a symbolic link (to a user folder) is refused, never followed
    os.symlink(elsewhere, tmp_path / "link-out")
    refused("symlinked --out", lambda: OutputFolder(tmp_path / "link-out"), "symbolic link", str(elsewhere))
    os.symlink(out / "notes.txt", tmp_path / "link-file")
    refused("symlink", lambda: write_output(tmp_path / "link-file", "x", overwrite=True), "symbolic link")
    # a file named like our manifest that is not ours is never replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / WRITTEN_MANIFEST).write_text("the user's file of that name")
    refused("foreign manifest", lambda: write_output(other / "a.md", "x"), WRITTEN_MANIFEST, "not lmeval-prune's")
    case("foreign manifest", (other / WRITTEN_MANIFEST).read_text() == "the user's file of that name")
    # the user's files in the folder are exactly as they were
    case("folder untouched", lost({k: v for k, v in before.items() if "notes" in k or "thesis" in k}, tmp_path) == 0)
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    case("no temporary left", leftovers == [], leftovers)


def test_journals_are_never_appended_through_links(tmp_path):
    from lmeval_layerprune.core.journal import append_jsonl, repair_torn_tail

    archive = tmp_path / "archive.jsonl"
    archive.write_text('{"a": 1}\n{"b": ')
    linked = tmp_path / "j.jsonl"
    os.link(archive, linked)
    sym = tmp_path / "s.jsonl"
    os.symlink(archive, sym)
    before = snapshot(archive)
    refused("hard link", lambda: append_jsonl(linked, [{"c": 3}]), "hard links")
    refused("hard link", lambda: repair_torn_tail(linked), "hard links")
    refused("symlink", lambda: append_jsonl(sym, [{"c": 3}]), "symbolic link")
    refused("symlink", lambda: repair_torn_tail(sym), "symbolic link")
    case("hard link", lost(before, archive) == 0)


def test_plan_files_follow_the_rule(llama_dir, tmp_path, capsys):
    """select --out / PruningPlan.save: a link or a user's file in the way is refused; its own plan is replaced."""
    user = tmp_path / "mine" / "notes.json"
    user.parent.mkdir()
    user.write_text('{"my": "data"}')
    os.symlink(user, tmp_path / "plan.json")
    before = snapshot(user.parent)
    sel = ["select", str(llama_dir), "--method", "last", "--n", "1"]
    clear(*cli(capsys, *sel, "--out", str(tmp_path / "plan.json")), "symbolic link")
    clear(*cli(capsys, *sel, "--out", str(user)), "did not write")
    case("symlink", lost(before, user.parent) == 0)
    (tmp_path / "plan.json").unlink()
    code, err = cli(capsys, *sel, "--out", str(tmp_path / "plan.json"))
    again, err2 = cli(capsys, *sel, "--out", str(tmp_path / "plan.json"))  # its own plan: replaced
    case("own file with --overwrite", code == 0 and again == 0, err + err2)


def test_include_path_allows_a_new_file_beside_task_yamls_but_guards_inputs(llama_dir, tmp_path, capsys, monkeypatch):
    """issue 27 item 7: task YAMLs are read, a new plan beside them is not; a model folder stays off limits."""
    project = tmp_path / "project"
    tasks = project / "mytasks"
    tasks.mkdir(parents=True)
    (tasks / "mytask.yaml").write_text("task: mytask\ndataset_path: json\n")
    (tasks / "utils.py").write_text("def f(x):\n    return x\n")
    before = snapshot(tasks)
    sel = ["select", str(llama_dir), "--method", "last", "--n", "1"]
    code, err = cli(capsys, *sel, "--include-path", str(tasks), "--out", str(tasks / "plan.json"))
    case("include-path", code == 0 and (tasks / "plan.json").is_file(), err)
    code, err = cli(capsys, *sel, "--include-path", str(tasks), "--out", str(tasks / "plan.json"))  # rerun
    case("include-path", code == 0, err)
    monkeypatch.chdir(project)
    code, err = cli(capsys, *sel, "--include-path", ".", "--out", "plan.json")
    case("include-path", code == 0 and (project / "plan.json").is_file(), err)
    clear(*cli(capsys, *sel, "--include-path", str(tasks), "--out", str(tasks / "new.yaml")), "*.yaml")
    clear(*cli(capsys, *sel, "--include-path", str(tasks), "--out", str(tasks / "mytask.yaml")), "is named like")
    clear(*cli(capsys, *sel, "--include-path", str(tasks), "--out", str(tasks / "utils.py")), "*.py")
    clear(*cli(capsys, *sel, "--out", str(llama_dir / "plan.json")), "lies inside the input")  # a model folder
    case("include-path", lost(before, tasks) == 0)
    mbefore = snapshot(llama_dir)
    case("include-path", not (llama_dir / "plan.json").exists() and lost(mbefore, llama_dir) == 0)


def test_slice_overwrite_keeps_what_the_user_put_in_the_folder(llama_dir, tmp_path, capsys):
    from lmeval_layerprune.core.layout import PLAN_FILE, WRITTEN_MANIFEST

    out = tmp_path / "ckpt"
    sl = ["slice", str(llama_dir), "--out", str(out)]
    assert cli(capsys, *sl, "--drop", "1")[0] == 0
    listed = json.loads((out / WRITTEN_MANIFEST).read_text())["files"]
    case("manifest", {"config.json", "model.safetensors", PLAN_FILE} <= set(listed), listed)
    (out / "notes.txt").write_text("my notes")
    (out / "eval").mkdir()
    (out / "eval" / "results.json").write_text('{"acc": 0.5}')
    before = snapshot(out)
    code, err = cli(capsys, *sl, "--drop", "2", "--overwrite")
    clear(code, err, "notes.txt", "eval/", "move them out")
    case("slice --overwrite", lost(before, out) == 0 and snapshot(out) == before)
    # a file of the checkpoint the user edited is theirs now
    (out / "notes.txt").unlink()
    shutil.rmtree(out / "eval")
    (out / "mergekit.yaml").write_text("# my own merge\n")
    clear(*cli(capsys, *sl, "--drop", "2", "--overwrite"), "mergekit.yaml")
    case("slice --overwrite", (out / "mergekit.yaml").read_text() == "# my own merge\n")
    (out / "mergekit.yaml").unlink()
    # only our files (and a generated model card): replaced
    code, err = cli(capsys, "card", str(out), "--license", "mit", "--base-model", "me/tiny")
    assert code == 0, err
    code, err = cli(capsys, *sl, "--drop", "2", "--overwrite")
    case("slice --overwrite", code == 0 and json.loads((out / PLAN_FILE).read_text())["drop"] == [2], err)
    # --out as a symbolic link to a user folder: refused, nothing written there
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    os.symlink(mine, tmp_path / "link")
    mbefore = snapshot(mine)
    clear(*cli(capsys, *sl, "--drop", "1", "--out", str(tmp_path / "link"), "--overwrite"), "symbolic link")
    clear(*cli(capsys, *sl, "--drop", "1", "--out", str(tmp_path / "link")), "symbolic link")
    case("symlinked --out", lost(mbefore, mine) == 0 and sorted(os.listdir(mine)) == ["thesis.tex"])


def test_cache_clear_never_leaves_the_cache_folder(tmp_path, monkeypatch):
    from lmeval_layerprune.checkpoint.cache import cache_dir, cache_entries, clear_cache

    monkeypatch.setenv("LMEVAL_LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    root = cache_dir()
    root.mkdir(parents=True)
    user = tmp_path / "user-models"
    (user / "sub").mkdir(parents=True)
    (user / ".complete").write_text("looks like an entry\n")
    (user / "weights.bin").write_bytes(b"precious" * 100)
    (user / "sub" / "more.bin").write_bytes(b"more")
    os.symlink(user, root / "0123456789abcdef")  # poses as an entry
    os.symlink(user, root / ".tmp-1@nohost-x")  # poses as a dead temporary write
    os.symlink(user / "sub", root / "notes")  # some other link
    entry = root / "fedcba9876543210"
    entry.mkdir()
    (entry / ".complete").write_text("1\n")
    (entry / "model.safetensors").write_bytes(b"x" * 10)
    os.symlink(user / "weights.bin", entry / "linked.bin")  # a link inside an entry
    before = snapshot(user)
    case("cache clear", [e["key"] for e in cache_entries()] == ["fedcba9876543210"])
    freed = clear_cache()
    case("cache clear", lost(before, user) == 0 and snapshot(user) == before)
    case("cache clear", freed == 12 and not entry.exists(), freed)  # 10 + 2 marker bytes; the link: not counted
    left = sorted(p.name for p in root.iterdir())
    case("cache clear", left == [".fedcba9876543210.lock", "notes"], left)  # posing links removed as links


# ------------------------------------------------------- interrupts

_PPL = ["--method", "ppl", "--n", "3", "--calib-samples", "48", "--protect", ""]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmeval_layerprune.cli", *args], env=ENV, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not cond():
        time.sleep(0.02)


def one_line(cls: str, err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("lmeval-prune:")]
    case(cls, len(lines) == 1 and "Traceback" not in err and all(n in lines[0] for n in needles), err[-3000:])


def test_interrupts_end_in_one_line_with_exit_codes_130_and_143(llama_dir, tmp_path, capsys, monkeypatch):
    """In process (fast): KeyboardInterrupt and SIGTERM from inside a command, with and without a note."""
    from lmeval_layerprune.cli import slice as slice_cli
    from lmeval_layerprune.core.interrupt import keeping

    handler = signal.getsignal(signal.SIGTERM)

    def interrupted(*a, **k):
        with keeping(lambda: "3 of 8 cells kept in runs/x", resume="rerun the same command to resume"):
            raise KeyboardInterrupt

    def terminated(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler main() installs raises here
        time.sleep(5)

    sl = ["slice", str(llama_dir), "--drop", "1", "--out", str(tmp_path / "o")]
    for fn, code, needles in [
        (interrupted, 130, ["slice interrupted (SIGINT): 3 of 8 cells kept in runs/x; rerun the same command"]),
        (terminated, 143, ["slice interrupted (SIGTERM)"]),
    ]:
        monkeypatch.setattr(slice_cli, "materialize", fn)
        got = cli(capsys, *sl)
        case("SIGINT" if code == 130 else "SIGTERM", got[0] == code, got)
        one_line("SIGINT" if code == 130 else "SIGTERM", got[1], *needles)
    case("SIGTERM", signal.getsignal(signal.SIGTERM) == handler)  # main() restores the handlers


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_select_interrupted_says_what_was_kept_and_resumes(llama_dir, tmp_path, sig, code, name):
    out = tmp_path / "plan.json"
    journal = tmp_path / "plan.json.journal.jsonl"
    args = ["select", str(llama_dir), *_PPL, "--out", str(out)]
    proc = _start(args, tmp_path)
    _wait_for(lambda: journal.exists() and journal.read_bytes().count(b"\n") >= 2, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    TALLY["kills"] += 1
    case(name, proc.returncode == code, (proc.returncode, err[-2000:]))
    kept = sum(1 for line in journal.read_text().splitlines() if line.strip())
    one_line(name, err, f"select interrupted ({name}): {kept} candidate measurement", f"kept in {journal}",
             "rerun the same command to resume")  # fmt: skip
    case("interrupt notes", f": {kept} candidate measurement" in err)
    case(name, not out.exists())
    done = subprocess.run([sys.executable, "-m", "lmeval_layerprune.cli", *args], env=ENV, capture_output=True,
                          text=True, cwd=tmp_path)  # fmt: skip
    case(name, done.returncode == 0 and json.loads(out.read_text())["method"] == "ppl", done.stderr[-2000:])
    TALLY["kills_recovered"] += 1


@pytest.mark.slow
def test_slice_interrupted_publishes_nothing_and_debug_shows_the_traceback(llama_dir, tmp_path):
    # a tiny model's slice may finish between its temporary folder appearing and the signal: then the
    # checkpoint must be whole, and the kill is tried again on a new folder
    for attempt in range(6):
        out = tmp_path / f"ckpt{attempt}"
        proc = _start(["slice", str(llama_dir), "--drop", "1", "--out", str(out)], tmp_path)
        _wait_for(lambda: any(p.name.startswith(".tmp-") for p in tmp_path.iterdir()), proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            break
        assert (out / "config.json").is_file() and (out / PLAN_FILE).is_file(), sorted(p.name for p in out.iterdir())
    TALLY["kills"] += 1
    case("SIGTERM", proc.returncode == 143, (proc.returncode, err[-2000:]))
    one_line("SIGTERM", err, "slice interrupted (SIGTERM)", f"nothing was written: {out} is as it was")
    case("SIGTERM", not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")])
    TALLY["kills_recovered"] += 1
    proc = subprocess.Popen([sys.executable, "-m", "lmeval_layerprune.cli", "select", str(llama_dir), *_PPL,
                             "--out", str(tmp_path / "p.json")], env={**ENV, "LMEVAL_PRUNE_DEBUG": "1"},
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    _wait_for(lambda: (tmp_path / "p.json.journal.jsonl").exists(), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    case("SIGINT", proc.returncode == 130 and "Traceback" in err and "KeyboardInterrupt" in err, err[-2000:])


def test_interrupt_notes_nest(capsys):
    from lmeval_layerprune.core.interrupt import clear_notes, keeping, kept_note, note_kept

    clear_notes()
    note_kept("base", resume="rerun")
    done = [0]
    with keeping(lambda: f"{done[0]} of 8 cells kept", resume="rerun the same command to resume"):
        done[0] = 3
        case("notes", kept_note() == ("3 of 8 cells kept", "rerun the same command to resume"))
        with keeping(lambda: 1 / 0):  # a broken note never hides the interrupt
            case("notes", kept_note()[0] == "3 of 8 cells kept")
    case("notes", kept_note() == ("base", "rerun"))
    clear_notes()


# ------------------------------------------------- full disk, file-size limit


def _limited(limit: int):
    def preexec() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow
def test_slice_under_a_file_size_limit_is_one_line_and_publishes_nothing(llama_dir, tmp_path):
    out = tmp_path / "ckpt"
    before = snapshot(llama_dir)
    proc = subprocess.run([sys.executable, "-m", "lmeval_layerprune.cli", "slice", str(llama_dir), "--drop", "1",
                           "--out", str(out)], env=ENV, capture_output=True, text=True, cwd=tmp_path,
                          preexec_fn=_limited(256 * 1024))  # fmt: skip
    case("EFBIG", proc.returncode == 2, (proc.returncode, proc.stderr[-3000:]))
    one_line("EFBIG", proc.stderr, "file too large", str(out), "262.1 KB", "needed", "nothing half-written")
    case("EFBIG", "SafetensorError" not in proc.stderr and not out.exists())
    case("EFBIG", not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] and lost(before, llama_dir) == 0)


_WRITE_BIG = """
import sys
from lmeval_layerprune.core.output import write_output
from lmeval_layerprune.errors import DiskFullError
try:
    write_output(sys.argv[1], "x" * 300_000, overwrite=True)
except DiskFullError as e:
    print(e)
"""


def test_write_output_under_a_file_size_limit_keeps_the_old_file(tmp_path):
    from lmeval_layerprune.core.output import write_output

    target = write_output(tmp_path / "report.md", "the old report")
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _WRITE_BIG, str(target)], env=ENV, capture_output=True, text=True,
                          preexec_fn=_limited(64 * 1024))  # fmt: skip
    msg = proc.stdout.strip()
    case("EFBIG", msg.startswith("file too large: writing") and str(target) in msg and "300.0 KB needed" in msg, msg)
    case("EFBIG", snapshot(tmp_path) == before and lost(before, tmp_path) == 0)


def test_cli_names_the_path_of_a_full_disk_whatever_raised_it(llama_dir, tmp_path, capsys, monkeypatch):
    import errno

    from lmeval_layerprune.cli import slice as slice_cli

    class SafetensorError(Exception):  # what safetensors raises: no path in it
        pass

    out = tmp_path / "ckpt"
    for raised, needles in [
        (OSError(errno.ENOSPC, "No space left on device", str(out / "model.safetensors")),
         ["no space left on the device writing", str(out / "model.safetensors"), "free"]),
        (SafetensorError('Error while serializing: IoError(Os { code: 27, kind: FileTooLarge, message: "File too '
                         'large" })'), ["file too large: writing", str(out)]),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), ["disk quota exceeded", str(out)]),
    ]:  # fmt: skip

        def boom(*a, e=raised, **k):
            raise e

        monkeypatch.setattr(slice_cli, "materialize", boom)
        code, err = cli(capsys, "slice", str(llama_dir), "--drop", "1", "--out", str(out))
        clear(code, err, *needles)
        case("ENOSPC" if "space" in needles[0] else "EFBIG" if "large" in needles[0] else "EDQUOT", True)


# ======================================================= issue 27, phase 2: every command's files
#
# Each command that writes named files into a folder the user may keep other files in: a user's file of an
# output name is refused in one line naming it and --overwrite, and left as it was (with everything else in
# the folder); a symbolic link in place of an output name is refused, never written through; the command's
# own earlier output is replaced. Refusals come before any model is loaded, so these tests are quick.

_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # bytes `card --plot` copies (it never decodes them)


def _runs(root: Path) -> Path:
    """Two lm-eval runs (unpruned, one layer removed) as `report` reads them."""
    rng = np.random.default_rng(0)
    base = {"cls_a": binary(rng, 30, 0.8)}
    write_run(root / "base", base)
    write_run(root / "last-1", {"cls_a": degrade(rng, base["cls_a"], 0.9)}, drop=[9])
    return root


def _writers(llama_dir: Path, chat: Path, tmp: Path) -> list[tuple[str, list[str], Path, list[str]]]:
    """(command, argv, the folder it writes into, the names it writes there) for every writer but heal/slice."""
    from lmeval_layerprune.checkpoint.materialize import materialize

    runs, out = _runs(tmp / "runs"), tmp / "out"
    ckpt = materialize(str(llama_dir), "1", tmp / "ckpt")
    (tmp / "sel.png").write_bytes(_PNG)
    model = str(llama_dir)
    return [
        ("report", ["report", str(runs), "--out", str(out / "rep"), "--bootstrap", "200"], out / "rep",
         [REPORT_FILE, REPORT_JSON, PLOT_FILE, TASK_PLOT_FILE]),
        ("report (into the sweep folder)", ["report", str(runs), "--bootstrap", "200"], runs, [REPORT_FILE, PLOT_FILE]),
        ("analyze", ["analyze", model, "--out", str(out / "an"), "--views", "profiles"], out / "an",
         ["layer_profiles.csv", "layer_profiles.png"]),
        ("bench", ["bench", model, "--drop", "1", "--out", str(out / "bench")], out / "bench",
         [BENCH_FILE, BENCH_PLOT]),
        ("speculate", ["speculate", model, "--draft", "1", "--out", str(out / "spec")], out / "spec",
         [SPECULATE_FILE, SPECULATE_PLOT]),
        ("select --plot", ["select", model, "--method", "last", "--n", "1", "--out", str(out / "sel" / "plan.json"),
                           "--plot", str(out / "sel" / "plan.png")], out / "sel", ["plan.png"]),
        ("card", ["card", str(ckpt), "--license", "mit", "--base-model", "me/tiny", "--plot", str(tmp / "sel.png")],
         ckpt, [CARD_FILE, SELECTION_PLOT]),
        ("selfgen", ["selfgen", "--teacher", str(chat), "--prompts", "bundled", "--n", "4", "--out",
                     str(out / "sg" / "r.jsonl")], out / "sg", ["r.jsonl.meta.json"]),
    ]  # fmt: skip


def test_every_command_refuses_a_users_file_or_a_link_at_an_output_name(llama_dir, chat, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    doc = elsewhere / "thesis.tex"
    doc.write_text("years of work")
    for command, argv, folder, names in _writers(llama_dir, chat, tmp_path / "w"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "notes.txt").write_text("the user's notes")
        for name in names:
            target = folder / name
            target.write_bytes(f"the user's own {name}".encode())
            before = snapshot(folder, elsewhere)
            code, err = cli(capsys, *argv)
            clear(code, err, str(target), "did not write", "--overwrite")
            case("foreign file", lost(before, folder, elsewhere) == 0 and snapshot(folder, elsewhere) == before,
                 (command, name))  # fmt: skip
            target.unlink()
            os.symlink(doc, target)  # an output name that is a link to a document elsewhere
            before = snapshot(folder, elsewhere)
            code, err = cli(capsys, *argv)
            clear(code, err, str(target), "symbolic link")
            case("symlink", target.is_symlink() and lost(before, folder, elsewhere) == 0, (command, name))
            target.unlink()


def test_selfgen_never_writes_into_an_empty_file_it_did_not_start(chat, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    out.touch()  # the user's placeholder: empty, no OUT.meta.json of ours beside it
    before = snapshot(tmp_path)
    sg = ["selfgen", "--teacher", str(chat), "--prompts", "bundled", "--n", "2", "--out", str(out)]
    clear(*cli(capsys, *sg), str(out), "did not create", "--overwrite")
    case("foreign file", snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["r.jsonl"])
    (tmp_path / "r.jsonl.meta.json").write_text('{"tool": "lmeval-layerprune", "kind": "heal"}')  # not a selfgen one
    before = snapshot(tmp_path)
    clear(*cli(capsys, *sg), str(out), "did not create")
    case("foreign file", lost(before, tmp_path) == 0)


def test_report_into_the_current_folder_keeps_the_users_files(tmp_path, capsys, monkeypatch):
    runs = _runs(tmp_path / "runs")
    project = tmp_path / "project"
    project.mkdir()
    (project / "report.md").write_text("# my paper's report\n")
    (project / "notes.txt").write_text("notes")
    monkeypatch.chdir(project)
    before = snapshot(project)
    clear(*cli(capsys, "report", str(runs), "--out", ".", "--bootstrap", "200"), "report.md", "--overwrite")
    case("foreign file", lost(before, project) == 0 and snapshot(project) == before)
    (project / "report.md").rename(project / "my-report.md")
    before = snapshot(project)
    code, err = cli(capsys, "report", str(runs), "--out", ".", "--bootstrap", "200")
    again, err2 = cli(capsys, "report", str(runs), "--out", ".", "--bootstrap", "300")
    case("own output replaced", code == 0 and again == 0 and json.loads((project / "report.json").read_text())
         ["bootstrap"] == 300, err + err2)  # fmt: skip
    case("folder untouched", lost(before, project) == 0)


def _listed(folder: Path, *names: str) -> bool:
    """Every name is in the folder's manifest of written files, unchanged since."""
    from lmeval_layerprune.core.written import written_by_us

    return all(written_by_us(folder / n) for n in names)


def test_every_command_replaces_its_own_earlier_output_and_nothing_else(llama_dir, tmp_path, capsys):
    from conftest import tiny_model

    from lmeval_layerprune.checkpoint.materialize import materialize
    from lmeval_layerprune.report.analyze import AnalyzeSettings, analyze
    from lmeval_layerprune.speed.bench import bench_model
    from lmeval_layerprune.speed.bench_output import write_bench
    from lmeval_layerprune.speed.bench_result import BenchWorkload
    from lmeval_layerprune.speed.speculate_run import write_speculate

    runs = _runs(tmp_path / "runs")
    inputs = snapshot(runs)
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "notes.txt").write_text("mine")
    mine = snapshot(rep)
    for iters in (200, 300):  # --out, then into the sweep folder itself (no --out)
        code, err = cli(capsys, "report", str(runs), "--out", str(rep), "--bootstrap", str(iters))
        code2, err2 = cli(capsys, "report", str(runs), "--bootstrap", str(iters))
        case("own output replaced", code == code2 == 0 and json.loads((rep / REPORT_JSON).read_text())["bootstrap"]
             == iters and _listed(rep, REPORT_FILE, REPORT_JSON, PLOT_FILE), err + err2)  # fmt: skip
    case("folder untouched", lost(mine, rep) == 0 and lost(inputs, runs) == 0)  # lm-eval's files read, never written
    (rep / WRITTEN_MANIFEST).unlink()  # a report written before the manifest existed: recognised by its content
    code, err = cli(capsys, "report", str(runs), "--out", str(rep), "--bootstrap", "200")
    case("own output replaced", code == 0 and _listed(rep, REPORT_FILE, PLOT_FILE), err)
    with open(rep / REPORT_FILE, "a") as fh:
        fh.write("\nmy own conclusions\n")  # edited: the user's now
    edited = snapshot(rep)
    clear(*cli(capsys, "report", str(runs), "--out", str(rep), "--bootstrap", "200"), "changed since", "--overwrite")
    case("edited own file", lost(edited, rep) == 0)

    sel = tmp_path / "sel"
    for n in (1, 2):
        code, err = cli(capsys, "select", str(llama_dir), "--method", "last", "--n", str(n), "--out",
                        str(sel / "plan.json"), "--plot", str(sel / "plan.png"))  # fmt: skip
        case("own output replaced", code == 0 and _listed(sel, "plan.json", "plan.png"), err)

    ckpt = materialize(str(llama_dir), "1", tmp_path / "ckpt")
    for k, blob in enumerate((_PNG, _PNG + b"v2")):
        (tmp_path / f"p{k}.png").write_bytes(blob)
        code, err = cli(capsys, "card", str(ckpt), "--license", "mit", "--base-model", "me/tiny", "--plot",
                        str(tmp_path / f"p{k}.png"))  # fmt: skip
        case("own output replaced", code == 0 and (ckpt / "layer_selection.png").read_bytes() == blob
             and _listed(ckpt, "README.md", "layer_selection.png"), err)  # fmt: skip

    workload = BenchWorkload(batch_sizes=(1,), prompt_len=4, new_tokens=2, rounds=1, warmup=0)
    bench = tmp_path / "bench"
    for _ in range(2):
        record = bench_model(tiny_model("llama"), [("last:1", (5,))], workload, model_name="tiny", progress=False)
        write_bench(record, bench)
        case("own output replaced", json.loads((bench / BENCH_FILE).read_text()) == json.loads(json.dumps(record)))
    spec = tmp_path / "spec"
    for speed in (1.1, 1.3):
        draft = {"spec": "1", "skipped": 1, "speedup": speed, "forward_bound_speedup": 1.2, "acceptance_rate": 0.5,
                 "token_agreement": 0.6}  # fmt: skip
        record = {"model": "tiny", "device": "cpu", "dtype": "float32", "drafts": [draft], "greedy": {},
                  "draft_tokens": 4}  # fmt: skip
        write_speculate(record, spec)
        case("own output replaced", json.loads((spec / "speculate.json").read_text()) == record
             and _listed(spec, "speculate.json", "speculate.png"))  # fmt: skip
    an = tmp_path / "an"
    for drop in (None, "1"):
        analyze(AnalyzeSettings(str(llama_dir), str(an), views=("profiles",), drop=drop, progress=False))
        rows = (an / "layer_profiles.csv").read_text().splitlines()
        case("own output replaced", len(rows) == 1 + 6 + (5 if drop else 0) and _listed(an, "layer_profiles.png"))


def test_heal_overwrite_and_resume_never_lose_what_the_user_put_in_the_folder(chat, responses, tmp_path, capsys):
    from transformers import TrainerCallback

    from lmeval_layerprune.core.layout import CHECKPOINTS, HEAL_COMPLETE, HEAL_STATE_FILE, PLAN_FILE, RECIPE_FILE
    from lmeval_layerprune.heal.run import HealSettings, heal

    out = tmp_path / "healed"
    previous = tmp_path / ".healed.heal-previous"
    overrides = [*TINY_HEAL, "sft.max_steps=2", "sft.save_steps=1"]
    h = ["heal", "--recipe", "selfgen-lora", "--base", str(chat), "--drop", "2-3", "--data", str(responses),
         "--out", str(out), *overrides]  # fmt: skip
    code, err = cli(capsys, *h)
    assert code == 0, err
    # published whole: complete, every file recorded as this tool's, no training leftovers
    case("heal publish", (out / HEAL_COMPLETE).is_file() and not (out / CHECKPOINTS).exists()
         and not (out / ".trainer-final").exists() and _listed(out, "config.json", PLAN_FILE, RECIPE_FILE,
                                                                 HEAL_STATE_FILE, HEAL_COMPLETE))  # fmt: skip
    (out / "notes.txt").write_text("my notes")
    (out / "eval").mkdir()
    (out / "eval" / "results.json").write_text('{"acc": 0.5}')
    before = snapshot(out)
    clear(*cli(capsys, *h, "--overwrite"), "notes.txt", "eval/", "--overwrite", "move them out")
    case("heal --overwrite", snapshot(out) == before and lost(before, out) == 0 and not previous.exists())
    (out / "notes.txt").unlink()
    shutil.rmtree(out / "eval")
    with open(out / RECIPE_FILE, "a") as fh:
        fh.write("# my edit\n")  # a file of the run the user edited is theirs now
    clear(*cli(capsys, *h, "--overwrite"), RECIPE_FILE, "--overwrite")
    case("heal --overwrite", (out / RECIPE_FILE).read_text().endswith("# my edit\n"))
    (out / RECIPE_FILE).unlink()
    code, err = cli(capsys, *h, "--overwrite")
    case("heal --overwrite", code == 0 and (out / HEAL_COMPLETE).is_file() and not previous.exists(), err)

    class UserWritesDuringTraining(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            (out / "notes.txt").write_text("written while it trained")

    settings = dict(drop="2-3", data=str(responses), progress=False, overrides=overrides)
    shutil.rmtree(out)
    with pytest.raises(OutputError, match="notes.txt.*the training is kept"):  # refused before the swap
        heal(HealSettings("selfgen-lora", str(chat), out, callbacks=[UserWritesDuringTraining()], **settings))
    case("heal publish", (out / "notes.txt").read_text() == "written while it trained"
         and not (out / HEAL_COMPLETE).exists() and (out / CHECKPOINTS / "checkpoint-2").is_dir())  # fmt: skip
    with pytest.raises(OutputError, match="notes.txt"):  # a resume: refused before any work
        heal(HealSettings("selfgen-lora", str(chat), out, **settings))
    case("heal publish", (out / "notes.txt").is_file())
    (out / "notes.txt").unlink()
    heal(HealSettings("selfgen-lora", str(chat), out, **settings))
    case("heal publish", (out / HEAL_COMPLETE).is_file() and json.loads((out / PLAN_FILE).read_text())
         ["recovery"]["steps"] == 2)  # fmt: skip


@pytest.mark.slow
def test_selfgen_interrupted_says_how_many_responses_were_kept_and_resumes(chat, tmp_path):
    out = tmp_path / "r.jsonl"
    args = ["selfgen", "--teacher", str(chat), "--prompts", "bundled", "--n", "200", "--batch-size", "1",
            "--max-new-tokens", "16", "--out", str(out)]  # fmt: skip
    proc = _start(args, tmp_path)
    _wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    TALLY["kills"] += 1
    kept = out.read_bytes().count(b"\n")
    case("SIGINT", proc.returncode == 130 and 3 <= kept < 200, (proc.returncode, kept, err[-2000:]))
    one_line("SIGINT", err, f"selfgen interrupted (SIGINT): {kept} of 200 responses kept in {out}",
             "rerun the same command to resume (only the prompts without a response are generated)")  # fmt: skip
    case("interrupt notes", f"{kept} of 200 responses" in err)
    done = subprocess.run([sys.executable, "-m", "lmeval_layerprune.cli", *args], env=ENV, capture_output=True,
                          text=True, cwd=tmp_path)  # fmt: skip
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    case("SIGINT", done.returncode == 0 and len(ids) == 200 == len(set(ids)), done.stderr[-2000:])
    TALLY["kills_recovered"] += 1


@pytest.mark.slow
def test_heal_interrupted_names_the_checkpoint_kept_and_resumes(chat, responses, tmp_path):
    from lmeval_layerprune.core.layout import HEAL_COMPLETE, PLAN_FILE

    out = tmp_path / "healed"
    args = [
        "heal",
        "--recipe",
        "selfgen-lora",
        "--base",
        str(chat),
        "--drop",
        "2-3",
        "--data",
        str(responses),
        "--out",
        str(out),
        *TINY_HEAL,
        "sft.max_steps=60",
        "sft.save_steps=1",
        "sft.save_total_limit=2",
    ]
    proc = _start(args, tmp_path)
    first = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    _wait_for(first.exists, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    TALLY["kills"] += 1
    case("SIGTERM", proc.returncode == 143 and not (out / HEAL_COMPLETE).exists(), (proc.returncode, err[-2000:]))
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    newest = [p.name for p in ckpts if (p / "trainer_state.json").exists()][-1]
    one_line("SIGTERM", err, f"heal interrupted (SIGTERM): training checkpoint {newest} kept in {out / 'checkpoints'}",
             "rerun the same command to resume")  # fmt: skip
    case("interrupt notes", f"training checkpoint {newest} kept" in err)
    done = subprocess.run([sys.executable, "-m", "lmeval_layerprune.cli", *args], env=ENV, capture_output=True,
                          text=True, cwd=tmp_path)  # fmt: skip
    steps = json.loads((out / PLAN_FILE).read_text())["recovery"]["steps"] if (out / PLAN_FILE).exists() else None
    case("SIGTERM", done.returncode == 0 and steps == 60 and "resuming from" in done.stdout + done.stderr,
         done.stderr[-2000:])  # fmt: skip
    TALLY["kills_recovered"] += 1


def test_demo_refuses_a_users_file_at_a_report_or_bench_name_before_the_sweep(llama_dir, tmp_path, capsys):
    """The demo writes its bench and report last (after the sweep's hours on a real model): what those would
    refuse is refused before the sweep starts, and nothing is written (issue 27)."""
    for sub, name in (("report", "report.md"), ("bench", BENCH_FILE)):
        out = tmp_path / f"demo-{sub}"
        mine = out / sub / name
        mine.parent.mkdir(parents=True)
        mine.write_text("the user's own")
        before = snapshot(out)
        code, err = cli(capsys, "demo", "--model", str(llama_dir), "--tasks", "arith_probe_add_1d", "--limit", "2",
                        "--no-heal", "--output-dir", str(out))  # fmt: skip
        clear(code, err, str(mine), "did not write")
        case("foreign file", snapshot(out) == before and not (out / "sweep").exists(), ("demo", name))


@pytest.mark.slow
def test_sweep_interrupted_says_how_many_cells_were_kept_and_resumes(llama_dir, tmp_path):
    out = tmp_path / "grid"
    args = ["sweep", str(llama_dir), "--methods", "last,bi", "--ratios", "0,0.2,0.5", "--tasks", "arith_probe_add_1d",
            "--limit", "3", "--no-progress", "--out", str(out)]  # fmt: skip
    log = tmp_path / "log.txt"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "lmeval_layerprune.cli", *args], env=ENV, cwd=tmp_path,
                                stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
        _wait_for(lambda: (out / "base").is_dir(), proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    err = log.read_text()
    TALLY["kills"] += 1
    kept = sum((out / c).is_dir() for c in ("base", "last-0.2", "bi-0.2", "last-0.5", "bi-0.5"))
    case("SIGINT", proc.returncode == 130 and kept >= 1, (proc.returncode, err[-3000:]))
    one_line("SIGINT", err, f"sweep interrupted (SIGINT): {kept} of 5 cells complete in {out}",
             "rerun the same command to run the rest")  # fmt: skip
    case("interrupt notes", not list(out.glob(".partial-*")), sorted(p.name for p in out.iterdir()))
    done = subprocess.run([sys.executable, "-m", "lmeval_layerprune.cli", *args], env=ENV, capture_output=True,
                          text=True, cwd=tmp_path)  # fmt: skip
    manifest = json.loads((out / "sweep.json").read_text())
    case("SIGINT", done.returncode == 0 and len(manifest["cells"]) == 5, done.stderr[-2000:])
    TALLY["kills_recovered"] += 1
