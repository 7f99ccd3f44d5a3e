"""The bundled plain-text corpus (``data: corpus``) of the continued-pretraining recipes.

``lmeval_layerprune/data/corpus.txt``: 52 short expository essays (about 8,000 words, 9,400 tokens of
SmolLM2's tokenizer) on everyday science, nature, crafts, history and daily life. In the file each
essay is a title line and a body line, essays separated by a blank line; a document is
``TITLE\n\nBODY``. **Source**: written for this project (none of it is copied from elsewhere, and
none of it is in the calibration text beside it). **Licence**: the project's, Apache-2.0. It
ships with the package, so continued pretraining runs offline; it is large enough for the demo
budget (``demo-cpt-lora``) without repeating a document.

It is disjoint from every probe item by construction, which ``tests/test_selfgen.py`` checks against
the generated items: it holds no digit (no arithmetic expression or answer of ``arith_probe``,
``arith_word_cot`` or ``arith_first_digit`` can appear), no bracket of any kind (no ``paren_probe``
prefix) and no code (none of HumanEval's prompts or function definitions).
"""

from __future__ import annotations

from collections.abc import Callable

from lmeval_layerprune.resources import default_corpus_path

CORPUS_NAME = "corpus"


def corpus_documents() -> list[str]:
    """The documents of the bundled corpus, in file order: ``TITLE\n\nBODY`` for each essay."""
    text = default_corpus_path().read_text(encoding="utf-8")
    docs = []
    for block in text.split("\n\n"):
        title, _, body = block.strip().partition("\n")
        if body.strip():
            docs.append(f"{title.strip()}\n\n{' '.join(body.split())}")
    return docs


#: the built-in plain-text sources by name (recipe ``data: NAME`` for ``method: cpt``)
BUILTIN_TEXTS: dict[str, Callable[[], list[str]]] = {CORPUS_NAME: corpus_documents}
