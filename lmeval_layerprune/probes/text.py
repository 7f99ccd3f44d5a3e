"""Sentence splitting and word tokens as the paper's analysis computes them, without downloads.

The paper's degeneration script (``analysis/calc_self_bleu.py`` in
safal312/on-the-limits-of-layer-pruning) lower-cases a response, splits it with
``nltk.sent_tokenize`` (the Punkt model for English, a download) and tokenizes each sentence
with ``nltk.word_tokenize`` (which splits sentences with the same model again, then applies
NLTK's improved Treebank tokenizer to each).

Here the Punkt *algorithm* comes from NLTK itself (``nltk.tokenize.punkt``, no model file) and
the *parameters* are the ones of the English model that matter for lower-cased text:

* its abbreviation list (:data:`PUNKT_ENGLISH_ABBREVIATIONS`: a token ending in one of these
  plus ``.`` does not end a sentence) and its collocations (:data:`PUNKT_ENGLISH_COLLOCATIONS`),
  copied from NLTK's ``punkt_tab/english`` data;
* no orthographic context and no sentence starters. Both only act on the case of the word after
  a period. After lower-casing every word starts lower-case, and Punkt's orthographic rule then
  says "not a sentence start" after a number or an initial both for an empty context and for
  every word the English model has seen capitalised; they differ only for words the English
  model saw lower-case at a sentence start and never capitalised (none in the sample checked).
  Sentence starters only apply to capitalised words, which lower-cased text has none of.

So on lower-cased text this splitter gives Punkt's English splits up to that corner.
A consequence of the paper's order (lower-case, then split) that we keep for comparability:
a period after a *number* followed by a word does not end a sentence
(``"... = 14. the answer is 14."`` is one sentence), while one after a word does.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

#: The abbreviation types of NLTK's English Punkt model (``punkt_tab/english/abbrev_types.txt``),
#: lower-case and without the final period. (Its one entry containing spaces can never match a
#: token and is left out.)
PUNKT_ENGLISH_ABBREVIATIONS: frozenset[str] = frozenset(
    """
    ct m.j t a.c n.h ms p.a.m dr pa p.m u.k st dec u.s.a lt g.k adm p h.m ga tenn yr sen n.c j.j d.h
    s.g inc vs s.p.a a.t n feb sr jan s.a.y n.y col g.f c.o.m.b d ft va r.k e.f chg r.i a.g minn a.h
    k n.j m l.f f.j gen i.m.s s.a aug j.p okla m.d.c ltd oct s vt r.a j.c ariz w.w b.v ore h w.r e.h
    mrs cie corp w n.v a.d r.j ok e.m w.c ill nov u.s prof conn u.s.s.r mg f.g ph.d g calif messrs
    h.f wash tues sw bros u.n l wis mr sep d.c ave e.l co s.s reps c r.t h.c r wed a.s v fla jr r.h
    c.v m.b.a rep a.a e c.i.t l.a b.f j.b d.w j.k ala f w.va sept mich n.m j.r l.p s.c colo fri a.m
    g.d kan maj ky a.m.e n.d t.j cos nev
    """.split()
)

#: The collocations of NLTK's English Punkt model (``punkt_tab/english/collocations.tab``):
#: (word before the period, word after) pairs across which a period is no sentence break.
PUNKT_ENGLISH_COLLOCATIONS: frozenset[tuple[str, str]] = frozenset(
    tuple(pair.split("/"))  # type: ignore[misc]
    for pair in """
    ##number##/international ##number##/rj ##number##/commodities ##number##/cooper b/stewart
    ##number##/genentech ##number##/wedgestone i/toussie ##number##/pepper j/fialka o/ludcke
    ##number##/insider ##number##/aes i/magnin ##number##/credit ##number##/corrections
    ##number##/financing ##number##/henley ##number##/business ##number##/pay-fone b/wigton
    b/edelman b/levine ##number##/leisure b/smith j/walter ##number##/pegasus ##number##/dividend
    j/aron ##number##/review ##number##/abreast ##number##/who ##number##/letters ##number##/colgate
    ##number##/cbot ##number##/notable ##number##/zimmer
    """.split()
)


@lru_cache(maxsize=1)
def _punkt() -> Any:
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(PUNKT_ENGLISH_ABBREVIATIONS)
    params.collocations = set(PUNKT_ENGLISH_COLLOCATIONS)
    return PunktSentenceTokenizer(params)


@lru_cache(maxsize=1)
def _treebank() -> Any:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` as Punkt splits them (``nltk.sent_tokenize`` with the English
    parameters above; no download). Line breaks alone do not end a sentence; empty text has none.

    >>> split_sentences("the cat sat. the dog ran! 12 + 7 = 19. the answer is 19.")
    ['the cat sat.', 'the dog ran!', '12 + 7 = 19. the answer is 19.']
    """
    return [s for s in _punkt().tokenize(text) if s.strip()]


def word_tokens(text: str) -> list[str]:
    """``nltk.word_tokenize(text)`` without a download: Punkt sentences, then NLTK's improved
    Treebank tokenizer on each (a sentence-final period becomes its own token, others stay).

    >>> word_tokens("don't stop. it is 5.5 now")
    ['do', "n't", 'stop', '.', 'it', 'is', '5.5', 'now']
    """
    tok = _treebank()
    return [t for sent in split_sentences(text) for t in tok.tokenize(sent)]
