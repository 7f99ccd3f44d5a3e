"""Every file and key name this package writes or reads, in one place.

A checkpoint, a sweep folder or a report is a contract between the command that writes it and the
ones that read it (``report``, ``card``, ``push``, a resumed run); the names live here so that no
reader has to import a writer to learn them.
"""

from __future__ import annotations

# ------------------------------------------------------------------- the plan
#: config attribute (and ``config.json`` key) where a pruned model records its plan; also the key of
#: the plan in lm-eval's results ``config`` (the provenance of a pruned-hf / pruned-vllm run)
PLAN_ATTR = "layer_pruning"
CONFIG_KEY = PLAN_ATTR
RESULTS_KEY = PLAN_ATTR
#: the one plan file name every writer uses, beside the weights
PLAN_FILE = "layer_pruning.json"
#: older plan file names, still read
LEGACY_PLAN_FILES = ("layer_pruning_plan.json",)

# ------------------------------------------------------------ what we wrote
#: the hidden manifest of the files this tool wrote into a folder (name -> sha256, or size and mtime):
#: what ``--overwrite`` may replace there (:mod:`lmeval_layerprune.core.written`)
WRITTEN_MANIFEST = ".lmeval-prune-written.json"

# ---------------------------------------------------------------- checkpoints
#: the mergekit configuration a materialized checkpoint was written with
MERGEKIT_FILE = "mergekit.yaml"
#: marks a complete entry of the materialized-checkpoint cache
CACHE_COMPLETE = ".complete"
#: marks a complete conversion of the embedded model
EMBEDDED_COMPLETE = "CONVERSION_COMPLETE"
#: the model card of a checkpoint folder
CARD_FILE = "README.md"
#: the selection plot ``card --plot`` writes
SELECTION_PLOT = "layer_selection.png"
#: what a checkpoint folder holds (names or ``fnmatch`` patterns): how ``--overwrite`` recognises a
#: checkpoint written before the manifest of written files existed
CHECKPOINT_FILES = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                    "pytorch_model*.bin", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
                    "chat_template.jinja", "chat_template.json", MERGEKIT_FILE, PLAN_FILE, *LEGACY_PLAN_FILES,
                    CACHE_COMPLETE)  # fmt: skip
#: what a LoRA adapter folder (``heal --keep-adapter``) holds besides the tokenizer
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")

# ------------------------------------------------------------------- healing
CHECKPOINTS = "checkpoints"
RESPONSES_FILE = "selfgen_responses.jsonl"
HEAL_STATE_FILE = "heal_state.json"
RECIPE_FILE = "recovery_recipe.yaml"
HEAL_COMPLETE = "HEAL_COMPLETE"
#: the settings sidecar of a ``selfgen`` responses file (``<out>`` + this suffix)
META_SUFFIX = ".meta.json"
#: the lock file beside a ``selfgen`` responses file (``<out>`` + this suffix)
LOCK_SUFFIX = ".lock"
#: the trainer's last save inside a heal run, from which the final checkpoint is built
TRAINER_FINAL = ".trainer-final"

# --------------------------------------------------------------------- speed
BENCH_FILE = "layer_pruning_bench.json"
BENCH_PLOT = "layer_pruning_bench.png"
SPECULATE_FILE = "speculate.json"
SPECULATE_PLOT = "speculate.png"
#: what the other commands write into a checkpoint folder (``bench``, ``card --plot``)
OTHER_COMMANDS_FILES = (BENCH_FILE, BENCH_PLOT, SELECTION_PLOT)

# ---------------------------------------------------------------- sweep, report
SWEEP_MANIFEST = "sweep.json"
#: the shared unpruned cell of a sweep
BASE_CELL = "base"
#: lm-eval's aggregated results file of a run
RESULTS_GLOB = "results_*.json"
TOKEN_AGREEMENT_FILE = "token_agreement.json"
REPORT_FILE = "report.md"
REPORT_JSON = "report.json"
PLOT_FILE = "retention.png"
TASK_PLOT_FILE = "retention_tasks.png"
TRADEOFF_PLOT_FILE = "tradeoff.png"

# ------------------------------------------------------------------- analyze
#: ``lmeval-prune analyze``: view -> the stem of its CSV and PNG (``skip_profile.csv``, ``skip_profile.png``)
ANALYZE_FILES = {"skip": "skip_profile", "profiles": "layer_profiles", "lens": "logit_lens"}
