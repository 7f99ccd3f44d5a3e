"""``lmeval-prune selfgen``: the unpruned parent answers a prompt set (self-generated responses).
Sampling and filter flags are generated from :class:`~lmeval_layerprune.heal.settings.GenerationSettings`
and :class:`~lmeval_layerprune.heal.settings.FilterSettings`; the run is a
:class:`~lmeval_layerprune.heal.settings.SelfgenSettings`."""

from __future__ import annotations

import argparse

from lmeval_layerprune.cli._shared import add_dataclass_flags, dataclass_from_args
from lmeval_layerprune.core.interrupt import keeping
from lmeval_layerprune.heal.prompts import BUNDLED_NAME
from lmeval_layerprune.heal.selfgen import (
    FilterSettings,
    GenerationSettings,
    SelfgenSettings,
    generate_responses,
    load_prompts,
)

HELP = {
    "max_new_tokens": "most tokens generated per response",
    "temperature": "sampling temperature; 0: greedy",
    "top_p": "nucleus sampling threshold",
    "top_k": "top-k sampling; 0: off",
    "seed": "sampling seed (per batch: seed + the batch's first position)",
    "batch_size": "prompts generated together",
    "system": "system message to add (default: none; the template's own)",
    "filters": "active filters, comma-separated ('' for none)",
    "max_repetition": "degenerate above this Rep-4",
    "max_length": "overlength: prompt + response tokens above this (default: off)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "selfgen",
        description="Generate responses with TEACHER's chat template for every prompt of SOURCE and append them "
        "to OUT (JSONL, one record per prompt: id, prompt, response, finish reason, token counts, filter verdict). "
        "Rerunning the same command after an interruption generates only what is missing. Uses vLLM when it is "
        "installed and a GPU is present, else batched transformers generation.",
    )
    p.add_argument("--teacher", required=True, help="the unpruned parent: checkpoint directory, Hub id, or 'embedded'")
    p.add_argument(
        "--prompts",
        default=BUNDLED_NAME,
        help="'bundled' (offline word tasks), 'mixed' (offline: word problems, code requests and the bundled "
        "tasks), a .jsonl/.json/.csv/.tsv/.parquet file, or a Hub dataset id "
        f"(default: {BUNDLED_NAME})",
    )
    p.add_argument("--out", required=True, help="output JSONL (appended to; a sidecar OUT.meta.json records settings)")
    p.add_argument("--n", type=int, default=5000, help="use the first N prompts (default: 5000)")
    p.add_argument("--columns", default=None, help="column mapping OURS=THEIRS, e.g. prompt=question,response=answer")
    p.add_argument("--split", default="train", help="split of a Hub dataset (default: train)")
    g = p.add_argument_group("sampling (GenerationSettings)")
    add_dataclass_flags(g, GenerationSettings, help=HELP)
    g = p.add_argument_group("filters (FilterSettings)")
    add_dataclass_flags(g, FilterSettings, help=HELP)
    p.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto", help="(default: auto)")
    p.add_argument("--dtype", default=None, help="model dtype (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="transformers backend device (default: cuda if available)")
    p.set_defaults(func=run)


#: how an interrupted selfgen resumes
RESUME = "rerun the same command to resume (only the prompts without a response are generated)"


def run(args: argparse.Namespace) -> int:
    prompts = load_prompts(args.prompts, columns=args.columns, split=args.split, n=args.n, system=args.system)
    settings = SelfgenSettings(
        teacher=args.teacher,
        out=args.out,
        generation=dataclass_from_args(GenerationSettings, args),
        filters=dataclass_from_args(FilterSettings, args),
        source=args.prompts,
        backend=args.backend,
        dtype=args.dtype,
        device=args.device,
    )
    with keeping(None, resume=RESUME):  # what was kept: generate_responses's note
        summary = generate_responses(settings, prompts)
    filtered = ", ".join(f"{k} {v}" for k, v in sorted(summary["filtered"].items())) or "none"
    print(
        f"{summary['out']}: {summary['total']} prompts ({summary['generated']} generated now, backend "
        f"{summary['backend']}); {summary['kept']} kept, filtered: {filtered}"
    )
    return 0
