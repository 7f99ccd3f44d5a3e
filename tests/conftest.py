"""Shared fixtures: tiny random models built from configs, a tiny tokenizer, offline env."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # else huggingface_hub may fetch a registry online
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # started in the background by a shell without job control (`cmd &` in a script): SIGINT is ignored, and
    # an ignored signal stays ignored in every child, so the tests that press Ctrl-C on a command would see
    # it run to the end. A handler is reset to the default in children, so they start as from a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (./test.sh: -n 2): one thread each, and for their subprocesses
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
VOCAB = 300  # == len(tiny_tokenizer()), so HFLM never resizes embeddings

_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    num_hidden_layers=6,
    max_position_embeddings=256,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

#: model_type -> config overrides that exercise what makes the family special
#: (sliding windows on some layers, MoE every other layer, layers without RoPE ...).
ARCH_CASES: dict[str, dict] = {
    "llama": {},
    "mistral": {"sliding_window": 4},
    "ministral": {"sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"] * 3},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 3},
    "qwen2_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
        "decoder_sparse_step": 2,
    },
    "qwen3": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 2},
    "qwen3_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "decoder_sparse_step": 2,
        "mlp_only_layers": [4],
    },
    "gemma": {},
    "gemma2": {"sliding_window": 4},
    "gemma3_text": {"sliding_window": 4, "sliding_window_pattern": 2},
    "phi": {"num_key_value_heads": 4},
    "phi3": {},
    "olmo": {},
    "olmo2": {},
    "olmo3": {"sliding_window": 4},
    "granite": {},
    "cohere": {},
    "cohere2": {"sliding_window": 4, "sliding_window_pattern": 2},
    "starcoder2": {"sliding_window": 4},
    "stablelm": {},
    "smollm3": {"no_rope_layers": [1, 0, 1, 1, 0, 1], "layer_types": ["full_attention"] * 6},
    "helium": {},
    "glm4": {},
    "gpt_neox": {"rotary_pct": 0.5},
}


def tiny_config(model_type: str, **overrides):
    from transformers import AutoConfig

    kwargs = {**_COMMON, **ARCH_CASES[model_type], **overrides}
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type: str, seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides), dtype=torch.float32)
    # Random init leaves some norms at exactly 1/0; perturb every parameter so a wrong
    # layer mapping cannot hide behind identical weights.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained offline on a few lines (vocab < VOCAB)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "Question: What is 3 plus 4?\nAnswer: 7",
        "The quick brown fox jumps over the lazy dog. 0123456789 + - ( ) [ ] { }",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def save_tiny(model_type: str, path: Path, seed: int = 0, **overrides) -> Path:
    model = tiny_model(model_type, seed=seed, **overrides)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def without_weights(model: Path, dest: Path) -> Path:
    """A copy of the model folder ``model`` at ``dest`` with every file but its weights (config readable,
    loading fails): a model a worker cannot load."""
    dest.mkdir()
    for f in model.iterdir():
        if not f.name.endswith(".safetensors"):
            (dest / f.name).write_bytes(f.read_bytes())
    return dest


def renumber_state_dict(state_dict: dict, keep: list[int]) -> dict:
    """Test-side mapping of a full state dict onto a model with only ``keep`` layers."""
    new_index = {orig: new for new, orig in enumerate(keep)}
    out = {}
    for key, value in state_dict.items():
        m = re.search(r"(^|\.)layers\.(\d+)\.", key)
        if m is None:
            out[key] = value
        elif int(m.group(2)) in new_index:
            out[key[: m.start(2)] + str(new_index[int(m.group(2))]) + key[m.end(2) :]] = value
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models gain nothing from threads, and on the small shared CI machine oversubscribed threads
    are several times slower. Module-scoped, so it also covers the module's own model fixtures."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return save_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()
