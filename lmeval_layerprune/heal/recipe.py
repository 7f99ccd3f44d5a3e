"""Recovery recipes: YAML files whose sections map one-to-one onto TRL's ``SFTConfig``, PEFT's
``LoraConfig`` and transformers' ``BitsAndBytesConfig``, plus a few keys of ours.

::

    description: one line
    method: selfgen            # selfgen | original | kd | cpt
    data: bundled              # prompt source, a selfgen JSONL, or (cpt) a text source (overridden by --data)
    columns: null              # column mapping for the source (see sources.parse_columns)
    split: train               # split of a Hub dataset
    subset: null               # config name of a Hub dataset (e.g. wikitext-103-raw-v1)
    teacher: null              # model that answers / distils; null = the unpruned parent (--base)
    drop: last:25%             # default drop spec (overridden by --drop)
    dtype: float32             # dtype the student is trained in (and the merged checkpoint saved in)
    selfgen: {n: 5000, max_new_tokens: 512, temperature: 0.9, ...}   # GenerationSettings + FilterSettings + n
    sft: {learning_rate: 2.0e-4, max_steps: 100, ...}                  # SFTConfig fields
    lora: {r: 64, lora_alpha: 16, target_modules: all-linear, ...}    # LoraConfig fields; null = full finetune
    quantization: {load_in_4bit: true, bnb_4bit_quant_type: nf4}     # BitsAndBytesConfig fields (QLoRA)
    kd: {temperature: 2.0, alpha: 1.0}                                # method kd only
    train: {layers: last:2, lm_head: true, norm: true}                # partial finetune (lora: null)
    budget: {tokens: 8192}                                            # train on exactly this many tokens

Unknown keys are errors that list the valid names; values are checked against the field types of
those configs (and ours) before any training, naming the key, the value and the expected type
(a number written ``1e-4``, which YAML reads as text, is taken as the number). An empty recipe, or
one without an ``sft`` section, is an error: it would silently train on built-in defaults.
``section.key=value`` overrides (values parsed as YAML) are applied before validation.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmeval_layerprune.core.spec import DropSpec
from lmeval_layerprune.errors import DropSpecError, RecipeError
from lmeval_layerprune.heal.settings import FilterSettings, GenerationSettings
from lmeval_layerprune.resources import bundled_dir

METHODS = ("selfgen", "original", "kd", "cpt")
TOP_LEVEL = (
    "description",
    "method",
    "data",
    "columns",
    "split",
    "subset",
    "teacher",
    "drop",
    "dtype",
    "selfgen",
    "sft",
    "lora",
    "quantization",
    "kd",
    "train",
    "budget",
)
#: SFTConfig fields that heal sets itself, and why.
RESERVED_SFT = {
    "output_dir": "from --out",
    "resume_from_checkpoint": "a rerun resumes from the newest checkpoint",
    "include_num_input_tokens_seen": "it counts the training tokens",
}
#: The forms ``train.layers`` takes (the drop grammar's, counted on the pruned model).
TRAIN_LAYER_FORMS = "'last:2', 'last:10%', '26-27', '0+27', a list like [26, 27], or 'none'"


@dataclass
class KDSettings:
    """Logit distillation: loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy,
    on completion tokens only (T = ``temperature``)."""

    temperature: float = 2.0
    alpha: float = 1.0


@dataclass
class TrainSection:
    """Which weights a partial finetune updates (``lora: null``); everything else stays frozen.

    ``layers`` is a spec in the drop grammar's terms counted on the *pruned* model (``last:2``: its
    last two layers); ``lm_head``, ``norm`` (the final norm) and ``embeddings`` add those. On a model
    with tied embeddings, ``lm_head`` and ``embeddings`` are one matrix: either trains both.
    """

    layers: str | None = None
    lm_head: bool = False
    norm: bool = False
    embeddings: bool = False


@dataclass
class Budget:
    """Train on exactly ``tokens`` input tokens (non-padding tokens of the training sequences).

    The training set becomes the first ``tokens`` tokens of the data (repeated when it holds fewer),
    trained in one pass; ``sft.max_steps`` and ``sft.num_train_epochs`` are not used. Recipes compared
    in one sweep must share it, so each heal sees the same number of tokens.
    """

    tokens: int


def _hint(bad: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(bad, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(section: str, given: dict[str, Any], valid: list[str], reserved: dict[str, str] | None = None) -> None:
    for key in given:
        if reserved and key in reserved:
            raise RecipeError(f"recipe key {section}.{key} is set by heal itself ({reserved[key]}); remove it")
        if key not in valid:
            raise RecipeError(
                f"unknown recipe key {section}.{key}{_hint(key, valid)}; "
                f"valid {section} keys: {', '.join(sorted(valid))}"
            )


_NO_VALUE = object()


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args):
            args = tuple(a for a in args if a is not str)
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple, set):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(e.value) for e in tp)
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _conform(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (ints as floats, numeric text as numbers), or ``_NO_VALUE`` if it is not one.

    Types this cannot judge (classes, callables, forward references) accept anything.
    """
    if tp is Any or tp is None or isinstance(tp, str | typing.TypeVar):
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        # a string for an "Enum | str" field must still be one of the enum's values
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):
            ok = [_conform(value, e) for e in enums]
            return value if any(v is not _NO_VALUE for v in ok) else _NO_VALUE
        for a in sorted(args, key=lambda a: a is str):  # try str last: "1e-4" is a number first
            got = _conform(value, a)
            if got is not _NO_VALUE:
                return got
        return _NO_VALUE
    if origin is typing.Literal:
        return value if value in typing.get_args(tp) else _NO_VALUE
    if origin in (list, tuple, set) or tp in (list, tuple, set):
        if not isinstance(value, list | tuple):
            return _NO_VALUE
        args = typing.get_args(tp)
        if args and args[-1] is not Ellipsis:
            items = [_conform(v, args[0]) for v in value]
            return _NO_VALUE if any(v is _NO_VALUE for v in items) else items
        return value
    if origin is dict or tp is dict:
        return value if isinstance(value, dict) else _NO_VALUE
    if tp is type(None):
        return value if value is None else _NO_VALUE
    if tp is bool:
        return value if isinstance(value, bool) else _NO_VALUE
    if tp is int:
        if isinstance(value, bool):
            return _NO_VALUE
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                return _NO_VALUE
            return int(f) if f.is_integer() else _NO_VALUE
        return _NO_VALUE
    if tp is float:
        if isinstance(value, bool):
            return _NO_VALUE
        if isinstance(value, int | float):
            return float(value) if isinstance(value, int) else value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return _NO_VALUE
        return _NO_VALUE
    if tp is str:
        return value if isinstance(value, str) else _NO_VALUE
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        return value if isinstance(value, str) and value in {str(e.value) for e in tp} else _NO_VALUE
    return value  # a class or construct we do not judge: the config itself will


def _field_types(cls: Any) -> dict[str, Any]:
    """Field name -> type of a dataclass (or, for a plain class, the type of each keyword's default)."""
    if dataclasses.is_dataclass(cls):
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # noqa: BLE001 - unresolvable annotations: judge nothing
            hints = {}
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}
    out = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "kwargs", "args"):
            continue
        default = param.default
        out[name] = type(default) if isinstance(default, bool | int | float | str) else Any
    return out


def check_types(section: str, given: dict[str, Any], types_: dict[str, Any], name: str = "<recipe>") -> dict[str, Any]:
    """``given`` with every value checked against ``types_`` (and numbers written as text converted).

    Raises:
        RecipeError: naming the key, the value and the expected type.
    """
    out = dict(given)
    for key, value in given.items():
        tp = types_.get(key, Any)
        got = _conform(value, tp)
        if got is _NO_VALUE:
            raise RecipeError(
                f"recipe {name!r}: {section}.{key} = {value!r} ({type(value).__name__}) is not valid; "
                f"expected {_type_name(tp)}"
            )
        out[key] = got
    return out


def sft_fields() -> list[str]:
    """The field names of TRL's ``SFTConfig``."""
    from trl import SFTConfig

    return [f.name for f in dataclasses.fields(SFTConfig) if f.init]


def lora_fields() -> list[str]:
    """The field names of PEFT's ``LoraConfig``."""
    from peft import LoraConfig

    return [f.name for f in dataclasses.fields(LoraConfig) if f.init]


def quantization_fields() -> list[str]:
    """The keyword arguments of transformers' ``BitsAndBytesConfig``."""
    from transformers import BitsAndBytesConfig

    return [p for p in inspect.signature(BitsAndBytesConfig.__init__).parameters if p not in ("self", "kwargs")]


def selfgen_fields() -> list[str]:
    """Keys of a recipe's ``selfgen`` section."""
    return [
        "n",
        *(f.name for f in dataclasses.fields(GenerationSettings)),
        *(f.name for f in dataclasses.fields(FilterSettings)),
    ]


@dataclass
class Recipe:
    """A validated recipe (after overrides); ``raw`` is the mapping written next to the weights."""

    name: str
    raw: dict[str, Any]
    path: Path | None = None
    method: str = "selfgen"
    sft: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    kd: KDSettings = field(default_factory=KDSettings)
    selfgen: dict[str, Any] = field(default_factory=dict)
    train: TrainSection | None = None
    budget: Budget | None = None

    @property
    def finetune(self) -> str:
        """``qlora``, ``lora``, ``partial`` (the weights ``train`` names) or ``full``."""
        if self.train is not None:
            return "partial"
        if self.lora is None:
            return "full"
        return "qlora" if self.quantization else "lora"

    def get(self, key: str, default: Any = None) -> Any:
        """A top-level value of ours (``data``, ``teacher``, ``drop``, ``dtype``, ...)."""
        value = self.raw.get(key)
        return default if value is None else value


def recipes_dir() -> Path:
    """The folder of bundled recipes."""
    return bundled_dir("recovery")


def list_recipes() -> dict[str, str]:
    """Bundled recipe name -> description."""
    out = {}
    for path in sorted(recipes_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and "sft" in data:
            out[path.stem] = str(data.get("description", ""))
    return out


def _find(recipe: str) -> Path:
    path = Path(recipe).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise RecipeError(f"recipe file {recipe!r} does not exist")
        return path
    bundled = recipes_dir() / f"{recipe}.yaml"
    if bundled.is_file() and recipe in list_recipes():
        return bundled
    names = list(list_recipes())
    raise RecipeError(
        f"unknown recipe {recipe!r}{_hint(recipe, names)}; bundled recipes: {', '.join(names)} "
        "(or a path to a .yaml file)"
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"sft.max_steps=5"`` -> ``(["sft", "max_steps"], 5)``; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"bad override {text!r}; expected KEY=VALUE or SECTION.KEY=VALUE, e.g. sft.max_steps=5")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise RecipeError(f"bad value in override {text!r}: {e}") from None
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``raw`` with ``SECTION.KEY=VALUE`` / ``KEY=VALUE`` overrides applied."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        if len(path) > 2:
            raise RecipeError(f"bad override {text!r}: at most SECTION.KEY")
        if path[0] not in TOP_LEVEL:
            raise RecipeError(
                f"unknown recipe key {path[0]!r}{_hint(path[0], list(TOP_LEVEL))} in override {text!r}; "
                f"valid: {', '.join(TOP_LEVEL)}"
            )
        if len(path) == 1:
            out[path[0]] = value
        else:
            section = out.get(path[0])
            if section is None:
                section = {}
            if not isinstance(section, dict):
                raise RecipeError(f"override {text!r}: recipe key {path[0]!r} is not a section")
            section[path[1]] = value
            out[path[0]] = section
    return out


def _sections(raw: dict[str, Any], name: str) -> dict[str, dict[str, Any] | None]:
    sections: dict[str, dict[str, Any] | None] = {}
    for key in ("sft", "lora", "quantization", "kd", "selfgen", "train", "budget"):
        value = raw.get(key)
        if value is not None and not isinstance(value, dict):
            raise RecipeError(f"recipe {name!r}: {key} must be a mapping (or null), got {value!r}")
        sections[key] = value
    return sections


def _validate_kd(kd_raw: dict[str, Any], method: str, name: str) -> KDSettings:
    _check_keys("kd", kd_raw, [f.name for f in dataclasses.fields(KDSettings)])
    kd_raw = check_types("kd", kd_raw, _field_types(KDSettings), name)
    kd = KDSettings(**kd_raw)
    if not kd.temperature > 0 or not 0 <= kd.alpha <= 1:
        raise RecipeError(f"recipe {name!r}: kd.temperature must be > 0 and kd.alpha in [0, 1], got {kd}")
    if kd_raw and method != "kd":
        raise RecipeError(f"recipe {name!r}: a kd section needs method: kd (method is {method!r})")
    return kd


def _validate_selfgen(sg: dict[str, Any], name: str) -> dict[str, Any]:
    _check_keys("selfgen", sg, selfgen_fields())
    sg = check_types(
        "selfgen", sg, {"n": int, **_field_types(GenerationSettings), **_field_types(FilterSettings)}, name
    )
    for key, low in (("n", 1), ("max_new_tokens", 1), ("batch_size", 1)):
        if key in sg and sg[key] is not None and sg[key] < low:
            raise RecipeError(f"recipe {name!r}: selfgen.{key} = {sg[key]!r} must be at least {low}")
    return sg


def _validate_train(train: dict[str, Any] | None, lora: Any, name: str) -> TrainSection | None:
    """The ``train`` section: which weights a partial finetune updates (the layers as a spec text)."""
    if train is None:
        return None
    _check_keys("train", train, [f.name for f in dataclasses.fields(TrainSection)])
    layers = train.get("layers")
    types_ = {"layers": str | int | list[int] | None, "lm_head": bool, "norm": bool, "embeddings": bool}
    train = check_types("train", train, types_, name)
    if layers is not None:
        try:
            parsed = DropSpec.parse(layers)
        except DropSpecError as e:
            raise RecipeError(
                f"recipe {name!r}: train.layers = {layers!r} is not a layer spec ({str(e).split('. Valid')[0]}); "
                f"valid forms, counted on the pruned model: {TRAIN_LAYER_FORMS}"
            ) from None
        train["layers"] = None if parsed.is_noop else parsed.text
    section = TrainSection(**train)
    if not (section.layers or section.lm_head or section.norm or section.embeddings):
        raise RecipeError(
            f"recipe {name!r}: train selects no weight; set train.layers ({TRAIN_LAYER_FORMS}) "
            "and/or train.lm_head / train.norm / train.embeddings: true"
        )
    if lora is not None:
        raise RecipeError(
            f"recipe {name!r}: train names the weights of a partial full finetune and needs lora: null "
            "(a lora section trains adapters instead); override with lora=null"
        )
    return section


def _validate_budget(budget: dict[str, Any] | None, sft: dict[str, Any], name: str) -> Budget | None:
    if budget is None:
        return None
    _check_keys("budget", budget, [f.name for f in dataclasses.fields(Budget)])
    budget = check_types("budget", budget, {"tokens": int}, name)
    tokens = budget.get("tokens")
    if tokens is None or tokens < 1:
        raise RecipeError(
            f"recipe {name!r}: budget.tokens = {tokens!r} must be a whole number of tokens >= 1 "
            "(e.g. budget: {tokens: 8192}); budget: null trains by sft.max_steps instead"
        )
    if sft.get("dataloader_drop_last"):
        raise RecipeError(f"recipe {name!r}: budget.tokens needs sft.dataloader_drop_last: false (it drops tokens)")
    return Budget(tokens=tokens)


def validate(raw: dict[str, Any], name: str = "<recipe>", path: Path | None = None) -> Recipe:
    """Check every key and value of a recipe mapping and build a :class:`Recipe`."""
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {name!r} must be a mapping of keys, got {type(raw).__name__}")
    if not raw:
        raise RecipeError(
            f"recipe {name!r} is empty; it would train on built-in defaults. Start from a bundled recipe "
            "(lmeval-prune recipes --path) and set at least method, sft and lora"
        )
    _check_keys("recipe", {k: 1 for k in raw}, list(TOP_LEVEL))
    method = raw.get("method") or "selfgen"
    if method not in METHODS:
        raise RecipeError(f"recipe {name!r}: unknown method {method!r}; valid: {', '.join(METHODS)}")
    sections = _sections(raw, name)
    sft = dict(sections["sft"] or {})
    _check_keys("sft", sft, sft_fields(), RESERVED_SFT)
    from trl import SFTConfig

    sft = check_types("sft", sft, _field_types(SFTConfig), name)
    lora = sections["lora"]
    if lora is not None:
        _check_keys("lora", lora, lora_fields())
        from peft import LoraConfig

        lora = check_types("lora", lora, _field_types(LoraConfig), name)
    quant = sections["quantization"]
    if quant:
        _check_keys("quantization", quant, quantization_fields())
        from transformers import BitsAndBytesConfig

        quant = check_types("quantization", quant, _field_types(BitsAndBytesConfig), name)
        if lora is None:
            raise RecipeError(
                f"recipe {name!r}: quantization (QLoRA) needs a lora section; a 4-bit base cannot be fully finetuned"
            )
    kd = _validate_kd(dict(sections["kd"] or {}), method, name)
    sg = _validate_selfgen(dict(sections["selfgen"] or {}), name)
    train = _validate_train(None if sections["train"] is None else dict(sections["train"]), lora, name)
    budget = _validate_budget(None if sections["budget"] is None else dict(sections["budget"]), sft, name)
    dtype = raw.get("dtype")
    if dtype is not None and dtype not in ("float32", "bfloat16", "float16"):
        raise RecipeError(f"recipe {name!r}: dtype {dtype!r} is not one of float32, bfloat16, float16")
    return Recipe(
        name=name, raw=raw, path=path, method=method, sft=sft, lora=lora, quantization=quant, kd=kd, selfgen=sg,
        train=train, budget=budget,
    )  # fmt: skip


def load_recipe(recipe: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load a bundled recipe by name (``selfgen-lora``) or a YAML file, apply overrides, validate."""
    path = _find(recipe)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise RecipeError(
            f"recipe {path} is not text ({e.reason} at byte {e.start}); is it really a YAML file?"
        ) from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys")
    if not raw:
        raise RecipeError(
            f"recipe {path} is empty; it would train on built-in defaults. Copy a bundled recipe "
            "(lmeval-prune recipes --path) and edit it"
        )
    if "sft" not in raw:
        raise RecipeError(
            f"recipe {path} has no sft section (TRL SFTConfig settings: learning_rate, max_steps, ...); "
            "it would train on built-in defaults"
        )
    return validate(apply_overrides(raw, overrides), name=path.stem, path=path)
