"""Self-speculative decoding (draft=): exact greedy output, shared weights, acceptance, token agreement."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_model, tiny_tokenizer
from lm_eval.api.instance import Instance

from lmeval_layerprune.core.slicing import prune_model
from lmeval_layerprune.errors import DraftError, DropSpecError
from lmeval_layerprune.lmeval.draft import DEFAULT_DRAFT_TOKENS, build_drafter, resolve_draft, shared_storage
from lmeval_layerprune.lmeval.hf import PrunedHFLM
from lmeval_layerprune.methods.resolve import resolve_indices
from lmeval_layerprune.speed.speculate import (
    DraftStats,
    assisted_generate,
    greedy_generate,
    simulate_acceptance,
    token_agreement,
)
from lmeval_layerprune.speed.speculate_run import SpeculateSettings

pytestmark = pytest.mark.usefixtures("one_thread")


PROBES = ["Question: What is 3 plus 4?\nAnswer:", "The quick brown", "(( [ {", "0123 + 45 ="]


def _ids(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])


@pytest.mark.parametrize(
    ("arch", "draft"),
    [("llama", (5,)), ("llama", (0, 3, 4)), ("qwen2", (1, 2)), ("gemma3_text", (0, 3, 4)), ("gpt_neox", (2, 3))],
)
def test_assisted_output_is_plain_greedy(arch: str, draft: tuple[int, ...]) -> None:
    model, tok = tiny_model(arch), tiny_tokenizer()
    drafter = build_drafter(model, draft, draft_tokens=3)
    for text in PROBES:
        want, _ = greedy_generate(model, _ids(tok, text), 12, tok)
        got, stats = assisted_generate(model, drafter, _ids(tok, text), 12, tok)
        assert got == want
        assert stats.new_tokens == len(want) and stats.steps >= 1
    # the verifier is untouched: layer count, layer_idx numbering, logits
    assert model.config.num_hidden_layers == 6
    layers = model.gpt_neox.layers if arch == "gpt_neox" else model.model.layers
    assert [{m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")} for layer in layers] == [
        {i} for i in range(6)
    ]


def test_drafter_shares_every_tensor_and_matches_a_pruned_copy() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    drafter = build_drafter(model, [1, 4])
    ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert all(p.untyped_storage().data_ptr() in ptrs for p in drafter.parameters())
    report = shared_storage(model, drafter)
    assert report["extra_bytes"] == 0 and report["extra_tensors"] == 0
    assert report["drafter_bytes"] < report["verifier_bytes"]
    assert drafter.config.num_hidden_layers == 4 and model.config.num_hidden_layers == 6
    # the drafter computes what an independently pruned copy computes
    ref = prune_model(copy.deepcopy(model), [1, 4])
    ids = _ids(tok, PROBES[0])
    torch.testing.assert_close(drafter(input_ids=ids).logits, ref(input_ids=ids).logits)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_identity_layer_is_always_accepted() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with torch.no_grad():  # layer 4 adds nothing to the residual stream: skipping it changes no token
        model.model.layers[4].self_attn.o_proj.weight.zero_()
        model.model.layers[4].mlp.down_proj.weight.zero_()
    drafter = build_drafter(model, [4], draft_tokens=3)
    got, stats = assisted_generate(model, drafter, _ids(tok, PROBES[0]), 16, tok)
    assert stats.accepted == stats.drafted  # every drafted token accepted
    assert stats.steps == 4  # 16 tokens in steps of 3 accepted + 1 verified
    assert got == greedy_generate(model, _ids(tok, PROBES[0]), 16, tok)[0]


@pytest.mark.parametrize("draft", [(5,), (2, 3), (0, 1, 2, 3)])
def test_simulated_acceptance_equals_measured(draft) -> None:
    model, tok = tiny_model("llama", seed=3), tiny_tokenizer()
    drafter = build_drafter(model, draft, draft_tokens=3)
    for text in PROBES[:3]:
        ref, _ = greedy_generate(model, _ids(tok, text), 14, tok)
        _, measured = assisted_generate(model, drafter, _ids(tok, text), 14, tok)
        ta = token_agreement(model, tok, [text], [ref], drop=list(draft))
        sim = simulate_acceptance(ta.hits[0], 3, 14)
        assert (sim.steps, sim.accepted) == (measured.steps, measured.accepted)


def test_token_agreement_against_a_reference() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    self_agree = token_agreement(model, tok, PROBES, max_new_tokens=8)
    assert self_agree.agreement == 1.0 and self_agree.tokens == 8 * len(PROBES)
    responses = [greedy_generate(model, _ids(tok, p), 8, tok)[0] for p in PROBES]
    pruned = prune_model(copy.deepcopy(model), [2, 3])
    want_hits = []
    with torch.no_grad():
        for p, r in zip(PROBES, responses, strict=True):
            ids = _ids(tok, p)[0].tolist()
            logits = pruned(input_ids=torch.tensor([ids + r])).logits[0]
            want_hits += [int(logits[len(ids) - 1 + i].argmax()) == t for i, t in enumerate(r)]
    in_place = token_agreement(model, tok, PROBES, responses, drop=[2, 3])
    separate = token_agreement(pruned, tok, PROBES, responses)
    assert in_place.matched == separate.matched == sum(want_hits)
    assert in_place.agreement == pytest.approx(sum(want_hits) / len(want_hits))
    assert model.config.num_hidden_layers == 6  # restored after the in-place drop


def test_simulate_acceptance_by_hand() -> None:
    # K=2: [T T] accept 2 (+1) -> p=3; [F ...] 0 (+1) -> p=4; [T F] 1 (+1) -> p=6; end
    hits = [True, True, True, False, True, False]
    s = simulate_acceptance(hits, 2)
    assert (s.steps, s.accepted) == (3, 3)
    assert simulate_acceptance([False] * 5, 4).steps == 5
    assert isinstance(s, DraftStats)


def test_bad_draft_spec_is_drop_spec_error() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(DropSpecError) as drop_err:
        resolve_indices("9", 6)
    with pytest.raises(type(drop_err.value), match="invalid draft spec '9'.*6 layers"):
        resolve_draft(model, "9", tok)
    with pytest.raises(ValueError, match="invalid draft spec"):
        resolve_draft(model, "last:6", tok)  # every layer
    with pytest.raises(ValueError, match="skips no layer"):
        resolve_draft(model, "none", tok)
    with pytest.raises(ValueError, match="invalid draft spec 'lats:2'"):
        PrunedHFLM(pretrained=model, tokenizer=tok, draft="lats:2")


def _gen(text: str, **kw) -> Instance:
    args = {"until": ["\n"], "max_gen_toks": 10, "do_sample": False, **kw}
    return Instance(request_type="generate_until", doc={}, arguments=(text, args), idx=0)


def test_pruned_hf_draft_is_exact_and_falls_back_with_a_warning(llama_dir, caplog) -> None:
    plain = PrunedHFLM(pretrained=str(llama_dir), drop="0", device="cpu", dtype="float32", batch_size=1)
    drafted = PrunedHFLM(
        pretrained=str(llama_dir), drop="0", draft="last:2", device="cpu", dtype="float32", batch_size=1
    )
    assert drafted.draft == (3, 4) and drafted.model.config.num_hidden_layers == 5
    reqs = [_gen(p) for p in PROBES]
    calls = []
    original = drafted._drafter.generate
    drafted._drafter.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    assert drafted.generate_until(copy.deepcopy(reqs)) == plain.generate_until(copy.deepcopy(reqs))
    assert calls, "the drafter was never used"
    ll = [Instance(request_type="loglikelihood", doc={}, arguments=(p, " 7"), idx=0) for p in PROBES]
    assert drafted.loglikelihood(ll) == plain.loglikelihood(ll)
    # batches of several prompts cannot draft exactly: warn once, decode plainly, same text
    batched = PrunedHFLM(pretrained=str(llama_dir), drop="0", draft="4", device="cpu", batch_size=4)
    batched_plain = PrunedHFLM(pretrained=str(llama_dir), drop="0", device="cpu", batch_size=4)
    with caplog.at_level(logging.WARNING, logger="lmeval_layerprune.lmeval.hf"):
        assert batched.generate_until(copy.deepcopy(reqs)) == batched_plain.generate_until(copy.deepcopy(reqs))
    assert sum("draft= not used" in r.message for r in caplog.records) == 1


@pytest.mark.slow
def test_speculate_cli(tmp_path, llama_dir) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROBES))
    out = tmp_path / "spec"
    cmd = [sys.executable, "-m", "lmeval_layerprune.cli", "speculate", str(llama_dir), "--draft", "last:2", "1+4"]
    cmd += [
        "--prompts",
        str(prompts),
        "--limit",
        "3",
        "--max-new-tokens",
        "8",
        "--search",
        "1",
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "acc/step" in r.stdout and "identical" in r.stdout
    record = json.loads((out / "speculate.json").read_text())
    assert [d["spec"] for d in record["drafts"]][:2] == ["last:2", "1+4"]
    assert all(d["identical"] and d["extra_weight_bytes"] == 0 for d in record["drafts"])
    assert len(record["search"]["drop"]) == 1 and (out / "speculate.png").stat().st_size > 0
    bad = subprocess.run([*cmd[:5], "--draft", "99", "--limit", "1"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "invalid draft spec '99'" in bad.stderr


@pytest.mark.embedded
def test_embedded_drafts_are_exact() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmeval_layerprune.core.embedded import embedded_model_dir
    from lmeval_layerprune.speed.speculate import task_prompts

    path = str(embedded_model_dir())
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    prompts = task_prompts(tok, ["arith_probe"], limit=2)
    for spec in ("last:3", "12-19"):
        drafter = build_drafter(model, resolve_draft(model, spec, tok), draft_tokens=3)
        for p in prompts:
            want, _ = greedy_generate(model, torch.tensor([p]), 8, tok)
            got, _ = assisted_generate(model, drafter, torch.tensor([p]), 8, tok)
            assert got == want


def test_draft_of_a_peft_model_uses_the_adapters() -> None:
    peft = pytest.importorskip("peft")
    model, tok = tiny_model("llama"), tiny_tokenizer()
    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    wrapped = peft.get_peft_model(model, lora)
    drafter = build_drafter(wrapped, [4, 5], draft_tokens=3)
    assert shared_storage(wrapped, drafter)["extra_bytes"] == 0
    ids = _ids(tok, PROBES[0])
    got, stats = assisted_generate(wrapped, drafter, ids, 10, tok)
    assert got == greedy_generate(wrapped, ids, 10, tok)[0]
    assert stats.steps >= 1 and stats.accepted == stats.new_tokens - stats.steps


def test_speculate_flags_keep_their_names_and_defaults() -> None:
    """The flags generated from SpeculateSettings: every old name (both spellings), default and exclusion."""
    from lmeval_layerprune.cli import build_parser
    from lmeval_layerprune.cli._shared import dataclass_from_args

    parser = build_parser("speculate")

    def parse(*argv: str) -> SpeculateSettings:
        return dataclass_from_args(SpeculateSettings, parser.parse_args(["speculate", *argv]))

    plain = parse("m", "--draft", "last:2", "1+4")
    assert plain.drafts == ("last:2", "1+4") and plain.tasks is None and plain.prompts is None
    defaults = (8, 64, DEFAULT_DRAFT_TOKENS, 1, "float32")
    assert (plain.limit, plain.max_new_tokens, plain.draft_tokens, plain.rounds, plain.dtype) == defaults
    assert (plain.search, plain.include_path, plain.device, plain.threads, plain.calib, plain.out) == (None,) * 6
    for dash in (True, False):
        flags = ["--include-path", "inc", "--max-new-tokens", "8", "--draft-tokens", "2"]
        flags = flags if dash else ["--" + f[2:].replace("-", "_") if f.startswith("--") else f for f in flags]
        rest = "--limit 3 --rounds 2 --dtype bfloat16 --device cpu --threads 1 --calib c --out o".split()
        given = parse("m", "--search", "2", "--tasks", "a,b", *flags, *rest)
        assert given == SpeculateSettings(
            "m", (), ("a", "b"), None, "inc", 3, 8, 2, 2, 2, "bfloat16", "cpu", 1, "c", "o"
        )
    assert parse("m", "--draft", "3", "--prompts", "p.jsonl").prompts == "p.jsonl"
    with pytest.raises(SystemExit):
        parser.parse_args(["speculate", "m", "--draft", "3", "--tasks", "a", "--prompts", "p"])  # exclusive
    with pytest.raises(DraftError, match="at least one --draft spec or --search N"):
        parse("m")
