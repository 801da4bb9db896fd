"""Weight files of a model folder: safetensors or .bin, single or sharded, read safely and written
atomically."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from encdec.base.errors import UsageError, one_line
from encdec.base.jsonfile import read_json

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)

def read_state_dict(folder: Path) -> dict[str, Tensor]:
    """All tensors of a model folder: safetensors or .bin, single file or sharded with an index."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if name.endswith(".index.json"):
                return {k: v for shard in shard_names(path) for k, v in _read_file(folder / shard).items()}
            return _read_file(path)
    raise FileNotFoundError(
        f"No weights in {folder}: looked for {', '.join(WEIGHT_FILES)}. "
        "Point to a folder written by save_pretrained (ours or transformers')."
    )


def shard_names(index: Path) -> list[str]:
    """The weight files an index names (its weight_map: tensor name -> file name)."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UsageError(f"{index}: 'weight_map' must be an object of tensor name -> file name, got "
                         f"{str(weight_map)[:60]!r}; restore the file or save the model again.")
    return sorted(set(weight_map.values()))


def _read_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"Weight shard {path} named in the index is missing; re-download the model.")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise UsageError(f"Could not read {path}: the file is corrupt ({one_line(err)}). Re-download or re-save "
                             "it.") from None
        raise ValueError(
            f"{path} holds Python objects besides tensors; encdec loads .bin files with "
            "torch.load(weights_only=True) so a checkpoint cannot run code. Convert it to safetensors "
            "in a trusted environment."
        ) from err
    except Exception as err:  # torch.load and safetensors fail in many ways on a damaged file
        raise UsageError(
            f"Could not read {path}: the file is corrupt or truncated ({one_line(err)}). Re-download or re-save it."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UsageError(f"{path} holds a {type(state).__name__} that is not a state dict (tensor name -> tensor); "
                         "point to the model's weights file or save the model again.")
    return state


def _umask_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_safetensors(state: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write atomically (temp file + rename), so an interrupted save never leaves a broken file."""
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata or {"format": "pt"})
        os.chmod(tmp, _umask_file_mode())  # mkstemp makes 0600; other files get the umask's mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
