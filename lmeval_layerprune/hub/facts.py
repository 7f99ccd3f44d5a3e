"""Facts about a checkpoint folder and its parent, read from disk: the plan, parameter counts, the
parent's Hub id, local checkout and license, the portable mergekit YAML, Hub dataset ids.

Nothing here renders or uploads; :mod:`.card` and :mod:`.push` build on it.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.arch import ARCHITECTURES, ArchInfo
from lmeval_layerprune.core.embedded import EMBEDDED_REPO, embedded_model_dir, gguf_path
from lmeval_layerprune.core.layout import (
    CARD_FILE,
    EMBEDDED_COMPLETE,
    LEGACY_PLAN_FILES,
    MERGEKIT_FILE,
    PLAN_ATTR,
    PLAN_FILE,
)
from lmeval_layerprune.errors import PublishError

#: every name a plan file has had (the current one first); all are read and uploaded
PLAN_FILES: tuple[str, ...] = (PLAN_FILE, *LEGACY_PLAN_FILES)

__all__ = [
    "PLAN_FILES",
    "Identity",
    "gguf_metadata",
    "hub_datasets",
    "identify",
    "is_local_path",
    "parameter_counts",
    "parent_dir",
    "read_plan",
    "resolve_license",
]


def read_plan(folder: Path) -> dict[str, Any]:
    """The layer-pruning plan recorded in ``folder/config.json`` (or a plan file next to it)."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise PublishError(f"{folder} is not a checkpoint folder: it has no config.json")
    plan = json.loads(cfg_path.read_text()).get(PLAN_ATTR)
    for name in PLAN_FILES:
        if not plan and (folder / name).is_file():
            plan = json.loads((folder / name).read_text())
    if not plan or "drop" not in plan:
        raise PublishError(
            f"{folder} is not a pruned checkpoint: config.json has no {PLAN_ATTR!r} record "
            "(write one with `lmeval-prune slice MODEL --drop SPEC --out DIR`)"
        )
    return plan


def parameter_counts(folder: Path) -> tuple[int, dict[str, int]] | None:
    """Total parameter count from the safetensors headers (no weights are read), and the count
    per tensor name. ``None`` when the folder has no safetensors weights (adapters excluded)."""
    from safetensors import safe_open

    files = [f for f in sorted(folder.glob("*.safetensors")) if not f.name.startswith("adapter_model")]
    if not files:
        return None
    per: dict[str, int] = {}
    for f in files:
        with safe_open(str(f), "np") as fh:
            for name in fh.keys():
                n = 1
                for d in fh.get_slice(name).get_shape():
                    n *= int(d)
                per[name] = n
    return sum(per.values()), per


def estimated_parent_params(folder: Path, counted: dict[str, int], n_dropped: int) -> int:
    """This model's count plus ``n_dropped`` layers of the mean size of a kept layer."""
    cfg = json.loads((folder / "config.json").read_text())
    prefix = ARCHITECTURES.get(cfg.get("model_type") or "", ArchInfo()).layers + "."
    layer_re = re.compile(re.escape(prefix) + r"(\d+)\.")
    per_layer: dict[int, int] = {}
    for name, n in counted.items():
        m = layer_re.match(name)
        if m:
            per_layer[int(m.group(1))] = per_layer.get(int(m.group(1)), 0) + n
    mean_layer = sum(per_layer.values()) / len(per_layer) if per_layer else 0
    return int(sum(counted.values()) + n_dropped * mean_layer)


def is_local_path(name: str) -> bool:
    """Whether ``name`` names something on this machine rather than a Hub id."""
    name = str(name)
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def mergekit_sources(folder: Path) -> list[str]:
    import yaml

    path = folder / MERGEKIT_FILE
    if not path.is_file():
        return []
    cfg = yaml.safe_load(path.read_text()) or {}
    return [src["model"] for s in cfg.get("slices", []) for src in s.get("sources", []) if "model" in src]


def parent_dir(plan: dict[str, Any], folder: Path) -> Path | None:
    """The parent's local checkout, when there is one: the recorded base path, the mergekit
    source, or the converted embedded model."""
    for c in [str(plan.get("base_model") or ""), *mergekit_sources(folder)]:
        if c and is_local_path(c) and Path(c).expanduser().is_dir():
            return Path(c).expanduser()
    if plan.get("base_model") == EMBEDDED_REPO:
        with contextlib.suppress(Exception):
            return embedded_model_dir(convert=False)
    return None


def validate_hub_id(name: str, what: str = "base model") -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(name))
    except HFValidationError as e:
        raise PublishError(f"{what} {name!r} is not a valid Hub id (NAMESPACE/NAME): {e}") from None
    return str(name)


def _front_matter(path: Path) -> dict[str, Any]:
    from huggingface_hub import metadata_load

    with contextlib.suppress(Exception):
        return metadata_load(path) or {}
    return {}


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_metadata(path: str | Path, key: str) -> Any:
    """One metadata value from a GGUF file's header, reading only the key/value section
    (``gguf.GGUFReader`` maps every tensor record too, which takes seconds on a large file)."""
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
    base_model: str | None, parent: Path | None, explicit: str | None = None
) -> tuple[str, dict[str, Any], str] | None:
    """The parent's license: ``(license, extra metadata, where it came from)``, or ``None``.

    Order: ``explicit``; the front matter of the parent checkout's README.md; the parent's card in
    the local Hub cache; for the embedded model, the license in its GGUF file.
    """
    if explicit:
        return explicit, {}, "the --license option"
    cards: list[tuple[Path, str]] = []
    if parent is not None and (parent / CARD_FILE).is_file():
        cards.append((parent / CARD_FILE, "the parent's card"))
    if base_model:
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
    if base_model == EMBEDDED_REPO or (parent is not None and (parent / EMBEDDED_COMPLETE).is_file()):
        with contextlib.suppress(Exception):
            gg = gguf_path()
            value = gguf_metadata(gg, "general.license")
            if value:
                return str(value), {}, f"the embedded model's GGUF metadata ({gg.name})"
    return None


def hub_datasets(data: Any) -> list[str]:
    """Hub dataset ids named in a recovery ``data`` string (local files are left out)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    out: list[str] = []
    for tok in re.split(r"[\s,;:|]+", str(data or "")):
        if tok.count("/") != 1 or is_local_path(tok) or tok.endswith((".json", ".jsonl", ".txt", ".parquet")):
            continue
        with contextlib.suppress(HFValidationError):
            validate_repo_id(tok)
            out.append(tok)
    return out


@dataclass
class Identity:
    """Who the checkpoint's parent is, and what is not known about it.

    ``base_model`` is the parent's Hub id (``None`` when the checkpoint records only a local path
    and no ``--base-model`` was given); ``license`` likewise. ``missing`` names each unknown field
    with the flag that fills it; a card can be written without them, an upload cannot.
    """

    base_model: str | None
    recorded: str | None
    parent: Path | None
    license: str | None = None
    license_extra: dict[str, Any] = field(default_factory=dict)
    license_source: str | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)

    def require(self, doing: str) -> None:
        """Raise :class:`PublishError` naming every missing field and its flag."""
        if self.missing:
            raise PublishError(f"cannot {doing}: " + "; ".join(f"{why} (pass {flag})" for why, flag in self.missing))

    def warning(self) -> str | None:
        if not self.missing:
            return None
        fields = "; ".join(f"{why} (pass {flag})" for why, flag in self.missing)
        return f"the card was written without: {fields}. `lmeval-prune push` refuses until these are known."


def identify(folder: Path, plan: dict[str, Any], base_model: str | None = None, license: str | None = None) -> Identity:
    """The parent's Hub id, local checkout and license, with what is missing and how to fill it."""
    recorded = str(plan.get("base_model") or "") or None
    parent = parent_dir(plan, folder)
    missing: list[tuple[str, str]] = []
    hub_id: str | None = None
    if base_model:
        hub_id = validate_hub_id(base_model)
    elif recorded and not is_local_path(recorded):
        hub_id = validate_hub_id(recorded)
    elif recorded:
        missing.append(
            ("base_model: the parent recorded in the checkpoint is a local path", "--base-model NAMESPACE/NAME")
        )
    else:
        missing.append(("base_model: the checkpoint does not record its parent", "--base-model NAMESPACE/NAME"))
    ident = Identity(base_model=hub_id, recorded=recorded, parent=parent, missing=missing)
    found = resolve_license(hub_id, parent, license)
    if found is None:
        who = repr(hub_id) if hub_id else "the parent"
        ident.missing.append(
            (
                f"license: no README.md with a 'license' field for {who} in its local checkout or the Hub cache "
                "(a pruned model keeps its parent's license; see https://huggingface.co/docs/hub/repositories-licenses)",
                "--license ID, e.g. --license apache-2.0",
            )
        )
    else:
        ident.license, ident.license_extra, ident.license_source = found
    return ident
