"""Equal training budgets: a recipe's ``budget: {tokens: N}`` and the rule that compared recipes share it.

**What is counted.** Training tokens are the non-padding input tokens of the training sequences, after
TRL has tokenized (and, for ``cpt``, packed) them and truncated them to ``sft.max_length``: what the
model reads in forward and backward passes, prompt and completion alike. Trainer counts them while it
trains (``include_num_input_tokens_seen="non_padding"``), and the healed checkpoint's ``recovery``
record states that count as ``training_tokens``, with or without a budget.

**How a budget is met.** :func:`budget_dataset` replaces the prepared training set by its first ``N``
tokens: the sequences in order, the whole set again as often as it fits when it holds fewer than ``N``
tokens, then a prefix, and the last sequence cut so the sum is exactly ``N``. Trained in one pass
(``max_steps`` and ``num_train_epochs`` are not used), every recipe with the same budget trains on
exactly ``N`` tokens, whatever its data, batch size or sequence lengths. (Under several processes a
distributed sampler may repeat a few sequences to even out the shards; the record states the count.)

**Comparisons.** :func:`shared_budget` is what ``sweep --recipe a,b,c`` checks before any cell runs:
every recipe must state the same ``budget.tokens`` (``--heal-override budget.tokens=N`` gives them one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmeval_layerprune.errors import HealError, RecipeError
from lmeval_layerprune.heal.recipe import Recipe


@dataclass
class BudgetUse:
    """How a budget was met: tokens in the training set, of them the ones in the loss, the sequences,
    and how many passes over the prepared data that is."""

    tokens: int
    loss_tokens: int
    sequences: int
    passes: float

    def describe(self) -> str:
        return (
            f"{self.tokens} tokens in {self.sequences} sequences ({self.passes:.2f} passes over the data; "
            f"{self.loss_tokens} of the tokens carry the loss)"
        )


def _loss_positions(labels: Sequence[int]) -> int:
    """Tokens whose prediction is in the loss (the first token is never predicted)."""
    return sum(1 for x in labels[1:] if x != -100)


def _truncate(example: dict[str, Any], k: int) -> dict[str, Any]:
    """``example`` cut to its first ``k`` tokens (every per-token column; packed lengths adjusted)."""
    n = len(example["input_ids"])
    out = {key: v[:k] for key, v in example.items() if isinstance(v, list) and len(v) == n and key != "seq_lengths"}
    if "seq_lengths" in example:
        lengths, left = [], k
        for length in example["seq_lengths"]:
            if left <= 0:
                break
            lengths.append(min(int(length), left))
            left -= int(length)
        out["seq_lengths"] = lengths
    return out


def budget_dataset(dataset: Any, tokens: int) -> tuple[Any, BudgetUse]:
    """The first ``tokens`` tokens of a prepared training set (``input_ids`` / ``labels`` rows), and how.

    Raises:
        HealError: the data holds no token, or no sequence can carry the remainder with a trained token.
    """
    import datasets

    lengths = [len(x) for x in dataset["input_ids"]]
    losses = [_loss_positions(x) for x in dataset["labels"]]
    total = sum(lengths)
    if total == 0:
        raise HealError("the training data holds no token; budget.tokens cannot be met")
    full, _ = divmod(tokens, total)
    indices = list(range(len(lengths))) * full
    used = full * total
    j = 0
    while (
        j < len(lengths) and used + lengths[j] <= tokens
    ):  # stops within one pass: the whole set holds more than the remainder
        indices.append(j)
        used += lengths[j]
        j += 1
    out = dataset.select(indices)
    loss = sum(losses[i] for i in indices)
    remainder = tokens - used
    if remainder:
        # the next sequence whose first `remainder` tokens hold a trained token (a cut prompt alone would not)
        labels, n = dataset["labels"], len(lengths)
        k = next((i % n for i in range(j, j + n) if _loss_positions(labels[i % n][:remainder])), None)
        if k is None:
            raise HealError(
                f"budget.tokens={tokens}: no sequence carries a trained token within its first {remainder} tokens; "
                f"choose another budget (e.g. {used})"
            )
        cut = dataset.select([k]).map(_truncate, fn_kwargs={"k": remainder})
        out = datasets.concatenate_datasets([out, cut])
        loss += _loss_positions(labels[k][:remainder])
        used += remainder
    return out, BudgetUse(tokens=used, loss_tokens=loss, sequences=len(out), passes=used / total)


def shared_budget(recipes: Sequence[Recipe]) -> int | None:
    """The token budget that the recipes of one comparison share (None for a single recipe without one).

    Raises:
        RecipeError: several recipes whose budgets differ or are missing, naming each one's budget.
    """
    if len(recipes) < 2:
        return recipes[0].budget.tokens if recipes and recipes[0].budget else None
    budgets = {r.name: r.budget.tokens if r.budget else None for r in recipes}
    values = set(budgets.values())
    if len(values) == 1 and None not in values:
        return values.pop()

    def shown(r: Recipe) -> str:
        if r.budget:
            return f"{r.name}: budget.tokens={r.budget.tokens}"
        steps = r.sft.get("max_steps")
        return f"{r.name}: no budget ({f'sft.max_steps={steps}' if steps else 'sft.num_train_epochs'})"

    example = max((t for t in values if t), default=8192)
    raise RecipeError(
        "recipes compared in one sweep must train on the same number of tokens, but "
        + "; ".join(shown(r) for r in recipes)
        + f". Give them one budget: --heal-override budget.tokens=N (e.g. budget.tokens={example})"
    )
