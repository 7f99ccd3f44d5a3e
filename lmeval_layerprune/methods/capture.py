"""Hidden states at layer boundaries on calibration text: what one-pass layer methods score.

The states are captured with forward hooks on the decoder layers (``output_hidden_states`` is
not used because many models apply the final norm to its last entry). Each calibration text runs
alone (batch 1, no padding), so a text's last position is its last real token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.resources import default_calibration_path

DEFAULT_CALIB_SAMPLES = 32
DEFAULT_CALIB_MAX_TOKENS = 128


@dataclass(frozen=True)
class Calibration:
    """Which calibration text one-pass methods read: ``path`` (``None``: the bundled text), how many
    texts (``samples``) and how many tokens of each (``max_tokens``)."""

    path: str | None = None
    samples: int = DEFAULT_CALIB_SAMPLES
    max_tokens: int = DEFAULT_CALIB_MAX_TOKENS

    @classmethod
    def of(cls, path: str | Path | None = None, samples: int | None = None) -> Calibration:
        """From the ``calib`` / ``calib_samples`` arguments commands take (``None``: the defaults)."""
        return cls(path=str(path) if path is not None else None, samples=samples or DEFAULT_CALIB_SAMPLES)

    def texts(self) -> list[str]:
        return load_calibration_texts(self.path, self.samples)


def load_calibration_texts(path: str | Path | None = None, limit: int = DEFAULT_CALIB_SAMPLES) -> list[str]:
    """Calibration texts: the bundled set, or a ``.txt`` (paragraphs split by blank lines) or
    ``.jsonl`` (a ``text`` field per line) file."""
    p = Path(path).expanduser() if path is not None else default_calibration_path()
    if not p.is_file():
        raise FileNotFoundError(
            f"calibration file {str(p)!r} does not exist (calib=PATH expects a .txt or .jsonl file)"
        )
    if p.suffix == ".jsonl":
        texts = []
        for lineno, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                texts.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{p}:{lineno}: expected a JSON object with a 'text' field") from None
    else:
        texts = [t.strip() for t in p.read_text().split("\n\n")]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"calibration file {str(p)!r} holds no text")
    return texts[:limit]


@torch.no_grad()
def layer_boundary_states(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    max_tokens: int = DEFAULT_CALIB_MAX_TOKENS,
) -> list[list[torch.Tensor]]:
    """For each text, the ``num_layers + 1`` hidden states at layer boundaries.

    Entry ``i`` is the input of layer ``i``; the last entry is the output of the last layer.
    Each tensor is ``[tokens, hidden]`` in float32 on the CPU.
    """
    info = arch_for(model.config)
    layers = model.get_submodule(info.layers)
    captured: list[torch.Tensor] = []

    def pre_hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        h = kwargs.get("hidden_states", args[0] if args else None)
        captured.append(h[0].detach().float().cpu())

    def post_hook(_module: torch.nn.Module, _args: tuple, output: Any) -> None:
        h = output[0] if isinstance(output, (tuple, list)) else output
        captured.append(h[0].detach().float().cpu())

    handles = [layer.register_forward_pre_hook(pre_hook, with_kwargs=True) for layer in layers]
    handles.append(layers[-1].register_forward_hook(post_hook))
    device = next(model.parameters()).device
    out = []
    try:
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)
            captured.clear()
            model(input_ids=ids["input_ids"].to(device), use_cache=False)
            if len(captured) != len(layers) + 1:
                raise RuntimeError(f"captured {len(captured)} hidden states for {len(layers)} layers")
            out.append(list(captured))
    finally:
        for h in handles:
            h.remove()
    return out


def calibration_states(model: torch.nn.Module, tokenizer: Any, calibration: Calibration) -> list[list[torch.Tensor]]:
    """:func:`layer_boundary_states` of ``calibration``'s texts, with the model in eval mode."""
    texts = calibration.texts()
    was_training = model.training
    model.eval()
    try:
        return layer_boundary_states(model, tokenizer, texts, calibration.max_tokens)
    finally:
        model.train(was_training)
