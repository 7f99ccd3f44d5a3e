"""Nothing local leaves the machine: rewrite every path of this machine in what a card shows or an
upload holds.

:class:`Portable` knows the local paths a checkpoint was built from (the parent checkout, the
checkpoint folder, plan files, prompt files, the teacher) and what stands for each on the Hub:
the parent's Hub id, the target repository, the resolved layer list for a ``plan:PATH`` spec, a
file's bare name otherwise. Any other existing absolute path left in a text is cut to its name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.layout import MERGEKIT_FILE, PLAN_ATTR, RECIPE_FILE
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.hub.facts import PLAN_FILES, is_local_path, mergekit_sources

#: an absolute or home-relative path of two or more parts, not part of a URL
_ABS_PATH = re.compile(r"(?<![\w:/.~%-])(~?/[\w.@+-]+(?:/[\w.@+-]*)+)")
#: what stands for the parent when its Hub id is not known (a card kept locally)
PARENT_PLACEHOLDER = "PARENT"
TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".md", ".txt", ".jinja", ".model", ".tiktoken")


def _spellings(path: str, cwd: Path | None = None) -> set[str]:
    """The ways a local path may be written: as given, expanded, absolute, resolved."""
    out = {path}
    p = Path(path).expanduser()
    out.add(str(p))
    base = cwd or Path.cwd()
    out.add(str(p if p.is_absolute() else base / p))
    try:
        out.add(str(p.resolve()))
    except OSError:
        pass
    return {s.rstrip("/") for s in out if s and s not in (".", "/")}


@dataclass
class Portable:
    """Local path -> what the Hub copy says instead (longest spelling first)."""

    replacements: dict[str, str] = field(default_factory=dict)
    drop: list[int] | None = None

    @classmethod
    def for_checkpoint(cls, folder: Path, plan: dict[str, Any], hub_id: str | None, repo_id: str | None) -> Portable:
        """The replacements for the checkpoint in ``folder``: its parent (recorded in the plan or
        the mergekit YAML) becomes ``hub_id``, the folder becomes ``repo_id`` (or ``./NAME``),
        every other local path recorded in the plan becomes its bare name."""
        self = cls(drop=[int(i) for i in plan.get("drop", [])])
        parent_name = hub_id or PARENT_PLACEHOLDER
        self.add(str(folder), repo_id or f"./{folder.resolve().name}")
        for s in _strings(plan):
            if "/" in s and is_local_path(s) and not s.startswith("plan:"):
                self.add(s, Path(s).name)
        for name in [str(plan.get("base_model") or ""), *mergekit_sources(folder)]:
            if name and is_local_path(name):
                self.add(name, parent_name)
        recovery = plan.get("recovery") or {}
        teacher = str(recovery.get("teacher") or "")
        if teacher and is_local_path(teacher) and teacher not in self.replacements:
            self.add(teacher, Path(teacher).name)
        return self

    def add(self, path: str, replacement: str) -> None:
        for s in _spellings(path):
            self.replacements[s] = replacement
        self.replacements = dict(sorted(self.replacements.items(), key=lambda kv: -len(kv[0])))

    # ------------------------------------------------------------ rewriting

    def text(self, text: str) -> str:
        """``text`` with every known local path replaced, and any other existing absolute path cut
        to its last part."""
        for path, new in self.replacements.items():
            if "/" in path and path in text:
                text = text.replace(path, new)

        def cut(m: re.Match[str]) -> str:
            p = m.group(1)
            try:
                exists = Path(p).expanduser().exists()
            except OSError:
                exists = False
            return Path(p.rstrip("/")).name if exists else p

        return _ABS_PATH.sub(cut, text)

    def value(self, obj: Any) -> Any:
        """A JSON-like value with local paths rewritten (a ``plan:PATH`` spec becomes the layer list)."""
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.value(v) for v in obj]
        if isinstance(obj, str):
            if obj in self.replacements:
                return self.replacements[obj]
            if obj.startswith("plan:") and self.drop is not None:
                return format_indices(self.drop)
            return self.text(obj)
        return obj

    def plan(self, plan: dict[str, Any]) -> dict[str, Any]:
        """A plan record naming the parent by its Hub id, with ``spec: plan:PATH`` as the layer list."""
        return self.value(plan)

    def json_bytes(self, raw: bytes) -> bytes:
        data = json.loads(raw)
        if isinstance(data, dict) and isinstance(data.get(PLAN_ATTR), dict):
            data[PLAN_ATTR] = self.plan(data[PLAN_ATTR])
        elif isinstance(data, dict) and "drop" in data and "num_layers" in data:
            data = self.plan(data)
        new = self.value(data)
        return raw if new == json.loads(raw) else (json.dumps(new, indent=2) + "\n").encode()

    def _yaml(self, text: str, fix: Any) -> str:
        import yaml

        original = yaml.safe_load(text) or {}
        cfg = yaml.safe_load(text) or {}
        fix(cfg)
        cfg = self.value(cfg)
        if cfg == original:  # nothing to rewrite in the values: keep the file's own layout
            return self.text(text)
        head = [self.text(line) for line in text.splitlines() if line.startswith("#")]
        return "\n".join(head) + ("\n" if head else "") + yaml.safe_dump(cfg, sort_keys=False)

    def mergekit_yaml(self, text: str) -> str:
        """``mergekit.yaml`` naming the parent by its Hub id."""
        return self._yaml(text, lambda cfg: None)

    def recipe_yaml(self, text: str) -> str:
        """The recipe as used, with ``drop: plan:PATH`` as the layer list and no local path."""

        def fix(cfg: dict[str, Any]) -> None:
            if isinstance(cfg.get("drop"), str) and cfg["drop"].startswith("plan:") and self.drop is not None:
                cfg["drop"] = format_indices(self.drop)

        return self._yaml(text, fix)

    def file(self, name: str, raw: bytes) -> bytes:
        """An uploaded file's bytes, rewritten where it holds a local path (else returned as is)."""
        if not name.endswith(TEXT_SUFFIXES):
            return raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
        if name.endswith(".json"):
            try:
                return self.json_bytes(raw)
            except json.JSONDecodeError:
                pass
        elif name == RECIPE_FILE:
            new = self.recipe_yaml(text)
            return raw if new == text else new.encode()
        elif name == MERGEKIT_FILE:
            new = self.mergekit_yaml(text)
            return raw if new == text else new.encode()
        new = self.text(text)
        return raw if new == text else new.encode()

    def leaks(self, raw: bytes) -> list[str]:
        """The known local paths (and existing absolute paths) still in ``raw``."""
        text = raw.decode("utf-8", "replace")
        found = [p for p in self.replacements if "/" in p and p in text]
        for m in _ABS_PATH.finditer(text):
            try:
                if Path(m.group(1)).expanduser().exists():
                    found.append(m.group(1))
            except OSError:
                continue
        return sorted(set(found))


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj
        if obj.startswith("plan:"):
            yield obj[5:].split("@")[0]


__all__ = ["PARENT_PLACEHOLDER", "PLAN_FILES", "Portable"]
