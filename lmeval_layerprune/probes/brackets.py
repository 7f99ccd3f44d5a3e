"""Bracket analysis: closing sequences, balance checks, and a classifier for Python syntax errors.

Two levels, both string- and comment-aware:

* :func:`scan` walks plain text, Dyck words or code-like snippets (``lang`` = ``"dyck"``,
  ``"python"`` or ``"js"``) and returns the brackets still open and the first closing
  bracket that does not fit. :func:`closing_sequence`, :func:`is_balanced` and
  :func:`closure_scores` (the ``paren_probe`` metrics) are built on it.
* :func:`classify_python` decides whether a Python program fails to parse because of its
  brackets (``unclosed``, ``unmatched``, ``mismatched``) or for another reason (``syntax``),
  using :mod:`ast` for the verdict and :mod:`tokenize` to find the brackets, so brackets
  inside strings, f-strings and comments never count.

Any lm-eval code task can reuse the classifier through :func:`python_bracket_error`
(a ``metric_list`` function) or :class:`PrependFieldFilter` + :func:`python_bracket_error`.
"""

from __future__ import annotations

import ast
import io
import tokenize
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

#: opening bracket -> closing bracket (the three kinds every probe uses)
PAIRS: dict[str, str] = {"(": ")", "[": "]", "{": "}"}
CLOSERS: dict[str, str] = {v: k for k, v in PAIRS.items()}
LANGS = ("dyck", "python", "js")

BracketKind = Literal["ok", "unclosed", "unmatched", "mismatched", "syntax"]
#: the kinds that count as a bracket error
BRACKET_ERRORS: tuple[str, ...] = ("unclosed", "unmatched", "mismatched")


@dataclass
class Scan:
    """What :func:`scan` found: brackets left open, and the first closer that did not fit."""

    open: list[str] = field(default_factory=list)  # opening brackets still open, outermost first
    error: Literal["unmatched", "mismatched"] | None = None
    error_at: int | None = None  # character offset of the offending closer
    brackets: str = ""  # the brackets scanned (outside strings and comments), in order

    @property
    def balanced(self) -> bool:
        return self.error is None and not self.open


def _brackets_in(text: str, lang: str) -> Iterator[tuple[str, int]]:
    """Every bracket of ``text`` outside string literals and comments, with its offset."""
    if lang not in LANGS:
        raise ValueError(f"unknown bracket language {lang!r}; expected one of {LANGS}")
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if lang != "dyck":
            if (lang == "python" and c == "#") or (lang == "js" and text.startswith("//", i)):
                nl = text.find("\n", i)
                i = n if nl < 0 else nl
                continue
            if c in "'\"" or (lang == "js" and c == "`"):
                quote = c * 3 if lang == "python" and text.startswith(c * 3, i) else c
                j = i + len(quote)
                while j < n and not text.startswith(quote, j):
                    if text[j] == "\\":
                        j += 1
                    elif text[j] == "\n" and len(quote) == 1 and c != "`":
                        break  # an unterminated one-line string ends at the line
                    j += 1
                i = j + len(quote)
                continue
        if c in PAIRS or c in CLOSERS:
            yield c, i
        i += 1


def bracket_chars(text: str, lang: str = "dyck") -> str:
    """The brackets of ``text`` outside strings and comments, in order (nothing else)."""
    return "".join(c for c, _ in _brackets_in(text, lang))


def scan(text: str, lang: str = "dyck", start: Scan | None = None) -> Scan:
    """Walk ``text`` and track brackets, skipping string literals and comments for code.

    ``lang="python"`` skips ``'..'``/``".."``/triple-quoted strings (any prefix) and ``#``
    comments; ``lang="js"`` skips quoted and template strings and ``//`` comments;
    ``lang="dyck"`` counts every bracket. ``start`` continues a previous scan (the state
    after a prefix), so ``scan(gen, lang, start=scan(prefix, lang))`` checks prefix + gen.
    The scan stops at the first closer that does not fit and records it.
    """
    out = Scan(open=list(start.open), error=start.error, brackets=start.brackets) if start else Scan()
    if out.error:
        return out
    for c, i in _brackets_in(text, lang):
        out.brackets += c
        if c in PAIRS:
            out.open.append(c)
        elif not out.open:
            out.error, out.error_at = "unmatched", i
            break
        elif out.open[-1] != CLOSERS[c]:
            out.error, out.error_at = "mismatched", i
            break
        else:
            out.open.pop()
    return out


def closing_sequence(prefix: str, lang: str = "dyck", sep: str = "") -> str:
    """The unique shortest bracket sequence that closes every bracket open in ``prefix``.

    Raises ``ValueError`` if ``prefix`` already contains a closer that does not fit.
    """
    state = scan(prefix, lang)
    if state.error:
        raise ValueError(f"{prefix!r} has an {state.error} closing bracket at offset {state.error_at}")
    return sep.join(PAIRS[b] for b in reversed(state.open))


def is_balanced(text: str, lang: str = "dyck") -> bool:
    """Whether every bracket in ``text`` is closed by the right kind, in order."""
    return scan(text, lang).balanced


def closure_scores(prefix: str, generation: str, lang: str = "dyck") -> dict[str, float]:
    """The ``paren_probe`` metrics for one answer.

    Only the first line of ``generation`` counts. ``exact_closure``: the brackets it
    contains (outside strings and comments, whitespace and other text ignored) are
    exactly the closing sequence of ``prefix``. ``balanced``: ``prefix`` followed by that
    line, as written, is balanced.
    """
    line = generation.split("\n", 1)[0]
    expected = closing_sequence(prefix, lang)
    produced = bracket_chars(line, lang)
    after = scan(line, lang, start=scan(prefix, lang))
    return {"exact_closure": float(produced == expected), "balanced": float(after.balanced)}


# --------------------------------------------------------------------------- Python programs


@dataclass
class BracketReport:
    """Verdict of :func:`classify_python` on one program."""

    kind: BracketKind
    message: str = ""  # the parser's message (empty when the program parses)
    line: int | None = None
    open: list[str] = field(default_factory=list)  # brackets left open at the end

    @property
    def is_bracket_error(self) -> bool:
        return self.kind in BRACKET_ERRORS


def _token_brackets(source: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]], str | None, int | None]:
    """Bracket tokens of ``source`` via :mod:`tokenize`: (still open, all, first error, its line).

    Brackets inside strings (f-strings included) and comments are not OP tokens, so they
    are never counted. A tokenizer error (EOF in a multi-line statement or string, or a
    3.12+ unmatched-bracket error) ends the walk where it happened.
    """
    stack: list[tuple[str, int]] = []
    seen: list[tuple[str, int]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.OP or tok.string not in PAIRS and tok.string not in CLOSERS:
                continue
            seen.append((tok.string, tok.start[0]))
            if tok.string in PAIRS:
                stack.append((tok.string, tok.start[0]))
            elif not stack:
                return stack, seen, "unmatched", tok.start[0]
            elif stack[-1][0] != CLOSERS[tok.string]:
                return stack, seen, "mismatched", tok.start[0]
            else:
                stack.pop()
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return stack, seen, None, None


def classify_python(source: str) -> BracketReport:
    """Classify why a Python program does not parse: its brackets, or something else.

    The program is only parsed (``ast.parse``), never compiled to byte code or run. Returns
    ``kind="ok"`` when it parses; ``unmatched`` (a closer with nothing open), ``mismatched``
    (a closer of the wrong kind) or ``unclosed`` (a bracket never closed) when the bracket
    structure is broken; ``syntax`` for every other syntax error (including unterminated
    strings and bad indentation with balanced brackets).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes etc.
            ast.parse(source)
        return BracketReport("ok")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        message = getattr(exc, "msg", None) or str(exc)
        line = getattr(exc, "lineno", None)
    stack, _, error, error_line = _token_brackets(source)
    if error:
        return BracketReport(error, message, error_line, [b for b, _ in stack])  # type: ignore[arg-type]
    if stack:
        return BracketReport("unclosed", message, stack[-1][1], [b for b, _ in stack])
    return BracketReport("syntax", message, line)


# --------------------------------------------------------------------------- lm-eval helpers


def python_bracket_error(references: list[Any], predictions: list[str], **_: Any) -> float:
    """lm-eval ``metric_list`` function: 1.0 if the (whole) program has a bracket error.

    Use it on a filtered response that holds the complete program (e.g. after
    :class:`PrependFieldFilter`), with ``aggregation: mean``.
    """
    return float(classify_python(predictions[0]).is_bracket_error)


def python_syntax_error(references: list[Any], predictions: list[str], **_: Any) -> float:
    """lm-eval ``metric_list`` function: 1.0 if the program fails to parse for a non-bracket reason."""
    return float(classify_python(predictions[0]).kind == "syntax")


class PrependFieldFilter:
    """lm-eval filter: prepend a document field (default ``prompt``) to every response.

    For completion-style code tasks whose response continues the prompt, so metrics see
    the whole program. Use in a task YAML as ``function: !function <module>.PrependFieldFilter``
    (re-exported from the task folder) with ``field: prompt``.
    """

    def __init__(self, field: str = "prompt", **_: Any) -> None:
        self.field = field

    def apply(self, resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
        return [[doc[self.field] + r for r in resp] for resp, doc in zip(resps, docs, strict=True)]
