"""Sentences and word tokens as the paper's analysis computes them, pinned and without downloads.

The paper's degeneration script (``analysis/calc_self_bleu.py`` in
safal312/on-the-limits-of-layer-pruning) splits a response with ``nltk.sent_tokenize`` (Punkt with
NLTK's English model) and tokenizes it with ``nltk.word_tokenize`` (Punkt sentences again, then
NLTK's improved Treebank tokenizer, ``NLTKWordTokenizer``, on each sentence). Both changed between
NLTK releases (3.10 splits en and em dashes off words and treats curly quotes as closing
punctuation), and the model is a download, so this module carries both, pinned to NLTK
:data:`~lmeval_layerprune.probes.punkt.NLTK_VERSION`:

* sentences: :mod:`lmeval_layerprune.probes.punkt` (the algorithm, and the English model shipped
  with the package, orthographic context included);
* word tokens: :func:`treebank_tokens`, the regular expressions of ``NLTKWordTokenizer.tokenize``
  of that release (``nltk/tokenize/destructive.py``, Apache-2.0, Copyright (C) 2001-2025 NLTK
  Project), applied in the same order.

Nothing here reads the installed NLTK; ``tests/test_probe_metrics.py`` checks equality with NLTK
:data:`~lmeval_layerprune.probes.punkt.NLTK_VERSION` itself.

The metrics lower-case a response before splitting it (the paper's order). Punkt then treats a
period after a *number* or a single letter followed by a lower-case word as no sentence break
unless the English model saw that word lower-case at a sentence start and never capitalised
(``"... = 14. the answer is 14."`` is one sentence); a period after a word does break.
"""

from __future__ import annotations

import re

from lmeval_layerprune.probes.punkt import english_splitter

# ------------------------------------------------------------------ NLTKWordTokenizer (3.9.2)

_STARTING_QUOTES = [
    (re.compile("([«“‘„]|[`]+)", re.U), r" \1 "),
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(\')(?!re|ve|ll|m|t|s|d|n)(\w)\b", re.U), r"\1 \2"),
]
_ENDING_QUOTES = [
    (re.compile("([»”’])", re.U), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_PUNCTUATION = [
    (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*)\s*$", re.U), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}", re.U), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),  # the final period
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]", re.U), r" \g<0> "),
]
_PARENS_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
_DOUBLE_DASHES = (re.compile(r"--"), r" -- ")
# Robert MacIntyre's contractions, as NLTK lists them
_CONTRACTIONS = [
    re.compile(pattern)
    for pattern in (
        r"(?i)\b(can)(?#X)(not)\b",
        r"(?i)\b(d)(?#X)('ye)\b",
        r"(?i)\b(gim)(?#X)(me)\b",
        r"(?i)\b(gon)(?#X)(na)\b",
        r"(?i)\b(got)(?#X)(ta)\b",
        r"(?i)\b(lem)(?#X)(me)\b",
        r"(?i)\b(more)(?#X)('n)\b",
        r"(?i)\b(wan)(?#X)(na)(?=\s)",
        r"(?i) ('t)(?#X)(is)\b",
        r"(?i) ('t)(?#X)(was)\b",
    )
]


def treebank_tokens(sentence: str) -> list[str]:
    """``NLTKWordTokenizer().tokenize(sentence)`` of NLTK 3.9.2 (one sentence; only its final
    period is split off).

    >>> treebank_tokens("They'll pay $3.88 (roughly), don't they?")
    ['They', "'ll", 'pay', '$', '3.88', '(', 'roughly', ')', ',', 'do', "n't", 'they', '?']
    """
    text = sentence
    for regexp, substitution in _STARTING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp, substitution in _PUNCTUATION:
        text = regexp.sub(substitution, text)
    for regexp, substitution in (_PARENS_BRACKETS, _DOUBLE_DASHES):
        text = regexp.sub(substitution, text)
    text = f" {text} "
    for regexp, substitution in _ENDING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp in _CONTRACTIONS:
        text = regexp.sub(r" \1 \2 ", text)
    return text.split()


# ------------------------------------------------------------------ the paper's two calls


def split_sentences(text: str) -> list[str]:
    """``nltk.sent_tokenize(text)`` (NLTK 3.9.2, English model; no download). Line breaks alone do
    not end a sentence; empty text has none.

    >>> split_sentences("the cat sat. the dog ran! 12 + 7 = 19. the answer is 19.")
    ['the cat sat.', 'the dog ran!', '12 + 7 = 19. the answer is 19.']
    >>> split_sentences("He came in 1. Then he left.")
    ['He came in 1.', 'Then he left.']
    """
    return english_splitter().split(text)


def word_tokens(text: str) -> list[str]:
    """``nltk.word_tokenize(text)`` (NLTK 3.9.2; no download): Punkt sentences, then the Treebank
    tokenizer on each (a sentence-final period becomes its own token, others stay on their word).

    >>> word_tokens("don't stop. it is 5.5 now")
    ['do', "n't", 'stop', '.', 'it', 'is', '5.5', 'now']
    """
    return [tok for sent in split_sentences(text) for tok in treebank_tokens(sent)]


__all__ = ["split_sentences", "treebank_tokens", "word_tokens"]
