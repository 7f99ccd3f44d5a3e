"""``lmeval-prune``: thin command line over the modules of this package.

Each command lives in ``lmeval_layerprune/cli/<module>.py`` with ``register(sub)`` (adds its subparser
with ``set_defaults(func=...)``) and imports what it runs at module level. :data:`COMMANDS` names
every command, its module and its one line of help; only the module of the command being run is
imported (``lmeval-prune --help`` imports none), so a command's dependencies load only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import signal
import sys
import textwrap
import threading
import traceback
from pathlib import Path
from typing import Any

from lmeval_layerprune import __version__
from lmeval_layerprune.cli._shared import FlagParser
from lmeval_layerprune.core.fsutil import space_errno, space_error
from lmeval_layerprune.core.interrupt import clear_notes, kept_note
from lmeval_layerprune.errors import DiskFullError, LayerPruneError, Terminated

#: command -> (module under lmeval_layerprune/cli/, one line for ``lmeval-prune --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "demo",
        "main job: a small sweep (unpruned, two pruning methods, one healed cell), its report and a model card",
    ),
    "eval": (
        "eval",
        "run lm_eval with pruned-hf and the bundled tasks registered (takes exactly lm_eval's arguments; with "
        "--output_path, a pruned run goes to a subfolder named after the model and the layers removed)",
    ),
    "sweep": (
        "sweep",
        "evaluate MODEL pruned by several methods at several ratios (one lm-eval run per cell; resumable)",
    ),
    "report": (
        "report",
        "retention tables with 95%% intervals, plots and a summary from lm-eval results (a sweep or any runs)",
    ),
    "analyze": (
        "analyze",
        "layer-level views: every layer skipped alone, block influence / angular profiles, logit lens",
    ),
    "select": ("select", "choose layers to remove: greedy task-driven search, perplexity search, or one-pass metrics"),
    "methods": (
        "methods",
        "list the layer methods (drop=METHOD:K, select --method, sweep --methods) and their sources",
    ),
    "resolve": ("resolve", "print the layer indices a drop spec removes from a model (one JSON line)"),
    "slice": ("slice", "write a standalone checkpoint with layers removed (mergekit passthrough, verified)"),
    "selfgen": ("selfgen", "have the unpruned parent answer a set of prompts (self-generated responses), resumable"),
    "heal": ("heal", "finetune a pruned model with a recovery recipe (TRL + PEFT) and save a standalone checkpoint"),
    "recipes": ("recipes", "list the bundled recovery recipes"),
    "bench": ("bench", "measure what pruning buys: speed and memory of each --drop variant beside the parent"),
    "speculate": (
        "speculate",
        "self-speculative decoding: acceptance and speed-up of drafting with layers skipped",
    ),
    "card": ("card", "write DIR/README.md: a Hub model card from the pruning plan, the recipe and lm-eval results"),
    "push": ("push", "upload a pruned/healed checkpoint (only the files it needs) to the Hugging Face Hub"),
    "cache": ("cache", "list or clear the cache of materialized checkpoints"),
    "archs": ("archs", "list per model type whether layers can be pruned: table / inferred / unsupported (why)"),
    "embedded-model": ("embedded_model", "print the embedded model's checkpoint directory (converts on first use)"),
}

_EPILOG = """\
examples:
  lmeval-prune demo                                   # the main job on the embedded model
  lmeval-prune eval --model pruned-hf --model_args pretrained=embedded,drop=20-25 \\
      --tasks arith_probe --limit 20 --device cpu     # exactly lm_eval's arguments
  lmeval-prune resolve embedded --drop last:25%       # which layers a spec removes
  lmeval-prune methods                                # the layer methods drop=METHOD:K knows
  lmeval-prune select embedded --method ppl --n 6 --out plan.json   # choose layers
  lmeval-prune slice embedded --drop 20-25 --out smollm2-pruned   # checkpoint via mergekit
  lmeval-prune heal --recipe demo-selfgen-lora --base embedded --out healed   # recovery
  lmeval-prune cache list                             # materialized checkpoints
  lmeval-prune card smollm2-pruned --results out/ --base-results base/   # the Hub model card
  lmeval-prune push smollm2-pruned --repo me/smollm2-pruned        # upload (HF_TOKEN)
  lmeval-prune embedded-model                         # path of the embedded checkpoint
"""


class _Commands:
    """The subcommands action, handing each command its one line of help from :data:`COMMANDS`."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("help", COMMANDS[name][1])
        return self._sub.add_parser(name, **kwargs)


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The ``lmeval-prune`` parser with ``command``'s module loaded (``"*"``: every command; ``None``: none,
    only the list of commands)."""
    parser = FlagParser(
        prog="lmeval-prune",
        description="Evaluate, choose, heal and ship depth-pruned LLMs with lm-evaluation-harness. "
        "Every long option is accepted with dashes or underscores (--max-steps / --max_steps).",
        epilog=textwrap.dedent(_EPILOG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the Python traceback of an error or an interrupt (also: LMEVAL_PRUNE_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = {m for name, (m, _) in COMMANDS.items() if command in ("*", name)}
    loaded: set[str] = set()
    for name, (module, line) in COMMANDS.items():
        if module in wanted:
            if module not in loaded:
                importlib.import_module(f"{__name__}.{module}").register(_Commands(sub))
                loaded.add(module)
        else:
            sub.add_parser(name, help=line, add_help=False)  # listed in --help; its module is not imported
    return parser


#: what an interrupted command keeps and how it resumes, until the command says more precisely
#: (:mod:`lmeval_layerprune.core.interrupt`); ``{out}`` and ``{journal}`` are the command's flags
_KEPT: dict[str, tuple[str, str]] = {
    "sweep": ("finished cells are kept in {out}", "rerun the same command to resume"),
    "select": ("the measurements so far are kept in {journal}", "rerun the same command to resume"),
    "selfgen": ("the responses so far are kept in {out}", "rerun the same command to resume"),
    "heal": ("the work done so far is kept in {out}", "rerun the same command to resume"),
}
_SIGNALS = {signal.SIGINT: ("SIGINT", 130), signal.SIGTERM: ("SIGTERM", 143)}


def _debug(argv: list[str]) -> bool:
    return os.environ.get("LMEVAL_PRUNE_DEBUG", "") not in ("", "0") or "--debug" in argv


def _default_note(command: str | None, args: argparse.Namespace | None) -> tuple[str | None, str | None]:
    if command not in _KEPT or args is None:
        return None, None
    kept, resume = _KEPT[command]
    out = getattr(args, "out", None)
    journal = getattr(args, "journal", None) or (f"{out}.journal.jsonl" if out else None)
    if "{journal}" in kept and not (journal and Path(journal).exists()):
        return None, resume
    if "{out}" in kept and not (out and Path(out).exists()):
        return None, resume
    return kept.format(out=out, journal=journal), resume


def _interrupted(signum: int, command: str | None, args: argparse.Namespace | None, debug: bool) -> int:
    """One line: which signal, what was kept, how to resume; the exit code 130 (SIGINT) or 143 (SIGTERM)."""
    for s in _SIGNALS:  # a second Ctrl-C while the line is printed changes nothing
        signal.signal(s, signal.SIG_IGN)
    name, code = _SIGNALS[signum]
    _close_progress_bars()
    kept, resume = kept_note()
    if kept is None and resume is None:
        kept, resume = _default_note(command, args)
    line = f"lmeval-prune: {command + ' ' if command else ''}interrupted ({name})"
    line += f": {kept}" if kept else ""
    line += f"; {resume}" if resume else ""
    if debug:
        traceback.print_exc()
    print(line, file=sys.stderr, flush=True)
    return code


def _close_progress_bars() -> None:
    """Finish the progress bars still on screen (tqdm, when a command loaded it), so the interrupt line
    starts a line of its own instead of trailing a bar."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        try:
            bar.close()
        except Exception:  # noqa: BLE001, S112 - a bar that cannot close must not hide the interrupt
            continue


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _failed(e: BaseException, args: argparse.Namespace | None, debug: bool) -> int:
    """One ``lmeval-prune: error:`` line (a full disk or a file-size limit named as such); exit code 2."""
    if space_errno(e) is not None and not isinstance(e, DiskFullError):
        where = getattr(e, "filename", None) or getattr(args, "out", None) or "the output"
        e = space_error(where, e, atomic=False)
    if debug:
        traceback.print_exc()
    print(f"lmeval-prune: error: {e}", file=sys.stderr)
    return 2


def _stdout_closed() -> bool:
    """Whether the reader of stdout has gone (the far end of a pipe closed: POLLERR on the write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no file descriptor
        return True


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input, a full disk: one error line, exit code 2. ``SIGINT`` / ``SIGTERM``: one
    line saying what was kept and how to resume, exit code 130 / 143. ``LMEVAL_PRUNE_DEBUG=1`` or
    ``--debug`` adds the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    command = command if command in COMMANDS else None
    end = argv.index("eval") if command == "eval" else len(argv)  # lm_eval's own arguments stay as they are
    debug = _debug(argv[:end])
    argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    args: argparse.Namespace | None = None
    clear_notes()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in _SIGNALS} if main_thread else {}
    if main_thread:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if command == "eval":  # lm_eval's arguments, handed over unparsed
            eval_cli = importlib.import_module(f"{__name__}.eval")
            return eval_cli.run(argv[argv.index("eval") + 1 :])
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help()
            return 0
        return args.func(args)
    except BrokenPipeError as e:  # `lmeval-prune methods | head`: the reader left; nothing is wrong
        if not _stdout_closed():
            return _failed(e, args, debug)  # another pipe (a subprocess, a socket) broke
        # Python's recipe (docs: signal, "Note on SIGPIPE"): point stdout at devnull so the exit flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:  # SIGINT, and SIGTERM as Terminated
        return _interrupted(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT, command, args, debug)
    except (LayerPruneError, OSError, ValueError, ImportError) as e:
        return _failed(e, args, debug)
    except Exception as e:
        if space_errno(e) is None:
            raise
        return _failed(e, args, debug)  # e.g. safetensors' SafetensorError under a file-size limit
    finally:
        clear_notes()
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
