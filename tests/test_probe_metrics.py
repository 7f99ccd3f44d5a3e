"""Probe metrics against independent computations: hand-worked values, NLTK's BLEU, lm-eval's
aggregation of not-scorable items, and the ``evaluate`` modules against the lm-eval functions."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from lmeval_layerprune.errors import PunktModelError
from lmeval_layerprune.probes import cot, degeneration, punkt, scoring, text

nan = math.nan


def _same(a: float, b: float, tol: float = 1e-12) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ---------------------------------------------------------------- the shared rule


def test_scoring_skips_not_scorable_items() -> None:
    assert scoring.mean_scorable([nan, 0.5, 0.0, nan]) == 0.25  # (0.5 + 0) / 2, not / 4
    assert scoring.count_scorable([nan, 0.5, 0.0, None]) == 2
    assert math.isnan(scoring.mean_scorable([nan, nan])) and scoring.count_scorable([nan]) == 0
    assert math.isnan(scoring.mean_scorable([]))
    # ratio items: (numerator, denominator); a zero denominator is not scorable
    assert scoring.pooled_ratio([(1, 2), (0, 0), (1, 3)]) == 2 / 5
    assert scoring.count_scorable([(1, 2), (0, 0), (1, 3)]) == 2
    assert math.isnan(scoring.pooled_ratio([(0, 0)]))
    # stderr of the mean over scorable items: values 0, 1 -> sd = sqrt(0.5), / sqrt(2) = 0.5
    assert scoring.stderr_scorable([0.0, nan, 1.0]) == pytest.approx(0.5)
    assert math.isnan(scoring.stderr_scorable([1.0, nan]))


# ---------------------------------------------------------------- tokens and sentences

# A fixed sample with sentence boundaries labelled by hand (after lower-casing, as the paper
# splits). "Expected" is what Punkt's algorithm with the English model's parameters gives;
# comments mark where that differs from a human reading.
SENTENCE_SAMPLE = [
    ("the cat sat. the dog ran!", ["the cat sat.", "the dog ran!"]),
    ("is it? yes it is.", ["is it?", "yes it is."]),
    ("dr. smith met mr. jones at 5 p.m. on tuesday.", ["dr. smith met mr. jones at 5 p.m. on tuesday."]),
    (
        "prices rose in the u.s. last year. they fell in jan. too.",
        ["prices rose in the u.s. last year.", "they fell in jan. too."],
    ),
    # a period after a number followed by a lower-case word is no break (human: two sentences)
    ("12 + 7 = 19. the answer is 19.", ["12 + 7 = 19. the answer is 19."]),  # HUMAN: 2
    # ... but one after a number followed by another number is
    ("12 + 7 = 19. 19 - 5 = 14.", ["12 + 7 = 19.", "19 - 5 = 14."]),
    ("tom has 5 apples. he gets 3 more.", ["tom has 5 apples.", "he gets 3 more."]),
    # a line break alone does not end a sentence (human: two lines, two sentences)
    ("the answer is 5\nthe answer is 5", ["the answer is 5\nthe answer is 5"]),  # HUMAN: 2
    ("wait... what happened?", ["wait... what happened?"]),
    ('he said "stop." then he left.', ['he said "stop."', "then he left."]),
    ("version 2.5 is out. get it now.", ["version 2.5 is out.", "get it now."]),
    ("", []),
    ("   ", []),
]


@pytest.mark.parametrize(("sample", "expected"), SENTENCE_SAMPLE)
def test_sentence_splitting_on_a_hand_labelled_sample(sample: str, expected: list[str]) -> None:
    assert text.split_sentences(sample) == expected


#: where a human reading splits otherwise (sample index -> number of sentences): both are
#: consequences of the paper's procedure (lower-case, then Punkt), kept for comparability
HUMAN_DIFFERS = {4: 2, 7: 2}


def test_splitter_against_human_labels_and_the_old_regex() -> None:
    """The documented comparison (tasks/arith_word_cot/README.md): on the sample, the splitter
    agrees with a human reading on 11 of 13 texts; the old regex splitter on 9."""
    import re

    human = [HUMAN_DIFFERS.get(i, len(expected)) for i, (_, expected) in enumerate(SENTENCE_SAMPLE)]
    ours = [len(text.split_sentences(sample)) for sample, _ in SENTENCE_SAMPLE]
    old_re = re.compile(r"(?<=[.!?])\s+|\n+")  # the splitter before issue 20
    old = [len([s for s in old_re.split(sample) if s.strip()]) for sample, _ in SENTENCE_SAMPLE]
    assert sum(h == o for h, o in zip(human, ours, strict=True)) == 11
    assert sum(h == o for h, o in zip(human, old, strict=True)) == 9


# ---------------------------------------------------------------- NLTK's real English Punkt model

#: SHA-256 of punkt_tab/english/ in NLTK's punkt_tab.zip (SHA-256 e57f6418...0e0106), written here
#: independently of the package's own constant
PUNKT_TAB_ENGLISH = {
    "abbrev_types.txt": "92a3e070f43d9b4c5534758ca40ad7343b04e7e29bfe0c2eb658a39445a4f779",
    "collocations.tab": "8e2da1225e4dd2cc9dba261ee231ccb134859e21b46006e7f472c5ee269af0cf",
    "sent_starters.txt": "f3f8535483e1dba487241b764945168123bca3209a9645e59acd1225dc76edac",
    "ortho_context.tab": "4bbcca25ed3d3f06c02402abf8419b9f033b8adc06e7b482eca4e45f81a5dc4c",
}


@pytest.fixture(scope="module")
def real_nltk(tmp_path_factory):
    """NLTK at the version the package pins, loading the real English model (the shipped files,
    checked against the official checksums) from a private nltk_data folder."""
    import nltk
    from nltk.tokenize import _get_punkt_tokenizer

    assert nltk.__version__ == punkt.NLTK_VERSION, (
        f"the reference tests need nltk=={punkt.NLTK_VERSION} (the dev extra pins it), found {nltk.__version__}"
    )
    english = tmp_path_factory.mktemp("nltk_data") / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True)
    for name, digest in PUNKT_TAB_ENGLISH.items():
        data = (punkt.MODEL_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
        (english / name).write_bytes(data)
    saved = list(nltk.data.path)
    nltk.data.path[:] = [str(english.parents[2])]
    _get_punkt_tokenizer.cache_clear()
    yield nltk
    _get_punkt_tokenizer.cache_clear()
    nltk.data.path[:] = saved


def test_the_shipped_model_is_the_whole_english_model() -> None:
    model = punkt.english_model()
    assert punkt.MODEL_SHA256 == PUNKT_TAB_ENGLISH
    # every part of the model, the orthographic context included
    assert (len(model.abbrev_types), len(model.collocations), len(model.sent_starters)) == (156, 37, 39)
    assert len(model.ortho_context) == 20366
    assert {"dr", "mr", "u.s", "jan", "p.m"} <= model.abbrev_types and ("##number##", "who") in model.collocations
    assert {"however", "meanwhile", "but", "it"} <= model.sent_starters
    # "then": seen capitalised at a sentence start and lower-case inside one
    assert model.ortho_context["then"] & punkt.BEG_UC and model.ortho_context["then"] & punkt.MID_LC
    # the words the model saw lower-case at a sentence start and never capitalised
    starts_lower = sorted(w for w, f in model.ortho_context.items() if f & punkt.BEG_LC and not f & punkt.UPPER)
    assert starts_lower == ["administrators", "b-week", "r-revised", "z-holiday"]


def test_a_changed_model_file_is_refused(tmp_path, monkeypatch) -> None:
    for name in PUNKT_TAB_ENGLISH:
        (tmp_path / name).write_bytes((punkt.MODEL_DIR / name).read_bytes())
    (tmp_path / "sent_starters.txt").write_text("however\nthe")
    monkeypatch.setattr(punkt, "MODEL_DIR", tmp_path)
    punkt.english_model.cache_clear()
    try:
        with pytest.raises(PunktModelError, match="sent_starters.txt is not NLTK's punkt_tab file"):
            punkt.english_model()
        (tmp_path / "sent_starters.txt").unlink()
        with pytest.raises(PunktModelError, match="sent_starters.txt is missing from this installation"):
            punkt.english_model()
    finally:
        punkt.english_model.cache_clear()


def test_splitting_needs_neither_nltk_nor_a_download() -> None:
    code = (
        "import sys\n"
        "from lmeval_layerprune.probes import degeneration\n"
        "assert degeneration.tokens('Mr. Smith left. He came back.')[:2] == ['mr.', 'smith']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nltk'))\n"
    )
    env = {**os.environ, "NLTK_DATA": "/nonexistent"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


#: Inputs where the case context decides the split: (text, sentences with NLTK's real English
#: model, sentences without its orthographic data and sentence starters). The reason is given.
CASE_CONTEXT = [
    # an initial before a word the model saw lower-case: a sentence starts ("Plan B. It ...")
    ("Take plan B. It is safer.", ["Take plan B.", "It is safer."], ["Take plan B. It is safer."]),
    ("Option A. But we chose B. Then we left.", ["Option A.", "But we chose B.", "Then we left."], None),
    # an abbreviation before a frequent sentence starter ("p.m. Meanwhile", "Jan. But")
    ("They met at 5 p.m. Meanwhile the others waited.", ["They met at 5 p.m.", "Meanwhile the others waited."], None),
    ("He ran in Jan. But then he stopped.", ["He ran in Jan.", "But then he stopped."], None),
    # after lower-casing: a number before a word seen lower-case at sentence starts only
    (
        "we need 12. administrators approve it. we need 12. administrators approve it.",
        ["we need 12.", "administrators approve it.", "we need 12.", "administrators approve it."],
        ["we need 12. administrators approve it.", "we need 12. administrators approve it."],
    ),
    (
        "the total is 12. administrators said the total is 12. administrators agreed.",
        ["the total is 12.", "administrators said the total is 12.", "administrators agreed."],
        ["the total is 12. administrators said the total is 12. administrators agreed."],
    ),
    ("add 3. z-holiday sales rose.", ["add 3.", "z-holiday sales rose."], ["add 3. z-holiday sales rose."]),
]
#: Inputs where the case context is consulted and agrees with the rule without it
CASE_CONTEXT_SAME = [
    ("He met J. Smith in 1. Then he left.", ["He met J. Smith in 1.", "Then he left."]),
    ("See No. 5 for details.", ["See No.", "5 for details."]),
    ("He took vitamin C. It helped a lot.", ["He took vitamin C. It helped a lot."]),  # "c" is an abbreviation
    ("the answer is 14. the answer is 14.", ["the answer is 14. the answer is 14."]),
    ("he met j. smith. then he left.", ["he met j. smith.", "then he left."]),
]


def _without_case_context() -> punkt.PunktSplitter:
    model = punkt.english_model()
    return punkt.PunktSplitter(punkt.PunktModel(model.abbrev_types, model.collocations, frozenset(), {}))


@pytest.mark.parametrize(("sample", "expected", "without"), CASE_CONTEXT)
def test_case_context_decides_the_split(real_nltk, sample: str, expected: list[str], without) -> None:
    assert text.split_sentences(sample) == expected == real_nltk.sent_tokenize(sample)
    assert _without_case_context().split(sample) == (without or [sample])


@pytest.mark.parametrize(("sample", "expected"), CASE_CONTEXT_SAME)
def test_case_context_agreeing_with_the_default(real_nltk, sample: str, expected: list[str]) -> None:
    assert text.split_sentences(sample) == expected == real_nltk.sent_tokenize(sample)
    assert _without_case_context().split(sample) == expected


def _adversarial_texts(seed: int, n: int) -> list[str]:
    """Texts dense in what Punkt decides on: abbreviations, initials, numbers, ellipses, quotes
    (straight and curly), brackets, dashes, line breaks, contractions, mixed and lower case."""
    rng = random.Random(seed)
    words = (
        "The the A a 1 2 19 J j K k Administrators administrators b-week Then then He he Smith smith No "
        "no is . ! ? , etc. Dr. dr. Mr. mr. U.S. u.s. i.e. e.g. ... 3.5 z-holiday ( ) [ ] \" ' “ ” ‘ ’ "
        "« » -- — – can't won't gonna 'tis St. Jan. No. 5. 10. (a) b) 1) iv. IV. x.y z. Inc. Corp. Q. A. "
        "$ % & * ; : However however Meanwhile But it It"
    ).split()
    ends = [" ", " ", " ", "\n", "\n\n", "  ", ". ", "! ", "? ", '." ', ".) ", "... ", ".” "]
    out = []
    for _ in range(n):
        sample = "".join(rng.choice(words) + rng.choice(ends) for _ in range(rng.randint(1, 30)))
        out.append(sample.lower() if rng.random() < 0.5 else sample)
    return out


def test_splits_and_tokens_equal_nltk_with_the_real_model(real_nltk) -> None:
    """1,500 adversarial texts and the hand-labelled sample: sentences equal ``nltk.sent_tokenize``
    and tokens ``nltk.word_tokenize`` of the pinned NLTK with its English model."""
    samples = [s for s, _ in SENTENCE_SAMPLE] + [s for s, *_ in CASE_CONTEXT] + _adversarial_texts(3, 1500)
    for sample in samples:
        assert text.split_sentences(sample) == real_nltk.sent_tokenize(sample), sample
        assert text.word_tokens(sample) == real_nltk.word_tokenize(sample), sample


def test_word_tokens_are_nltk_word_tokenize() -> None:
    # what nltk.word_tokenize gives: contractions split, a sentence-final period on its own,
    # an inner one (after a number followed by a lower-case word) kept on the number
    assert degeneration.tokens("Don't stop. It's 5. okay") == ["do", "n't", "stop", ".", "it", "'s", "5.", "okay"]
    assert degeneration.tokens("") == []


# ---------------------------------------------------------------- Rep-n by hand


def test_rep_n_on_crafted_responses() -> None:
    loop = "the answer is 5 the answer is 5 the answer is 5"  # 12 tokens, period 4
    # Rep-2: 11 bigrams, 4 distinct (the answer / answer is / is 5 / 5 the): 1 - 4/11
    assert degeneration.rep_n(loop, 2) == pytest.approx(1 - 4 / 11)
    # Rep-4: 9 four-grams, 4 distinct (the rotations of the loop): 1 - 4/9
    assert degeneration.rep_n(loop, 4) == pytest.approx(1 - 4 / 9)
    twice = "The cat sat on the mat. The cat sat on the mat."  # [the cat sat on the mat .] x 2 = 14 tokens
    # Rep-4: 11 four-grams; the 7 rotations of the 7-token period are distinct: 1 - 7/11
    assert degeneration.rep_n(twice, 4) == pytest.approx(1 - 7 / 11)
    once = "The cat sat on the mat."  # 7 tokens, 6 distinct bigrams
    assert degeneration.rep_n(once, 2) == 0.0
    # "The cat. the CAT." -> [the cat . the cat .]: 4 trigrams, 3 distinct (case folded)
    assert degeneration.rep_n("The cat. the CAT.", 3) == pytest.approx(1 - 3 / 4)
    # very short answers: 2 tokens have one bigram (Rep-2 = 0) but no 3-gram (not scorable)
    assert degeneration.rep_n("5 apples", 2) == 0.0
    assert math.isnan(degeneration.rep_n("5 apples", 3))
    assert math.isnan(degeneration.rep_4([""], ["ok"])) and math.isnan(degeneration.rep_2([""], [""]))
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        degeneration.rep_n("x", 0)
    # the reused plain arithmetic (selfgen's filter) still says 0 for a short sequence
    assert degeneration.ngram_repetition([1, 2], 4) == 0.0


# ---------------------------------------------------------------- Self-BLEU by hand


def test_self_bleu_on_crafted_responses() -> None:
    # a loop without punctuation is one sentence: not scorable (it used to read 0, "diverse")
    assert math.isnan(degeneration.self_bleu([""], ["the answer is 5 the answer is 5 the answer is 5"]))
    assert math.isnan(degeneration.self_bleu([""], ["Only one sentence here."]))
    assert math.isnan(degeneration.self_bleu([""], [""]))
    # two identical sentences: every n-gram matches, same length: BLEU 1 each
    assert degeneration.self_bleu([""], ["The cat sat on the mat. The cat sat on the mat."]) == pytest.approx(1.0)
    # [the dog ran home fast .] vs [the dog ran home slow .]: clipped matches 5/6, 3/5, 2/4, 1/3,
    # equal lengths (BP = 1): (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** (1/4); symmetric
    two = "The dog ran home fast. The dog ran home slow."
    assert degeneration.self_bleu([""], [two]) == pytest.approx((1 / 12) ** 0.25, abs=1e-12)
    # brevity penalty: s1 = [the dog ran home .] (5), s2 = [the dog ran home fast today .] (7)
    # s1 vs s2: 5/5, 3/4, 2/3, 1/2; c = 5 < r = 7: BP = exp(1 - 7/5) -> exp(-0.4) * (1/4) ** (1/4)
    # s2 vs s1: 5/7, 3/6, 2/5, 1/4; c = 7 > r = 5: BP = 1 -> (1/28) ** (1/4)
    bp = "The dog ran home. The dog ran home fast today."
    want = (math.exp(-0.4) * 0.25**0.25 + (1 / 28) ** 0.25) / 2
    assert degeneration.self_bleu([""], [bp]) == pytest.approx(want, abs=1e-12)
    # smoothing (method1, epsilon 0.1): only "." matches between [the dog ran home fast .] and
    # [a cat sat on mats .]: p1 = 1/6, p2..p4 have no match -> 0.1/5, 0.1/4, 0.1/3
    smooth = "The dog ran home fast. A cat sat on mats."
    assert degeneration.self_bleu([""], [smooth]) == pytest.approx((1 / 6 * 0.02 * 0.025 * (0.1 / 3)) ** 0.25)
    # sentences under 4 tokens are neither hypotheses nor references: "yes ." (2 tokens) is dropped
    assert degeneration.self_bleu([""], ["Yes. The cat sat on the mat. The cat sat on the mat."]) == pytest.approx(1.0)
    assert math.isnan(degeneration.self_bleu([""], ["Yes. No. The cat sat on the mat."]))
    # after lower-casing, "19. the" is no sentence break (Punkt), so this is one sentence
    assert math.isnan(degeneration.self_bleu([""], ["So 12 + 7 = 19. The answer is 19."]))
    # the same rule on a repeated sentence (documented in the task README): one sentence, so
    # Self-BLEU is not scorable; tokens [the answer is 12. the answer is 12 .] (9): the inner
    # "12." keeps its period, so Rep-4 sees 6 distinct 4-grams of 6 (0) and Rep-2 6 of 8
    repeated = "The answer is 12. The answer is 12."
    assert math.isnan(degeneration.self_bleu([""], [repeated]))
    assert degeneration.rep_n(repeated, 4) == 0.0 and degeneration.rep_n(repeated, 2) == pytest.approx(1 - 6 / 8)


def _paper_metrics(nltk, response: str) -> dict[str, float]:
    """Per-response values of the paper's ``calc_self_bleu.py`` procedure, written independently
    with NLTK's own functions: ``word_tokenize(text.lower())`` for Rep-n (responses under n tokens
    skipped), ``sent_tokenize(text.lower())`` + ``word_tokenize`` per sentence + ``sentence_bleu``
    (method1) for Self-BLEU-4 (fewer than two sentences skipped; hypotheses and references under
    4 tokens dropped; responses without a score skipped), ``len(word_tokenize(text))`` for the length."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    out: dict[str, float] = {}
    toks = nltk.word_tokenize(response.lower())
    for n in (2, 3, 4):
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        out[f"rep_{n}"] = 1.0 - len(set(grams)) / len(grams) if len(toks) >= n and grams else nan
    sentences = nltk.sent_tokenize(response.lower())
    scores = []
    if len(sentences) >= 2:
        tokenized = [nltk.word_tokenize(s) for s in sentences]
        for i, hyp in enumerate(tokenized):
            refs = [r for r in tokenized[:i] + tokenized[i + 1 :] if len(r) >= 4]
            if len(hyp) < 4 or not refs:
                continue
            smoothing = SmoothingFunction().method1
            scores.append(sentence_bleu(refs, hyp, weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smoothing))
    out["self_bleu"] = sum(scores) / len(scores) if scores else nan
    out["response_length"] = float(len(nltk.word_tokenize(response)))
    return out


def _ours(response: str) -> dict[str, float]:
    return {
        "rep_2": degeneration.rep_2([""], [response]),
        "rep_3": degeneration.rep_3([""], [response]),
        "rep_4": degeneration.rep_4([""], [response]),
        "self_bleu": degeneration.self_bleu([""], [response]),
        "response_length": degeneration.response_length([""], [response]),
    }


def test_self_bleu_matches_nltk_sentence_bleu() -> None:
    """Tolerance 1e-12: the same arithmetic in another order (NLTK sums with math.fsum)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    rng = random.Random(7)
    vocab = "the a cat dog sat ran on home mat fast , 5 7 is".split()
    smoothing = SmoothingFunction().method1
    for _ in range(400):  # the BLEU function alone, many references of every length
        refs = [[rng.choice(vocab) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 4))]
        hyp = [rng.choice(vocab) for _ in range(rng.randint(1, 12))]
        want = sentence_bleu(refs, hyp, weights=(0.25,) * 4, smoothing_function=smoothing)
        assert degeneration.sentence_bleu(refs, hyp) == pytest.approx(want, abs=1e-12), (refs, hyp)


def test_metrics_equal_the_papers_code_path(real_nltk) -> None:
    """Rep-2/3/4, Self-BLEU-4 and the response length of every case-context input, of random
    responses and of adversarial texts equal the paper's procedure run with NLTK's real model."""
    rng = random.Random(7)
    vocab = "the a cat dog sat ran on home mat fast , 5 7 is".split()
    ends = [". ", "! ", "? ", " ", "\n", ". And ", ". Then ", " etc. ", " 12. "]
    responses = [s for s, *_ in CASE_CONTEXT] + [s for s, _ in CASE_CONTEXT_SAME] + _adversarial_texts(5, 150)
    for _ in range(150):
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 40))]
        responses.append("".join(w + (rng.choice(ends) if rng.random() < 0.25 else " ") for w in words))
    for response in responses:
        want, got = _paper_metrics(real_nltk, response), _ours(response)
        for name in want:
            assert _same(got[name], want[name]), (name, response, got[name], want[name])


def test_case_context_changes_the_metrics() -> None:
    """The measured effect on case-context inputs. Before: the splitter without the orthographic
    data and sentence starters (the package's behaviour until issue 28)."""
    repeated = CASE_CONTEXT[4][0]  # four sentences with the model, two without
    assert degeneration.rep_n(repeated, 4) == pytest.approx(1 - 8 / 13)  # 16 tokens (before: 14, 1 - 7/11)
    # three sentences with the model (before: one, not scorable); the third has 3 tokens and drops out:
    # [the total is 12 .] vs [administrators said the total is 12 .]: all n-grams match, BP exp(1 - 7/5);
    # the other way: 5/7, 4/6, 3/5, 2/4 = (1/7) ** (1/4), BP 1
    once = CASE_CONTEXT[5][0]
    assert degeneration.self_bleu_text(once) == pytest.approx((math.exp(-0.4) + (1 / 7) ** 0.25) / 2, abs=1e-12)
    assert degeneration.response_tokens("Option A. But we chose B. Then we left.") == 12  # before: 10


def test_rep_n_matches_an_independent_count() -> None:
    rng = random.Random(11)
    for _ in range(200):
        words = [rng.choice("go stop the a , .".split()) for _ in range(rng.randint(0, 20))]
        response = " ".join(words)
        toks = degeneration.tokens(response)
        for n in (2, 3, 4):
            grams = Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
            want = 1 - len(grams) / sum(grams.values()) if len(toks) >= n else nan
            assert _same(degeneration.rep_n(response, n), want)


def test_cot_step_error_uses_the_shared_rule() -> None:
    one = cot.cot_step_error(["ref"], ["1 + 1 = 2. 2 * 3 = 7."])  # 1 wrong of 2
    none = cot.cot_step_error(["ref"], ["I do not know."])  # no step: not scorable
    assert cot.cot_step_error_n(["ref"], ["I do not know."]) == none == (0, 0)
    assert scoring.pooled_ratio([one, none]) == cot.step_error_rate([one, none]) == 0.5
    assert scoring.count_scorable([one, none]) == 1


# ---------------------------------------------------------------- through lm-eval


class _ScriptedLM:
    """An lm-eval LM that answers generation requests from a script, by document index."""

    def __new__(cls, responses: list[str]):
        from lm_eval.api.model import LM

        class Scripted(LM):
            def generate_until(self, requests, disable_tqdm: bool = False):
                return [responses[r.doc_id] for r in requests]

            def loglikelihood(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

        return Scripted()


def _evaluate(responses: list[str], bootstrap_iters: int = 0) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lmeval_layerprune.resources import tasks_dir

    manager = TaskManager(include_defaults=False, include_path=str(tasks_dir()))
    res = simple_evaluate(
        model=_ScriptedLM(responses),
        tasks=["arith_word_cot"],
        limit=len(responses),
        task_manager=manager,
        bootstrap_iters=bootstrap_iters,
        verbosity="ERROR",
    )
    return res["results"]["arith_word_cot"]


def test_lm_eval_reports_scorable_means_counts_and_no_false_stderr() -> None:
    responses = [
        "the answer is 5 the answer is 5 the answer is 5",  # Rep-4 5/9; one sentence
        "The cat sat on the mat. The cat sat on the mat.",  # Rep-4 4/11; Self-BLEU 1
        "ok",  # nothing scorable
        "",  # empty output: nothing scorable
    ]
    values = _evaluate(responses, bootstrap_iters=100)
    assert values["rep_4,none"] == pytest.approx((5 / 9 + 4 / 11) / 2)  # the mean of 2, not of 4
    assert values["rep_4_n,none"] == 2
    assert values["self_bleu,none"] == pytest.approx(1.0) and values["self_bleu_n,none"] == 1
    assert values["rep_2_n,none"] == 2  # "ok" has one token, the empty output none
    assert math.isnan(values["cot_step_error,none"]) and values["cot_step_error_n,none"] == 0
    # lm-eval has no standard error for these aggregations: explicitly absent, never a number
    # computed as if the excluded responses were zeros
    for metric in ("rep_4", "self_bleu", "cot_step_error"):
        assert values[f"{metric}_stderr,none"] == "N/A"
    assert isinstance(values["final_answer_match_stderr,none"], float)  # a plain mean keeps its stderr


def test_a_cell_where_nothing_is_scorable_reads_nan_not_zero() -> None:
    values = _evaluate(["the answer is 5 the answer is 5", "12 + 7 = 19. The answer is 19."])
    assert math.isnan(values["self_bleu,none"]) and values["self_bleu_n,none"] == 0
    assert values["rep_4_n,none"] == 2 and values["cot_step_error_n,none"] == 1


# ---------------------------------------------------------------- evaluate modules

_CASES = {
    "rep_n": {"predictions": ["the answer is 5 the answer is 5 the answer is 5", "ok", "The cat. the CAT."]},
    "self_bleu": {"predictions": ["The dog ran home fast. The dog ran home slow.", "one", ""]},
    "response_length": {"predictions": ["Take plan B. It is safer.", "", "He met J. Smith in 1. Then he left."]},
    "cot_steps": {"predictions": ["1 + 1 = 2. 2 * 3 = 7.", "no steps", "4 - 1 = 3"]},
    "final_answer": {"predictions": ["so 1,234", "The answer is 15."], "references": ["The answer is 1234.", "14"]},
    "bracket_closure": {
        "predictions": [") ]", "]", "})"],
        "references": ["[ (", "(", "f({'a': 1"],
        "lang": ["dyck", "dyck", "python"],
    },
    "first_digit": {"predictions": [[-(i + 1.0) for i in range(10)], [-2.0] * 10], "references": [0, 3]},
    "python_brackets": {"predictions": ["def f(:\n    pass", "x = 1", "def g():\nreturn 1"]},
}


def _lm_eval_reference(name: str, case: dict) -> dict[str, float]:
    """What the lm-eval tasks compute: their per-item functions and their YAML aggregations."""
    from lmeval_layerprune.probes import answers, brackets, digits

    p = case["predictions"]
    ms, cs = scoring.mean_scorable, scoring.count_scorable
    if name == "rep_n":
        out = {}
        for n, fn in ((2, degeneration.rep_2), (3, degeneration.rep_3), (4, degeneration.rep_4)):
            items = [fn([""], [x]) for x in p]
            out[f"rep_{n}"], out[f"rep_{n}_n"] = ms(items), cs(items)
        return out
    if name == "self_bleu":
        items = [degeneration.self_bleu([""], [x]) for x in p]
        return {"self_bleu": ms(items), "self_bleu_n": cs(items)}
    if name == "response_length":
        items = [degeneration.response_length([""], [x]) for x in p]
        return {"response_length": ms(items), "response_length_n": cs(items)}
    if name == "cot_steps":
        pairs = [cot.cot_step_error([""], [x]) for x in p]
        steps = [cot.cot_steps([""], [x]) for x in p]
        return {"cot_step_error": scoring.pooled_ratio(pairs), "cot_step_error_n": cs(pairs), "cot_steps": ms(steps)}
    if name == "final_answer":
        return {
            "final_answer_match": ms(
                [answers.final_answer_match([r], [x]) for x, r in zip(p, case["references"], strict=True)]
            )
        }
    if name == "bracket_closure":
        rows = [brackets.closure_scores(r, x, g) for x, r, g in zip(p, case["references"], case["lang"], strict=True)]
        return {k: ms([row[k] for row in rows]) for k in ("exact_closure", "balanced")}
    if name == "first_digit":
        rows = [
            digits.digit_process_results({"label": r}, [(v, False) for v in x])
            for x, r in zip(p, case["references"], strict=True)
        ]
        return {k: ms([row[k] for row in rows]) for k in ("acc", "logprob_digit")}
    if name == "python_brackets":
        return {
            "bracket_error": ms([brackets.python_bracket_error([None], [x]) for x in p]),
            "syntax_error": ms([brackets.python_syntax_error([None], [x]) for x in p]),
        }
    raise AssertionError(name)


def test_metric_path_names_every_module_and_rejects_others(tmp_path) -> None:
    from lmeval_layerprune.metrics import COMPUTE, METRICS, metric_path

    assert set(METRICS) == set(_CASES) == set(COMPUTE)
    for name in METRICS:
        assert os.path.isfile(os.path.join(metric_path(name), f"{name}.py"))
        assert COMPUTE[name](**_CASES[name]) == pytest.approx(_lm_eval_reference(name, _CASES[name]), nan_ok=True)
    with pytest.raises(ValueError, match="unknown probe metric 'bleu'; bundled: rep_n"):
        metric_path("bleu")


@pytest.mark.slow
def test_evaluate_modules_load_offline_and_match_lm_eval(tmp_path) -> None:
    """Each module through ``evaluate.load(path)`` in a fresh offline process (its own module
    cache, no network), against the lm-eval metric functions."""
    pytest.importorskip("evaluate")
    code = (
        "import json, sys, evaluate\n"
        "from lmeval_layerprune.metrics import metric_path\n"
        "cases = json.loads(sys.stdin.read())\n"
        "print(json.dumps({n: evaluate.load(metric_path(n)).compute(**c) for n, c in cases.items()}))\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HOME": str(tmp_path / "hf"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(_CASES), env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, case in _CASES.items():
        assert got[name] == pytest.approx(_lm_eval_reference(name, case), nan_ok=True), name
