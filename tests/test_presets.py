"""The paper presets: every member exists in lm-eval's task index and the group YAMLs load (offline,
no dataset is downloaded); the paper's settings reach every member; the paper's own GSM8K and XSum
tasks run end to end on local stand-ins of their Hub datasets, scored against independent
computations."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "tasks" / "layerprune_paper"
EXPECTED = {
    "layerprune_paper_classification": [
        "mmlu", "arc_challenge", "arc_easy", "hellaswag", "winogrande", "piqa", "openbookqa",
    ],
    "layerprune_paper_generative": [
        "layerprune_paper_gsm8k", "minerva_math500", "humaneval_plus", "mbpp_plus", "humaneval_brackets",
        "layerprune_paper_xsum",
    ],
}  # fmt: skip
#: the paper's generation settings (PAPER_NOTES: temperature 0.9, top_p 1, top_k 50, up to 8192 tokens)
SAMPLING = {"do_sample": True, "temperature": 0.9, "top_k": 50, "top_p": 1.0, "max_gen_toks": 8192}
SYSTEM_PROMPT = "You are a helpful assistant."


def _names(members: list[Any]) -> list[str]:
    return [m if isinstance(m, str) else m["task"] for m in members]


@pytest.fixture(scope="module")
def manager():
    from lm_eval.tasks import TaskManager

    from lmeval_layerprune.lmeval.plugin import register

    register()
    return TaskManager()


@pytest.mark.parametrize("group", sorted(EXPECTED))
def test_preset_members_resolve_in_lm_evals_index(manager, group: str) -> None:
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(PRESETS / f"{group}.yaml", resolve_func=False)
    assert cfg["group"] == group
    assert _names(cfg["task"]) == EXPECTED[group]
    assert group in manager.all_groups
    missing = [t for t in _names(cfg["task"]) if t not in manager.all_tasks]
    assert not missing, f"{group}: not in lm-eval's task index: {missing}"
    if group.endswith("classification"):
        assert cfg["num_fewshot"] == 5


def _effective_configs(manager) -> dict[str, dict[str, Any]]:
    """Each generative member's config as lm-eval builds it: its own YAML (includes resolved)
    under the group's overrides and then the member's own (lm-eval 0.4.13's factory order)."""
    from lm_eval.config.group import GroupConfig
    from lm_eval.tasks._yaml_loader import load_yaml

    group = load_yaml(PRESETS / "layerprune_paper_generative.yaml", resolve_func=False)
    group_fields = set(GroupConfig.__dataclass_fields__)
    overrides = {k: v for k, v in group.items() if k not in group_fields}
    out = {}
    for member in group["task"]:
        item = {"task": member} if isinstance(member, str) else member
        own = load_yaml(manager.task_index[item["task"]].yaml_path, resolve_func=False)
        out[item["task"]] = {"own": own, "effective": {**own, **overrides, **item}}
    return out


def test_generative_preset_carries_the_papers_settings(manager) -> None:
    configs = _effective_configs(manager)
    assert sorted(configs) == sorted(EXPECTED["layerprune_paper_generative"])
    for name, cfg in configs.items():
        own, effective = cfg["own"], cfg["effective"]
        gen = effective["generation_kwargs"]
        assert {k: gen[k] for k in SAMPLING} == SAMPLING, name
        assert effective["description"] == SYSTEM_PROMPT, name
        # only the sampling changed: every member keeps its own stop sequences
        assert gen["until"] == own["generation_kwargs"]["until"], name
        assert effective.get("num_fewshot", 0) == (3 if name == "mbpp_plus" else 0), name
    # GSM8K and MATH-500 are scored with math-verify
    assert configs["minerva_math500"]["own"]["metric_list"][1]["metric"] == "math_verify"
    gsm8k = configs["layerprune_paper_gsm8k"]["effective"]["metric_list"]
    assert gsm8k[0]["metric"].endswith("lmeval_layerprune.probes.paper_metrics.math_verify")
    xsum = configs["layerprune_paper_xsum"]["effective"]
    assert xsum["metric_list"][0]["metric"].endswith("paper_metrics.rouge_l") and "unitxt" not in str(xsum)
    for name in ("layerprune_paper_gsm8k", "layerprune_paper_xsum"):
        metrics = [m["metric"].rsplit(".", 1)[-1] for m in configs[name]["effective"]["metric_list"]]
        assert {"response_length", "rep_2", "rep_3", "rep_4", "self_bleu"} <= set(metrics), name


def test_group_overrides_reach_members(tmp_path: Path) -> None:
    """The presets rely on lm-eval applying a group's non-group keys to its members, and a member
    entry's keys over those: checked with the preset's own override of minerva_math500 on
    offline tasks."""
    import yaml
    from lm_eval.tasks import TaskManager, get_task_dict
    from lm_eval.tasks._yaml_loader import load_yaml

    preset = load_yaml(PRESETS / "layerprune_paper_generative.yaml", resolve_func=False)
    math500 = next(m for m in preset["task"] if isinstance(m, dict) and m["task"] == "minerva_math500")
    group = {
        "group": "preset_check",
        "task": ["arith_probe_add_1d", {**math500, "task": "arith_probe_mc_add_1d"}],
        "num_fewshot": 5,
        "description": preset["description"],
        "metadata": {"version": 1.0},
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(group))
    bundled = str(PRESETS.parent)  # indexing only our tasks: lm-eval's own take ~20 s
    tasks = get_task_dict(["preset_check"], TaskManager(include_defaults=False, include_path=[str(tmp_path), bundled]))
    leaves = {}

    def walk(d):
        for k, v in d.items():
            walk(v) if isinstance(v, dict) else leaves.__setitem__(str(k), v)

    walk(tasks)
    assert sorted(leaves) == ["arith_probe_add_1d", "arith_probe_mc_add_1d"]
    plain, overridden = leaves["arith_probe_add_1d"].config, leaves["arith_probe_mc_add_1d"].config
    assert plain.num_fewshot == 5 and overridden.num_fewshot == 0  # their own YAMLs say 3
    assert plain.description == overridden.description == SYSTEM_PROMPT
    assert overridden.generation_kwargs == {**SAMPLING, "until": ["Problem:"]}


# ---------------------------------------------------------------- the paper's own tasks, offline


class _ScriptedChatLM:
    """An lm-eval LM with a chat template that answers from a script and records its requests."""

    def __new__(cls, responses: list[str]):
        from lm_eval.api.model import LM

        class Scripted(LM):
            requests: list[Any] = []

            def generate_until(self, requests, disable_tqdm: bool = False):
                self.requests.extend(requests)
                return [responses[r.doc_id] for r in requests]

            def loglikelihood(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

            @property
            def tokenizer_name(self) -> str:
                return "scripted"

            def chat_template(self, chat_template: bool | str = False) -> str:
                return "json"

            def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
                return json.dumps(chat_history)

        return Scripted()


def _run_on_stand_in(task: str, rows: list[dict[str, Any]], responses: list[str], tmp_path: Path):
    """Run the preset task with its Hub dataset replaced by a local JSON Lines file of the same
    columns, under a chat template, the way the paper ran it."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    data = tmp_path / f"{task}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_yaml(PRESETS / f"{task}.yaml", resolve_func=True)
    cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"test": str(data)}})
    lm = _ScriptedChatLM(responses)
    res = simple_evaluate(
        model=lm,
        tasks=[cfg],
        task_manager=TaskManager(include_defaults=False, include_path=str(PRESETS)),
        bootstrap_iters=0,
        apply_chat_template=True,
        verbosity="ERROR",
        log_samples=False,
    )
    return res["results"][task], lm.requests


def _check_requests(requests: list[Any], prompts: list[str]) -> None:
    """Every request is the system prompt and the item, sampled with the paper's settings."""
    assert len(requests) == len(prompts)
    for req in sorted(requests, key=lambda r: r.doc_id):
        context, gen = req.args
        messages = json.loads(context)
        assert messages == [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompts[req.doc_id]},
        ]
        assert {k: gen[k] for k in SAMPLING} == SAMPLING


GSM8K_ROWS = [  # the schema of openai/gsm8k (main): question, answer ending "#### N"
    {"question": "Tom has 3 boxes of 4 pens. How many pens?", "answer": "3 * 4 = <<3*4=12>>12\n#### 12"},
    {"question": "A shop sold 1,200 cups and 34 more. How many?", "answer": "1200 + 34 = 1234\n#### 1,234"},
    {"question": "Ann had 10 dollars and spent 2.5. How much is left?", "answer": "10 - 2.5 = 7.5\n#### 7.5"},
    {"question": "How many legs do 2 cats have?", "answer": "2 * 4 = 8\n#### 8"},
]
GSM8K_RESPONSES = [
    "Tom has 3 * 4 = 12 pens. The answer is 12.",  # right: the last number
    "They sold 1,200 + 34 cups.\nSo the total is $\\boxed{1234}$.",  # right: boxed, no thousands separator
    "10 - 2.5 = 7.5. So she has 7.50 dollars left.",  # right: 7.50 == 7.5
    "Each cat has 4 legs, so 2 cats have 6 legs. 6",  # wrong
]


def test_paper_gsm8k_runs_on_a_local_stand_in(tmp_path: Path) -> None:
    pytest.importorskip("math_verify", reason='pip install "lmeval-layerprune[paper]"')
    from lmeval_layerprune.probes import degeneration

    values, requests = _run_on_stand_in("layerprune_paper_gsm8k", GSM8K_ROWS, GSM8K_RESPONSES, tmp_path)
    _check_requests(requests, [r["question"] for r in GSM8K_ROWS])
    assert values["math_verify,none"] == pytest.approx(3 / 4)
    lengths = [degeneration.response_tokens(r) for r in GSM8K_RESPONSES]
    # NLTK word tokens, counted by hand: "pens ." and "12 ." split (two sentences); "$ \boxed { 1234 } $ .";
    # "7.5 ." ends the first sentence ("So" starts one); "legs ." then "6"
    assert lengths == [14, 18, 13, 14]
    assert values["response_length,none"] == pytest.approx(sum(lengths) / 4)
    rep4 = [degeneration.rep_n(r, 4) for r in GSM8K_RESPONSES]
    assert values["rep_4,none"] == pytest.approx(sum(rep4) / 4) and values["rep_4_n,none"] == 4
    assert values["self_bleu_n,none"] == sum(not math.isnan(degeneration.self_bleu_text(r)) for r in GSM8K_RESPONSES)


def _rouge_l_f1(reference: str, prediction: str) -> float:
    """ROUGE-L F1 written out: tokens are lower-cased alphanumeric runs (rouge_score's default
    tokenizer), LCS by dynamic programming, F1 of LCS/len(prediction) and LCS/len(reference)."""
    ref, hyp = (re.findall(r"[a-z0-9]+", s.lower()) for s in (reference, prediction))
    if not ref or not hyp:
        return 0.0
    table = [[0] * (len(hyp) + 1) for _ in range(len(ref) + 1)]
    for i, a in enumerate(ref):
        for j, b in enumerate(hyp):
            table[i + 1][j + 1] = table[i][j] + 1 if a == b else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


XSUM_ROWS = [  # the schema of EdinburghNLP/xsum: document, summary, id
    {
        "document": "The council voted on Tuesday to close the old bridge for repairs.",
        "summary": "A bridge will close for repairs after a council vote.",
        "id": "1",
    },
    {
        "document": "Heavy rain flooded streets in the north of the city overnight.",
        "summary": "Overnight rain has flooded streets in the city's north.",
        "id": "2",
    },
    {
        "document": "The club signed a new striker on a three-year deal.",
        "summary": "The club has signed a striker on a three-year contract.",
        "id": "3",
    },
]
XSUM_RESPONSES = [
    "The council voted to close a bridge for repairs.",
    "Rain rain rain. Rain rain rain. Rain rain rain.",
    "",
]


def test_paper_xsum_runs_on_a_local_stand_in(tmp_path: Path) -> None:
    values, requests = _run_on_stand_in("layerprune_paper_xsum", XSUM_ROWS, XSUM_RESPONSES, tmp_path)
    prompts = [f"Summarize the following article in one sentence.\n\n{r['document']}" for r in XSUM_ROWS]
    _check_requests(requests, prompts)
    want = [_rouge_l_f1(r["summary"], p) for r, p in zip(XSUM_ROWS, XSUM_RESPONSES, strict=True)]
    # LCS "a bridge for repairs": 4 of 9 predicted and 4 of 10 reference tokens
    assert want[0] == pytest.approx(2 * (4 / 9) * (4 / 10) / (4 / 9 + 4 / 10)) and want[2] == 0.0
    assert values["rouge_l,none"] == pytest.approx(sum(want) / 3, abs=1e-12)
    # the degenerate summary: 3 identical sentences, Self-BLEU 1; the empty one has 0 tokens
    assert values["self_bleu,none"] == pytest.approx(1.0) and values["self_bleu_n,none"] == 1
    assert values["response_length,none"] == pytest.approx((10 + 12 + 0) / 3)


# ---------------------------------------------------------------- recovery recipes for the paper's prompt sources

#: recipe -> (Hub dataset, rows of a local stand-in with that dataset's schema)
PAPER_RECIPES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "selfgen-dolci-qlora": (
        "allenai/Dolci-Instruct-SFT",
        [
            {
                "id": "dolci-1",
                "messages": [
                    {"role": "user", "content": "Name a prime number."},
                    {"role": "assistant", "content": "7 is prime."},
                ],
                "dataset_source": "stand-in",
            },
            {
                "id": "dolci-2",
                "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "What is 2 + 2?"},
                    {"role": "assistant", "content": "4"},
                ],
                "dataset_source": "stand-in",
            },
        ],
    ),
    "selfgen-openthoughts-qlora": (
        "open-thoughts/OpenThoughts2-1M",
        [
            {
                "conversations": [
                    {"from": "human", "value": "Prove that 2 is even."},
                    {"from": "gpt", "value": "<think>...</think> 2 = 2 * 1."},
                ],
                "question": "Prove that 2 is even.",
                "source": "stand-in",
                "id": 17,
            },
        ],
    ),
    "selfgen-alpaca-qlora": (
        "tatsu-lab/alpaca",
        [
            {"instruction": "Give a synonym of big.", "input": "", "output": "Large.", "text": "..."},
            {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour", "text": "..."},
        ],
    ),
}
PAPER_RECIPES["original-dolci-qlora"] = PAPER_RECIPES["selfgen-dolci-qlora"]
#: what each stand-in must become: (id, the conversation after the system prompt, reference)
EXPECTED_PROMPTS = {
    "selfgen-dolci-qlora": [
        ("dolci-1", [("user", "Name a prime number.")], "7 is prime."),
        (
            "dolci-2",
            [("system", "Answer briefly."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "What is 2 + 2?")],
            "4",
        ),
    ],
    "selfgen-openthoughts-qlora": [("17", [("user", "Prove that 2 is even.")], None)],
    "selfgen-alpaca-qlora": [
        ("row-000000", [("user", "Give a synonym of big.")], "Large."),
        ("row-000001", [("user", "Translate to French.\n\nGood morning")], "Bonjour"),
    ],
}
EXPECTED_PROMPTS["original-dolci-qlora"] = EXPECTED_PROMPTS["selfgen-dolci-qlora"]


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_paper_recipes_carry_the_papers_settings(name: str, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from peft import LoraConfig
    from trl import SFTConfig

    from lmeval_layerprune.heal.recipe import load_recipe

    recipe = load_recipe(name)
    assert recipe.get("data") == PAPER_RECIPES[name][0] and recipe.get("split") == "train"
    assert recipe.method == ("original" if name.startswith("original") else "selfgen")
    # generation (PAPER_NOTES): system prompt, T 0.9, top-p 0.95, 8192 new tokens, no filtering, 100k prompts
    sg = recipe.selfgen
    assert (sg["n"], sg["max_new_tokens"], sg["temperature"], sg["top_p"], sg["top_k"]) == (100000, 8192, 0.9, 0.95, 0)
    assert sg["system"] == SYSTEM_PROMPT and not sg["filters"]
    # training: QLoRA nf4 r=64 alpha 16 dropout 0.05 on all linear layers, lr 2e-4 constant after
    # 50 warm-up steps, batch 4 x 2, one epoch, max length 8192, loss on completions only
    sft = recipe.sft
    assert (sft["learning_rate"], sft["lr_scheduler_type"], sft["warmup_steps"]) == (2e-4, "constant_with_warmup", 50)
    assert (sft["per_device_train_batch_size"], sft["gradient_accumulation_steps"], sft["num_train_epochs"]) == (
        4,
        2,
        1,
    )
    assert (sft["max_length"], sft["completion_only_loss"], sft["adam_beta2"], sft["seed"]) == (8192, True, 0.99, 42)
    assert recipe.finetune == "qlora" and recipe.quantization["bnb_4bit_quant_type"] == "nf4"
    lora = recipe.lora
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"], lora["target_modules"]) == (64, 16, 0.05, "all-linear")
    # the values build the real TRL / PEFT configs (bf16 needs a GPU)
    SFTConfig(output_dir=str(tmp_path), **{**sft, "bf16": False})
    LoraConfig(**lora)


def test_the_dolci_baseline_differs_from_selfgen_only_in_method() -> None:
    import yaml

    from lmeval_layerprune.heal.recipe import recipes_dir

    selfgen, original = (
        yaml.safe_load((recipes_dir() / f"{n}.yaml").read_text()) for n in PAPER_RECIPES if "dolci" in n
    )
    differ = {k for k in selfgen.keys() | original.keys() if selfgen.get(k) != original.get(k)}
    assert differ == {"method", "description"}


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_paper_recipes_read_a_stand_in_of_their_dataset(name: str, tmp_path: Path) -> None:
    """The recipe's columns on a local Parquet file with the Hub dataset's schema, read by the
    prompt loader exactly as heal calls it."""
    pytest.importorskip("trl")
    import datasets

    from lmeval_layerprune.heal.recipe import load_recipe
    from lmeval_layerprune.heal.selfgen import load_prompts

    recipe = load_recipe(name)
    path = tmp_path / f"{name}.parquet"
    datasets.Dataset.from_list(PAPER_RECIPES[name][1]).to_parquet(str(path))
    sg = recipe.selfgen
    prompts = load_prompts(
        str(path),
        columns=recipe.get("columns"),
        split=recipe.get("split", "train"),
        n=sg.get("n"),
        system=sg.get("system"),
    )
    got = [(p.id, [(m["role"], m["content"]) for m in p.messages], p.reference) for p in prompts]
    want = [(pid, [("system", SYSTEM_PROMPT), *turns], ref) for pid, turns, ref in EXPECTED_PROMPTS[name]]
    if "dolci" in name:
        # a conversation with its own system turn keeps it (no second system prompt is added)
        want[1] = (want[1][0], want[1][1][1:], want[1][2])
    assert got == want
