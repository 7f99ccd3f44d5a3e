"""Upload a pruned (or healed) checkpoint to the Hugging Face Hub in one commit.

:func:`upload_manifest` lists exactly what goes up (weights, config, tokenizer, card, plan, recipe,
mergekit YAML, plots) with every local path rewritten (:class:`.portable.Portable`);
:func:`push` creates the repository when missing, refuses to replace a model already there unless
told to (a branch, a pull request, or ``overwrite``), and commits through
:meth:`huggingface_hub.HfApi.create_commit`. ``dry_run`` writes the exact upload to a folder.

The token comes from ``HF_TOKEN`` or the login cache and never appears in what this module prints,
raises or writes. Hub failures become one :class:`.facts.PublishError` each: huggingface_hub's typed
errors where it has them (offline mode, repository or revision not found, bad request), the
response status for the ones it leaves untyped (401, 403, 429, 5xx).
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from lmeval_layerprune import __version__
from lmeval_layerprune.core.fsutil import atomic_dir
from lmeval_layerprune.core.guard import guard_output
from lmeval_layerprune.core.layout import BENCH_FILE, CARD_FILE, MERGEKIT_FILE, RECIPE_FILE
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.errors import PublishError
from lmeval_layerprune.hub.card import write_card
from lmeval_layerprune.hub.facts import PLAN_FILES, identify, read_plan
from lmeval_layerprune.hub.portable import Portable

DRY_RUN_SUFFIX = "-hub-upload"
#: Files a checkpoint needs, by exact name; plus the patterns in :data:`UPLOAD_PATTERNS`.
UPLOAD_FILES = (
    CARD_FILE,
    BENCH_FILE,  # the measured speed and memory the card reports
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "adapter_config.json",
    MERGEKIT_FILE,
    *PLAN_FILES,
    RECIPE_FILE,
)
#: Glob patterns (top level of the folder only): weights, tiktoken vocabularies, plots.
UPLOAD_PATTERNS = ("*.safetensors", "*.tiktoken", "*.png")
#: Files whose presence in a repository means it already holds a model.
MODEL_FILE_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json", "*.bin", "*.gguf", "*.pt")


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch(name, p) for p in patterns)


def human_size(n: float) -> str:
    """``1536`` -> ``1.5 KiB``: the one size formatter of the package."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def upload_manifest(
    folder: str | Path, base_model: str | None = None, repo_id: str | None = None
) -> list[tuple[str, Path | bytes]]:
    """What :func:`push` uploads: ``(path in repo, local file or rewritten content)``, sorted.

    Only top-level files a checkpoint needs. Every text file that names a path of this machine
    (the card, ``config.json`` and its ``*_name_or_path`` fields, adapter configs, the plan files,
    the recipe and its comments, ``mergekit.yaml``) is uploaded rewritten: the parent by its Hub
    id, a ``plan:PATH`` spec as the layer list, any other local file by its bare name. Everything
    else in the folder (results, logs, optimizer states, sub-folders, hidden files) stays local.
    Raises :class:`PublishError` when the parent's Hub id or license is not known.
    """
    folder = Path(folder).expanduser()
    out: list[tuple[str, Path | bytes]] = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and (p.name in UPLOAD_FILES or _matches(p.name, UPLOAD_PATTERNS)):
            out.append((p.name, p))
    names = {n for n, _ in out}
    missing = [n for n in (CARD_FILE, "config.json") if n not in names]
    if not any(_matches(n, ("*.safetensors",)) for n in names):
        missing.append("*.safetensors weights")
    if missing:
        raise PublishError(
            f"{folder} lacks what a checkpoint upload needs: {', '.join(missing)}"
            + (" (write the card with `lmeval-prune card DIR`)" if CARD_FILE in missing else "")
        )
    plan = read_plan(folder)
    ident = identify(folder, plan, base_model)
    ident.missing = [m for m in ident.missing if not m[0].startswith("license")]  # the card's metadata says
    ident.require(f"upload {folder}")
    _check_card(folder / CARD_FILE)
    portable = Portable.for_checkpoint(folder, plan, ident.base_model, repo_id)
    result: list[tuple[str, Path | bytes]] = []
    for name, src in out:
        raw = src.read_bytes() if name.endswith(_TEXTLIKE) else None
        if raw is None:
            result.append((name, src))
            continue
        new = portable.file(name, raw)
        leaks = portable.leaks(new)
        if leaks:
            raise PublishError(f"{name} would upload local paths ({', '.join(leaks[:3])}); not uploading")
        result.append((name, src if new == raw else new))
    return result


_TEXTLIKE = (".json", ".yaml", ".yml", ".md", ".txt", ".jinja")


def _check_card(card: Path) -> None:
    """A card written without the parent's Hub id or license cannot go up."""
    from huggingface_hub import metadata_load

    meta = metadata_load(card) or {}
    lacking = [k for k in ("base_model", "license") if not meta.get(k)]
    if lacking:
        raise PublishError(
            f"{card} was written without {' and '.join(lacking)}; rewrite it with `lmeval-prune card "
            f"{card.parent} --base-model NAMESPACE/NAME --license ID` (or delete it: push writes a card when "
            "there is none)"
        )


def _size(src: Path | bytes) -> int:
    return len(src) if isinstance(src, bytes) else src.stat().st_size


def describe_manifest(manifest: Sequence[tuple[str, Path | bytes]]) -> str:
    """One line per file: size and path in the repository."""
    lines = [f"  {human_size(_size(src)):>10}  {name}" for name, src in manifest]
    total = sum(_size(src) for _, src in manifest)
    return "\n".join([*lines, f"  {human_size(total):>10}  total ({len(manifest)} files)"])


@dataclass
class PushResult:
    """What :func:`push` did."""

    repo_id: str
    files: list[str]
    deleted: list[str] = field(default_factory=list)
    commit_url: str | None = None
    pr_url: str | None = None
    dry_run_dir: Path | None = None
    created_repo: bool = False


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", text)


def _server_says(err: Any) -> str:
    msg = getattr(err, "server_message", None)
    return f" The Hub said: {msg.strip()}" if msg else ""


def _http_error(e: BaseException) -> Any:
    from huggingface_hub.errors import HfHubHTTPError

    while e is not None:
        if isinstance(e, HfHubHTTPError):
            return e
        e = e.__cause__  # type: ignore[assignment]
    return None


@contextlib.contextmanager
def _hub_errors(stage: str, repo_id: str, endpoint: str, token: str | None) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into one clear :class:`PublishError`."""
    from huggingface_hub.errors import (
        BadRequestError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def fail(msg: str) -> PublishError:
        return PublishError(_scrub(msg, token))

    try:
        yield
    except PublishError:
        raise
    except OfflineModeIsEnabled:
        raise fail(f"cannot push {repo_id}: HF_HUB_OFFLINE is set; unset it to reach {endpoint}") from None
    except RevisionNotFoundError as e:
        raise fail(f"{repo_id} has no such revision while {stage}.{_server_says(e)}") from None
    except RepositoryNotFoundError as e:
        raise fail(
            f"{repo_id} was not found while {stage}: check the name, and that your token can see it.{_server_says(e)}"
        ) from None
    except BadRequestError as e:
        raise fail(f"the Hub rejected the request while {stage} (bad request).{_server_says(e)}") from None
    except Exception as e:
        http = _http_error(e)
        response = getattr(http, "response", None)
        if response is not None:
            status, says = response.status_code, _server_says(http)
            if status == 401:  # huggingface_hub has no type for these: read the response
                raise fail(
                    f"authentication failed (401) while {stage}: {endpoint} rejected the token from HF_TOKEN or the "
                    "login cache. Create a token with write access at https://huggingface.co/settings/tokens, then "
                    "set HF_TOKEN or run `hf auth login`."
                ) from None
            if status == 403:
                raise fail(
                    f"permission denied (403) while {stage}: the token cannot write to {repo_id} (a read-only "
                    f"token, or not a member of the '{repo_id.split('/')[0]}' organization).{says}"
                ) from None
            if status == 429:
                retry = response.headers.get("Retry-After")
                wait = f"; retry after {retry} seconds" if retry else "; wait a few minutes and run it again"
                raise fail(f"rate limited by the Hub (429) while {stage}{wait}.{says}") from None
            if status >= 500:
                raise fail(
                    f"the Hub failed with a server error ({status}) while {stage}; nothing was committed to "
                    f"{repo_id}. Run the same command again (large files already uploaded are not sent twice).{says}"
                ) from None
            raise fail(f"the Hub refused the request ({status}) while {stage}.{says}") from None
        name = type(e).__name__
        if isinstance(e, OSError) or "httpx" in type(e).__module__ or name.endswith(("ConnectError", "Timeout")):
            raise fail(
                f"could not reach the Hub at {endpoint} while {stage} ({name}: {e}); check the network"
            ) from None
        if isinstance(e, ValueError) and "metadata" in str(e).lower():
            raise fail(f"the Hub rejected the card's metadata while {stage}: {e}") from None
        raise fail(f"pushing to {repo_id} failed while {stage}: {name}: {e}") from None


def get_token() -> str:
    """The Hub token from ``HF_TOKEN`` or the login cache; a :class:`PublishError` when there is none."""
    from huggingface_hub import get_token as hf_get_token

    token = hf_get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token found: set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens) or run `hf auth login`"
        )
    return token


def validate_repo(repo_id: str) -> None:
    """A :class:`PublishError` unless ``repo_id`` is ``NAMESPACE/NAME``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("it needs exactly one '/'")
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f"--repo {repo_id!r} is not a valid repository id NAMESPACE/NAME: {e}") from None


def _write_dry_run(out: Path, manifest: Sequence[tuple[str, Path | bytes]]) -> None:
    if out.exists() and any(out.iterdir()):
        raise PublishError(f"dry-run folder {out} already exists and is not empty; remove it or name another")
    if out.exists():
        out.rmdir()
    with atomic_dir(out) as tmp:
        for name, src in manifest:
            if isinstance(src, bytes):
                (tmp / name).write_bytes(src)
            else:
                shutil.copyfile(src, tmp / name)


@dataclass
class PushSettings:
    """How :func:`push` uploads (the ``push`` command's flags).

    Attributes:
        private: create the repository private (only when it is created).
        revision: push to this branch (created when missing).
        create_pr: open a pull request instead of committing directly.
        overwrite: replace a model already in the repository.
        dry_run: a local folder: write exactly the files that would be uploaded there, list
            them, and contact nothing.
        endpoint: the Hub URL (default: ``HF_ENDPOINT`` or https://huggingface.co).
        commit_message: default: "Upload PARENT without layers ... (lmeval-layerprune)".
        base_model: the parent's Hub id when the checkpoint records a local path.
        license: the license, when the parent's card does not say.
    """

    private: bool = False
    revision: str | None = None
    create_pr: bool = False
    overwrite: bool = False
    dry_run: str | Path | None = None
    endpoint: str | None = None
    commit_message: str | None = None
    base_model: str | None = None
    license: str | None = None


def push_settings(settings: PushSettings | None = None, **fields: Any) -> PushSettings:
    """``settings`` (default: all defaults) with ``fields`` replacing its values; an unknown field
    name is a :class:`TypeError` naming it."""
    known = {f.name for f in dataclass_fields(PushSettings)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"unexpected arguments {unknown}; push settings are: {', '.join(sorted(known))}")
    return replace(settings or PushSettings(), **fields)


def push(
    folder: str | Path,
    repo_id: str,
    settings: PushSettings | None = None,
    *,
    echo: Any = print,
    **fields: Any,
) -> PushResult:
    """Upload the checkpoint in ``folder`` to the Hub repository ``repo_id`` in one commit.

    The card (``README.md``) is written first (strictly: the parent's Hub id and license must be
    known) when the folder has none. Creates the repository (``private`` if asked) when missing.
    Refuses to commit over a model already in the repository unless ``revision`` (a branch,
    created when missing), ``create_pr`` (a pull request) or ``overwrite`` says so; weights of the
    old model that the new one does not have are deleted in the same commit, so shards never mix.

    Args:
        settings: :class:`PushSettings`; ``fields`` give its fields one by one instead of (or over) it
            (``push(folder, repo, dry_run="out/")``).
        echo: where progress lines go (``print`` by default).

    Raises:
        PublishError: missing token, parent id or license, a refused overwrite, or a Hub failure.
    """
    s = push_settings(settings, **fields)
    folder = Path(folder).expanduser()
    validate_repo(repo_id)
    if not folder.is_dir():
        raise PublishError(f"checkpoint folder {str(folder)!r} does not exist")
    if s.dry_run is not None:  # before anything is written: never into or over the checkpoint folder
        guard_output(Path(s.dry_run).expanduser(), inputs=[folder], what="dry-run folder", flag="--dry-run")
    if not (folder / CARD_FILE).is_file():
        echo(f"no {CARD_FILE} in {folder}: writing the model card first")
        write_card(folder, repo_id=repo_id, base_model=s.base_model, license=s.license, strict=True)
    manifest = upload_manifest(folder, s.base_model, repo_id)
    listing = describe_manifest(manifest)

    if s.dry_run is not None:
        out = Path(s.dry_run).expanduser()
        _write_dry_run(out, manifest)
        echo(f"dry run: these files would be uploaded to {repo_id} (copied to {out}):\n{listing}")
        return PushResult(repo_id=repo_id, files=[n for n, _ in manifest], dry_run_dir=out)
    return _commit(folder, repo_id, s, manifest, echo)


def _commit(
    folder: Path, repo_id: str, s: PushSettings, manifest: list[tuple[str, Path | bytes]], echo: Any
) -> PushResult:
    """Create the repository and branch when missing, refuse to replace a model unless told, commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    listing = describe_manifest(manifest)
    token = get_token()
    private, revision, create_pr = s.private, s.revision, s.create_pr
    endpoint = (s.endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token, library_name="lmeval-layerprune", library_version=__version__)
    result = PushResult(repo_id=repo_id, files=[n for n, _ in manifest])

    with _hub_errors("checking the repository", repo_id, endpoint, token):
        try:
            api.model_info(repo_id)
            exists = True
        except RepositoryNotFoundError:
            exists = False
    if not exists:
        with _hub_errors("creating the repository", repo_id, endpoint, token):
            api.create_repo(repo_id, private=private, exist_ok=True)
        result.created_repo = True
        echo(f"created {'private ' if private else ''}repository {repo_id}")
    elif private:
        echo(f"note: {repo_id} already exists; --private only applies when the repository is created")

    target = revision or constants.DEFAULT_REVISION
    remote: list[str] = []
    with _hub_errors(f"reading what {repo_id}@{target} holds", repo_id, endpoint, token):
        try:
            remote = [s.rfilename for s in api.model_info(repo_id, revision=target).siblings or []]
        except RevisionNotFoundError:
            if not revision:
                raise
            api.create_branch(repo_id, branch=revision, exist_ok=True)
            echo(f"created branch {revision}")
            remote = [s.rfilename for s in api.model_info(repo_id, revision=revision).siblings or []]
    existing_model = sorted(f for f in remote if _matches(f, MODEL_FILE_PATTERNS))
    if existing_model and not (revision or create_pr or s.overwrite):
        raise PublishError(
            f"{repo_id} already holds a model ({', '.join(existing_model[:4])}"
            f"{', ...' if len(existing_model) > 4 else ''}); refusing to replace it. Pass --revision BRANCH to push "
            "to a branch, --create-pr to open a pull request, or --overwrite to replace it"
        )
    uploading = {n for n, _ in manifest}
    stale = sorted(f for f in existing_model if f not in uploading and "/" not in f)
    ops: list[Any] = [
        CommitOperationAdd(path_in_repo=n, path_or_fileobj=src if isinstance(src, bytes) else str(src))
        for n, src in manifest
    ]
    ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
    result.deleted = stale
    where = f"a pull request against {target}" if create_pr else f"{repo_id}@{target}"
    echo(f"uploading to {where}:\n{listing}" + (f"\n  deleting the old model's {', '.join(stale)}" if stale else ""))
    plan = read_plan(folder)
    parent = identify(folder, plan, s.base_model).base_model
    message = s.commit_message or (
        f"Upload {parent} without layers {format_indices(plan['drop'])}"
        + (" (healed)" if plan.get("recovery") else "")
        + " (lmeval-layerprune)"
    )
    with _hub_errors("uploading and committing the files", repo_id, endpoint, token):
        info = api.create_commit(repo_id, ops, commit_message=message, revision=revision, create_pr=create_pr or None)
    result.commit_url = info.commit_url
    result.pr_url = info.pr_url
    echo(f"pushed: {info.pr_url or info.commit_url}")
    return result
