"""One-pass layer scores: block influence (ShortGPT) and angular distance (Gromov et al.).

Both read the hidden state entering each decoder layer and the one leaving the last,
captured with forward hooks (``output_hidden_states`` is not used because many
models apply the final norm to its last entry).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.resources import default_calibration_path

DEFAULT_CALIB_SAMPLES = 32
DEFAULT_CALIB_MAX_TOKENS = 128


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


def _mean_cos(states: list[list[torch.Tensor]], a: int, b: int) -> float:
    sims = [torch.nn.functional.cosine_similarity(s[a], s[b], dim=-1) for s in states]
    return float(torch.cat(sims).mean())


def block_influence(states: list[list[torch.Tensor]]) -> list[float]:
    """ShortGPT's block influence per layer: ``1 - cos(input, output)`` averaged over tokens."""
    n = len(states[0]) - 1
    return [1.0 - _mean_cos(states, i, i + 1) for i in range(n)]


def angular_distances(states: list[list[torch.Tensor]], block: int) -> list[float]:
    """Angular distance ``arccos(cos(x_l, x_{l+block})) / pi`` for every block start ``l``,
    averaged over tokens (Gromov et al. use the last token; all tokens are steadier)."""
    n = len(states[0]) - 1
    out = []
    for start in range(n - block + 1):
        sims = torch.cat([torch.nn.functional.cosine_similarity(s[start], s[start + block], dim=-1) for s in states])
        out.append(float((torch.arccos(sims.clamp(-1.0, 1.0)) / math.pi).mean()))
    return out


def compute_scores(
    method: str,
    model: torch.nn.Module,
    tokenizer: Any,
    count: int,
    calib: str | Path | None = None,
    samples: int = DEFAULT_CALIB_SAMPLES,
    max_tokens: int = DEFAULT_CALIB_MAX_TOKENS,
) -> list[float]:
    """Scores for ``method`` (``"bi"``: one per layer; ``"angular"``: one per block start)."""
    texts = load_calibration_texts(calib, samples)
    was_training = model.training
    model.eval()
    try:
        states = layer_boundary_states(model, tokenizer, texts, max_tokens)
    finally:
        model.train(was_training)
    if method == "bi":
        return block_influence(states)
    if method == "angular":
        return angular_distances(states, count)
    raise ValueError(f"unknown scoring method {method!r}; expected 'bi' or 'angular'")
