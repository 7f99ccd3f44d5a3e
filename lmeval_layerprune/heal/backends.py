"""Generation backends of selfgen: batched transformers ``generate`` (the fallback) and vLLM.

Both take token-id prompts (so a chat template's BOS is never doubled) and one sampling seed per
prompt (:func:`item_seed`), so a response does not depend on its batch. ``torch``, ``transformers``
and ``vllm`` are imported where used: vLLM is optional, and this module is imported by the light
``selfgen`` command module.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from typing import Any

from lmeval_layerprune.errors import SelfGenError
from lmeval_layerprune.heal.settings import GenerationSettings


def _eos_ids(tokenizer: Any, model_eos: Any) -> list[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if isinstance(model_eos, int):
        ids.add(model_eos)
    elif model_eos:
        ids.update(int(i) for i in model_eos)
    return sorted(ids)


class TransformersBackend:
    """Batched ``generate`` with left padding (the fallback when vLLM or a GPU is missing)."""

    name = "transformers"

    def __init__(self, model_path: str, tokenizer: Any, dtype: str | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype) if dtype else "auto"}
        self.model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs).to(self.device).eval()
        self.tokenizer = tokenizer
        self.eos = _eos_ids(tokenizer, self.model.generation_config.eos_token_id)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos[0]

    def generate(
        self, batch: list[list[int]], settings: GenerationSettings, seeds: Sequence[int]
    ) -> list[tuple[list[int], str]]:
        """Completion token ids (without EOS) and finish reason (``stop``/``length``) per prompt.

        Sampling draws each row's tokens from its own generator (``seeds``, one per prompt), so a
        response does not depend on which other prompts share its batch.
        """
        import torch
        from transformers import LogitsProcessorList

        width = max(map(len, batch))
        ids = torch.tensor([[self.pad] * (width - len(b)) + b for b in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch], device=self.device)
        # greedy decoding over scores that the per-row sampler has reduced to the one token it drew
        kwargs: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if settings.temperature > 0:
            kwargs["logits_processor"] = LogitsProcessorList([_PerRowSampler(seeds, settings)])
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=settings.max_new_tokens,
                eos_token_id=self.eos,
                pad_token_id=self.pad,
                **kwargs,
            )
        results = []
        for row in out[:, width:].tolist():
            stop = next((i for i, t in enumerate(row) if t in self.eos), None)
            results.append((row, "length") if stop is None else (row[:stop], "stop"))
        return results


def item_seed(seed: int, item_id: str) -> int:
    """The sampling seed of one item: a stable hash of the run's seed and the item's id."""
    digest = hashlib.sha256(f"{int(seed)}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


class _PerRowSampler:
    """A logits processor that samples each row with its own seeded generator (temperature, top-k, top-p)
    and leaves only the drawn token possible, so greedy decoding emits exactly it."""

    def __init__(self, seeds: Sequence[int], settings: GenerationSettings) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.settings = settings

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        s = self.settings
        logits = scores.double() / s.temperature
        if s.top_k and s.top_k > 0:
            kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if s.top_p < 1.0:  # keep the smallest set of most likely tokens whose mass reaches top_p
            sorted_p, order = torch.sort(probs, descending=True, dim=-1)
            before = sorted_p.cumsum(-1) - sorted_p
            sorted_p = sorted_p.masked_fill(before >= s.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        out = torch.full_like(scores, float("-inf"))
        for row, gen in enumerate(self.generators):
            cdf = probs[row].cpu().cumsum(0)
            u = torch.rand((), generator=gen, dtype=torch.float64) * cdf[-1]
            token = int(torch.searchsorted(cdf, u.reshape(1), right=True).clamp(max=cdf.numel() - 1))
            out[row, token] = 0.0
        return out


class VLLMBackend:
    """vLLM offline inference on token-id prompts (so the chat template's BOS is never doubled)."""

    name = "vllm"

    def __init__(self, model_path: str, tokenizer: Any, dtype: str | None = None, **engine_kwargs: Any) -> None:
        from vllm import LLM

        self.llm = LLM(model=model_path, dtype=dtype or "auto", **engine_kwargs)
        self.tokenizer = tokenizer

    def generate(
        self, batch: list[list[int]], settings: GenerationSettings, seeds: Sequence[int]
    ) -> list[tuple[list[int], str]]:
        """Completion token ids and finish reason per prompt (each prompt sampled with its own seed)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                temperature=settings.temperature,
                top_p=settings.top_p if settings.temperature > 0 else 1.0,
                top_k=settings.top_k if settings.top_k > 0 else -1,
                max_tokens=settings.max_new_tokens,
                seed=seed,
            )
            for seed in seeds
        ]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=b) for b in batch], params, use_tqdm=False)
        return [
            (list(o.outputs[0].token_ids), "length" if o.outputs[0].finish_reason == "length" else "stop") for o in outs
        ]


def pick_backend(backend: str) -> str:
    """``auto`` -> ``vllm`` when vLLM is installed and CUDA is available, else ``transformers``."""
    if backend not in ("auto", "vllm", "transformers"):
        raise SelfGenError(f"unknown backend {backend!r}; valid: auto, vllm, transformers")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if backend == "vllm" and not has_vllm:
        raise SelfGenError("backend 'vllm' needs vLLM: pip install 'lmeval-layerprune[vllm]'")
    if backend != "auto":
        return backend
    import torch

    return "vllm" if has_vllm and torch.cuda.is_available() else "transformers"
