"""pruned-hf inside lm-eval: numbers against a reference model, HFLM features, metric specs."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import renumber_state_dict, tiny_config, tiny_model
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from transformers import AutoModelForCausalLM

from lmeval_layerprune.lmeval.hf import PrunedHFLM
from lmeval_layerprune.methods.capture import Calibration, load_calibration_texts
from lmeval_layerprune.methods.resolve import method_scores

DROP = "0+2+5"
KEEP = [1, 3, 4]
REQUESTS = [("Question: What is 3 plus 4?\nAnswer:", " 7"), ("The quick brown", " fox"), ("(( [", " ]))")]


def _ll_requests():
    return [Instance(request_type="loglikelihood", doc={}, arguments=req, idx=i) for i, req in enumerate(REQUESTS)]


def _reference_lm(full_dir, tokenizer) -> HFLM:
    full = AutoModelForCausalLM.from_pretrained(full_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_config(tiny_config("llama", num_hidden_layers=3), dtype=torch.float32)
    ref.load_state_dict(renumber_state_dict(full.state_dict(), KEEP), strict=True)
    return HFLM(pretrained=ref.eval(), tokenizer=tokenizer, batch_size=2)


def test_loglikelihood_and_generation_match_reference(llama_dir, tokenizer) -> None:
    lm = PrunedHFLM(pretrained=str(llama_dir), drop=DROP, device="cpu", dtype="float32", batch_size=2)
    ref = _reference_lm(llama_dir, tokenizer)
    assert lm.model.config.num_hidden_layers == 3
    assert lm.drop == (0, 2, 5)
    assert lm.model.config.layer_pruning["kept"] == KEEP
    assert lm.model.config.layer_pruning["base_model"] == str(llama_dir)
    assert lm.model.config.layer_pruning["spec"] == DROP
    got = lm.loglikelihood(_ll_requests())
    want = ref.loglikelihood(_ll_requests())
    for (g, g_greedy), (w, w_greedy) in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-4)
        assert g_greedy == w_greedy
    gen = [
        Instance(
            request_type="generate_until",
            doc={},
            arguments=(
                "Question: What is 3 plus 4?\nAnswer:",
                {"until": ["\n"], "max_gen_toks": 6, "do_sample": False},
            ),
            idx=0,
        )
    ]
    assert lm.generate_until(gen) == ref.generate_until(copy.deepcopy(gen))


def test_no_drop_is_plain_hf(llama_dir) -> None:
    lm = PrunedHFLM(pretrained=str(llama_dir), device="cpu", dtype="float32")
    hf = HFLM(pretrained=str(llama_dir), device="cpu", dtype="float32")
    assert lm.model.config.num_hidden_layers == 6
    assert not hasattr(lm.model.config, "layer_pruning")
    assert lm.loglikelihood(_ll_requests()) == hf.loglikelihood(_ll_requests())
    assert PrunedHFLM(pretrained=str(llama_dir), drop="none", device="cpu").model.config.num_hidden_layers == 6


def test_model_instance_and_hflm_args(tokenizer) -> None:
    model = tiny_model("llama")
    lm = PrunedHFLM(pretrained=model, tokenizer=tokenizer, drop="last:50%", batch_size="auto", max_batch_size=4)
    assert lm.model is model
    assert model.config.num_hidden_layers == 3
    assert model.config.layer_pruning["drop"] == [3, 4, 5]
    assert len(lm.loglikelihood(_ll_requests())) == len(REQUESTS)


def test_peft_adapter_on_pruned_model(llama_dir, tokenizer, tmp_path) -> None:
    peft = pytest.importorskip("peft")
    from lmeval_layerprune.checkpoint.load import load_pruned_model

    base = load_pruned_model(str(llama_dir), DROP, dtype=torch.float32)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    merged = lora.merge_and_unload().eval()

    lm = PrunedHFLM(pretrained=str(llama_dir), drop=DROP, peft=str(tmp_path / "adapter"), dtype="float32")
    ref = HFLM(pretrained=merged, tokenizer=tokenizer)
    for (g, _), (w, _) in zip(lm.loglikelihood(_ll_requests()), ref.loglikelihood(_ll_requests()), strict=True):
        assert g == pytest.approx(w, abs=1e-4)


def test_block_influence_matches_hidden_states(tokenizer) -> None:
    """bi scores agree with output_hidden_states for every layer but the last (whose
    hidden state transformers returns after the final norm)."""
    model = tiny_model("llama")
    texts = load_calibration_texts(limit=4)
    scores = method_scores("bi", model, tokenizer, 0, Calibration(samples=4))
    sims: list[list[torch.Tensor]] = [[] for _ in range(5)]
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=128)["input_ids"]
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
            for i in range(5):
                sims[i].append(torch.nn.functional.cosine_similarity(hs[i][0], hs[i + 1][0], dim=-1))
    want = [1 - float(torch.cat(s).mean()) for s in sims]
    assert scores[:5] == pytest.approx(want, abs=1e-5)
    assert len(scores) == 6


@pytest.mark.parametrize("spec", ["bi:2", "angular:2", "angular:33%"])
def test_metric_specs_at_load_time(llama_dir, tokenizer, spec, tmp_path) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text("A first calibration paragraph about rivers.\n\nA second one, about 2 + 2 = 4.")
    lm = PrunedHFLM(pretrained=str(llama_dir), drop=spec, calib=str(calib), dtype="float32")
    method = spec.split(":")[0]
    full = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    scores = method_scores(method, full, tokenizer, 2, Calibration.of(calib))
    if method == "bi":
        want = sorted(sorted(range(6), key=lambda i: (scores[i], -i))[:2])
    else:
        start = min(range(len(scores)), key=lambda s: (scores[s], -s))
        want = [start, start + 1]
    assert list(lm.drop) == want
    assert lm.model.config.num_hidden_layers == 4
    assert lm.model.config.layer_pruning["method"] == method

    with pytest.raises(FileNotFoundError, match="calibration file"):
        PrunedHFLM(pretrained=str(llama_dir), drop=spec, calib=str(tmp_path / "missing.txt"))


def test_bad_spec_fails_before_loading_weights(llama_dir) -> None:
    with pytest.raises(ValueError, match=r"layer 6 is out of range \(the model has 6 layers"):
        PrunedHFLM(pretrained=str(llama_dir), drop="6")
    with pytest.raises(ValueError, match="reversed range"):
        PrunedHFLM(pretrained=str(llama_dir), drop="5-3")
