"""Model cards and Hugging Face Hub uploads for pruned (and healed) checkpoints.

* :func:`build_card` renders ``hub_cards/pruned_model_card.md`` (Jinja) into a
  :class:`huggingface_hub.ModelCard` whose metadata is a :class:`huggingface_hub.ModelCardData`:
  ``base_model``, ``base_model_relation``, ``library_name``, ``pipeline_tag``, the parent's
  license, tags, the recovery datasets and ``model-index`` eval results read from lm-eval
  result files. :func:`write_card` saves it as ``DIR/README.md``.
* :func:`push` uploads only the files a checkpoint needs (:func:`upload_manifest`) in one
  commit, creating the repository when missing and refusing to replace a model already
  there unless told to (a branch, a pull request, or ``overwrite``). ``dry_run`` writes the
  exact upload to a local folder instead.

The token comes from ``HF_TOKEN`` or the login cache (``huggingface_hub.get_token``) and never
appears in what this module prints, raises or writes. Hub failures (authentication,
permission, rate limit, server, network) become one :class:`PublishError` each.

huggingface_hub is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shlex
import shutil
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .materialize import MERGEKIT_FILE, PLAN_FILE
from .spec import PLAN_ATTR, LayerPruneError, format_indices

logger = logging.getLogger(__name__)

TEMPLATE = "pruned_model_card.md"
CARD_FILE = "README.md"
RECIPE_FILE = "recovery_recipe.yaml"
SELECTION_PLOT = "layer_selection.png"
TOOL_URL = "https://github.com/lmeval-layerprune/lmeval-layerprune"
DRY_RUN_SUFFIX = "-hub-upload"

#: Files a checkpoint needs, by exact name; plus the patterns in :data:`UPLOAD_PATTERNS`.
UPLOAD_FILES = (
    CARD_FILE,
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "adapter_config.json",
    MERGEKIT_FILE,
    PLAN_FILE,
    RECIPE_FILE,
)
#: Glob patterns (top level of the folder only): weights, tiktoken vocabularies, plots.
UPLOAD_PATTERNS = ("*.safetensors", "*.tiktoken", "*.png")
#: Files whose presence in a repository means it already holds a model.
MODEL_FILE_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json", "*.bin", "*.gguf", "*.pt")

GENERATIVE = "generative"
LIKELIHOOD = "likelihood"
_GENERATIVE_TYPES = ("generate_until",)
_LIKELIHOOD_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling")
_TASK_TYPE = {
    "generate_until": "text-generation",
    "multiple_choice": "multiple-choice",
    "loglikelihood": "text-generation",
    "loglikelihood_rolling": "text-generation",
}
_RELATIONS = ("merge", "finetune", "adapter", "quantized")
_SELECTION = {
    "explicit": "given by hand (a fixed drop spec)",
    "last": "the last layers (the reverse-order baseline)",
    "bi": "lowest block influence, 1 - cos(input, output), on calibration text (ShortGPT)",
    "angular": "the contiguous block with the smallest angular distance between its input and output (Gromov et al.)",
    "iterative": "greedy task-driven search: each round removes the layer whose removal keeps the mean "
    "normalized score on the selection tasks highest (On the Limits of Layer Pruning for Generative "
    "Reasoning in LLMs)",
    "ppl": "greedy search on calibration perplexity (SLEB-style)",
}
_RECOVERY_METHOD = {
    "selfgen": "responses the unpruned parent generated itself (self-generated data)",
    "original": "the original instruction data",
    "kd": "knowledge distillation from the teacher",
}


class PublishError(LayerPruneError, RuntimeError):
    """A card cannot be written or a push cannot proceed; the message says what to do."""


# --------------------------------------------------------------------- lm-eval results


@dataclass
class Score:
    """One metric of one task (or group) from an lm-eval results file."""

    task: str
    metric: str
    filter: str | None
    value: float
    stderr: float | None
    higher_is_better: bool | None
    output_type: str | None
    n_shot: int | None
    items: int | None
    group: bool
    dataset_path: str | None
    dataset_name: str | None
    split: str | None

    @property
    def kind(self) -> str:
        """``generative`` (generate_until) or ``likelihood`` (multiple choice, loglikelihood)."""
        return GENERATIVE if self.output_type in _GENERATIVE_TYPES else LIKELIHOOD

    @property
    def label(self) -> str:
        return self.metric if not self.filter or self.filter == "none" else f"{self.metric} ({self.filter})"


@dataclass
class EvalRun:
    """The merged content of one or more lm-eval results files of the same model."""

    files: list[Path]
    scores: dict[tuple[str, str], Score]
    config: dict[str, Any]
    top_tasks: list[str]
    lm_eval_version: str | None = None
    chat_template: bool = False
    fewshot_as_multiturn: bool = False
    system_instruction: str | None = None

    def get(self, task: str, label: str) -> Score | None:
        return self.scores.get((task, label))


def _result_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PublishError(f"lm-eval results {str(path)!r} do not exist (give a results_*.json file or its folder)")
    files = sorted(path.rglob("results_*.json"))
    if not files:
        raise PublishError(f"no lm-eval results_*.json files under {str(path)!r}")
    folders = sorted({f.parent for f in files})
    if len(folders) > 1:
        names = ", ".join(str(f.relative_to(path)) for f in folders)
        raise PublishError(
            f"{str(path)!r} holds results of several models ({names}); pass the folder or file of one model"
        )
    return files  # timestamps in the names sort oldest first


def _output_type(task: str, configs: dict[str, Any], subtasks: dict[str, list[str]]) -> str | None:
    if task in configs:
        return configs[task].get("output_type")
    kinds = {_output_type(t, configs, subtasks) for t in subtasks.get(task, [])}
    kinds.discard(None)
    if len(kinds) == 1:
        return kinds.pop()
    return "generate_until" if "generate_until" in kinds else (kinds.pop() if kinds else None)


def _items(task: str, n_samples: dict[str, Any], subtasks: dict[str, list[str]]) -> int | None:
    if task in n_samples:
        return int(n_samples[task].get("effective", 0)) or None
    parts = [_items(t, n_samples, subtasks) for t in subtasks.get(task, [])]
    return sum(p for p in parts if p) or None


def load_results(paths: Sequence[str | Path]) -> EvalRun | None:
    """Read lm-eval results JSON files (or folders of them, as written by ``--output_path``).

    Files are merged; where two files score the same task the later (newer) one wins.
    Returns ``None`` when ``paths`` is empty.
    """
    files: list[Path] = []
    for p in paths:
        files.extend(_result_files(Path(p).expanduser()))
    if not files:
        return None
    run = EvalRun(files=files, scores={}, config={}, top_tasks=[])
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise PublishError(f"{f} is not a readable lm-eval results JSON file: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise PublishError(f"{f} is not an lm-eval results file (it has no 'results' mapping)")
        configs = data.get("configs") or {}
        subtasks = {k: list(v) for k, v in (data.get("group_subtasks") or {}).items()}
        children = {t for v in subtasks.values() for t in v}
        hib = data.get("higher_is_better") or {}
        for task, metrics in data["results"].items():
            cfg = configs.get(task, {})
            for key, value in metrics.items():
                if "," not in key or "_stderr" in key.split(",")[0]:
                    continue
                if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
                    continue
                metric, filt = key.split(",", 1)
                stderr = metrics.get(f"{metric}_stderr,{filt}")
                score = Score(
                    task=task,
                    metric=metric,
                    filter=filt,
                    value=float(value),
                    stderr=float(stderr) if isinstance(stderr, int | float) and not isinstance(stderr, bool) else None,
                    higher_is_better=(hib.get(task) or {}).get(metric),
                    output_type=_output_type(task, configs, subtasks),
                    n_shot=(data.get("n-shot") or {}).get(task),
                    items=_items(task, data.get("n-samples") or {}, subtasks),
                    group=task in subtasks,
                    dataset_path=cfg.get("dataset_path"),
                    dataset_name=cfg.get("dataset_name"),
                    split=cfg.get("test_split") or cfg.get("validation_split"),
                )
                run.scores[(task, score.label)] = score
            if task not in children and task not in run.top_tasks:
                run.top_tasks.append(task)
        run.config = data.get("config") or run.config
        run.lm_eval_version = data.get("lm_eval_version") or run.lm_eval_version
        run.chat_template = bool(data.get("chat_template")) or run.chat_template
        run.fewshot_as_multiturn = bool(data.get("fewshot_as_multiturn")) or run.fewshot_as_multiturn
        run.system_instruction = data.get("system_instruction") or run.system_instruction
    return run


def eval_results(run: EvalRun, model_name: str) -> list[Any]:
    """``huggingface_hub.EvalResult`` entries (the card's ``model-index``) for every score in ``run``."""
    from huggingface_hub import EvalResult

    out = []
    for s in run.scores.values():
        args = {"num_few_shot": s.n_shot} if s.n_shot is not None else None
        out.append(
            EvalResult(
                task_type=_TASK_TYPE.get(s.output_type or "", "text-generation"),
                task_name=s.task,
                dataset_type=s.dataset_path or s.task,
                dataset_name=s.task,
                dataset_config=s.dataset_name,
                dataset_split=s.split,
                dataset_args=args,
                metric_type=s.metric,
                metric_name=s.label,
                metric_value=round(s.value, 6),
                verified=False,
                source_name="lm-evaluation-harness",
                source_url="https://github.com/EleutherAI/lm-evaluation-harness",
            )
        )
    return out


# ----------------------------------------------------------------- checkpoint facts


def read_plan(folder: Path) -> dict[str, Any]:
    """The layer-pruning plan recorded in ``folder/config.json`` (or the plan file next to it)."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise PublishError(f"{folder} is not a checkpoint folder: it has no config.json")
    plan = json.loads(cfg_path.read_text()).get(PLAN_ATTR)
    if not plan and (folder / PLAN_FILE).is_file():
        plan = json.loads((folder / PLAN_FILE).read_text())
    if not plan or "drop" not in plan:
        raise PublishError(
            f"{folder} is not a pruned checkpoint: config.json has no {PLAN_ATTR!r} record "
            "(write one with `lmeval-prune slice MODEL --drop SPEC --out DIR`)"
        )
    return plan


def _safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


def parameter_counts(folder: Path) -> tuple[int, dict[str, int]] | None:
    """Total parameter count from the safetensors headers (no weights are read), and the
    count per tensor name. ``None`` when the folder has no safetensors weights."""
    files = [f for f in sorted(folder.glob("*.safetensors")) if not f.name.startswith("adapter_model")]
    if not files:
        return None
    per: dict[str, int] = {}
    for f in files:
        for name, info in _safetensors_header(f).items():
            if name != "__metadata__":
                per[name] = math.prod(info.get("shape", []))
    return sum(per.values()), per


def _layers_prefix(model_type: str | None) -> str:
    from .arch import ARCHITECTURES, ArchInfo

    return ARCHITECTURES.get(model_type or "", ArchInfo()).layers


def _is_local_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def _mergekit_sources(folder: Path) -> list[str]:
    import yaml

    path = folder / MERGEKIT_FILE
    if not path.is_file():
        return []
    cfg = yaml.safe_load(path.read_text()) or {}
    return [src["model"] for s in cfg.get("slices", []) for src in s.get("sources", []) if "model" in src]


def parent_dir(plan: dict[str, Any], folder: Path) -> Path | None:
    """The parent's local checkout, when there is one: the recorded base path, the mergekit
    source, or the converted embedded model."""
    from .embedded import EMBEDDED_REPO, embedded_model_dir

    candidates = [str(plan.get("base_model") or ""), *_mergekit_sources(folder)]
    for c in candidates:
        if c and _is_local_path(c) and Path(c).expanduser().is_dir():
            return Path(c).expanduser()
    if plan.get("base_model") == EMBEDDED_REPO:
        with contextlib.suppress(Exception):
            return embedded_model_dir(convert=False)
    return None


def hub_base_model(plan: dict[str, Any], base_model: str | None = None) -> str:
    """The parent's Hub id for ``base_model`` metadata: ``base_model`` if given, else the plan's."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    name = base_model or plan.get("base_model")
    if not name:
        raise PublishError("the checkpoint does not record its parent; pass --base-model NAMESPACE/NAME")
    if not base_model and _is_local_path(str(name)):
        raise PublishError(
            f"the parent recorded in the checkpoint is a local path ({name}); pass --base-model NAMESPACE/NAME, "
            "the Hub id of the unpruned parent (the card's base_model must be a Hub id)"
        )
    try:
        validate_repo_id(str(name))
    except HFValidationError as e:
        raise PublishError(f"base model {name!r} is not a valid Hub id (NAMESPACE/NAME): {e}") from None
    return str(name)


def _front_matter(path: Path) -> dict[str, Any]:
    from huggingface_hub import metadata_load

    with contextlib.suppress(Exception):
        return metadata_load(path) or {}
    return {}


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_metadata(path: str | Path, key: str) -> Any:
    """One metadata value from a GGUF file's header, reading only the key/value section
    (``gguf.GGUFReader`` parses every tensor record too, which takes seconds)."""

    with open(path, "rb") as fh:

        def read(fmt: str) -> Any:
            return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return fh.read(read("<Q")).decode("utf-8", "replace")

        def value(vtype: int) -> Any:
            if vtype in _GGUF_SCALARS:
                return read(_GGUF_SCALARS[vtype])
            if vtype == 8:
                return string()
            if vtype == 9:
                itype, count = read("<I"), read("<Q")
                return [value(itype) for _ in range(count)]
            raise ValueError(f"unknown GGUF value type {vtype}")

        if fh.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        read("<I")  # version
        read("<Q")  # tensor count
        for _ in range(read("<Q")):
            name = string()
            v = value(read("<I"))
            if name == key:
                return v
    return None


def resolve_license(
    base_model: str, parent: Path | None, explicit: str | None = None
) -> tuple[str, dict[str, Any], str]:
    """The license of the parent: ``(license, extra metadata, where it came from)``.

    Order: ``explicit``; the front matter of the parent checkout's README.md; the parent's
    card in the local Hub cache; for the embedded model, the license in its GGUF file.
    Raises :class:`PublishError` naming ``--license`` when none of them says.
    """
    if explicit:
        return explicit, {}, "the --license option"
    cards: list[tuple[Path, str]] = []
    if parent is not None and (parent / CARD_FILE).is_file():
        cards.append((parent / CARD_FILE, f"the parent's card ({parent / CARD_FILE})"))
    with contextlib.suppress(Exception):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(base_model, CARD_FILE)
        if isinstance(cached, str):
            cards.append((Path(cached), f"the parent's card in the local Hub cache ({base_model})"))
    for path, source in cards:
        meta = _front_matter(path)
        if meta.get("license"):
            extra = {k: meta[k] for k in ("license_name", "license_link") if meta.get(k)}
            return str(meta["license"]), extra, source
    from .embedded import _COMPLETE, EMBEDDED_REPO, gguf_path

    if base_model == EMBEDDED_REPO or (parent is not None and (parent / _COMPLETE).is_file()):
        with contextlib.suppress(Exception):
            gg = gguf_path()
            value = gguf_metadata(gg, "general.license")
            if value:
                return str(value), {}, f"the embedded model's GGUF metadata ({gg.name})"
    raise PublishError(
        f"could not find the license of the parent {base_model!r} (no README.md with a 'license' field in its "
        "local checkout or the Hub cache); pass --license, e.g. --license apache-2.0 (a pruned model keeps "
        "its parent's license; see https://huggingface.co/docs/hub/repositories-licenses)"
    )


def portable_mergekit_yaml(folder: Path, base_model: str) -> str | None:
    """``mergekit.yaml`` with local source paths replaced by the parent's Hub id."""
    import yaml

    path = folder / MERGEKIT_FILE
    if not path.is_file():
        return None
    text = path.read_text()
    cfg = yaml.safe_load(text) or {}
    for s in cfg.get("slices", []):
        for src in s.get("sources", []):
            if isinstance(src.get("model"), str) and _is_local_path(src["model"]):
                src["model"] = base_model
    head = [line for line in text.splitlines() if line.startswith("#")]
    return "\n".join(head) + ("\n" if head else "") + yaml.safe_dump(cfg, sort_keys=False)


def _hub_datasets(data: Any) -> list[str]:
    """Hub dataset ids named in a recovery ``data`` string (local files are left out)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    out: list[str] = []
    for tok in re.split(r"[\s,;:|]+", str(data or "")):
        if tok.count("/") != 1 or _is_local_path(tok) or tok.endswith((".json", ".jsonl", ".txt", ".parquet")):
            continue
        with contextlib.suppress(HFValidationError):
            validate_repo_id(tok)
            out.append(tok)
    return out


# ---------------------------------------------------------------------- the card


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "unknown"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit} ({n:,})"
    return f"{n:,}"


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _rel(new: float, old: float) -> str:
    return f"{(new - old) / old * 100:+.0f}%" if old else "n/a"


def _model_args_text(args: Any) -> dict[str, Any]:
    if isinstance(args, dict):
        return dict(args)
    out: dict[str, Any] = {}
    for part in str(args or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _lm_eval_cmd(run: EvalRun, *, model: str, pretrained: str, drop: str | None = None) -> str:
    args = _model_args_text(run.config.get("model_args"))
    for k in ("pretrained", "drop", "device", "device_map", "parallelize", "trust_remote_code"):
        args.pop(k, None)
    ordered = {"pretrained": pretrained, **({"drop": drop} if drop else {}), **args}
    margs = ",".join(f"{k}={v}" for k, v in ordered.items())
    cmd = ["lm_eval", "--model", model, "--model_args", margs, "--tasks", ",".join(run.top_tasks)]
    limit = run.config.get("limit")
    if limit:
        cmd += ["--limit", str(int(limit)) if float(limit).is_integer() else str(limit)]
    gen = run.config.get("gen_kwargs")
    if gen:
        cmd += ["--gen_kwargs", ",".join(f"{k}={v}" for k, v in gen.items()) if isinstance(gen, dict) else str(gen)]
    if run.chat_template:
        cmd.append("--apply_chat_template")
    if run.fewshot_as_multiturn:
        cmd.append("--fewshot_as_multiturn")
    if run.system_instruction:
        cmd += ["--system_instruction", run.system_instruction]
    if run.config.get("batch_size") not in (None, ""):
        cmd += ["--batch_size", str(run.config["batch_size"])]
    return " ".join(shlex.quote(c) for c in cmd)


@dataclass
class _Columns:
    labels: list[str] = field(default_factory=list)
    runs: list[EvalRun] = field(default_factory=list)


def _score_tables(cols: _Columns, own: EvalRun | None, base: EvalRun | None) -> list[dict[str, Any]]:
    keys: list[tuple[str, str]] = []
    for run in cols.runs:
        for k in run.scores:
            if k not in keys:
                keys.append(k)
    tables = []
    for kind, title in (
        (LIKELIHOOD, "Classification (multiple choice / loglikelihood)"),
        (GENERATIVE, "Generative (generate_until)"),
    ):
        rows = []
        for key in keys:
            ref = next(r.scores[key] for r in cols.runs if key in r.scores)
            if ref.kind != kind:
                continue
            vals = [r.scores[key].value if key in r.scores else None for r in cols.runs]
            delta = "–"
            if own is not None and base is not None and key in own.scores and key in base.scores:
                delta = _rel(own.scores[key].value, base.scores[key].value)
            arrow = "" if ref.higher_is_better is not False else " ↓"
            task = f"**{ref.task}** (group)" if ref.group else ref.task
            shots = "–" if ref.n_shot is None else str(ref.n_shot)
            items = "–" if ref.items is None else str(ref.items)
            cells = [task, ref.label + arrow, shots, items, *map(_fmt, vals)]
            if base is not None and own is not None:
                cells.append(delta)
            rows.append("| " + " | ".join(cells) + " |")
        if rows:
            head = ["task", "metric", "n-shot", "items", *cols.labels]
            if base is not None and own is not None:
                head.append("change vs parent")
            sep = "|--|--|--:|--:|" + "--:|" * (len(head) - 4)
            tables.append({"title": title, "header": "| " + " | ".join(head) + " |", "separator": sep, "rows": rows})
    return tables


def _retention(own: EvalRun, base: EvalRun, kind: str) -> tuple[float | None, list[tuple[Score, Score]]]:
    pairs = []
    for key, s in own.scores.items():
        b = base.scores.get(key)
        if b is None or s.kind != kind or s.group or not b.value:
            continue
        pairs.append((s, b))
    if not pairs:
        return None, []
    ratios = [
        (s.value / b.value) if s.higher_is_better is not False else (b.value / s.value if s.value else 0.0)
        for s, b in pairs
    ]
    return sum(ratios) / len(ratios), pairs


def _limitations(
    own: EvalRun | None, base: EvalRun | None, pruned: EvalRun | None, healed: bool, n_dropped: int, n_total: int
) -> tuple[list[str], str | None]:
    items: list[str] = []
    summary = None
    if own is not None and base is not None:
        gen, gen_pairs = _retention(own, base, GENERATIVE)
        lik, _ = _retention(own, base, LIKELIHOOD)
        if gen is not None:
            worst = sorted(gen_pairs, key=lambda p: p[0].value / p[1].value)[:3]
            drops = "; ".join(
                f"{s.task} {s.label}: {b.value:.3f} → {s.value:.3f} ({_rel(s.value, b.value)})" for s, b in worst
            )
            items.append(
                f"**Generative reasoning is where removing layers hurts.** Measured on {len(gen_pairs)} generative "
                f"task(s), this model keeps {gen:.0%} of the parent's score on average; largest losses: {drops}."
            )
            summary = (
                f"removing {n_dropped} of {n_total} layers keeps {gen:.0%} of the parent's score on generative "
                "tasks"
                + (f" and {lik:.0%} on likelihood-scored (multiple-choice) tasks" if lik is not None else "")
                + " (measured; tables below)."
            )
        if gen is None:
            items.append(
                "The generative-reasoning loss could not be expressed as a ratio: the parent scores 0 (or was not "
                "scored) on the generative tasks given. Removing layers typically hurts generative multi-step "
                "reasoning far more than multiple-choice scores suggest; evaluate on generative tasks before use."
            )
        if lik is not None:
            items.append(
                f"Likelihood-scored tasks (multiple choice / loglikelihood) keep {lik:.0%} of the parent's score on "
                "average. Such scores can look intact while generation is broken; judge the model on generative "
                "tasks close to your use."
            )
        if healed and pruned is not None:
            g_pruned, _ = _retention(pruned, base, GENERATIVE)
            if g_pruned is not None and gen is not None:
                items.append(
                    f"Healing moved the generative retention from {g_pruned:.0%} (pruned, before healing) to {gen:.0%}."
                )
    else:
        items.append(
            "The generative-reasoning loss was **not measured** for this card (no parent scores were given). "
            "Removing layers typically hurts generative multi-step reasoning (arithmetic, bracket matching, math "
            "word problems) far more than multiple-choice scores suggest; evaluate on generative tasks before use."
        )
    if own is not None and own.config.get("limit"):
        items.append(
            f"Scores were computed on at most {own.config['limit']:g} items per task; small samples are noisy."
        )
    items.append("It inherits the parent's biases, limitations and license terms.")
    return items, summary


def build_card(
    folder: str | Path,
    *,
    results: Sequence[str | Path] = (),
    base_results: Sequence[str | Path] = (),
    pruned_results: Sequence[str | Path] = (),
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    base_model_relation: str | None = None,
    speedup: float | None = None,
    speedup_note: str | None = None,
    plot: str | Path | None = None,
) -> Any:
    """Render the model card of the checkpoint in ``folder`` (a :class:`huggingface_hub.ModelCard`).

    Args:
        results: lm-eval results (files or ``--output_path`` folders) of this checkpoint;
            they become the card's eval results.
        base_results: results of the unpruned parent (the "parent" column).
        pruned_results: for a healed checkpoint, results of the pruned model before healing.
        repo_id: the Hub repository the card is for (used in titles and commands).
        base_model: the parent's Hub id when the checkpoint records a local path.
        license: the license, when the parent's card does not say (see :func:`resolve_license`).
        base_model_relation: default ``finetune`` for healed checkpoints, else ``merge``
            (a mergekit passthrough of one parent).
        speedup: a measured speed-up factor of this model over the parent.
        plot: a PNG of the layer selection; copied into ``folder`` as ``layer_selection.png``.
    """
    import jinja2
    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    from .resources import bundled_dir

    folder = Path(folder).expanduser()
    plan = read_plan(folder)
    base_id = hub_base_model(plan, base_model)
    parent = parent_dir(plan, folder)
    lic, lic_extra, lic_source = resolve_license(base_id, parent, license)
    recovery = plan.get("recovery") or None
    healed = bool(recovery)
    relation = base_model_relation or ("finetune" if healed else "merge")
    if relation not in _RELATIONS:
        raise PublishError(f"base_model_relation {relation!r} is not one of {', '.join(_RELATIONS)}")
    if speedup is not None and not speedup > 0:
        raise PublishError(f"--speedup must be a positive factor (e.g. 1.25), not {speedup!r}")

    own = load_results(results)
    base = load_results(base_results)
    pruned = load_results(pruned_results) if healed else None
    if pruned_results and not healed:
        raise PublishError(f"--pruned-results is for healed checkpoints; {folder} has no recovery record")

    drop = [int(i) for i in plan["drop"]]
    n_total = int(plan["num_layers"])
    n_kept = n_total - len(drop)
    model_name = repo_id.split("/")[-1] if repo_id else folder.resolve().name
    short_name = model_name

    # selection: the plan of the selection tools, when the spec pointed at one
    method = plan.get("method") or "explicit"
    spec_text = str(plan.get("spec") or format_indices(drop))
    sel_plan: dict[str, Any] | None = None
    if spec_text.startswith("plan:"):
        p = Path(spec_text[5:]).expanduser()
        if p.is_file():
            with contextlib.suppress(Exception):
                sel_plan = json.loads(p.read_text())
            for cand in (p.with_suffix(".png"), Path(str(p) + ".png")):
                if plot is None and cand.is_file():
                    plot = cand
    sel_method = (sel_plan or {}).get("method") or method
    selection_text = _SELECTION.get(sel_method, sel_method)
    if method == "plan":
        selection_text += f" (plan file `{Path(spec_text[5:]).name}`)"
    settings = (sel_plan or {}).get("settings") or {}
    selection_tasks = ", ".join(settings.get("tasks") or []) if sel_method == "iterative" else ""
    rounds = [
        {"round": r["round"] + 1, "chosen": r["chosen"], "score": f"{r['scores'].get(str(r['chosen']), 0):.4f}"}
        for r in (sel_plan or {}).get("rounds", [])
        if "chosen" in r
    ]
    if plot is not None:
        src = Path(plot).expanduser()
        if not src.is_file():
            raise PublishError(f"plot {str(src)!r} does not exist")
        if src.resolve() != (folder / SELECTION_PLOT).resolve():
            shutil.copyfile(src, folder / SELECTION_PLOT)
    plots = sorted(p.name for p in folder.glob("*.png"))

    # size
    counted = parameter_counts(folder)
    params = counted[0] if counted else None
    base_counted = parameter_counts(parent) if parent is not None else None
    params_note = ""
    if base_counted:
        base_params: int | None = base_counted[0]
    elif counted:
        cfg = json.loads((folder / "config.json").read_text())
        prefix = _layers_prefix(cfg.get("model_type")) + "."
        layer_re = re.compile(re.escape(prefix) + r"(\d+)\.")
        per_layer: dict[int, int] = {}
        for name, n in counted[1].items():
            m = layer_re.match(name)
            if m:
                per_layer[int(m.group(1))] = per_layer.get(int(m.group(1)), 0) + n
        mean_layer = sum(per_layer.values()) / len(per_layer) if per_layer else 0
        base_params = int(params + len(drop) * mean_layer) if params is not None else None
        params_note = (
            "The parent's parameter count is estimated (no local copy of the parent was found): this model's count "
            f"plus {len(drop)} removed layers of the mean size of a kept layer."
        )
    else:
        base_params = None
    params_text = _fmt_params(params)
    if params and base_params:
        params_text += f", {_rel(params, base_params)}"

    # recovery
    rec_ctx: dict[str, Any] = {}
    datasets: list[str] = []
    if healed:
        recipe_path = folder / RECIPE_FILE
        rec_ctx = {
            "recipe": recovery.get("recipe", "?"),
            "method": recovery.get("method", "?"),
            "method_text": _RECOVERY_METHOD.get(recovery.get("method", ""), str(recovery.get("method", "?"))),
            "finetune": recovery.get("finetune", "?"),
            "data": recovery.get("data", "?"),
            "teacher": recovery.get("teacher"),
            "steps": recovery.get("steps"),
            "settings": json.dumps(recovery.get("settings"), indent=2) if recovery.get("settings") else "",
            "recipe_yaml": recipe_path.read_text().strip() if recipe_path.is_file() else "",
        }
        datasets = _hub_datasets(recovery.get("data"))

    # scores
    cols = _Columns()
    for label, run in (("parent", base), ("pruned", pruned if healed else own), ("healed", own if healed else None)):
        if run is not None:
            cols.labels.append(label)
            cols.runs.append(run)
    tables = _score_tables(cols, own, base)
    limitations, summary = _limitations(own, base, pruned, healed, len(drop), n_total)
    from .embedded import _COMPLETE

    if parent is not None and (parent / _COMPLETE).is_file():
        source = (parent / _COMPLETE).read_text().split("\n")[0].removeprefix("source=")
        limitations.insert(
            -1,
            f"The parent weights this checkpoint was cut from were dequantized from `{Path(source).name}` (the "
            f"embedded model of lmeval-layerprune), not taken from the original {base_id} checkpoint; "
            "expect small differences from a checkpoint cut from the original weights.",
        )
    ref_run = own or base or pruned
    eval_setup = ""
    if ref_run is not None:
        bits = [f"lm-eval {ref_run.lm_eval_version}" if ref_run.lm_eval_version else "lm-eval"]
        if ref_run.config.get("limit"):
            bits.append(f"at most {ref_run.config['limit']:g} items per task")
        if ref_run.chat_template:
            bits.append("chat template applied")
        eval_setup = ", ".join(bits)

    # commands
    target = repo_id or str(folder)
    mk_yaml = portable_mergekit_yaml(folder, base_id) or "# (no mergekit.yaml in the checkpoint folder)"
    dtype = plan.get("dtype")
    slice_cmd = " ".join(
        shlex.quote(c)
        for c in [
            "lmeval-prune",
            "slice",
            base_id,
            "--drop",
            format_indices(drop),
            "--out",
            f"./{short_name}",
            *(["--dtype", dtype] if dtype else []),
        ]
    )
    heal_cmd = ""
    if healed:
        heal_cmd = (
            f"lmeval-prune heal --base {shlex.quote(base_id)} --drop {format_indices(drop)} "
            f"--recipe {RECIPE_FILE} --out ./{shlex.quote(short_name)}"
        )
    eval_cmds = []
    if base is not None:
        eval_cmds.append("# the parent\n" + _lm_eval_cmd(base, model="hf", pretrained=base_id))
    if pruned is not None:
        eval_cmds.append(
            "# pruned, before healing\n"
            + _lm_eval_cmd(pruned, model="pruned-hf", pretrained=base_id, drop=format_indices(drop))
        )
    template_run = own or base or pruned
    if template_run is not None:
        eval_cmds.append("# this model\n" + _lm_eval_cmd(template_run, model="hf", pretrained=target))
    else:
        eval_cmds.append(f"lm_eval --model hf --model_args pretrained={shlex.quote(target)} --tasks arith_probe")

    tags = ["layer-pruning", "lm-eval", f"layer-pruning-{sel_method}", "text-generation"]
    if plan.get("writer") == "mergekit":
        tags.append("mergekit")
    if healed:
        tags += ["healed", f"recovery-{rec_ctx['method']}", str(rec_ctx["finetune"])]
    card_data = ModelCardData(
        base_model=base_id,
        base_model_relation=relation,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=lic,
        tags=tags,
        datasets=datasets or None,
        model_name=model_name,
        eval_results=eval_results(own, model_name) if own is not None else None,
        **lic_extra,
    )
    lic_link = lic_extra.get("license_link")
    license_text = (
        f"`{lic}`{f' ([terms]({lic_link}))' if lic_link else ''}, the license of the parent {base_id} "
        f"(read from {lic_source}). A pruned or healed model is a derivative of its parent and keeps its terms."
    )
    ctx = {
        "title": f"{model_name}: {base_id} with {len(drop)} of {n_total} layers removed"
        + (" and healed" if healed else ""),
        "base_model_link": f"[{base_id}](https://huggingface.co/{base_id})",
        "n_dropped": len(drop),
        "num_layers": n_total,
        "num_kept": n_kept,
        "healed": healed,
        "recovery": rec_ctx,
        "tool_url": TOOL_URL,
        "tool_version": __version__,
        "writer": plan.get("writer"),
        "gen_loss_summary": summary,
        "drop_list": json.dumps(drop),
        "drop_spec": format_indices(drop),
        "selection_text": selection_text,
        "selection_tasks": selection_tasks,
        "plots": plots,
        "rounds": rounds,
        "base_params_text": _fmt_params(base_params) + (" (estimated)" if params_note else ""),
        "params_text": params_text,
        "params_note": params_note,
        "speedup": f"{speedup:.2f}x" if speedup else "",
        "speedup_note": speedup_note or "",
        "score_tables": tables,
        "eval_setup": eval_setup,
        "limitations": limitations,
        "mergekit_yaml": mk_yaml.strip(),
        "short_name": short_name,
        "slice_cmd": slice_cmd,
        "heal_cmd": heal_cmd,
        "eval_cmds": eval_cmds,
        "license_text": license_text,
    }
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    template = env.from_string((bundled_dir("hub_cards") / TEMPLATE).read_text())
    content = template.render(card_data=card_data.to_yaml(), **ctx)
    content = re.sub(r"\n{3,}", "\n\n", content)
    card = ModelCard(content)
    yaml.safe_load(card.content.split("---")[1])  # the metadata block parses (ModelCard checked it too)
    return card


def write_card(folder: str | Path, **kwargs: Any) -> Path:
    """Write :func:`build_card`'s card to ``folder/README.md`` and return its path."""
    from .guard import guard_card, mark_card, replace_atomically

    folder = Path(folder).expanduser()
    path = folder / CARD_FILE
    guard_card(path)  # a hand-written README.md is never replaced
    card = build_card(folder, **kwargs)
    with replace_atomically(path) as tmp:
        tmp.write_text(mark_card(str(card)))
    return path


# ---------------------------------------------------------------------- upload


def _matches(name: str, patterns: Sequence[str]) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name, p) for p in patterns)


def upload_manifest(folder: str | Path, base_model: str | None = None) -> list[tuple[str, Path | bytes]]:
    """What :func:`push` uploads: ``(path in repo, local file or content)``, sorted by path.

    Only top-level files a checkpoint needs (weights, config, tokenizer, the card,
    ``mergekit.yaml``, the plan, the recovery recipe, plots). Where the plan records the
    parent as a local path, ``mergekit.yaml``, ``config.json``'s plan and the plan file are
    uploaded naming the parent by its Hub id instead. Everything else in the folder
    (results, logs, optimizer states, sub-folders, hidden files) stays local.
    """
    folder = Path(folder).expanduser()
    out: list[tuple[str, Path | bytes]] = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.name in UPLOAD_FILES or _matches(p.name, UPLOAD_PATTERNS):
            out.append((p.name, p))
    names = {n for n, _ in out}
    missing = [n for n in (CARD_FILE, "config.json") if n not in names]
    if not any(_matches(n, ("*.safetensors",)) for n in names):
        missing.append("*.safetensors weights")
    if missing:
        raise PublishError(
            f"{folder} lacks what a checkpoint upload needs: {', '.join(missing)}"
            + (" (write the card with `lmeval-prune card DIR`)" if CARD_FILE in missing else "")
        )
    plan = read_plan(folder)
    recorded = str(plan.get("base_model") or "")
    hub_id = hub_base_model(plan, base_model)
    rewritten: dict[str, bytes] = {}
    if MERGEKIT_FILE in names:
        text = portable_mergekit_yaml(folder, hub_id)
        if text is not None:
            rewritten[MERGEKIT_FILE] = text.encode()
    if recorded and recorded != hub_id and _is_local_path(recorded):
        # the published plan names the parent by its Hub id, not a path on this machine
        cfg = json.loads((folder / "config.json").read_text())
        cfg[PLAN_ATTR] = {**cfg[PLAN_ATTR], "base_model": hub_id}
        rewritten["config.json"] = (json.dumps(cfg, indent=2) + "\n").encode()
        if PLAN_FILE in names:
            plan_file = json.loads((folder / PLAN_FILE).read_text())
            rewritten[PLAN_FILE] = (json.dumps({**plan_file, "base_model": hub_id}, indent=2) + "\n").encode()
    return [(n, rewritten.get(n, src)) for n, src in out]


def _size(src: Path | bytes) -> int:
    return len(src) if isinstance(src, bytes) else src.stat().st_size


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def describe_manifest(manifest: Sequence[tuple[str, Path | bytes]]) -> str:
    """One line per file: size and path in the repository."""
    lines = [f"  {_human(_size(src)):>10}  {name}" for name, src in manifest]
    total = sum(_size(src) for _, src in manifest)
    return "\n".join([*lines, f"  {_human(total):>10}  total ({len(manifest)} files)"])


@dataclass
class PushResult:
    """What :func:`push` did."""

    repo_id: str
    files: list[str]
    deleted: list[str] = field(default_factory=list)
    commit_url: str | None = None
    pr_url: str | None = None
    dry_run_dir: Path | None = None
    created_repo: bool = False


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", text)


def _server_says(err: Any) -> str:
    msg = getattr(err, "server_message", None)
    if not msg:
        with contextlib.suppress(Exception):
            body = err.response.json()
            msg = body.get("error") if isinstance(body, dict) else None
    return f" The Hub said: {msg.strip()}" if msg else ""


@contextlib.contextmanager
def _hub_errors(stage: str, repo_id: str, endpoint: str, token: str | None) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into one clear :class:`PublishError`."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except PublishError:
        raise
    except OfflineModeIsEnabled:
        raise PublishError(f"cannot push {repo_id}: HF_HUB_OFFLINE is set; unset it to reach {endpoint}") from None
    except Exception as e:
        http = e if isinstance(e, HfHubHTTPError) else None
        cause = e.__cause__
        while http is None and cause is not None:
            http = cause if isinstance(cause, HfHubHTTPError) else None
            cause = cause.__cause__
        if http is not None and getattr(http, "response", None) is not None:
            status = http.response.status_code
            says = _server_says(http)
            if status == 401:
                msg = (
                    f"authentication failed (401) while {stage}: {endpoint} rejected the token from HF_TOKEN or the "
                    "login cache. Create a token with write access at https://huggingface.co/settings/tokens, then "
                    "set HF_TOKEN or run `hf auth login`."
                )
            elif status == 403:
                msg = (
                    f"permission denied (403) while {stage}: the token cannot write to {repo_id} (a read-only "
                    f"token, or not a member of the '{repo_id.split('/')[0]}' organization).{says}"
                )
            elif status == 404:
                msg = (
                    f"{repo_id} was not found (404) while {stage}: check the name, and that your token can see it."
                    f"{says}"
                )
            elif status == 429:
                retry = http.response.headers.get("Retry-After")
                msg = (
                    f"rate limited by the Hub (429) while {stage}"
                    + (f"; retry after {retry} seconds" if retry else "; wait a few minutes and run it again")
                    + f".{says}"
                )
            elif status >= 500:
                msg = (
                    f"the Hub failed with a server error ({status}) while {stage}; nothing was committed to "
                    f"{repo_id}. Run the same command again (large files already uploaded are not sent twice).{says}"
                )
            else:
                msg = f"the Hub refused the request ({status}) while {stage}.{says}"
            raise PublishError(_scrub(msg, token)) from None
        name = type(e).__name__
        if isinstance(e, OSError) or "httpx" in type(e).__module__ or name.endswith(("ConnectError", "Timeout")):
            raise PublishError(
                _scrub(f"could not reach the Hub at {endpoint} while {stage} ({name}: {e}); check the network", token)
            ) from None
        if isinstance(e, ValueError) and "metadata" in str(e).lower():
            raise PublishError(_scrub(f"the Hub rejected the card's metadata while {stage}: {e}", token)) from None
        raise PublishError(_scrub(f"pushing to {repo_id} failed while {stage}: {name}: {e}", token)) from None


def get_token() -> str:
    """The Hub token from ``HF_TOKEN`` or the login cache; a :class:`PublishError` when there is none."""
    from huggingface_hub import get_token as hf_get_token

    token = hf_get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token found: set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens) or run `hf auth login`"
        )
    return token


def _validate_repo(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("it needs exactly one '/'")
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f"--repo {repo_id!r} is not a valid repository id NAMESPACE/NAME: {e}") from None


def push(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    overwrite: bool = False,
    dry_run: str | Path | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    echo: Any = print,
) -> PushResult:
    """Upload the checkpoint in ``folder`` to the Hub repository ``repo_id`` in one commit.

    The card (``README.md``) is written first with :func:`write_card` when the folder has none.
    Creates the repository (``private`` if asked) when missing. Refuses to commit over a
    model already in the repository unless ``revision`` (a branch, created when missing),
    ``create_pr`` (a pull request) or ``overwrite`` says so; weights of the old model that the
    new one does not have are deleted in the same commit, so shards never mix.

    Args:
        dry_run: a local folder: write exactly the files that would be uploaded there, list
            them, and contact nothing.
        endpoint: the Hub URL (default: ``HF_ENDPOINT`` or https://huggingface.co).
        echo: where progress lines go (``print`` by default).

    Raises:
        PublishError: missing token, a refused overwrite, or a Hub failure (one clear message).
    """
    from huggingface_hub import constants

    folder = Path(folder).expanduser()
    _validate_repo(repo_id)
    if not folder.is_dir():
        raise PublishError(f"checkpoint folder {str(folder)!r} does not exist")
    if dry_run is not None:  # before anything is written: never into or over the checkpoint folder
        from .guard import guard_output

        guard_output(Path(dry_run).expanduser(), inputs=[folder], what="dry-run folder", flag="--dry-run")
    if not (folder / CARD_FILE).is_file():
        echo(f"no {CARD_FILE} in {folder}: writing the model card first")
        write_card(folder, repo_id=repo_id, base_model=base_model, license=license)
    manifest = upload_manifest(folder, base_model)
    listing = describe_manifest(manifest)

    if dry_run is not None:
        out = Path(dry_run).expanduser()
        if out.exists() and any(out.iterdir()):
            raise PublishError(f"dry-run folder {out} already exists and is not empty; remove it or name another")
        from .fsutil import atomic_dir

        if out.exists():
            out.rmdir()
        with atomic_dir(out) as tmp:
            for name, src in manifest:
                if isinstance(src, bytes):
                    (tmp / name).write_bytes(src)
                else:
                    shutil.copyfile(src, tmp / name)
        echo(f"dry run: these files would be uploaded to {repo_id} (copied to {out}):\n{listing}")
        return PushResult(repo_id=repo_id, files=[n for n, _ in manifest], dry_run_dir=out)

    token = get_token()
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token, library_name="lmeval-layerprune", library_version=__version__)
    result = PushResult(repo_id=repo_id, files=[n for n, _ in manifest])

    with _hub_errors("checking the repository", repo_id, endpoint, token):
        try:
            api.model_info(repo_id)
            exists = True
        except RepositoryNotFoundError:
            exists = False
    if not exists:
        with _hub_errors("creating the repository", repo_id, endpoint, token):
            api.create_repo(repo_id, private=private, exist_ok=True)
        result.created_repo = True
        echo(f"created {'private ' if private else ''}repository {repo_id}")
    elif private:
        echo(f"note: {repo_id} already exists; --private only applies when the repository is created")

    target = revision or constants.DEFAULT_REVISION
    remote: list[str] = []
    with _hub_errors(f"reading what {repo_id}@{target} holds", repo_id, endpoint, token):
        try:
            info = api.model_info(repo_id, revision=target)
            remote = [s.rfilename for s in info.siblings or []]
        except RevisionNotFoundError:
            if not revision:
                raise
            api.create_branch(repo_id, branch=revision, exist_ok=True)
            echo(f"created branch {revision}")
            remote = [s.rfilename for s in api.model_info(repo_id, revision=revision).siblings or []]
    existing_model = sorted(f for f in remote if _matches(f, MODEL_FILE_PATTERNS))
    if existing_model and not (revision or create_pr or overwrite):
        raise PublishError(
            f"{repo_id} already holds a model ({', '.join(existing_model[:4])}"
            f"{', ...' if len(existing_model) > 4 else ''}); refusing to replace it. Pass --revision BRANCH to push "
            "to a branch, --create-pr to open a pull request, or --overwrite to replace it"
        )
    uploading = {n for n, _ in manifest}
    stale = sorted(f for f in existing_model if f not in uploading and "/" not in f)
    ops: list[Any] = [
        CommitOperationAdd(path_in_repo=n, path_or_fileobj=src if isinstance(src, bytes) else str(src))
        for n, src in manifest
    ]
    ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
    result.deleted = stale
    where = f"a pull request against {target}" if create_pr else f"{repo_id}@{target}"
    echo(f"uploading to {where}:\n{listing}" + (f"\n  deleting the old model's {', '.join(stale)}" if stale else ""))
    plan = read_plan(folder)
    message = commit_message or (
        f"Upload {hub_base_model(plan, base_model)} without layers {format_indices(plan['drop'])}"
        + (" (healed)" if plan.get("recovery") else "")
        + " (lmeval-layerprune)"
    )
    with _hub_errors("uploading and committing the files", repo_id, endpoint, token):
        info = api.create_commit(repo_id, ops, commit_message=message, revision=revision, create_pr=create_pr or None)
    result.commit_url = info.commit_url
    result.pr_url = info.pr_url
    echo(f"pushed: {info.pr_url or info.commit_url}")
    return result


# ------------------------------------------------------------------------ CLI


def _card_kwargs(args: Any) -> dict[str, Any]:
    return {
        "results": args.results or [],
        "base_results": args.base_results or [],
        "pruned_results": args.pruned_results or [],
        "repo_id": args.repo,
        "base_model": args.base_model,
        "license": args.license,
        "base_model_relation": args.base_model_relation,
        "speedup": args.speedup,
        "speedup_note": args.speedup_note,
        "plot": args.plot,
    }


def _cmd_card(args: Any) -> int:
    if args.repo:
        _validate_repo(args.repo)
    path = write_card(args.dir, **_card_kwargs(args))
    print(f"wrote {path}")
    return 0


def _cmd_push(args: Any) -> int:
    dry = None
    if args.dry_run is not None:
        dry = args.dry_run or str(Path(args.dir).expanduser().resolve()) + DRY_RUN_SUFFIX
    push(
        args.dir,
        args.repo,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        overwrite=args.overwrite,
        dry_run=dry,
        commit_message=args.message,
        base_model=args.base_model,
        license=args.license,
    )
    return 0


def _add_card_source_args(p: Any) -> None:
    p.add_argument(
        "--base-model", default=None, help="Hub id of the unpruned parent (when the checkpoint records a path)"
    )
    p.add_argument("--license", default=None, help="license id when the parent's card does not say (e.g. apache-2.0)")


def add_parsers(sub: Any) -> None:
    """Add the ``card`` and ``push`` subcommands to ``lmeval-prune``'s subparsers."""
    import argparse

    p = sub.add_parser(
        "card",
        help="write DIR/README.md: a Hub model card from the pruning plan, the recipe and lm-eval results",
        description="Render the model card of the pruned (or healed) checkpoint in DIR into DIR/README.md: "
        "metadata (base_model, license, tags, datasets, eval results) and a body with the removed layers, "
        "sizes, recovery recipe, base/pruned/healed scores, limitations and reproduction commands.",
    )
    p.add_argument("dir", help="checkpoint folder written by `lmeval-prune slice` or `heal`")
    p.add_argument("--results", nargs="+", default=[], help="lm-eval results of this checkpoint (files or folders)")
    p.add_argument("--base-results", nargs="+", default=[], help="lm-eval results of the unpruned parent")
    p.add_argument(
        "--pruned-results", nargs="+", default=[], help="healed checkpoints: results of the pruned model before healing"
    )
    p.add_argument("--repo", default=None, help="the Hub repository the card is for (NAMESPACE/NAME)")
    _add_card_source_args(p)
    p.add_argument(
        "--base-model-relation", choices=_RELATIONS, default=None, help="default: finetune if healed, else merge"
    )
    p.add_argument("--speedup", type=float, default=None, help="measured speed-up over the parent (e.g. 1.22)")
    p.add_argument("--speedup-note", default=None, help="how the speed-up was measured")
    p.add_argument("--plot", default=None, help="PNG of the layer selection (copied into DIR)")
    p.set_defaults(func=_cmd_card)

    p = sub.add_parser(
        "push",
        help="upload a pruned/healed checkpoint (only the files it needs) to the Hugging Face Hub",
        description="Upload the checkpoint in DIR to the Hub repository --repo in one commit: weights, config, "
        "tokenizer, card, mergekit YAML, plan, recipe and plots, nothing else. Creates the repository when "
        "missing and refuses to replace a model already there unless --revision, --create-pr or --overwrite "
        "says so. The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", help="checkpoint folder (README.md is written first when missing)")
    p.add_argument("--repo", required=True, help="target repository, NAMESPACE/NAME")
    p.add_argument("--private", action="store_true", help="create the repository private (when it is created)")
    p.add_argument("--revision", default=None, help="push to this branch (created when missing)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing directly")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in the repository")
    p.add_argument(
        "--dry-run",
        nargs="?",
        const="",
        default=None,
        metavar="FOLDER",
        help=f"write exactly what would be uploaded to FOLDER (default: DIR{DRY_RUN_SUFFIX}) and list it; "
        "contacts nothing",
    )
    p.add_argument("--message", default=None, help="commit message")
    _add_card_source_args(p)
    p.set_defaults(func=_cmd_push)


def add_push_to_hub_argument(parser: Any) -> None:
    """Add ``--push-to-hub REPO`` (and ``--hub-private``) to a command that writes a checkpoint."""
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO",
        default=None,
        help="after writing, upload the checkpoint with a generated card (like `lmeval-prune push`)",
    )
    parser.add_argument("--hub-private", action="store_true", help="with --push-to-hub: create the repo private")
    if not any("--license" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--license", default=None, help="with --push-to-hub: the license, if the parent's card has none"
        )
    if not any("--base-model" in a.option_strings for a in parser._actions):
        parser.add_argument("--base-model", default=None, help="with --push-to-hub: the parent's Hub id")


def check_push_to_hub(args: Any) -> None:
    """Fail before the long work when ``--push-to-hub`` cannot succeed (bad repo id, no token)."""
    if getattr(args, "push_to_hub", None):
        _validate_repo(args.push_to_hub)
        get_token()


def push_after(args: Any, out_dir: str | Path) -> PushResult | None:
    """Run the ``--push-to-hub`` upload for a command that just wrote ``out_dir``."""
    repo = getattr(args, "push_to_hub", None)
    if not repo:
        return None
    folder = Path(out_dir)
    try:
        return push(folder, repo, private=args.hub_private, base_model=args.base_model, license=args.license)
    except PublishError as e:
        raise PublishError(
            f"{e}\n(the checkpoint is in {folder}; push it later with `lmeval-prune push {folder} --repo {repo}`)"
        ) from None
