"""The bundled plain-text corpus (``data: corpus``) of the continued-pretraining recipes.

``lmeval_layerprune/data/corpus.txt``: short expository essays on everyday science, nature, crafts,
history and daily life, one document per paragraph. **Source**: written for this project (none of it
is copied from elsewhere, and it shares no paragraph with the calibration text beside it).
**Licence**: the project's, Apache-2.0. It ships with the package, so continued pretraining runs
offline; it is large enough for the demo budget (``demo-cpt-lora``) without repeating a document.

It is disjoint from every probe item by construction, which ``tests/test_heal.py`` checks against
the generated items: it holds no digit (no arithmetic expression or answer of ``arith_probe``,
``arith_word_cot`` or ``arith_first_digit`` can appear), no bracket of any kind (no ``paren_probe``
prefix) and no code (none of HumanEval's prompts or function names).
"""

from __future__ import annotations

from collections.abc import Callable

from lmeval_layerprune.resources import default_corpus_path

CORPUS_NAME = "corpus"


def corpus_documents() -> list[str]:
    """The documents of the bundled corpus, in file order (one per paragraph)."""
    text = default_corpus_path().read_text(encoding="utf-8")
    return [" ".join(block.split()) for block in text.split("\n\n") if block.strip()]


#: the built-in plain-text sources by name (recipe ``data: NAME`` for ``method: cpt``)
BUILTIN_TEXTS: dict[str, Callable[[], list[str]]] = {CORPUS_NAME: corpus_documents}
