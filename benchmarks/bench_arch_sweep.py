"""Every causal-LM model type in transformers: is layer pruning exact, refused, or wrong?

For each ``model_type`` in ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` (plus the table's):

1. build a tiny random model from its config class, offline: 6 decoder layers, widths
   of 64, 4 experts, small state sizes, nested vision/audio towers with 2 layers
   (a type that cannot be built tiny, or whose unpruned tiny model cannot run a
   forward pass and greedy generation, is listed as ``unbuildable`` with the reason);
2. prune three specs: the first layer (``0``), a middle pair (``2-3``), the last layer
   (``5``), slicing the live model in place (``prune_model``), and the middle pair also
   by loading only the kept tensors from disk (``load_pruned_model``);
3. compare with an independent reference: a fresh model of the same class built from
   the config's own ``to_dict()`` with 4 or 5 layers (every per-layer list cut to the kept
   layers), with the kept layers' weights copied across (keys renumbered from the state
   dict alone, ``load_state_dict(strict=True)``): the logits of a full forward pass and
   greedy generation with the KV cache (tokens equal, every step's logits), to 1e-5 in
   float32.

Outcomes: ``exact`` (all of it matches), ``refused`` (lmeval-layerprune raised its clear
``UnsupportedArchitectureError``), ``wrong`` (a mismatch, or any other exception from the
pruning code), ``unverified`` (pruned, but no reference could be built), ``unbuildable``.
"Wrong" must be zero.

Run (offline, in the background on a shared machine)::

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 nohup python benchmarks/bench_arch_sweep.py \\
        --out docs/results/arch_sweep > /tmp/arch_sweep.log 2>&1 &

It writes ``arch_sweep.csv`` and ``arch_sweep.md`` under ``--out`` and prints one line per
type and a summary. ``--types a,b`` restricts the sweep; ``--timeout`` bounds each type.
"""

from __future__ import annotations

import argparse
import copy
import csv
import logging
import os
import re
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

N = 6
VOCAB = 300
SPECS: dict[str, list[int]] = {"first": [0], "middle": [2, 3], "last": [5]}
ATOL = 1e-5
MAX_PARAMS = 40_000_000

#: canonical name -> tiny value, applied when the config has the attribute (directly or
#: through its attribute_map)
TEXT_SIZES: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "ffn_hidden_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_kv_heads": 2,
    "head_dim": 16,
    "num_hidden_layers": N,
    "max_position_embeddings": 256,
    "n_positions": 256,
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "moe_num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_topk": 2,
    "moe_k": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "expert_intermediate_size": 32,
    "n_shared_experts": 1,
    "num_shared_experts": 1,
    "n_group": 1,
    "topk_group": 1,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 16,
    "mamba_d_state": 8,
    "mamba_n_heads": 4,
    "mamba_d_head": 32,
    "mamba_n_groups": 1,
    "mamba_chunk_size": 16,
    "ssm_state_size": 8,
    "state_size": 8,
    "time_step_rank": 8,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "num_memory_tokens": 4,
    "embedding_size": 64,
    "d_model": 64,
    "encoder_ffn_dim": 96,
    "decoder_ffn_dim": 96,
    "ffn_dim": 96,
    "d_ff": 96,
    "decoder_layers": N,
    "decoder_attention_heads": 4,
    "num_heads": 4,
    "n_head": 4,
    "index_head_dim": 16,
    "index_n_heads": 4,
    "rotary_dim": 8,
    "sliding_window": 4,
    "attention_window": 4,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
    "use_cache": True,
}
#: per type: what the generic shrink cannot guess (consistency constraints, hybrid patterns
#: that keep an attention layer whichever layers are dropped)
TYPE_OVERRIDES: dict[str, dict[str, Any]] = {
    "mamba2": {"num_heads": 8, "head_dim": 16},
    "bamba": {"attn_layer_indices": [1, 3, 5]},
    "mllama": {"cross_attention_layers": [1, 4]},
    "zamba2": {"layers_block_type": ["mamba", "hybrid"] * 3},
    **{
        t: {"layer_types": ["linear_attention", "full_attention"] * 3}
        for t in (
            "qwen3_next",
            "qwen3_5",
            "qwen3_5_text",
            "qwen3_5_moe",
            "qwen3_5_moe_text",
            "olmo_hybrid",
            "granitemoehybrid",
            "bailing_hybrid",
        )
    },
}
TOWER_SIZES: dict[str, Any] = {
    "hidden_size": 32,
    "embed_dim": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_heads": 2,
    "num_hidden_layers": 2,
    "depth": 2,
    "num_layers": 2,
    "out_hidden_size": 64,
    "projection_dim": 32,
    "vision_output_dim": 32,
    "image_size": 32,
    "patch_size": 8,
}


#: config ints meaning "the first k layers are different" (the reference recounts them)
THRESHOLDS = (
    "first_k_dense_replace",
    "first_k_dense",
    "num_dense_layers",
    "n_dense_layers",
    "dense_layers",
    "moe_layer_start_index",
)


class Timeout(Exception):
    pass


def _alarm(_sig: int, _frame: Any) -> None:
    raise Timeout()


def _shrunk_kwargs(cls: Any, sizes: dict[str, Any], default: Any, drop_lists: bool = True) -> dict[str, Any]:
    d = default.to_dict()
    amap = getattr(cls, "attribute_map", {}) or {}
    n_default = None
    for alias in ("num_hidden_layers",):
        real = amap.get(alias, alias)
        n_default = d.get(real, d.get(alias))
    kwargs: dict[str, Any] = {}
    for name, value in sizes.items():
        real = amap.get(name, name)
        if real in d:
            if name == "sliding_window" and not d[real]:
                continue
            kwargs[real] = value
    if "qk_rope_head_dim" in d and "head_dim" in d:  # MLA: the rotary part is head_dim
        kwargs["head_dim"] = sizes["qk_rope_head_dim"]
    if not drop_lists and isinstance(n_default, int):
        target = kwargs.get(amap.get("num_hidden_layers", "num_hidden_layers"), N)
        for key, value in d.items():
            if isinstance(value, list) and len(value) == n_default and n_default > 0:
                kwargs[key] = [value[i % len(value)] for i in range(target)]
    return kwargs


def tiny_config(model_type: str) -> Any:
    """A tiny config of ``model_type``: 6 decoder layers, small widths, small towers."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    default = cls()
    sub_configs = getattr(cls, "sub_configs", {}) or {}
    text_attr = None
    get = getattr(default, "get_text_config", None)
    text = get(decoder=True) if get else default
    if text is not default:
        text_attr = next((k for k, v in vars(default).items() if v is text), None)
    errors = []
    for drop_lists in (True, False):
        try:
            if text_attr is None:
                kwargs = {**_shrunk_kwargs(cls, TEXT_SIZES, default, drop_lists), **TYPE_OVERRIDES.get(model_type, {})}
            else:
                kwargs = {
                    k: v
                    for k, v in _shrunk_kwargs(cls, TEXT_SIZES, default, drop_lists).items()
                    if k in ("tie_word_embeddings",)
                }
            for name in sub_configs:
                sub = getattr(default, name, None)
                if sub is None or not hasattr(sub, "to_dict"):
                    continue
                sizes = TEXT_SIZES if name == text_attr else TOWER_SIZES
                sub_kwargs = {**sub.to_dict(), **_shrunk_kwargs(type(sub), sizes, sub, drop_lists)}
                if name == text_attr:
                    sub_kwargs.update(TYPE_OVERRIDES.get(model_type, {}))
                if drop_lists and name == text_attr:
                    n0 = sub.num_hidden_layers
                    sub_kwargs = {
                        k: v for k, v in sub_kwargs.items() if not (isinstance(v, list) and len(v) == n0 and n0 != N)
                    }
                kwargs[name] = sub_kwargs
            config = cls(**kwargs)
            if text_attr is not None:
                t = getattr(config, text_attr)
                for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
                    for owner in (config, t):
                        if getattr(owner, attr, None) is not None:
                            setattr(owner, attr, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}[attr])
                for attr in ("image_token_id", "image_token_index", "video_token_id", "audio_token_id"):
                    if isinstance(getattr(config, attr, None), int):
                        setattr(config, attr, VOCAB - 1)
            return config
        except Exception as e:  # noqa: BLE001 - reported
            errors.append(f"{type(e).__name__}: {e}")
    raise RuntimeError(("config: " + errors[-1])[:400])


def text_of(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get(decoder=True) if get else config


def build(config: Any, seed: int = 0) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def stack_prefix(full_keys: list[str], n: int, k: int, ref_keys: list[str]) -> str:
    """The state-dict prefix of the decoder layers, from keys alone (independent of arch.py)."""
    rx = re.compile(r"^(.*?)\.(\d+)\.")
    cands: dict[str, tuple[set[int], set[int]]] = {}
    for keys, slot in ((full_keys, 0), (ref_keys, 1)):
        for key in keys:
            for m in re.finditer(r"\.(\d+)\.", key):
                prefix = key[: m.start()]
                cands.setdefault(prefix, (set(), set()))[slot].add(int(m.group(1)))
    del rx
    good = [p for p, (a, b) in cands.items() if a == set(range(n)) and b == set(range(k))]
    if len(good) != 1:
        raise RuntimeError(f"no unique layer-stack prefix in the state dict (candidates {good[:4]})")
    return good[0]


def reference(config: Any, full: Any, keep: list[int]) -> Any:
    """A fresh model with only ``keep``'s layers: config from ``to_dict()``, weights copied across."""
    d = config.to_dict()
    text_key = next(
        (
            k
            for k, v in d.items()
            if isinstance(v, dict)
            and v is not None
            and "num_hidden_layers" in v
            and getattr(config, k, None) is text_of(config)
        ),
        None,
    )
    td = d[text_key] if text_key else d
    n = text_of(config).num_hidden_layers
    amap = getattr(type(text_of(config)), "attribute_map", {}) or {}
    new_index = {orig: new for new, orig in enumerate(keep)}
    for key, value in list(td.items()):
        if not isinstance(value, list) or key in ("eos_token_id", "architectures"):
            continue
        ints = bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        named = "layer" in key or key.endswith(("idxs", "indices", "_ids"))
        if ints and named and (len(value) != n or value == list(range(n))):
            td[key] = [new_index[i] for i in value if i in new_index]  # a list of layer indices
        elif len(value) == n:
            td[key] = [value[i] for i in keep]  # one value per layer
    for key in THRESHOLDS:  # "layers below k are dense": recount the kept ones
        if isinstance(td.get(key), int):
            td[key] = sum(1 for i in keep if i < td[key])
    td[amap.get("num_hidden_layers", "num_hidden_layers")] = len(keep)
    for key, value in list(td.items()):  # e.g. BART's decoder_layers, equal to num_hidden_layers here
        if key.endswith("layers") and key.startswith(("decoder", "num", "n_")) and value == n:
            td[key] = len(keep)
    td.pop("layer_pruning", None)
    ref_cfg = type(config).from_dict(d)
    ref = build(ref_cfg, seed=123)
    sd = full.state_dict()
    prefix = stack_prefix(list(sd), n, len(keep), list(ref.state_dict()))
    new_index = {orig: new for new, orig in enumerate(keep)}
    out = {}
    for key, value in sd.items():
        if key.startswith(prefix + "."):
            rest = key[len(prefix) + 1 :]
            idx, _, tail = rest.partition(".")
            if idx.isdigit():
                if int(idx) in new_index:
                    out[f"{prefix}.{new_index[int(idx)]}.{tail}"] = value
                continue
        out[key] = value
    ref.load_state_dict(out, strict=True)
    return ref.eval()


def run_model(model: Any, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
        gen = model.generate(
            ids[:1, :6],
            attention_mask=torch.ones_like(ids[:1, :6]),
            max_new_tokens=6,
            min_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return logits, gen.sequences, [x.float() for x in gen.logits]


def compare(got: tuple, want: tuple) -> str | None:
    (l1, s1, g1), (l2, s2, g2) = got, want
    diff = (l1 - l2).abs().max().item()
    if not diff <= ATOL:
        return f"forward logits differ by {diff:.3g}"
    if not torch.equal(s1, s2):
        return f"greedy tokens differ: {s1.tolist()} vs {s2.tolist()}"
    gd = max((a - b).abs().max().item() for a, b in zip(g1, g2, strict=True))
    if not gd <= ATOL:
        return f"generation logits (KV cache) differ by {gd:.3g}"
    return None


def check_type(model_type: str, workdir: Path) -> tuple[str, str, dict[str, Any]]:
    """(outcome, detail, facts) for one model type."""
    from lmeval_layerprune.checkpoint.load import load_pruned_model
    from lmeval_layerprune.core.arch import ARCHITECTURES
    from lmeval_layerprune.core.slicing import prune_model
    from lmeval_layerprune.errors import UnsupportedArchitectureError

    facts: dict[str, Any] = {"source": "table" if model_type in ARCHITECTURES else "inferred"}
    try:
        config = tiny_config(model_type)
        text = text_of(config)
        if int(text.num_hidden_layers) != N:
            return "unbuildable", f"the config keeps {text.num_hidden_layers} layers, not {N}", facts
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(copy.deepcopy(config))
        params = sum(p.numel() for p in meta.parameters())
        facts["params"] = params
        if params > MAX_PARAMS:
            return "unbuildable", f"{params / 1e6:.0f}M parameters after shrinking (not tiny)", facts
        full = build(config)
        vocab = int(getattr(text, "vocab_size", VOCAB) or VOCAB)
        torch.manual_seed(7)
        ids = torch.randint(3, min(vocab, VOCAB) - 2, (2, 12))
        run_model(full, ids)
    except Timeout:
        raise
    except Exception as e:  # noqa: BLE001 - reported
        return "unbuildable", f"{type(e).__name__}: {e}"[:300], facts
    if text is not config:
        facts["nested"] = True

    results = {}
    for name, drop in SPECS.items():
        keep = [i for i in range(N) if i not in drop]
        try:
            pruned = prune_model(copy.deepcopy(full), drop)
        except UnsupportedArchitectureError as e:
            return "refused", str(e)[:400], facts
        except Exception as e:  # noqa: BLE001 - not a clear error: counts as wrong
            return "wrong", f"{name}: prune_model raised {type(e).__name__}: {e}"[:400], facts
        try:
            ref = reference(config, full, keep)
            want = run_model(ref, ids)
        except Exception as e:  # noqa: BLE001 - reported
            return "unverified", f"{name}: no reference ({type(e).__name__}: {e})"[:400], facts
        try:
            got = run_model(pruned, ids)
        except Exception as e:  # noqa: BLE001
            return "wrong", f"{name}: the pruned model fails to run: {type(e).__name__}: {e}"[:400], facts
        problem = compare(got, want)
        if problem:
            return "wrong", f"{name} (drop {drop}): {problem}", facts
        results[name] = want
        if name == "middle":
            path = workdir / model_type
            try:
                full.save_pretrained(path)
                try:
                    from transformers import AutoModelForCausalLM

                    AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
                except Exception as e:  # noqa: BLE001 - transformers itself cannot reload it
                    note = f"disk path not checked: transformers cannot reload the unpruned checkpoint ({e})"
                    facts["note"] = note[:200]
                    continue
                loaded = load_pruned_model(str(path), "+".join(map(str, drop)), dtype=torch.float32).eval()
                problem = compare(run_model(loaded, ids), want)
            except UnsupportedArchitectureError as e:
                return "refused", f"loading: {e}"[:400], facts
            except Exception as e:  # noqa: BLE001
                return "wrong", f"loading only the kept layers raised {type(e).__name__}: {e}"[:400], facts
            finally:
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            if problem:
                return "wrong", f"loaded from disk (drop {drop}): {problem}", facts
    return "exact", facts.get("note", ""), facts


def all_model_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from lmeval_layerprune.core.arch import ARCHITECTURES

    full = {k for k, v in ARCHITECTURES.items() if not v.unsupported and not v.partial}
    return sorted(set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) | full)


def sweep(types: list[str], timeout: int = 120, workdir: Path | None = None, echo=print) -> list[dict[str, Any]]:
    rows = []
    tmp = Path(workdir or tempfile.mkdtemp(prefix="arch-sweep-"))
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i, mt in enumerate(types, 1):
            t0 = time.time()
            signal.alarm(timeout)
            try:
                outcome, detail, facts = check_type(mt, tmp)
            except Timeout:
                outcome, detail, facts = "unbuildable", f"timed out after {timeout}s", {}
            finally:
                signal.alarm(0)
            row = {
                "model_type": mt,
                "outcome": outcome,
                "seconds": round(time.time() - t0, 1),
                "detail": detail,
                **facts,
            }
            rows.append(row)
            echo(f"[{i}/{len(types)}] {mt:<28} {outcome:<11} {row['seconds']:>6.1f}s  {detail[:160]}")
    finally:
        signal.signal(signal.SIGALRM, old)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    out = {k: 0 for k in ("exact", "refused", "wrong", "unverified", "unbuildable")}
    for r in rows:
        out[r["outcome"]] += 1
    return out


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "arch_sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model_type", "outcome", "source", "nested", "params", "seconds", "detail"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in w.fieldnames})
    s = summary(rows)
    lines = [
        "# Layer pruning across transformers' causal-LM model types",
        "",
        "Produced by `benchmarks/bench_arch_sweep.py` (tiny random models, 6 layers; specs `0`, `2-3`, `5`;",
        "reference: a fresh model with only the kept layers, weights copied; forward logits and greedy",
        f"generation with the KV cache to {ATOL:g} in float32).",
        "",
        "| " + " | ".join(s) + " |",
        "|" + "---|" * len(s),
        "| " + " | ".join(str(v) for v in s.values()) + " |",
        "",
        "| model_type | outcome | from | detail |",
        "|---|---|---|---|",
    ]
    for r in rows:
        detail = str(r.get("detail", "")).replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {r['model_type']} | {r['outcome']} | {r.get('source', '')} | {detail} |")
    (out / "arch_sweep.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--types", default=None, help="comma-separated model types (default: all causal-LM types)")
    p.add_argument("--timeout", type=int, default=180, help="seconds per model type")
    p.add_argument("--out", default=None, help="folder for arch_sweep.csv / arch_sweep.md")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    torch.set_num_threads(1)
    types = args.types.split(",") if args.types else all_model_types()
    rows = sweep(types, timeout=args.timeout, echo=lambda s: print(s, flush=True))
    s = summary(rows)
    print("summary: " + ", ".join(f"{k} {v}" for k, v in s.items()), flush=True)
    if args.out:
        write_tables(rows, Path(args.out))
    return 1 if s["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
