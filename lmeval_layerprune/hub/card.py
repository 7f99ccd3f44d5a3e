"""The model card of a pruned (or healed) checkpoint: small section builders feeding the Jinja
template ``hub_cards/pruned_model_card.md``, which holds every sentence and all table markup.

:func:`build_card` returns a :class:`huggingface_hub.ModelCard` (metadata from
:class:`huggingface_hub.ModelCardData`) and the warnings about what it could not say;
:func:`write_card` saves it as ``DIR/README.md``.

Where other results plug in: ``results=`` / ``base_results=`` / ``pruned_results=`` take lm-eval
results (files or folders, read by :mod:`lmeval_layerprune.lmeval.results`); ``speedup=`` and
``size_rows=`` (extra ``(label, parent, this model)`` rows of the size/speed table, e.g. from a
benchmark) fill the "Size and speed" section.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from dataclasses import fields as fields_of
from pathlib import Path
from typing import Any

from lmeval_layerprune import __version__
from lmeval_layerprune.core.guard import is_generated_card, mark_card
from lmeval_layerprune.core.layout import (
    CARD_FILE,
    EMBEDDED_COMPLETE,
)
from lmeval_layerprune.core.output import check_replace, write_output
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.errors import PublishError
from lmeval_layerprune.hub.facts import (
    Identity,
    hub_datasets,
    identify,
    read_plan,
)
from lmeval_layerprune.hub.portable import Portable
from lmeval_layerprune.hub.scores import eval_results, findings, load_eval, score_tables
from lmeval_layerprune.hub.sections import (
    bench_rows,
    check_selection_plot,
    recovery_section,
    reproduce_section,
    selection_section,
    size_section,
)
from lmeval_layerprune.lmeval.results import Run
from lmeval_layerprune.resources import bundled_dir

logger = logging.getLogger(__name__)

TEMPLATE = "pruned_model_card.md"
RELATIONS = ("merge", "finetune", "adapter", "quantized")


@dataclass
class CardResult:
    """A rendered card and what it could not say (see :class:`.facts.Identity`)."""

    card: Any
    identity: Identity
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return str(self.card)

    def save(self, folder: str | Path) -> Path:
        """Write the card to ``folder/README.md`` by the safe-write rule; return its path.

        A ``README.md`` this tool did not write (or a generated card edited since) is refused, never replaced.
        """
        path = Path(folder).expanduser() / CARD_FILE
        return write_output(path, mark_card(str(self.card)), overwrite=True, owned=is_generated_card,
                            what="model card", flag="card", hint=CARD_HINT)  # fmt: skip


#: what to do about a ``README.md`` in the way that this tool did not write
CARD_HINT = "rename it (e.g. to README.hand.md) to keep it and let the card be written, or edit it by hand"


def check_card(folder: str | Path, plot: str | Path | None = None) -> None:
    """Refuse now, before anything is rendered or copied, what :meth:`CardResult.save` and the copy of
    ``plot`` would refuse: a ``README.md`` or a ``layer_selection.png`` in the way that this tool did not write."""
    folder = Path(folder).expanduser()
    check_replace(folder / CARD_FILE, overwrite=True, owned=is_generated_card, what="model card", flag="card",
                  hint=CARD_HINT)  # fmt: skip
    if plot is not None:
        check_selection_plot(folder, plot)


@dataclass
class CardSettings:
    """What goes into a checkpoint's card beside what its folder says (the ``card`` command's flags).

    Attributes:
        results: lm-eval results (files or ``--output_path`` folders) of this checkpoint;
            they become the card's eval results.
        base_results: results of the unpruned parent (the "parent" column).
        pruned_results: for a healed checkpoint, results of the pruned model before healing.
        repo_id: the Hub repository the card is for (used in titles and commands).
        base_model: the parent's Hub id when the checkpoint records a local path.
        license: the license, when the parent's card does not say (see :func:`.facts.resolve_license`).
        base_model_relation: default ``finetune`` for healed checkpoints, else ``merge``.
        speedup: a measured speed-up factor of this model over the parent; ``speedup_note`` says how.
        size_rows: extra ``(label, parent, this model)`` rows for the size/speed table.
        bench: a ``lmeval-prune bench`` result (file or folder); default: the folder's own
            ``layer_pruning_bench.json`` when present. Its decode speed-up fills ``speedup`` unless given.
        plot: a PNG of the layer selection; copied into the folder as ``layer_selection.png``.
        strict: refuse (:class:`PublishError`) when the parent's Hub id or license is unknown; False
            leaves them out with a warning; None: the entry point's default (:func:`build_card`
            refuses, :func:`render` and :func:`write_card` warn).
    """

    results: Sequence[str | Path] = ()
    base_results: Sequence[str | Path] = ()
    pruned_results: Sequence[str | Path] = ()
    repo_id: str | None = None
    base_model: str | None = None
    license: str | None = None
    base_model_relation: str | None = None
    speedup: float | None = None
    speedup_note: str | None = None
    size_rows: Sequence[tuple[str, str, str]] = ()
    bench: str | Path | None = None
    plot: str | Path | None = None
    strict: bool | None = None


def card_settings(settings: CardSettings | None = None, **fields: Any) -> CardSettings:
    """``settings`` (default: all defaults) with ``fields`` replacing its values; an unknown field
    name is a :class:`TypeError` naming it."""
    known = {f.name for f in fields_of(CardSettings)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"unexpected arguments {unknown}; card settings are: {', '.join(sorted(known))}")
    return replace(settings or CardSettings(), **fields)


def _checked(folder: Path, plan: dict[str, Any], ident: Identity, s: CardSettings) -> tuple[bool, str]:
    """Healed or not and the relation to the parent, after refusing settings that cannot apply."""
    if s.strict:
        ident.require("write a card for the Hub")
    healed = bool(plan.get("recovery"))
    relation = s.base_model_relation or ("finetune" if healed else "merge")
    if relation not in RELATIONS:
        raise PublishError(f"base_model_relation {relation!r} is not one of {', '.join(RELATIONS)}")
    if s.speedup is not None and not s.speedup > 0:
        raise PublishError(f"--speedup must be a positive factor (e.g. 1.25), not {s.speedup!r}")
    if s.pruned_results and not healed:
        raise PublishError(f"--pruned-results is for healed checkpoints; {folder} has no recovery record")
    return healed, relation


def _speed(folder: Path, plan: dict[str, Any], s: CardSettings) -> tuple[float | None, str | None, list]:
    """The speed-up, its note and the size/speed rows: a bench result's, a typed ``speedup`` overriding it."""
    speedup, note, rows = s.speedup, s.speedup_note, list(s.size_rows)
    measured = bench_rows(folder, s.bench, [int(i) for i in plan["drop"]])
    if measured is not None:
        gain, bench_note, bench_table = measured
        if speedup is None:  # a typed --speedup stays an override
            speedup, note = gain, note or bench_note
        rows = [*bench_table, *rows]
    return speedup, note, rows


def _embedded_source(ident: Identity) -> str | None:
    if ident.parent is None or not (ident.parent / EMBEDDED_COMPLETE).is_file():
        return None
    return Path((ident.parent / EMBEDDED_COMPLETE).read_text().split("\n")[0].removeprefix("source=")).name


def _card_data(plan: dict[str, Any], ident: Identity, ctx: dict[str, Any], relation: str, own: Run | None) -> Any:
    from huggingface_hub import ModelCardData

    tags = ["layer-pruning", "lm-eval", f"layer-pruning-{ctx['selection']['method']}", "text-generation"]
    if ctx["writer"] == "mergekit":
        tags.append("mergekit")
    if ctx["healed"]:
        tags += ["healed", f"recovery-{ctx['recovery']['method']}", str(ctx["recovery"]["finetune"])]
    return ModelCardData(
        base_model=ident.base_model,
        base_model_relation=relation if ident.base_model else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=ident.license,
        tags=tags,
        datasets=hub_datasets((plan.get("recovery") or {}).get("data")) or None,
        model_name=ctx["model_name"],
        eval_results=eval_results(own) if own is not None else None,
        **ident.license_extra,
    )


def render(folder: str | Path, settings: CardSettings | None = None, **fields: Any) -> CardResult:
    """:func:`build_card`, also returning the identity facts and warnings (not strict unless asked).

    ``fields``: :class:`CardSettings` fields, given one by one instead of (or over) ``settings``."""
    import jinja2
    import yaml
    from huggingface_hub import ModelCard

    s = card_settings(settings, **fields)
    folder = Path(folder).expanduser()
    plan = read_plan(folder)
    ident = identify(folder, plan, base_model=s.base_model, license=s.license)
    healed, relation = _checked(folder, plan, ident, s)
    speedup, speedup_note, size_rows = _speed(folder, plan, s)
    own, base = load_eval(s.results), load_eval(s.base_results)
    pruned = load_eval(s.pruned_results) if healed else None

    drop = [int(i) for i in plan["drop"]]
    n_total = int(plan["num_layers"])
    model_name = s.repo_id.split("/")[-1] if s.repo_id else folder.resolve().name
    portable = Portable.for_checkpoint(folder, plan, ident.base_model, s.repo_id)
    columns = [(lbl, r) for lbl, r in (("parent", base), ("pruned", pruned if healed else own)) if r is not None]
    if healed and own is not None:
        columns.append(("healed", own))
    ref_run = own or base or pruned
    runs = {"own": own, "base": base, "pruned": pruned}
    ctx = {
        "model_name": model_name,
        "base_model": ident.base_model,
        "n_dropped": len(drop),
        "num_layers": n_total,
        "num_kept": n_total - len(drop),
        "healed": healed,
        "tool_version": __version__,
        "writer": plan.get("writer") or (plan.get("extra") or {}).get("writer"),
        "drop_list": json.dumps(drop),
        "drop_spec": format_indices(drop),
        "selection": selection_section(plan, folder, s.plot),
        "size": size_section(folder, ident, len(drop), speedup, speedup_note, size_rows),
        "recovery": recovery_section(plan, folder, portable),
        "score_tables": score_tables(columns, own, base),
        "findings": findings(own, base, pruned, healed),
        "eval": {
            "lm_eval_version": ref_run.lm_eval_version if ref_run else None,
            "limit": ref_run.limit if ref_run else None,
            "chat_template": ref_run.chat_template if ref_run else False,
        },
        "embedded_source": _embedded_source(ident),
        "reproduce": reproduce_section(folder, plan, ident, s.repo_id or str(folder), model_name, runs, portable),
        "license": {
            "id": ident.license,
            "link": ident.license_extra.get("license_link"),
            "source": ident.license_source,
        },
    }
    card_data = _card_data(plan, ident, ctx, relation, own)
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    template = env.from_string((bundled_dir("hub_cards") / TEMPLATE).read_text())
    content = re.sub(r"\n{3,}", "\n\n", template.render(card_data=card_data.to_yaml(), **ctx))
    card = ModelCard(content)
    yaml.safe_load(card.content.split("---")[1])  # the metadata block parses (ModelCard checked it too)
    warning = ident.warning()
    return CardResult(card=card, identity=ident, warnings=[warning] if warning else [])


def build_card(folder: str | Path, settings: CardSettings | None = None, **fields: Any) -> Any:
    """Render the model card of the checkpoint in ``folder`` (a :class:`huggingface_hub.ModelCard`).

    ``settings`` (:class:`CardSettings`), or its fields one by one (``results=[...]``,
    ``base_model=...``). Strict unless ``strict=False``: a parent whose Hub id or license is unknown
    is refused (:class:`PublishError`); :func:`render` leaves them out and returns the warnings."""
    s = card_settings(settings, **fields)
    return render(folder, replace(s, strict=s.strict is not False)).card


def write_card(folder: str | Path, settings: CardSettings | None = None, **fields: Any) -> Path:
    """Write the card to ``folder/README.md`` (atomically) and return its path. Unknown parent id or
    license leave fields out with a logged warning unless ``strict=True``. A ``README.md`` this tool
    did not write is refused before any work. ``settings`` / ``fields`` as :func:`render`."""
    check_card(folder, card_settings(settings, **fields).plot)
    result = render(folder, settings, **fields)
    for w in result.warnings:
        logger.warning(w)
    return result.save(folder)
