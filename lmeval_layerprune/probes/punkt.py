"""NLTK's Punkt sentence splitter with NLTK's English model, pinned and offline.

``nltk.sent_tokenize(text)`` is Punkt (Kiss & Strunk, 2006) with the English model of NLTK's
``punkt_tab`` data package. Both parts change the metrics that split sentences (Rep-n, Self-BLEU,
the response length), so both are pinned here instead of taken from whatever is installed:

* **The model** ships with this package in ``lmeval_layerprune/data/punkt_english/``: the four
  files of ``punkt_tab/english/`` (abbreviation types, collocations, sentence starters and the
  orthographic context, i.e. how often each word was seen upper/lower case at a sentence start,
  inside a sentence, or in unknown position), byte for byte; :func:`english_model` checks their
  SHA-256 (:data:`MODEL_SHA256`) before use. Where they come from, and their licence, is in the
  ``NOTICE`` file next to them.
* **The algorithm** is the tokenizing half of ``nltk/tokenize/punkt.py`` of NLTK
  :data:`NLTK_VERSION` (Apache-2.0, Copyright (C) 2001-2025 NLTK Project; authors Willy, Steven
  Bird, Edward Loper, Joel Nothman, Arthur Darcet, Tom Aarsen), adapted: no training, no pickles,
  no debugging output; the decisions, regular expressions and slicing are NLTK's. NLTK 3.9.x was
  current when the paper's analysis ran (the paper appeared in February 2026, before 3.9.3);
  NLTK 3.10 changed the splitting around curly quotes and guillemets, which is why the installed
  version must not decide. ``tests/test_probe_metrics.py`` compares this module with
  ``nltk.sent_tokenize`` of NLTK :data:`NLTK_VERSION` (the ``dev`` extra pins it) loading the
  shipped model.

The case context matters after a period that follows a number or an initial ("in 1. Then",
"J. Smith"): the next word's orthographic record decides whether a sentence starts there.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lmeval_layerprune.errors import PunktModelError

#: the NLTK release whose Punkt tokenizer this module reproduces (and the ``dev`` extra pins)
NLTK_VERSION = "3.9.2"
MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "punkt_english"
#: SHA-256 of the files of ``punkt_tab/english/`` in NLTK's ``punkt_tab.zip`` (SHA-256
#: e57f64187974277726a3417ca6f181ec5403676c717672eef6a748a7b20e0106)
MODEL_SHA256 = {
    "abbrev_types.txt": "92a3e070f43d9b4c5534758ca40ad7343b04e7e29bfe0c2eb658a39445a4f779",
    "collocations.tab": "8e2da1225e4dd2cc9dba261ee231ccb134859e21b46006e7f472c5ee269af0cf",
    "sent_starters.txt": "f3f8535483e1dba487241b764945168123bca3209a9645e59acd1225dc76edac",
    "ortho_context.tab": "4bbcca25ed3d3f06c02402abf8419b9f033b8adc06e7b482eca4e45f81a5dc4c",
}

# orthographic context flags (NLTK's _ORTHO_*): where a word was seen with which case
BEG_UC, MID_UC, UNK_UC, BEG_LC, MID_LC, UNK_LC = (1 << k for k in range(1, 7))
UPPER = BEG_UC | MID_UC | UNK_UC
LOWER = BEG_LC | MID_LC | UNK_LC


@dataclass(frozen=True)
class PunktModel:
    """The parameters of a Punkt model (NLTK's ``PunktParameters``), read-only."""

    abbrev_types: frozenset[str]
    collocations: frozenset[tuple[str, str]]
    sent_starters: frozenset[str]
    ortho_context: Mapping[str, int]


def _read(name: str) -> str:
    path = MODEL_DIR / name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PunktModelError(f"the Punkt model file {path} is missing from this installation ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256[name]:
        raise PunktModelError(f"{path} is not NLTK's punkt_tab file (SHA-256 {digest}, expected {MODEL_SHA256[name]})")
    return data.decode("utf-8")


def _lines(text: str) -> list[str]:
    # NLTK's TabDecoder: one entry per line, the final newline removed (the files have none)
    return text.split("\n")


@lru_cache(maxsize=1)
def english_model() -> PunktModel:
    """The English model of NLTK's ``punkt_tab`` package, as NLTK's ``load_punkt_params`` reads it."""
    ortho: dict[str, int] = {}
    for line in _lines(_read("ortho_context.tab")):
        word, flags = line.split("\t")
        ortho[word] = int(flags)
    return PunktModel(
        abbrev_types=frozenset(_lines(_read("abbrev_types.txt"))),
        collocations=frozenset(tuple(line.split("\t")) for line in _lines(_read("collocations.tab"))),  # type: ignore[misc]
        sent_starters=frozenset(_lines(_read("sent_starters.txt"))),
        ortho_context=ortho,
    )


# ------------------------------------------------------------------ NLTK's PunktLanguageVars

SENT_END_CHARS = (".", "?", "!")
_NON_WORD_CHARS = r"(?:[)\";}\]\*:@\'\({\[\?!])"
_MULTI_CHAR_PUNCT = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_START = r"[^\(\"\`{\[:;&\#\*@\)}\]\-,]"
_RE_WORD = re.compile(
    rf"""(
        {_MULTI_CHAR_PUNCT}
        |
        (?={_WORD_START})\S+?  # word characters until the end is found
        (?=                    # what marks the end of a word
            \s|$|{_NON_WORD_CHARS}|{_MULTI_CHAR_PUNCT}|,(?=$|\s|{_NON_WORD_CHARS}|{_MULTI_CHAR_PUNCT})
        )
        |
        \S
    )""",
    re.UNICODE | re.VERBOSE,
)
_RE_PERIOD_CONTEXT = re.compile(
    rf"""
    [\.\?!]                        # a potential sentence ending
    (?=(?P<after_tok>
        {_NON_WORD_CHARS}          # either other punctuation
        |
        \s+(?P<next_tok>\S+)       # or whitespace and some other token
    ))""",
    re.UNICODE | re.VERBOSE,
)
_RE_BOUNDARY_REALIGNMENT = re.compile(r'["\')\]}]+?(?:\s+|(?=--)|$)', re.MULTILINE)
_RE_NUMERIC = re.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
_RE_ELLIPSIS = re.compile(r"\.\.+$")
_RE_INITIAL = re.compile(r"[^\W\d]\.$", re.UNICODE)
_PUNCTUATION = tuple(";:,.!?")


class _Token:
    """A word of the text and what the two passes decide about it (NLTK's ``PunktToken``)."""

    __slots__ = ("tok", "type", "period_final", "sentbreak", "abbr", "ellipsis")

    def __init__(self, tok: str) -> None:
        self.tok = tok
        self.type = _RE_NUMERIC.sub("##number##", tok.lower())
        self.period_final = tok.endswith(".")
        self.sentbreak = self.abbr = self.ellipsis = False

    @property
    def type_no_period(self) -> str:
        return self.type[:-1] if len(self.type) > 1 and self.type[-1] == "." else self.type

    @property
    def type_no_sentperiod(self) -> str:
        return self.type_no_period if self.sentbreak else self.type

    @property
    def first_upper(self) -> bool:
        return self.tok[0].isupper()

    @property
    def first_lower(self) -> bool:
        return self.tok[0].islower()


class PunktSplitter:
    """Sentence boundaries the way NLTK :data:`NLTK_VERSION`'s ``PunktSentenceTokenizer`` finds them."""

    def __init__(self, model: PunktModel) -> None:
        self.model = model

    def split(self, text: str) -> list[str]:
        """The sentences of ``text`` (``nltk.sent_tokenize`` with this model)."""
        return [text[s:e] for s, e in self.spans(text)]

    def spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` of every sentence, closing quotes and brackets realigned onto it."""
        return [(s.start, s.stop) for s in _realign(text, list(self._slices(text)))]

    # ---------------------------------------------------------------- candidates

    def _slices(self, text: str) -> Iterator[slice]:
        last_break = 0
        for match, context in _end_contexts(text):
            if self._contains_sentbreak(context):
                yield slice(last_break, match.end())
                last_break = match.start("next_tok") if match.group("next_tok") else match.end()
        yield slice(last_break, len(text.rstrip()))

    def _contains_sentbreak(self, context: str) -> bool:
        tokens = [_Token(tok) for line in context.split("\n") if line.strip() for tok in _RE_WORD.findall(line)]
        for tok in tokens:
            self._first_pass(tok)
        for tok, nxt in zip(tokens, tokens[1:], strict=False):
            self._second_pass(tok, nxt)
        # a break counts only when a token follows it
        return any(tok.sentbreak for tok in tokens[:-1])

    # ---------------------------------------------------------------- the two passes

    def _first_pass(self, tok: _Token) -> None:
        """Type-based: end characters break, ``..`` is an ellipsis, a known abbreviation keeps its period."""
        text = tok.tok
        if text in SENT_END_CHARS:
            tok.sentbreak = True
        elif _RE_ELLIPSIS.match(text):
            tok.ellipsis = True
        elif tok.period_final and not text.endswith(".."):
            stem = text[:-1].lower()
            if stem in self.model.abbrev_types or stem.split("-")[-1] in self.model.abbrev_types:
                tok.abbr = True
            else:
                tok.sentbreak = True

    def _second_pass(self, tok: _Token, nxt: _Token) -> None:
        """Token-based: collocations, abbreviations before a likely sentence start, initials and ordinals."""
        if not tok.period_final:
            return
        typ, next_typ = tok.type_no_period, nxt.type_no_sentperiod
        is_initial = bool(_RE_INITIAL.match(tok.tok))
        if (typ, next_typ) in self.model.collocations:
            tok.sentbreak, tok.abbr = False, True
            return
        if (tok.abbr or tok.ellipsis) and not is_initial:
            starter = self._ortho_heuristic(nxt)
            if starter is True or (nxt.first_upper and next_typ in self.model.sent_starters):
                tok.sentbreak = True
                return
        if is_initial or typ == "##number##":
            starter = self._ortho_heuristic(nxt)
            if starter is False:
                tok.sentbreak, tok.abbr = False, True
                return
            if (
                starter is None
                and is_initial
                and nxt.first_upper
                and not self.model.ortho_context.get(next_typ, 0) & LOWER
            ):
                tok.sentbreak, tok.abbr = False, True

    def _ortho_heuristic(self, tok: _Token) -> bool | None:
        """Does ``tok`` start a sentence, from how its word was cased in the model's corpus? ``None``: unknown."""
        if tok.tok in _PUNCTUATION:
            return False
        context = self.model.ortho_context.get(tok.type_no_sentperiod, 0)
        if tok.first_upper and context & LOWER and not context & MID_UC:
            return True
        if tok.first_lower and (context & UPPER or not context & BEG_LC):
            return False
        return None


def _end_contexts(text: str) -> Iterator[tuple[re.Match[str], str]]:
    """Each potential sentence end with its context: the word before it, the end characters and
    what follows (NLTK's ``_match_potential_end_contexts``; overlapping matches merged)."""
    previous_slice = slice(0, 0)
    previous_match: re.Match[str] | None = None
    for match in _RE_PERIOD_CONTEXT.finditer(text):
        before = text[previous_slice.stop : match.start()]
        last_space = _last_whitespace(before)
        start = last_space + previous_slice.stop + 1 if last_space else previous_slice.start
        word = slice(start, match.start())
        if previous_match and previous_slice.stop <= word.start:
            yield previous_match, text[previous_slice] + previous_match.group() + previous_match.group("after_tok")
        previous_match, previous_slice = match, word
    if previous_match:
        yield previous_match, text[previous_slice] + previous_match.group() + previous_match.group("after_tok")


def _last_whitespace(text: str) -> int:
    for i in range(len(text) - 1, -1, -1):
        if text[i] in string.whitespace:
            return i
    return 0


def _realign(text: str, slices: list[slice]) -> Iterator[slice]:
    """Closing quotes and brackets after a sentence end belong to that sentence (``(Sent1.) Sent2.``)."""
    realign = 0
    for i, first in enumerate(slices):
        first = slice(first.start + realign, first.stop)
        second = slices[i + 1] if i + 1 < len(slices) else None
        if second is None:
            if text[first]:
                yield first
            continue
        m = _RE_BOUNDARY_REALIGNMENT.match(text[second])
        if m:
            yield slice(first.start, second.start + len(m.group(0).rstrip()))
            realign = m.end()
        else:
            realign = 0
            if text[first]:
                yield first


@lru_cache(maxsize=1)
def english_splitter() -> PunktSplitter:
    """The splitter with NLTK's English model (``nltk.sent_tokenize``'s default language)."""
    return PunktSplitter(english_model())
