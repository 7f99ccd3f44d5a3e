"""lmeval-prune analyze on a tiny model: skip profile vs separate pruned-hf runs, layer profiles on the
parent's numbering, logit lens vs the model's own output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import save_tiny

TASK = "arith_probe_mc_add_1d"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory) -> Path:
    return save_tiny("llama", tmp_path_factory.mktemp("tiny4"), num_hidden_layers=4)


@pytest.mark.slow
def test_skip_profile_rows_equal_separate_pruned_runs(tiny4: Path) -> None:
    import lm_eval

    from lmeval_layerprune.report.analyze import _load, _right_answer_logprobs, skip_profile

    lm = _load(str(tiny4), dtype="float32", device="cpu")
    rows = skip_profile(lm, [TASK], limit=2, progress=False)
    assert [r["skipped_layer"] for r in rows] == ["none", 0, 1, 2, 3]  # layer 0 included
    full = lm_eval.simple_evaluate(model="pruned-hf", model_args={"pretrained": str(tiny4)}, tasks=[TASK], limit=2)
    ref = lm_eval.simple_evaluate(
        model="pruned-hf", model_args={"pretrained": str(tiny4), "drop": "2"}, tasks=[TASK], limit=2
    )
    row = rows[3]
    assert row["acc"] == ref["results"][TASK]["acc,none"]
    a, b = _right_answer_logprobs(ref["samples"][TASK]), _right_answer_logprobs(full["samples"][TASK])
    assert len(a) == 2
    assert row["delta_logprob_right"] == pytest.approx(sum(a[d] - b[d] for d in a) / len(a), abs=1e-5)


def test_layer_profiles_and_logit_lens(tiny4: Path) -> None:
    from lmeval_layerprune.report.analyze import _final_norm, _load, layer_profiles, lens_rows, logit_lens

    base = _load(str(tiny4), dtype="float32", device="cpu")
    pruned = _load(str(tiny4), "1", dtype="float32", device="cpu")
    rows = layer_profiles({"base": base, "pruned": pruned}, samples=2)
    assert [r["layer"] for r in rows if r["model"] == "base"] == [0, 1, 2, 3]
    assert [r["layer"] for r in rows if r["model"] == "pruned"] == [0, 2, 3]  # the parent's numbering
    assert all(0 <= r["angular_distance"] <= 1 for r in rows)

    # choices whose first tokens differ: the lens at the last depth is the model's own prediction
    tok = base.tokenizer
    choices = ["0", "1", "2", "3"]
    prompts = [("Question: What is 3 plus 4?\nAnswer:", choices, g) for g in range(4)]
    hits = logit_lens(base, prompts)
    assert len(hits) == 4 and all(len(h) == 5 for h in hits)
    ids = tok(prompts[0][0], add_special_tokens=False)["input_ids"]
    seqs = [tok(prompts[0][0] + c, add_special_tokens=False)["input_ids"] for c in choices]
    p = len(ids)
    cand = [s[p] for s in seqs]
    with torch.no_grad():
        logits = base.model(input_ids=torch.tensor([ids])).logits[0, -1, cand]
        emb = base.model.get_input_embeddings()(torch.tensor([ids]))[0, -1]
        lens0 = base.model.get_output_embeddings()(_final_norm(base.model)(emb))[cand]
    top, top0 = int(logits.argmax()), int(lens0.argmax())
    assert [h[-1] for h in hits] == [g == top for g in range(4)]
    assert [h[0] for h in hits] == [g == top0 for g in range(4)]
    table = lens_rows("base", [0, 1, 2, 3], hits)
    assert table[-1]["top1_right"] == 0.25 and table[0]["after_layer"] == "embeddings"
