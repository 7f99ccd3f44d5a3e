"""The paper presets: every member exists in lm-eval's task index and the group YAMLs load (offline,
no dataset is downloaded); the group-level num_fewshot reaches members, checked on offline tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "tasks" / "layerprune_paper"
EXPECTED = {
    "layerprune_paper_classification": [
        "mmlu", "arc_challenge", "arc_easy", "hellaswag", "winogrande", "piqa", "openbookqa",
    ],
    "layerprune_paper_generative": ["gsm8k", "minerva_math500", "humaneval_plus", "mbpp_plus", "humaneval_brackets"],
}  # fmt: skip


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
    assert cfg["task"] == EXPECTED[group]
    assert group in manager.all_groups
    missing = [t for t in cfg["task"] if t not in manager.all_tasks]
    assert not missing, f"{group}: not in lm-eval's task index: {missing}"
    if group.endswith("classification"):
        assert cfg["num_fewshot"] == 5


def test_group_level_num_fewshot_reaches_every_member(tmp_path: Path) -> None:
    """The presets rely on lm-eval applying a group's non-group keys to its members."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from lmeval_layerprune.lmeval.plugin import register

    register()
    (tmp_path / "g.yaml").write_text(
        "group: preset_check\ntask:\n  - arith_probe_add_1d\n  - arith_probe_mc_add_1d\nnum_fewshot: 5\n"
        "metadata:\n  version: 1.0\n"
    )
    tasks = get_task_dict(["preset_check"], TaskManager(include_path=str(tmp_path)))
    leaves = {}

    def walk(d):
        for k, v in d.items():
            walk(v) if isinstance(v, dict) else leaves.__setitem__(str(k), v)

    walk(tasks)
    assert sorted(leaves) == ["arith_probe_add_1d", "arith_probe_mc_add_1d"]
    assert all(t.config.num_fewshot == 5 for t in leaves.values())  # their own YAMLs say 3
