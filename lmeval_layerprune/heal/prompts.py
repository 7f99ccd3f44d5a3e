"""The built-in offline instruction sets (``--prompts bundled`` and ``--prompts mixed``).

Short Alpaca-style instructions (``instruction`` / ``input`` / ``output``), built deterministically
from templates and word lists, so recovery runs and the tests need no Hub. Every item has a templated
*reference* answer, which is what the ``original`` baselines train on (the dataset's own responses),
while ``selfgen`` recipes replace it with the unpruned parent's answer.

* ``bundled`` (333 items): word tasks only. It has no digits and no brackets, so no arithmetic
  problem and no bracket-closing prompt can appear in it, but it also cannot teach what the probes test.
* ``mixed`` (the paper's setting in small: general instruction data that includes arithmetic word
  problems and code requests): one-step arithmetic word problems, short code requests (Python and
  JavaScript functions, full of brackets) and the ``bundled`` items, interleaved a third each, so
  any prefix (``selfgen.n=96``) has the same mix.

Both are disjoint from every probe item by construction (``tests/test_selfgen.py`` checks it
against the generated items of every probe task):

* every calculation in a word problem has operands of *different* digit counts (``34 + 7``,
  ``126 - 45``), while every ``arith_probe`` item draws both operands with the same digit count,
  so no probe problem is ever stated or solved; the stories are not ``arith_word_cot``'s templates,
  and no problem has the parentheses of ``arith_first_digit``;
* the code requests are natural-language instructions with their solution: no unclosed bracket
  prefix (``paren_probe``) and none of HumanEval's problems or function names (``humaneval_brackets``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

BUNDLED_NAME = "bundled"
MIXED_NAME = "mixed"
DEFAULT_SEED = 2602

_WORDS = (
    "garden window river pencil castle basket mirror candle forest button ladder rocket blanket "
    "teacher kitchen planet harbor violin meadow lantern marble orchard compass tunnel feather "
    "silver pocket island thunder bridge"
).split()
_PLURALS = {
    "mouse": "mice", "child": "children", "tooth": "teeth", "goose": "geese", "man": "men",
    "woman": "women", "foot": "feet", "leaf": "leaves", "knife": "knives", "wolf": "wolves",
    "box": "boxes", "city": "cities", "baby": "babies", "bus": "buses", "dish": "dishes",
    "potato": "potatoes", "hero": "heroes", "sheep": "sheep", "fish": "fish", "cactus": "cacti",
    "person": "people", "ox": "oxen", "life": "lives", "church": "churches", "party": "parties",
}  # fmt: skip
_OPPOSITES = {
    "hot": "cold", "tall": "short", "early": "late", "happy": "sad", "light": "dark", "fast": "slow",
    "open": "closed", "empty": "full", "strong": "weak", "rich": "poor", "loud": "quiet", "wet": "dry",
    "young": "old", "heavy": "light", "begin": "end", "above": "below", "push": "pull", "win": "lose",
    "easy": "hard", "inside": "outside", "always": "never", "first": "last", "friend": "enemy",
}  # fmt: skip
_CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Sweden": "Stockholm", "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin",
    "Poland": "Warsaw", "Austria": "Vienna", "Chile": "Santiago", "Cuba": "Havana",
    "Thailand": "Bangkok", "Argentina": "Buenos Aires", "Finland": "Helsinki", "Hungary": "Budapest",
}  # fmt: skip
_PAST = {
    "go": "went", "eat": "ate", "run": "ran", "see": "saw", "write": "wrote", "sing": "sang",
    "swim": "swam", "take": "took", "give": "gave", "bring": "brought", "think": "thought",
    "catch": "caught", "teach": "taught", "fly": "flew", "drink": "drank", "speak": "spoke",
    "buy": "bought", "sleep": "slept", "build": "built", "walk": "walked", "jump": "jumped",
    "play": "played", "read": "read", "choose": "chose", "forget": "forgot",
}  # fmt: skip
_SOUNDS = {
    "dog": "barks", "cat": "meows", "cow": "moos", "duck": "quacks", "sheep": "bleats", "lion": "roars",
    "horse": "neighs", "pig": "oinks", "owl": "hoots", "snake": "hisses", "bee": "buzzes",
    "frog": "croaks", "wolf": "howls", "mouse": "squeaks", "donkey": "brays", "crow": "caws",
}  # fmt: skip
_COLORS = {
    "a ripe banana": "yellow", "fresh grass": "green", "a clear daytime sky": "blue", "snow": "white",
    "coal": "black", "a ripe tomato": "red", "a carrot": "orange", "an eggplant": "purple",
    "a lemon": "yellow", "a polar bear": "white", "a crow": "black", "a lime": "green",
    "a pumpkin": "orange", "chocolate": "brown", "a strawberry": "red", "a flamingo": "pink",
}  # fmt: skip
_SYNONYMS = {
    "big": "large", "small": "tiny", "quick": "rapid", "smart": "clever", "angry": "furious",
    "begin": "start", "end": "finish", "pretty": "beautiful", "tired": "sleepy", "scared": "afraid",
    "rich": "wealthy", "funny": "amusing", "calm": "peaceful", "difficult": "hard", "shout": "yell",
    "look": "glance", "help": "assist", "buy": "purchase", "choose": "select", "brave": "courageous",
}  # fmt: skip
_CATEGORIES = {
    "fruits": "apple pear plum mango cherry grape peach lemon".split(),
    "animals": "tiger zebra rabbit otter camel eagle panda whale".split(),
    "colors": "red green blue yellow purple orange violet indigo".split(),
    "tools": "hammer wrench saw drill chisel pliers shovel rake".split(),
    "instruments": "piano guitar violin flute drum trumpet cello harp".split(),
}
_PHRASES = (
    "good morning everyone", "the library opens soon", "please close the door", "see you tomorrow",
    "the train is late", "welcome to the museum", "keep the change", "the soup is ready",
    "turn left at the bakery", "bring an umbrella", "the meeting has moved", "thank you for waiting",
    "the garden needs water", "dinner is served", "mind the gap", "happy birthday to you",
)  # fmt: skip
_SENTENCE_FRAMES = (
    "We found an old {w} behind the house.",
    "The {w} in the story was the best part.",
    "She drew a {w} on the first page of her notebook.",
    "Everyone stopped to look at the {w}.",
)


def _reverse() -> Iterator[tuple[str, str, str]]:
    for w in _WORDS:
        yield f'Write the word "{w}" backwards.', "", f'"{w}" written backwards is "{w[::-1]}".'


def _upper() -> Iterator[tuple[str, str, str]]:
    for p in _PHRASES:
        yield "Rewrite this phrase in capital letters.", p, p.upper()


def _plural() -> Iterator[tuple[str, str, str]]:
    for s, p in _PLURALS.items():
        yield f'What is the plural of "{s}"?', "", f'The plural of "{s}" is "{p}".'


def _opposite() -> Iterator[tuple[str, str, str]]:
    for a, b in _OPPOSITES.items():
        yield f'What is the opposite of "{a}"?', "", f'The opposite of "{a}" is "{b}".'


def _capital() -> Iterator[tuple[str, str, str]]:
    for country, city in _CAPITALS.items():
        yield f"What is the capital of {country}?", "", f"The capital of {country} is {city}."


def _past() -> Iterator[tuple[str, str, str]]:
    for v, p in _PAST.items():
        yield f'What is the past tense of the verb "{v}"?', "", f'The past tense of "{v}" is "{p}".'


def _sound() -> Iterator[tuple[str, str, str]]:
    for animal, sound in _SOUNDS.items():
        yield f"What sound does a {animal} make?", "", f"A {animal} {sound}."


def _color() -> Iterator[tuple[str, str, str]]:
    for thing, color in _COLORS.items():
        yield f"What color is {thing}?", "", f"{thing[0].upper()}{thing[1:]} is {color}."


def _synonym() -> Iterator[tuple[str, str, str]]:
    for a, b in _SYNONYMS.items():
        yield f'Give a word that means the same as "{a}".', "", f'A word that means the same as "{a}" is "{b}".'


def _sort(rng: random.Random) -> Iterator[tuple[str, str, str]]:
    pool = sorted({w for ws in _CATEGORIES.values() for w in ws} | set(_WORDS))
    for _ in range(30):
        words = rng.sample(pool, 4)
        yield "Sort these words in alphabetical order.", ", ".join(words), ", ".join(sorted(words))


def _odd_one_out(rng: random.Random) -> Iterator[tuple[str, str, str]]:
    names = sorted(_CATEGORIES)
    for _ in range(30):
        cat, other = rng.sample(names, 2)
        words = rng.sample(_CATEGORIES[cat], 3)
        odd = rng.choice(_CATEGORIES[other])
        shown = [*words, odd]
        rng.shuffle(shown)
        yield (
            "Which word does not belong with the others?",
            ", ".join(shown),
            f'"{odd}" does not belong: the other words are {cat}, and "{odd}" is not.',
        )


def _first_letter() -> Iterator[tuple[str, str, str]]:
    for w in _WORDS:
        yield f'Which letter does the word "{w}" start with?', "", f'The word "{w}" starts with the letter "{w[0]}".'


def _sentence(rng: random.Random) -> Iterator[tuple[str, str, str]]:
    for w in _WORDS:
        yield f'Write one short sentence that uses the word "{w}".', "", rng.choice(_SENTENCE_FRAMES).format(w=w)


def _join(rng: random.Random) -> Iterator[tuple[str, str, str]]:
    for _ in range(20):
        a, b = rng.sample(_PHRASES, 2)
        yield (
            'Join these two phrases into one sentence with the word "and".',
            f"{a}; {b}",
            f"{a[0].upper()}{a[1:]} and {b}.",
        )


def bundled_prompts(seed: int = DEFAULT_SEED) -> list[dict[str, str]]:
    """The bundled Alpaca-style set: ``id``, ``instruction``, ``input`` and ``output`` per item.

    Deterministic for a given ``seed``; the order interleaves the templates so that any prefix
    (``--n 64``) covers all of them.
    """
    rng = random.Random(seed)
    families: list[Callable[[], Iterator[tuple[str, str, str]]]] = [
        _reverse,
        _upper,
        _plural,
        _opposite,
        _capital,
        _past,
        _sound,
        _color,
        _synonym,
        _first_letter,
        lambda: _sort(rng),
        lambda: _odd_one_out(rng),
        lambda: _sentence(rng),
        lambda: _join(rng),
    ]
    queues = []
    for make in families:
        items = list(make())
        rng.shuffle(items)
        queues.append(items[::-1])  # taken from the end of the shuffle, as the set has always been
    return _round_robin(queues, BUNDLED_NAME)


def _round_robin(queues: list[list[tuple[str, str, str]]], prefix: str) -> list[dict[str, str]]:
    """One item from each queue in turn until all are empty, repeats (same instruction and input) skipped."""
    out: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    while any(queues):
        for q in queues:
            if not q:
                continue
            instruction, inp, output = q.pop(0)
            if (instruction, inp) in seen:
                continue
            seen.add((instruction, inp))
            out.append({"id": f"{prefix}-{len(out):04d}", "instruction": instruction, "input": inp, "output": output})
    return out


# ------------------------------------------------------------------ mixed

_PEOPLE = ("Priya", "Lucas", "Hana", "Diego", "Amara", "Felix", "Yuki", "Marta", "Kofi", "Elsa", "Tariq", "Rosa")
_GOODS = ("stamps", "beads", "tickets", "bottles", "plants", "puzzles", "candles", "ribbons", "buttons", "kites")


def _digits(x: int) -> int:
    return len(str(abs(x)))


def _mixed_pair(rng: random.Random, big: tuple[int, int], small: tuple[int, int]) -> tuple[int, int]:
    """Operands with different digit counts (never an ``arith_probe`` item, which has equal counts)."""
    while True:
        a, b = rng.randint(*big), rng.randint(*small)
        if _digits(a) != _digits(b):
            return a, b


def _word_problems(rng: random.Random) -> Iterator[tuple[str, str, str]]:
    """One-step word problems; the reference writes the calculation and ends "The answer is N."."""
    for i in range(150):
        who, what = rng.choice(_PEOPLE), rng.choice(_GOODS)
        kind = i % 6
        if kind == 0:
            a, b = _mixed_pair(rng, (12, 480), (2, 9))
            q = f"{who} collects {what}. {who} has {a} {what} and is given {b} more. How many {what} does {who} have?"
            sol = f"{who} has {a} + {b} = {a + b} {what}."
            ans = a + b
        elif kind == 1:
            a, b = _mixed_pair(rng, (30, 900), (3, 29))
            q = f"A market stall had {a} {what} in the morning and sold {b} of them. How many {what} are left?"
            sol = f"{a} - {b} = {a - b} {what} are left."
            ans = a - b
        elif kind == 2:
            a, b = _mixed_pair(rng, (11, 99), (2, 9))
            q = f"{who} packs {b} crates with {a} {what} in each crate. How many {what} are packed?"
            sol = f"{b} crates hold {a} * {b} = {a * b} {what}."
            ans = a * b
        elif kind == 3:
            a, b = _mixed_pair(rng, (11, 95), (2, 8))
            q = f"A cyclist rides {a} kilometres every day for {b} days. How far does the cyclist ride in total?"
            sol = f"The cyclist rides {a} * {b} = {a * b} kilometres."
            ans = a * b
        elif kind == 4:
            b, k = rng.randint(2, 9), rng.randint(3, 40)
            a = b * k
            if _digits(a) == _digits(b):
                a, k = b * (k + 10), k + 10
            q = f"{who} shares {a} {what} equally among {b} friends. How many {what} does each friend get?"
            sol = f"Each friend gets {a} / {b} = {k} {what}."
            ans = k
        else:
            a, b = _mixed_pair(rng, (105, 950), (12, 99))
            q = f"A library owns {a} books and lends out {b} of them. How many books stay on the shelves?"
            sol = f"{a} - {b} = {a - b} books stay on the shelves."
            ans = a - b
        yield q, "", f"{sol} The answer is {ans}."


# (instruction, solution) pairs; ``{k}`` / ``{c}`` are filled from the parameters listed with them.
_PY_FILTERS = {
    "even": "x % 2 == 0",
    "odd": "x % 2 == 1",
    "positive": "x > 0",
    "negative": "x < 0",
}
_PY_MAPS = {
    "squares": ("the square of every number", "x * x"),
    "doubles": ("every number doubled", "2 * x"),
    "halves": ("half of every number", "x / 2"),
    "negates": ("every number with its sign flipped", "-x"),
}
_LETTERS = "aeiorstnl"


def _code_requests(rng: random.Random) -> Iterator[tuple[str, str, str]]:
    """Short code requests with a reference solution (Python and JavaScript)."""
    for which, cond in _PY_FILTERS.items():
        yield (
            f"Write a Python function that returns the sum of the {which} numbers in a list.",
            "",
            f"def sum_of_{which}(numbers):\n    return sum(x for x in numbers if {cond})",
        )
        yield (
            f"Write a Python function that keeps only the {which} numbers of a list.",
            "",
            f"def keep_{which}(numbers):\n    return [x for x in numbers if {cond}]",
        )
        yield (
            f"Write a JavaScript function that counts the {which} numbers in an array.",
            "",
            f"function count{which.capitalize()}(values) {{\n"
            f"  return values.filter((x) => {cond.replace('==', '===')}).length;\n}}",
        )
    for name, (what, expr) in _PY_MAPS.items():
        yield (
            f"Write a Python function that returns a list with {what} of the input list.",
            "",
            f"def {name}(numbers):\n    return [{expr} for x in numbers]",
        )
        yield (
            f"Write a JavaScript function that returns an array with {what} of the input array.",
            "",
            f"function {name}(values) {{\n  return values.map((x) => {expr});\n}}",
        )
    for c in _LETTERS:
        yield (
            f'Write a Python function that counts how often the letter "{c}" appears in a string.',
            "",
            f'def count_letter_{c}(text):\n    return text.lower().count("{c}")',
        )
        yield (
            f'Write a Python function that removes every letter "{c}" from a string.',
            "",
            f'def drop_letter_{c}(text):\n    return "".join(ch for ch in text if ch != "{c}")',
        )
    for k in rng.sample(range(2, 12), 6):
        yield (
            f"Write a Python function that returns the words of a sentence that are longer than {k} letters.",
            "",
            f"def long_words(sentence):\n    return [w for w in sentence.split() if len(w) > {k}]",
        )
        yield (
            f"Write a Python function that adds {k} to every value of a dictionary.",
            "",
            f"def add_to_values(table):\n    return {{key: value + {k} for key, value in table.items()}}",
        )
        yield (
            f"Write a Python function that returns the {k} largest numbers of a list, largest first.",
            "",
            f"def top_values(numbers):\n    return sorted(numbers, reverse=True)[:{k}]",
        )
        yield (
            f"Write a JavaScript function that returns the first {k} elements of an array.",
            "",
            f"function firstItems(values) {{\n  return values.slice(0, {k});\n}}",
        )
    fixed = [
        (
            "Write a Python function that maps every word of a sentence to its length.",
            "def word_lengths(sentence):\n    return {w: len(w) for w in sentence.split()}",
        ),
        (
            "Write a Python function that returns the product of a list of numbers.",
            "def product(numbers):\n    result = 1\n    for x in numbers:\n        result *= x\n    return result",
        ),
        (
            "Write a Python function that returns the average of a list, or 0 for an empty list.",
            "def average(numbers):\n    return sum(numbers) / len(numbers) if numbers else 0",
        ),
        (
            "Write a Python function that reverses the order of the words in a sentence.",
            'def reverse_words(sentence):\n    return " ".join(reversed(sentence.split()))',
        ),
        (
            "Write a Python function that removes duplicates from a list and keeps the first occurrences in order.",
            "def dedupe(items):\n    seen = set()\n    return [x for x in items if not (x in seen or seen.add(x))]",
        ),
        (
            "Write a Python function that counts the words of a sentence in a dictionary.",
            "def word_counts(sentence):\n    counts = {}\n    for w in sentence.split():\n"
            "        counts[w] = counts.get(w, 0) + 1\n    return counts",
        ),
        (
            "Write a Python function that merges two dictionaries, the second one winning on shared keys.",
            "def merge(first, second):\n    return {**first, **second}",
        ),
        (
            "Write a Python function that checks whether every bracket in a string is closed in the right order.",
            'def brackets_closed(text):\n    pairs = {")": "(", "]": "[", "}": "{"}\n    stack = []\n'
            '    for ch in text:\n        if ch in "([{":\n            stack.append(ch)\n'
            "        elif ch in pairs:\n            if not stack or stack.pop() != pairs[ch]:\n"
            "                return False\n    return not stack",
        ),
        (
            "Write a JavaScript function that returns the largest number of an array.",
            "function largest(values) {\n  return Math.max(...values);\n}",
        ),
        (
            "Write a JavaScript function that joins an array of words with commas.",
            'function joinWords(words) {\n  return words.join(", ");\n}',
        ),
        (
            "Write a Python function that returns the last element of a list, or None if it is empty.",
            "def last_item(items):\n    return items[-1] if items else None",
        ),
        (
            "Write a Python function that swaps the keys and values of a dictionary.",
            "def invert(table):\n    return {value: key for key, value in table.items()}",
        ),
    ]
    for instruction, solution in fixed:
        yield instruction, "", solution


def mixed_prompts(seed: int = DEFAULT_SEED) -> list[dict[str, str]]:
    """The ``mixed`` set: word problems, code requests and the bundled items, a third each in turn.

    Deterministic for a given ``seed``; ids are ``mixed-NNNN``. Each source is used whole; once the
    smallest runs out the others continue in turn, so a prefix of up to ``3 x`` its size is an even mix.
    """
    rng = random.Random(seed)
    problems = list(_word_problems(rng))
    code = [(i, inp, "```\n" + out + "\n```") for i, inp, out in _code_requests(rng)]
    rng.shuffle(problems)
    rng.shuffle(code)
    # the bundled set keeps its own interleaved order
    streams = [problems, code, [(b["instruction"], b["input"], b["output"]) for b in bundled_prompts(seed)]]
    return _round_robin(streams, MIXED_NAME)


#: the built-in prompt sources by name (``--prompts NAME`` / recipe ``data: NAME``)
BUILTIN_SETS: dict[str, Callable[[], list[dict[str, str]]]] = {BUNDLED_NAME: bundled_prompts, MIXED_NAME: mixed_prompts}
