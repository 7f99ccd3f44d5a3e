"""The bundled offline instruction set (``--prompts bundled``).

A few hundred short Alpaca-style instructions (``instruction`` / ``input`` / ``output``), built
deterministically from templates and word lists, so the recovery demo and the tests run without the
Hub. Every item has a templated *reference* answer, which is what the ``original`` baselines train on
(the dataset's own responses), while ``selfgen`` recipes replace it with the unpruned parent's answer.

The set is disjoint from every probe task by construction: it contains no digits and no brackets,
so no arithmetic problem ("What is 23 plus 45?") and no bracket-closing prompt can appear in it
(``tests/test_selfgen.py`` checks this against the generated probe items).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

BUNDLED_NAME = "bundled"
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
        queues.append(items)
    out: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    while any(queues):
        for q in queues:
            if not q:
                continue
            instruction, inp, output = q.pop()
            if (instruction, inp) in seen:
                continue
            seen.add((instruction, inp))
            out.append({"id": f"bundled-{len(out):04d}", "instruction": instruction, "input": inp, "output": output})
    return out
