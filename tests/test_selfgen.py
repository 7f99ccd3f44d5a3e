"""``lmeval-prune selfgen``: prompt sources, chat-template encoding, generation against a reference,
filters, and the append-only resume (a SIGKILLed run restarted ends with every prompt exactly once)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, save_tiny, tiny_tokenizer

from lmeval_layerprune.errors import SelfGenError
from lmeval_layerprune.heal.prompts import bundled_prompts, mixed_prompts
from lmeval_layerprune.heal.selfgen import (
    FALLBACK_CHAT_TEMPLATE,
    FilterSettings,
    encode_prompt,
    filter_reason,
    load_prompts,
    read_records,
    rep_n,
)

#: A ChatML-like template for the tiny tokenizer (it has none); it starts with the BOS token.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def save_chat_tiny(path: Path) -> Path:
    """A tiny llama whose tokenizer has a chat template."""
    save_tiny("llama", path)
    tok = tiny_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory) -> Path:
    return save_chat_tiny(tmp_path_factory.mktemp("tiny-chat"))


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "lmeval_layerprune.cli", *args], capture_output=True, text=True, env=env, **kw
    )


# ------------------------------------------------------------------ prompts


def _probe_texts() -> set[str]:
    spec = importlib.util.spec_from_file_location("arith", REPO / "tasks" / "arith_probe" / "arith.py")
    arith = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arith)
    import yaml

    texts = set()
    for task in sorted((REPO / "tasks" / "arith_probe").glob("arith_probe_*.yaml")):
        cfg = yaml.safe_load(task.read_text().replace("!function ", ""))
        if "custom_dataset" not in cfg:
            continue  # a group (arith_probe_mc.yaml): its members are read on their own
        meta = {k: v for k, v in cfg["metadata"].items() if k not in ("version", "n_choices")}
        ds = getattr(arith, cfg["custom_dataset"].split(".")[-1])(**meta)
        for split in ds.values():
            texts |= {f"What is {d['a']} {d['op']} {d['b']}?" for d in split}
    return texts


def test_bundled_prompts_are_many_unique_deterministic_and_disjoint_from_probes():
    items = bundled_prompts()
    assert len(items) >= 300
    assert items == bundled_prompts()  # deterministic
    assert len({(i["instruction"], i["input"]) for i in items}) == len(items)
    assert len({i["id"] for i in items}) == len(items)
    assert all(i["output"] for i in items)
    # No digits and no brackets: no arithmetic problem and no bracket-closing prompt can appear.
    assert not [i for i in items if re.search(r"[0-9()\[\]{}<>]", i["instruction"] + i["input"] + i["output"])]
    probes = _probe_texts()
    assert len(probes) > 100
    texts = [i["instruction"] + " " + i["input"] for i in items]
    assert not [t for t in texts if any(p in t for p in probes)]
    # every template family shows up in a short prefix
    assert len({i["instruction"].split('"')[0] for i in items[:14]}) == 14


def _load_task_module(folder: str, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tasks" / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _probe_strings(min_brackets: int) -> set[str]:
    """The word problems, first-digit problems and bracket prefixes (of at least ``min_brackets``) of the probes."""
    cot = _load_task_module("arith_word_cot", "word_problems")
    first = _load_task_module("arith_first_digit", "first_digit")
    parens = _load_task_module("paren_probe", "parens")
    found = {d["question"] for split in cot.word_problems(n=200).values() for d in split}
    found |= {d["problem"] for split in first.first_digit(n=200).values() for d in split}
    prefixes = {d["prefix"] for split in parens.make_dataset(n=200).values() for d in split}
    return found | {p for p in prefixes if sum(c in "()[]{}" for c in p) >= min_brackets}


def _humaneval() -> list[dict]:
    import gzip

    he = _load_task_module("humaneval_brackets", "humaneval")
    with gzip.open(he.humaneval_path(), "rt") as fh:
        return [json.loads(x) for x in fh if x.strip()]


def test_corpus_is_plain_text_that_holds_no_probe_item():
    """The bundled CPT corpus: enough plain text for the demo budget, disjoint from every probe item."""
    from lmeval_layerprune.heal.corpus import corpus_documents
    from lmeval_layerprune.heal.recipe import load_recipe
    from lmeval_layerprune.heal.sources import load_texts
    from lmeval_layerprune.resources import default_calibration_path

    docs = corpus_documents()
    assert docs == load_texts("corpus") and len(docs) >= 50 and len(set(docs)) == len(docs)
    assert all(d.split("\n\n")[0] and len(d.split()) > 100 for d in docs)  # a title, then an essay
    text = "\n".join(docs)
    # no digit, no bracket, no code: no arithmetic expression, no bracket sequence, no program can appear
    assert not re.search(r"[0-9()\[\]{}<>=_`#\\]", text)
    probe_strings = _probe_strings(min_brackets=1) | _probe_texts()
    assert len(probe_strings) > 400 and not [p for p in probe_strings if p in text]
    # no HumanEval prompt: none of its docstring lines is in the corpus, no corpus sentence is in a prompt
    humaneval = _humaneval()
    lines = {ln.strip() for h in humaneval for ln in h["prompt"].splitlines() if len(ln.strip()) >= 25}
    assert len(lines) > 300 and not [ln for ln in lines if ln in text]
    sentences = [x.strip() for d in docs for x in re.split(r"(?<=[.!?])\s+", d) if len(x.split()) >= 6]
    assert len(sentences) > 300 and not [x for x in sentences if any(x in h["prompt"] for h in humaneval)]
    # and none of it is the calibration text that bi/angular score layers on
    calibration = default_calibration_path().read_text()
    assert not [x for x in sentences if x in calibration]
    # large enough for the demo budget in one pass: every word is at least one token
    assert sum(len(d.split()) for d in docs) > load_recipe("demo-cpt-lora").budget.tokens


def test_mixed_prompts_teach_arithmetic_and_code_but_hold_no_probe_item():
    items = mixed_prompts()
    assert items == mixed_prompts() and len(items) >= 500
    assert len({(i["instruction"], i["input"]) for i in items}) == len(items)
    problems = [i for i in items if i["output"].endswith(tuple(f"{d}." for d in range(10)))]
    code = [i for i in items if i["output"].startswith("```")]
    assert len(problems) >= 120 and len(code) >= 60
    # a third each in any prefix: the first 96 hold 32 word problems and 32 code requests
    assert sum(i in problems for i in items[:96]) == 32 and sum(i in code for i in items[:96]) == 32
    # every reference is right: the calculation it writes holds, and the answer is its result
    for i in problems:
        (a, op, b, c), answer = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", i["output"])[0], i["output"].split()[-1]
        assert eval(f"{a} {op} {b}") == int(c) == int(answer[:-1]), i  # noqa: S307 - our own digits
        # disjoint from arith_probe by construction: its operands always have equal digit counts
        assert len(a) != len(b), i
    from lmeval_layerprune.probes.brackets import is_balanced

    for i in code:  # every Python solution compiles; in every solution each bracket is closed
        body = i["output"].strip("`\n")
        python = body.startswith("def ")
        if python:
            compile(body, i["id"], "exec")
        assert is_balanced(body, "python" if python else "js"), i
    texts = [i["instruction"] + " " + i["input"] + " " + i["output"] for i in items]
    # no probe item is stated: arith_probe questions and operand pairs, word problems, first digit, brackets
    arith = _probe_texts()
    assert not [t for t in texts if any(p in t for p in arith)]
    pairs = set()
    for t in texts:
        pairs |= {(int(a), int(b)) for a, b in re.findall(r"(\d+) [-+*] (\d+)", t)}
    assert all(len(str(a)) != len(str(b)) for a, b in pairs)
    probe_strings = _probe_strings(min_brackets=3)
    assert len(probe_strings) > 300
    assert not [t for t in texts if any(p in t for p in probe_strings)]
    # and no HumanEval problem: none of its function names, none of its prompts
    humaneval = _humaneval()
    names = {h["entry_point"] for h in humaneval}
    defined = {m for t in texts for m in re.findall(r"(?:def|function) (\w+)", t)}
    assert defined and not (defined & names)
    assert not [i for i in items if any(i["instruction"] in h["prompt"] for h in humaneval)]
    # load_prompts reads it by name, the references kept for the `original` baselines
    ps = load_prompts("mixed", n=9)
    assert [p.id for p in ps] == [f"mixed-{k:04d}" for k in range(9)] and all(p.reference for p in ps)


def test_load_prompts_understands_chat_alpaca_plain_and_mappings(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps({"id": "a", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})
        + "\n"
        + json.dumps({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]})
        + "\n"
    )
    ps = load_prompts(str(chat))
    assert [p.id for p in ps] == ["a", "row-000001"]
    assert ps[0].messages == [{"role": "user", "content": "Hi"}] and ps[0].reference == "Yo"
    assert ps[1].messages[0]["role"] == "system" and ps[1].reference is None

    alpaca = tmp_path / "alpaca.csv"
    with open(alpaca, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["instruction", "input", "output"])
        w.writeheader()
        w.writerow({"instruction": "Sort", "input": "b, a", "output": "a, b"})
        w.writerow({"instruction": "Name a fruit", "input": "", "output": "pear"})
    ps = load_prompts(str(alpaca), system="Be brief.")
    assert ps[0].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Sort\n\nb, a"},
    ]
    assert [p.reference for p in ps] == ["a, b", "pear"]

    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"question": ["Why?", "How?"], "answer": ["Because.", ""]}), plain)
    ps = load_prompts(str(plain), columns="prompt=question,response=answer", n=2)
    assert [p.messages[0]["content"] for p in ps] == ["Why?", "How?"]
    assert [p.reference for p in ps] == ["Because.", None]

    with pytest.raises(SelfGenError, match="expected 'messages'.*--columns"):
        load_prompts(str(plain))
    with pytest.raises(SelfGenError, match="unknown column role.*'question'"):
        load_prompts(str(plain), columns="question=prompt")
    with pytest.raises(SelfGenError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.jsonl"))
    assert len(load_prompts("bundled", n=7)) == 7


def test_encode_prompt_never_doubles_bos():
    from tokenizers.processors import TemplateProcessing

    tok = tiny_tokenizer()
    # A tokenizer that adds BOS itself, with a template that also writes it (Llama-3 style): rendering to
    # text and tokenizing that would give two BOS tokens.
    tok._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    tok.chat_template = CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "Name a fruit"}]
    naive = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)).input_ids
    assert naive[:2] == [tok.bos_token_id, tok.bos_token_id]  # the trap is real
    ids = encode_prompt(tok, msgs)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert ids == tok(text, add_special_tokens=False).input_ids


def test_filters_and_rep_n():
    assert rep_n([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 - 4 / 9)
    assert rep_n([1, 2, 3]) == 0.0
    s = FilterSettings(max_length=20)
    assert filter_reason("  ", "stop", 5, [], s) == "empty"
    assert filter_reason("ok", "length", 5, [1, 2], s) == "truncated"
    assert filter_reason("ok", "stop", 5, [7] * 12, s) == "degenerate"
    assert filter_reason("ok", "stop", 15, list(range(6)), s) == "overlength"
    assert filter_reason("ok", "stop", 5, list(range(6)), s) is None
    assert filter_reason("ok", "length", 5, [1], FilterSettings(filters=("empty",))) is None
    with pytest.raises(SelfGenError, match="unknown filter.*valid: truncated"):
        FilterSettings(filters=("short",))


# --------------------------------------------------------------- generation


def test_selfgen_cli_matches_unbatched_greedy_reference(chat_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    r = _cli("selfgen", "--teacher", str(chat_dir), "--n", "6", "--out", str(out), "--max-new-tokens", "6",
             "--temperature", "0", "--batch-size", "4", "--filters", "empty")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "6 prompts (6 generated now, backend transformers)" in r.stdout
    recs = read_records(out)
    prompts = load_prompts("bundled", n=6)
    assert [x["id"] for x in recs] == [p.id for p in prompts]
    meta = json.loads(out.with_name("r.jsonl.meta.json").read_text())
    assert meta["generation"]["temperature"] == 0 and meta["generation"]["max_new_tokens"] == 6
    assert meta["backend"] == "transformers" and meta["source"] == "bundled"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_dir)
    model = AutoModelForCausalLM.from_pretrained(chat_dir, dtype=torch.float32).eval()
    for rec, p in zip(recs, prompts, strict=True):
        ids = tok.apply_chat_template(p.messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert rec["prompt"] == p.messages and rec["prompt_tokens"] == len(ids)
        with torch.no_grad():  # one prompt at a time, no padding: an independent reference
            ref = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()  # fmt: skip
        if tok.eos_token_id in ref:
            ref, reason = ref[: ref.index(tok.eos_token_id)], "stop"
        else:
            reason = "length"
        assert rec["finish_reason"] == reason and rec["completion_tokens"] == len(ref)
        assert rec["response"] == tok.decode(ref, skip_special_tokens=True).strip()
        assert rec["reference"] == p.reference


def test_selfgen_resumes_after_sigkill_with_every_prompt_exactly_once(chat_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    args = ["selfgen", "--teacher", str(chat_dir), "--n", "24", "--out", str(out), "--max-new-tokens", "12",
            "--temperature", "0.9", "--batch-size", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmeval_layerprune.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.02)
    assert proc.poll() is None, "selfgen finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = out.read_bytes()
    done = before.count(b"\n")
    assert 3 <= done < 24
    # What a kill in the middle of a write leaves: a half-written last line.
    with open(out, "ab") as fh:
        fh.write(b'{"id": "bundled-9999", "prompt": [{"ro')
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"24 prompts ({24 - done} generated now" in r.stdout
    after = out.read_bytes()
    assert after.startswith(before)  # nothing rewritten: append-only
    ids = [x["id"] for x in read_records(out)]
    assert sorted(ids) == sorted(p.id for p in load_prompts("bundled", n=24))
    assert len(ids) == len(set(ids)) == 24
    # a third run has nothing to do
    r = _cli(*args)
    assert r.returncode == 0 and "(0 generated now" in r.stdout
    assert out.read_bytes() == after


def test_selfgen_refuses_a_file_of_other_prompts_or_settings(chat_dir, tmp_path):
    from lmeval_layerprune.heal.selfgen import GenerationSettings, Prompt, SelfgenSettings, generate_responses

    out = tmp_path / "r.jsonl"
    gen = GenerationSettings(max_new_tokens=2, temperature=0)
    prompts = load_prompts("bundled", n=2)
    summary = generate_responses(
        SelfgenSettings(str(chat_dir), out, generation=gen, source="bundled", progress=False), prompts
    )
    assert summary["total"] == 2 and summary["generated"] == 2
    with pytest.raises(
        SelfGenError, match=r"other settings \(generation.max_new_tokens: 2 -> 3; generation.temperature: 0 -> 0.9\)"
    ):
        generate_responses(
            SelfgenSettings(str(chat_dir), out, generation=GenerationSettings(max_new_tokens=3), source="bundled"),
            prompts,
        )
    other = [Prompt(prompts[0].id, [{"role": "user", "content": "something else"}])]
    with pytest.raises(SelfGenError, match="different prompt"):
        generate_responses(SelfgenSettings(str(chat_dir), out, generation=gen, source="bundled"), other)
    assert len(read_records(out)) == 2


def test_fallback_template_renders_alpaca_layout():
    tok = tiny_tokenizer()
    from lmeval_layerprune.heal.selfgen import ensure_chat_template

    assert ensure_chat_template(tok) and tok.chat_template == FALLBACK_CHAT_TEMPLATE
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<s>### Instruction:\nHi\n\n### Response:\n"
    assert not ensure_chat_template(tok)
