"""The training rows of a heal run (step 3), and how many examples survived each filter.

``selfgen`` / ``kd``: the teacher's responses, read from a selfgen JSONL (``--data``) or generated into
``OUT/selfgen_responses.jsonl`` (resumable), as TRL's conversational prompt-completion rows.
``original``: the source's own responses, the same rows. ``cpt``: plain-text rows (``{"text": ...}``),
which TRL tokenizes without any chat template (language modelling on every token).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmeval_layerprune.core.layout import RESPONSES_FILE
from lmeval_layerprune.errors import HealError
from lmeval_layerprune.heal.check import HealRun
from lmeval_layerprune.heal.selfgen import generate_responses, read_records, training_pairs
from lmeval_layerprune.heal.settings import FILTERS, FilterSettings, GenerationSettings, SelfgenSettings

#: With a token budget, a text source is read only as far as this many characters per budget token (no
#: tokenizer needs more than a few), so a large corpus is not tokenized whole for a small budget.
CHARS_PER_BUDGET_TOKEN = 16


def enough_text(texts: list[str], tokens: int) -> list[str]:
    """The first documents of ``texts`` that surely hold ``tokens`` tokens (all of them when they do not)."""
    out, chars = [], 0
    for text in texts:
        if chars >= CHARS_PER_BUDGET_TOKEN * tokens:
            break
        out.append(text)
        chars += len(text)
    return out


def _generated(run: HealRun) -> list[dict[str, Any]]:
    """The teacher's records for the run's prompts, generated into ``OUT`` (one process generates)."""
    from accelerate import PartialState

    sg = {k: v for k, v in run.recipe.selfgen.items() if k != "n"}
    gen_keys = {f.name for f in dataclasses.fields(GenerationSettings)}
    settings = SelfgenSettings(
        teacher=str(run.teacher), out=run.out / RESPONSES_FILE, source=run.source, progress=run.settings.progress,
        generation=GenerationSettings(**{k: v for k, v in sg.items() if k in gen_keys}),
        filters=FilterSettings(**{k: v for k, v in sg.items() if k not in gen_keys}),
    )  # fmt: skip
    with PartialState().main_process_first():  # one process generates; the others then find it complete
        generate_responses(settings, run.prompts or [])
    wanted = {p.id for p in run.prompts or []}
    return [r for r in read_records(run.out / RESPONSES_FILE) if r["id"] in wanted]


def _funnel(run: HealRun, records: list[dict[str, Any]] | None, rows: list[Any], counts: dict[str, Any]) -> str:
    """How many items survived each filter, in the order they are applied (also recorded in ``counts``)."""
    if run.recipe.method == "cpt":
        counts["total"] = len(rows)
        return f"{len(rows)} documents of plain text"
    if records is not None and run.recipe.method != "original":
        counts["total"] = len(records)
        counts["filtered"] = {f: sum(1 for r in records if r.get("filtered") == f) for f in FILTERS}
        left, steps = len(records), []
        for f in FILTERS:
            if counts["filtered"][f]:
                left -= counts["filtered"][f]
                steps.append(f"-{counts['filtered'][f]} {f} -> {left}")
        return f"{len(records)} responses" + (f" ({', '.join(steps)})" if steps else ", none filtered")
    total = len(run.prompts) if run.prompts is not None else len(records or [])
    counts["total"] = total
    return f"{total} prompts, {len(rows)} with an original response"


def prepare_data(run: HealRun) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Step 3: the training rows, and ``counts`` (source, examples, total, filtered).

    Refuses to go on below ``run.settings.min_examples`` examples (documents of a ``cpt`` source are not
    examples: TRL packs them into sequences, so no minimum applies to them).
    """
    rec = run.recipe
    records: list[dict[str, Any]] | None = None
    if rec.method == "cpt":
        texts = run.texts or []
        rows: list[dict[str, Any]] = [
            {"text": t} for t in (enough_text(texts, rec.budget.tokens) if rec.budget else texts)
        ]
    elif run.records is not None:
        use = "reference" if rec.method == "original" else "response"
        records = run.records
        rows = training_pairs(records, use=use)
        if not rows:
            what = "original responses" if use == "reference" else "responses"
            raise HealError(f"{run.source} has no usable {what}")
    elif rec.method == "original":
        rows = [
            {"prompt": p.messages, "completion": [{"role": "assistant", "content": p.reference}]}
            for p in run.prompts or []
            if p.reference
        ]
    else:
        records = _generated(run)
        rows = training_pairs(records)
    counts: dict[str, Any] = {"source": run.source, "examples": len(rows)}
    funnel = _funnel(run, records, rows, counts)
    print(f"heal: training data from {run.source}: {funnel}; {len(rows)} examples", flush=True)
    if not rows:
        where = f"; see {run.out / RESPONSES_FILE}" if records is not None and run.records is None else ""
        raise HealError(f"every generated response was filtered out ({funnel}){where}")
    minimum = run.settings.min_examples
    if rec.method != "cpt" and len(rows) < minimum:
        raise HealError(
            f"only {len(rows)} training examples survived ({funnel}); fewer than --min-examples "
            f"{minimum}, so the healed model would mostly memorise them and say little about recovery. "
            "Raise selfgen.n or selfgen.max_new_tokens, relax selfgen.filters, or pass "
            f"--min-examples {len(rows)} to train anyway"
        )
    return rows, counts
