"""``lmeval-prune speculate``: each draft spec measured against plain greedy decoding on the same prompts.

:func:`run_speculate` takes a :class:`SpeculateSettings` (the command's flags are generated from it) and
returns, and with ``out`` writes (:data:`~lmeval_layerprune.core.layout.SPECULATE_FILE` and
:data:`~lmeval_layerprune.core.layout.SPECULATE_PLOT`), a record with the conditions and, per draft:
the layers skipped, acceptance (accepted draft tokens per verification step, share of drafted tokens
accepted, share of output tokens from the draft), tokens/s and speed-up against greedy, the speed-up
forward counts alone allow, teacher-forced token agreement, and whether every output was identical to
greedy. Timing rounds are interleaved, in a rotating order, so contention hits every variant alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.layout import SPECULATE_FILE, SPECULATE_PLOT
from lmeval_layerprune.core.output import OutputFolder
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.errors import DraftError
from lmeval_layerprune.lmeval.draft import DEFAULT_DRAFT_TOKENS, build_drafter, resolve_draft, shared_storage
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.speed.bench import device_text
from lmeval_layerprune.speed.speculate import (
    AcceptanceObjective,
    DraftStats,
    TokenAgreement,
    assisted_generate,
    greedy_generate,
    search_draft,
    simulate_acceptance,
    source_prompts,
    task_prompts,
    token_agreement,
)


@dataclass
class SpeculateSettings:
    """What ``lmeval-prune speculate`` measures, and where.

    ``drafts``: draft specs (the drop grammar on ``model``'s layers); ``search``: also choose this many
    layers to skip greedily (maximising simulated verified tokens per step). Prompts come from lm-eval
    ``tasks`` (their generation requests; ``include_path`` for task YAMLs of your own) or from a
    ``selfgen`` prompt source (``prompts``: ``bundled`` by default, a file, a Hub id), the first
    ``limit`` of them. ``rounds``: interleaved timing rounds; ``threads``: torch CPU threads;
    ``calib``: calibration file for draft specs that score hidden states; ``out``: folder to write.
    """

    model: str
    drafts: tuple[str, ...] = ()
    tasks: tuple[str, ...] | None = None
    prompts: str | None = None
    include_path: str | None = None
    limit: int = 8
    max_new_tokens: int = 64
    draft_tokens: int = DEFAULT_DRAFT_TOKENS
    search: int | None = None
    rounds: int = 1
    dtype: str = "float32"
    device: str | None = None
    threads: int | None = None
    calib: str | None = None
    out: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.drafts = tuple(self.drafts)
        self.tasks = tuple(self.tasks) if self.tasks else None
        if not self.drafts and not self.search:
            raise DraftError("give at least one --draft spec or --search N")
        if self.tasks and self.prompts:
            raise DraftError("give --tasks or --prompts, not both")


@dataclass
class _Timing:
    """What the interleaved rounds measured: seconds per round, and per draft its stats and exactness."""

    greedy_s: list[float] = field(default_factory=list)
    draft_s: list[list[float]] = field(default_factory=list)
    totals: list[DraftStats] = field(default_factory=list)
    identical: list[bool] = field(default_factory=list)
    greedy_tokens: int = 0


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _prompt_ids(s: SpeculateSettings, tokenizer: Any) -> tuple[list[list[int]], str]:
    """Token ids of the prompts, and where they came from."""
    if s.tasks:
        return task_prompts(tokenizer, s.tasks, s.limit, s.include_path), "tasks:" + ",".join(s.tasks)
    return source_prompts(tokenizer, s.prompts or "bundled", s.limit), s.prompts or "bundled"


def _time_rounds(
    lm: torch.nn.Module,
    tokenizer: Any,
    drafters: Sequence[Any],
    prompt_ids: Sequence[list[int]],
    refs: Sequence[list[int]],
    s: SpeculateSettings,
) -> _Timing:
    """Plain greedy and every drafter on every prompt, ``s.rounds`` times, drafters in a rotating order."""
    n = len(drafters)
    t = _Timing(draft_s=[[] for _ in range(n)], totals=[DraftStats() for _ in range(n)], identical=[True] * n)
    work = s.rounds * len(prompt_ids) * (1 + n)
    with tqdm(total=work, desc="speculate", disable=not s.progress) as bar:
        for r in range(s.rounds):
            g_round = 0.0
            d_round = [0.0 for _ in range(n)]
            for i, p in enumerate(prompt_ids):
                ids = torch.tensor([p])
                order = list(range(n))
                order = order[(r + i) % len(order) :] + order[: (r + i) % len(order)] if order else order
                toks, secs = greedy_generate(lm, ids, s.max_new_tokens, tokenizer)
                g_round += secs
                t.greedy_tokens += len(toks)
                identical_ref = toks == refs[i]
                bar.update(1)
                for j in order:
                    new, st = assisted_generate(lm, drafters[j], ids, s.max_new_tokens, tokenizer)
                    t.identical[j] &= new == refs[i] and identical_ref
                    t.totals[j] = t.totals[j] + st
                    d_round[j] += st.seconds
                    bar.update(1)
            t.greedy_s.append(g_round)
            for j in range(n):
                t.draft_s[j].append(d_round[j])
    return t


def _draft_result(
    j: int,
    spec: tuple[str, tuple[int, ...]],
    t: _Timing,
    agreement: TokenAgreement,
    storage: dict[str, int],
    n_layers: int,
    s: SpeculateSettings,
) -> dict[str, Any]:
    """The record of draft ``j``: measured acceptance and speed, simulated acceptance, token agreement, and
    the weight bytes the drafter does not share with the verifier (``storage``: :func:`shared_storage`)."""
    text, layers = spec
    st = t.totals[j]
    sim = sum((simulate_acceptance(h, s.draft_tokens, s.max_new_tokens) for h in agreement.hits), DraftStats())
    keep_share = (n_layers - len(layers)) / n_layers
    bound = st.new_tokens / (st.steps + st.drafted * keep_share) if st.steps else 0.0
    ratios = [g / d for g, d in zip(t.greedy_s, t.draft_s[j], strict=True) if d]
    return {
        "spec": text,
        "layers": list(layers),
        "skipped": len(layers),
        "skipped_share": len(layers) / n_layers,
        **{k: v for k, v in st.to_dict().items() if k != "seconds"},
        "tokens_per_s": st.new_tokens / st.seconds if st.seconds else 0.0,
        "speedup": _median(ratios),
        "speedup_rounds": ratios,
        "forward_bound_speedup": bound,
        "simulated_steps": sim.steps,
        "simulated_accepted": sim.accepted,
        "token_agreement": agreement.agreement,
        "identical": t.identical[j],
        "extra_weight_bytes": storage["extra_bytes"],
    }


def run_speculate(settings: SpeculateSettings) -> dict[str, Any]:
    """Measure each draft spec (and with ``search``, the searched draft) against plain greedy decoding."""
    s = settings
    if s.out is not None:
        speculate_folder(s.out)  # a file in the way is refused before anything is loaded or measured
    if s.threads:
        torch.set_num_threads(int(s.threads))
    torch.manual_seed(0)
    path = str(resolve_pretrained(s.model))
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, s.dtype)).to(device).eval()
    n_layers = arch_num_layers(lm.config)
    prompt_ids, source = _prompt_ids(s, tokenizer)
    calibration = Calibration.of(s.calib)
    specs: list[tuple[str, tuple[int, ...]]] = [
        (d, resolve_draft(lm, d, tokenizer, calibration=calibration)) for d in s.drafts
    ]

    # reference pass (also the warm-up): the model's own greedy output for every prompt
    refs = [
        greedy_generate(lm, torch.tensor([p]), s.max_new_tokens, tokenizer)[0]
        for p in tqdm(prompt_ids, desc="greedy reference", disable=not s.progress)
    ]
    searched = None
    if s.search:
        objective = AcceptanceObjective(lm, tokenizer, prompt_ids, refs, s.draft_tokens, s.max_new_tokens)
        searched = search_draft(objective, int(s.search), progress=s.progress)
        specs.append((f"search:{s.search}={format_indices(searched['drop'])}", tuple(searched["drop"])))
    drafters = [build_drafter(lm, layers, s.draft_tokens) for _, layers in specs]
    storage = [shared_storage(lm, d) for d in drafters]
    timing = _time_rounds(lm, tokenizer, drafters, prompt_ids, refs, s)
    agreements = [token_agreement(lm, tokenizer, prompt_ids, refs, drop=layers) for _, layers in specs]
    drafts = [_draft_result(j, spec, timing, agreements[j], storage[j], n_layers, s) for j, spec in enumerate(specs)]
    record = {
        "model": base_model_name(s.model) or s.model,
        "num_layers": n_layers,
        "prompts": source,
        "num_prompts": len(prompt_ids),
        "max_new_tokens": s.max_new_tokens,
        "draft_tokens": s.draft_tokens,
        "rounds": s.rounds,
        "device": device_text(device),
        "dtype": s.dtype,
        "threads": torch.get_num_threads(),
        "greedy": {
            "tokens": sum(len(x) for x in refs),
            "tokens_per_s": timing.greedy_tokens / sum(timing.greedy_s) if sum(timing.greedy_s) else 0.0,
            "seconds_rounds": timing.greedy_s,
        },
        "drafts": drafts,
        "search": searched,
    }
    if s.out is not None:
        write_speculate(record, s.out)
    return record


def _is_speculate_file(path: Path) -> bool:
    """A speculate record written before the manifest of written files (its keys)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and {"drafts", "greedy", "draft_tokens"} <= set(data)


def _is_speculate_plot(path: Path) -> bool:
    return _is_speculate_file(path.with_name(SPECULATE_FILE))


def speculate_folder(out: str | Path) -> OutputFolder:
    """``out`` checked for the two files (before anything is measured): a file of either name that this tool
    did not write is refused; its own earlier record is replaced."""
    folder = OutputFolder(out, overwrite=True, what="speculate folder")
    folder.check(SPECULATE_FILE, owned=_is_speculate_file)
    folder.check(SPECULATE_PLOT, owned=_is_speculate_plot)
    return folder


def write_speculate(record: dict[str, Any], out: str | Path) -> Path:
    """Write ``record`` as ``out/SPECULATE_FILE`` and its plot as ``out/SPECULATE_PLOT`` (the safe-write rule
    of :mod:`lmeval_layerprune.core.output`); returns the JSON path."""
    folder = speculate_folder(out)
    path = folder.write(SPECULATE_FILE, json.dumps(record, indent=2), owned=_is_speculate_file)
    folder.write(SPECULATE_PLOT, lambda tmp: plot_speculate(record, tmp), owned=_is_speculate_plot)
    return path


def format_speculate(record: dict[str, Any]) -> str:
    """The table ``lmeval-prune speculate`` prints."""
    g = record["greedy"]
    lines = [
        f"{record['model']}: {record['num_prompts']} prompts ({record['prompts']}), {record['max_new_tokens']} new "
        f"tokens, {record['draft_tokens']} draft tokens/step, {record['rounds']} round(s); {record['device']}, "
        f"{record['dtype']}, {record['threads']} thread(s)",
        f"plain greedy: {g['tokens_per_s']:.1f} tokens/s",
        f"{'draft':<28} {'skip':>5} {'acc/step':>8} {'acc rate':>8} {'from draft':>10} {'agree':>6} "
        f"{'tok/s':>7} {'speed-up':>8} {'bound':>6} identical",
    ]
    for d in record["drafts"]:
        lines.append(
            f"{d['spec'][:28]:<28} {d['skipped']:>5} {d['accepted_per_step']:>8.2f} {d['acceptance_rate']:>8.1%} "
            f"{d['drafted_share']:>10.1%} {d['token_agreement']:>6.1%} {d['tokens_per_s']:>7.1f} "
            f"{d['speedup']:>7.2f}x {d['forward_bound_speedup']:>5.2f}x {'yes' if d['identical'] else 'NO'}"
        )
    lines.append(
        "acc/step: accepted draft tokens per verification step; acc rate: share of drafted tokens accepted; "
        "bound: the speed-up if a forward cost only its layer count (verification of several tokens as cheap as one)"
    )
    return "\n".join(lines)


def plot_speculate(record: dict[str, Any], path: str | Path) -> None:
    """Speed-up and acceptance against layers skipped (matplotlib, imported here: an optional dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drafts = sorted(record["drafts"], key=lambda d: d["skipped"])
    x = [d["skipped"] for d in drafts]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(x, [d["speedup"] for d in drafts], "o", label="measured")
    a1.plot(x, [d["forward_bound_speedup"] for d in drafts], "s", mfc="none", label="forward-count bound")
    a1.axhline(1.0, color="grey", lw=0.8)
    for d in drafts:
        a1.annotate(d["spec"].split("=")[0], (d["skipped"], d["speedup"]), fontsize=6, alpha=0.7)
    a1.set_xlabel("layers skipped by the draft")
    a1.set_ylabel("speed-up vs plain greedy")
    a1.legend(fontsize=8)
    a2.plot(x, [d["acceptance_rate"] for d in drafts], "o", label="drafted tokens accepted")
    a2.plot(x, [d["token_agreement"] for d in drafts], "s", mfc="none", label="token agreement")
    a2.set_xlabel("layers skipped by the draft")
    a2.set_ylim(0, 1)
    a2.legend(fontsize=8)
    fig.suptitle(f"{record['model']}: self-speculative decoding ({record['device']}, {record['dtype']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
