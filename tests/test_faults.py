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
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, save_tiny
from test_selfgen import save_chat_tiny

from lmeval_layerprune.core.guard import guard_output, replace_atomically
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
