"""Layer-level views of a model and its pruned / healed versions: ``lmeval-prune analyze``.

Each view writes a CSV and a PNG into ``--out``:

* ``skip_profile``: every layer (layer 0 included) skipped alone on the loaded model
  (:func:`lmeval_layerprune.core.slicing.layer_subset`), every metric of every task, and for
  log-likelihood tasks the mean change in log-probability of the right answer (the paper's
  first-digit probe: ``arith_first_digit``) against the full model, item by item;
* ``layer_profiles``: block influence (1 - cos(input, output) of each layer) and the angular
  distance across each layer on calibration text, for the base, the pruned (``--drop``) and the
  healed (``--healed CKPT``) model side by side, on the parent's layer numbering;
* ``logit_lens``: on the first-digit probe's prompts (lm-eval's own contexts), the hidden state
  after each layer put through the final norm and the output head, restricted to the ten digit
  tokens: the share of items whose right first digit is the top token at each depth, and the
  depth from which it stays on top.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.layout import ANALYZE_FILES
from lmeval_layerprune.core.output import OutputFolder
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import layer_subset
from lmeval_layerprune.errors import AnalyzeError
from lmeval_layerprune.lmeval.hf import PrunedHFLM
from lmeval_layerprune.lmeval.plugin import register
from lmeval_layerprune.methods.angular import angular_distances
from lmeval_layerprune.methods.block_influence import block_influence
from lmeval_layerprune.methods.capture import Calibration, calibration_states
from lmeval_layerprune.report.plots import pyplot

logger = logging.getLogger(__name__)

VIEWS = ("skip", "profiles", "lens")
LENS_TASK = "arith_first_digit"


def csv_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV text (the columns: every key, in order of first appearance)."""
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    fh = io.StringIO(newline="")
    w = csv.DictWriter(fh, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return fh.getvalue()


#: how each view's CSV begins: how one written before the manifest of written files is recognised
_HEADER = {"skip": "skipped_layer,task,", "profiles": "model,layer,block_influence,",
           "lens": "model,depth,after_layer,"}  # fmt: skip


def _legacy(view: str, suffix: str) -> Callable[[Path], bool]:
    """Recognise a view's CSV (by its header) or PNG (beside such a CSV) written before the manifest existed."""

    def test(path: Path) -> bool:
        try:
            with open(path.with_suffix(".csv"), encoding="utf-8") as fh:
                head = fh.readline()
        except (OSError, UnicodeDecodeError):
            return False
        return head.startswith(_HEADER[view]) and (suffix == ".csv" or path.suffix == ".png")

    return test


def analysis_folder(settings: AnalyzeSettings) -> OutputFolder:
    """``--out`` checked, and every file the requested views write checked, before any model is loaded."""
    inputs = [settings.model, settings.healed, settings.calib]
    folder = OutputFolder(settings.out, overwrite=True, inputs=inputs, what="analysis folder")
    for view in settings.views:
        for suffix in (".csv", ".png"):
            folder.check(ANALYZE_FILES[view] + suffix, owned=_legacy(view, suffix))
    return folder


def _write_view(folder: OutputFolder, view: str, rows: list[dict[str, Any]], plot: Callable[..., Any]) -> Path:
    stem = ANALYZE_FILES[view]
    path = folder.write(stem + ".csv", csv_text(rows), owned=_legacy(view, ".csv"))
    folder.write(stem + ".png", lambda tmp: plot(rows, tmp), owned=_legacy(view, ".png"))
    return path


def _load(model: str, drop: str | None = None, **kw: Any) -> Any:
    register()
    return PrunedHFLM(pretrained=model, drop=drop, **kw)


def _kept(lm: Any) -> list[int]:
    """The parent indices of ``lm``'s layers (all of them for an unpruned model)."""
    plan = getattr(lm, "plan", None)
    if plan is not None and plan.drop:
        return list(plan.kept)
    recorded = PruningPlan.from_config(lm.model.config)
    return list(recorded.kept) if recorded is not None else list(range(arch_num_layers(lm.model.config)))


# ------------------------------------------------------------- skip profile


def _right_answer_logprobs(samples: list[dict[str, Any]]) -> dict[int, float]:
    """doc_id -> log-likelihood of the gold choice, from lm-eval's multiple-choice samples."""
    out = {}
    for s in samples:
        target = s.get("target")
        try:
            gold = int(target)
            out[int(s["doc_id"])] = float(s["resps"][gold][0][0])
        except (TypeError, ValueError, IndexError, KeyError):
            continue
    return out


def skip_profile(
    lm: Any, tasks: Sequence[str], *, limit: float | None = None, metadata: dict | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """One row per (skipped layer, task): every metric, and ``delta_logprob_right`` for
    log-likelihood tasks (mean over items of the change against the full model)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from tqdm.auto import tqdm

    manager = TaskManager(metadata=metadata or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise AnalyzeError(f"unknown task(s) {', '.join(unknown)}; see `lm_eval ls tasks`")
    n = arch_num_layers(lm.model.config)
    kept = _kept(lm)

    def run() -> dict[str, Any]:
        return simple_evaluate(
            model=lm, tasks=list(tasks), limit=limit, log_samples=True, task_manager=manager, verbosity="ERROR"
        )

    full = run()
    full_lp = {t: _right_answer_logprobs(s) for t, s in full["samples"].items()}
    rows = []
    for i in tqdm(range(-1, n), desc="skip profile", disable=not progress):
        if i < 0:
            res, label = full, None
        else:
            with layer_subset(lm.model, [i]):
                res = run()
            label = kept[i]
        for task, metrics in res["results"].items():
            if task not in res["configs"]:
                continue
            row: dict[str, Any] = {"skipped_layer": "none" if label is None else label, "task": task}
            for k, v in metrics.items():
                if "," in k and "_stderr" not in k and isinstance(v, int | float):
                    row[k.split(",")[0]] = float(v)
            lp = _right_answer_logprobs(res["samples"].get(task, []))
            common = sorted(set(lp) & set(full_lp.get(task, {})))
            if common:
                row["delta_logprob_right"] = sum(lp[d] - full_lp[task][d] for d in common) / len(common)
            rows.append(row)
    return rows


def plot_skip_profile(rows: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 2.8 * len(tasks)), squeeze=False)
    for (ax_m, ax_d), task in zip(axes, tasks, strict=True):
        mine = [r for r in rows if r["task"] == task]
        full = next(r for r in mine if r["skipped_layer"] == "none")
        layers = [r for r in mine if r["skipped_layer"] != "none"]
        xs = [int(r["skipped_layer"]) for r in layers]
        metrics = [k for k in full if k not in ("skipped_layer", "task", "delta_logprob_right")]
        for m in metrics:
            (line,) = ax_m.plot(xs, [r.get(m, math.nan) for r in layers], "o-", ms=3, label=m)
            ax_m.axhline(full[m], color=line.get_color(), ls=":", lw=1)
        ax_m.set_title(f"{task}: score with one layer skipped (dotted: full model)", fontsize=9)
        ax_m.set_xlabel("skipped layer")
        ax_m.legend(fontsize=7)
        if any("delta_logprob_right" in r for r in layers):
            ax_d.bar(xs, [r.get("delta_logprob_right", 0.0) for r in layers], color="tab:red")
            ax_d.set_title(f"{task}: change in log p(right answer)", fontsize=9)
            ax_d.set_xlabel("skipped layer")
        else:
            ax_d.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------ layer profiles


def layer_profiles(
    models: dict[str, Any], calib: str | None = None, samples: int | None = None
) -> list[dict[str, Any]]:
    """Rows (model, parent layer, block_influence, angular_distance) on calibration text; both are one
    layer's input against its output, averaged over every token."""
    calibration = Calibration.of(calib, samples)
    rows = []
    for name, lm in models.items():
        states = calibration_states(lm.model, lm.tokenizer, calibration)
        bi = block_influence(states)
        angles = angular_distances(states, 1, last_token=False)
        for j, layer in enumerate(_kept(lm)):
            ang = angles[j]
            rows.append({"model": name, "layer": layer, "block_influence": bi[j], "angular_distance": ang})
    return rows


def plot_profiles(rows: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, ax in zip(("block_influence", "angular_distance"), axes, strict=True):
        for name in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == name]
            ax.plot([r["layer"] for r in mine], [r[key] for r in mine], "o-", ms=3, label=name)
        ax.set_xlabel("layer (parent's numbering)")
        ax.set_title(key.replace("_", " ") + " per layer, calibration text", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- logit lens


def lens_prompts(limit: int | None, metadata: dict | None = None) -> list[tuple[str, list[str], int]]:
    """(context, the ten choices, gold index) of the first-digit probe, as lm-eval builds them."""
    from lm_eval.defaults import DEFAULT_OTHER_SEED
    from lm_eval.tasks import TaskManager, get_task_dict

    register()
    task = get_task_dict([LENS_TASK], TaskManager(metadata=metadata or None))[LENS_TASK]

    task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    by_doc: dict[int, list[Any]] = {}
    for inst in task.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    out = []
    for doc_id in sorted(by_doc):
        insts = sorted(by_doc[doc_id], key=lambda x: x.idx)
        out.append((insts[0].arguments[0], [x.arguments[1] for x in insts], int(insts[0].doc["label"])))
    return out


def _final_norm(model: Any) -> Any:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    for name in ("norm", "final_layernorm", "ln_f"):
        if hasattr(decoder, name):
            return getattr(decoder, name)
    return torch.nn.Identity()


@torch.no_grad()
def logit_lens(lm: Any, prompts: Sequence[tuple[str, list[str], int]]) -> list[list[bool]]:
    """Per item, per depth (0 = embeddings, ..., L = last layer), whether the right digit is the
    top token among the ten choices' first differing tokens."""
    model, tok = lm.model, lm.tokenizer
    layers = model.get_submodule(arch_for(model.config).layers)
    norm, head = _final_norm(model), model.get_output_embeddings()
    device = next(model.parameters()).device
    hits = []
    for ctx, choices, gold in prompts:
        seqs = [tok(ctx + c, add_special_tokens=False)["input_ids"] for c in choices]
        p = 0
        while all(len(s) > p for s in seqs) and len({s[p] for s in seqs}) == 1:
            p += 1
        cand = [s[p] if len(s) > p else -1 for s in seqs]
        if min(cand) < 0 or len(set(cand)) != len(cand):
            continue  # the choices do not differ in one next token: not a next-token probe here
        captured: list[torch.Tensor] = []

        def pre(_m: Any, args: tuple, kwargs: dict, captured: list = captured) -> None:
            captured.append(kwargs.get("hidden_states", args[0] if args else None)[0, -1])

        def post(_m: Any, _a: Any, output: Any, captured: list = captured) -> None:
            h = output[0] if isinstance(output, tuple | list) else output
            captured.append(h[0, -1])

        handles = [layer.register_forward_pre_hook(pre, with_kwargs=True) for layer in layers]
        handles.append(layers[-1].register_forward_hook(post))
        try:
            model(input_ids=torch.tensor([seqs[0][:p]], device=device), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        states = torch.stack(captured[: len(layers) + 1]).float()
        logits = head(norm(states.to(next(head.parameters()).dtype))).float()[:, cand]
        hits.append((logits.argmax(-1) == gold).tolist())
    return hits


def lens_rows(name: str, kept: Sequence[int], hits: list[list[bool]]) -> list[dict[str, Any]]:
    """Per depth: share right on top; ``settled`` is the share whose right digit stays on top from here on."""
    rows = []
    depth = len(hits[0]) if hits else 0
    for d in range(depth):
        right = sum(h[d] for h in hits) / len(hits)
        settled = sum(all(h[d:]) for h in hits) / len(hits)
        after = "embeddings" if d == 0 else kept[d - 1]
        rows.append({"model": name, "depth": d, "after_layer": after, "top1_right": right, "settled": settled})
    return rows


def plot_lens(rows: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        xs = [-1 if r["after_layer"] == "embeddings" else int(r["after_layer"]) for r in mine]
        (line,) = ax.plot(xs, [r["top1_right"] for r in mine], "o-", ms=3, label=f"{name}: right digit on top")
        ax.plot(xs, [r["settled"] for r in mine], ":", color=line.get_color(), label=f"{name}: stays on top")
    ax.set_xlabel("after layer (parent's numbering; -1 = embeddings)")
    ax.set_ylabel("share of items")
    ax.set_title("logit lens on the first-digit probe (restricted to the ten digits)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------- entry


@dataclass
class AnalyzeSettings:
    """What ``lmeval-prune analyze`` computes; its flags are generated from these fields."""

    model: str
    out: str
    tasks: tuple[str, ...] = (LENS_TASK,)
    limit: float | None = None
    drop: str | None = None
    healed: str | None = None
    views: tuple[str, ...] = VIEWS
    metadata: dict | None = field(default=None, metadata={"help": "task metadata as JSON (as lm_eval --metadata)"})
    calib: str | None = None
    dtype: str = "float32"
    batch_size: str = "8"
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.tasks, self.views = tuple(self.tasks), tuple(self.views)
        bad = [v for v in self.views if v not in VIEWS]
        if bad:
            raise AnalyzeError(f"unknown view(s) {', '.join(bad)}; valid: {', '.join(VIEWS)}")
        if self.limit is not None and self.limit >= 1:
            self.limit = int(self.limit)  # an item count, as lm-eval reads it (a fraction below 1)


def _logit_lens_rows(models: dict[str, Any], settings: AnalyzeSettings) -> list[dict[str, Any]]:
    limit = settings.limit
    prompts = lens_prompts(int(limit) if limit and limit >= 1 else None, settings.metadata)
    rows = []
    for name, lm in models.items():
        hits = logit_lens(lm, prompts)
        if hits:
            rows.extend(lens_rows(name, _kept(lm), hits))
    return rows


def analyze(settings: AnalyzeSettings) -> dict[str, Path]:
    """Write the requested views into ``settings.out``; returns view -> CSV path (PNG beside it).

    The files follow the safe-write rule (:class:`~lmeval_layerprune.core.output.OutputFolder`): a file of
    one of these names that this tool did not write is refused before any model is loaded, and the
    analysis's own earlier files are replaced.
    """
    folder = analysis_folder(settings)
    kw = {"dtype": settings.dtype, "batch_size": settings.batch_size, "device": settings.device}
    models = {"base": _load(settings.model, **kw)}
    if settings.drop:
        models[f"pruned ({settings.drop})"] = _load(settings.model, settings.drop, **kw)
    if settings.healed:
        models["healed"] = _load(settings.healed, **kw)
    written: dict[str, Path] = {}
    if "skip" in settings.views:
        rows = skip_profile(
            models["base"], settings.tasks, limit=settings.limit, metadata=settings.metadata, progress=settings.progress
        )
        written["skip"] = _write_view(folder, "skip", rows, plot_skip_profile)
    if "profiles" in settings.views:
        rows = layer_profiles(models, calib=settings.calib)
        written["profiles"] = _write_view(folder, "profiles", rows, plot_profiles)
    if "lens" in settings.views:
        rows = _logit_lens_rows(models, settings)
        if rows:
            written["lens"] = _write_view(folder, "lens", rows, plot_lens)
        else:
            logger.warning(
                "logit lens skipped: %s's tokenizer does not split the ten digit answers into one shared prefix and "
                "one differing next token, so the next-token probe is not defined for it",
                settings.model,
            )
    return written
