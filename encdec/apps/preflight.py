"""Checks of a composed train/evaluate config that run before anything heavy (no torch, no model,
no baseline validation): the numbers users set, the data files and their columns (the first record
of each), so a typo costs a second, not a model load and a validation pass.

Every failure is one UsageError naming the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from encdec.base.errors import UsageError
from encdec.data.files import check_local_split
from encdec.serving.devices import DTYPE_NAMES, check_device, device_name

_ABSENT = object()


@dataclass(frozen=True)
class Number:
    """A numeric setting: whole or real, its smallest allowed value, an example for the message."""

    key: str
    whole: bool
    minimum: float | None
    example: str
    optional: bool = False  # null allowed
    exclusive: bool = False  # minimum itself not allowed
    below: float | None = None  # values must stay under this

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None if self.optional else "must be set"
        kinds = (int,) if self.whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value != value:
            return f"must be a {'whole number' if self.whole else 'number'}"
        if self.minimum is not None and (value < self.minimum or (self.exclusive and value == self.minimum)):
            return f"must be {'>' if self.exclusive else '>='} {self.minimum:g}"
        if self.below is not None and value >= self.below:
            return f"must be < {self.below:g}"
        return None


GENERATION = [
    Number("generation.num_beams", True, 1, "4", optional=True),
    Number("generation.max_length", True, 1, "64", optional=True),
    Number("generation.min_length", True, 0, "0", optional=True),
    Number("generation.max_new_tokens", True, 1, "64", optional=True),
    Number("generation.no_repeat_ngram_size", True, 0, "3", optional=True),
    Number("generation.length_penalty", False, None, "1.0", optional=True),
]
TRAIN = [
    Number("optim.lr", False, 0, "5e-5", exclusive=True),
    Number("optim.weight_decay", False, 0, "0.01"),
    Number("optim.warmup_steps", True, 0, "500"),
    Number("data.batch_size", True, 1, "16"),
    Number("data.max_tokens", True, 2, "4096", optional=True),
    Number("data.eval_batch_size", True, 1, "32", optional=True),
    Number("data.max_source_length", True, 2, "512"),
    Number("data.max_target_length", True, 2, "128"),
    Number("data.buffer_size", True, 1, "1024"),
    Number("data.val_examples", True, 1, "256"),
    Number("data.num_workers", True, 0, "0"),
    Number("trainer.max_steps", True, 1, "1000"),
    Number("trainer.val_check_interval", True, 1, "250"),
    Number("trainer.accumulate_grad_batches", True, 1, "1"),
    Number("trainer.gradient_clip_val", False, 0, "1.0", optional=True),
    Number("module.table_rows", True, 0, "8"),
    Number("module.label_smoothing", False, 0, "0.1", below=1),
    Number("torch_threads", True, 1, "1", optional=True),
    Number("seed", True, None, "42"),
    *GENERATION,
]
EVALUATE = [
    Number("batch_size", True, 1, "16"),
    Number("devices", True, 1, "2"),
    Number("limit", True, 1, "50", optional=True),
    Number("rouge_workers", True, 1, "1"),
    Number("bootstrap_samples", True, 0, "1000"),
    *GENERATION,
]
CHOICES = {"data.on_empty": ("skip", "error"), "monitor_mode": ("max", "min")}


def check_numbers(cfg: DictConfig, rules: list[Number]) -> None:
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default=_ABSENT)
        problem = None if value is _ABSENT else rule.problem(value)
        if problem:
            raise UsageError(f"{rule.key}={value!r}: {problem} (e.g. {rule.key}={rule.example}).")
    low, high = (OmegaConf.select(cfg, f"generation.{k}", default=None) for k in ("min_length", "max_length"))
    if low is not None and high is not None and low > high:
        raise UsageError(f"generation.min_length={low} > generation.max_length={high}: "
                         "lower min_length or raise max_length.")


def check_choices(cfg: DictConfig) -> None:
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and value not in allowed:
            raise UsageError(f"{key}={value!r}: use one of {', '.join(allowed)}.")


def check_train_config(cfg: DictConfig) -> None:
    """Everything about a train.py config that can be checked without torch or a model."""
    check_numbers(cfg, TRAIN)
    check_choices(cfg)
    if cfg.get("ckpt_path") and not Path(str(cfg.ckpt_path)).expanduser().is_file():
        raise UsageError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint; resume from a run's checkpoints/last.ckpt.")
    data = cfg.data
    columns = (data.text_column, data.summary_column, data.get("id_column"))
    for split in (data.train_split, data.val_split):
        check_local_split(data.source, split, columns)


def check_evaluate_config(cfg: DictConfig) -> None:
    """Everything about an evaluate.py config that can be checked before loading the model."""
    check_numbers(cfg, EVALUATE)
    if cfg.baseline is None and cfg.model_path is None:
        raise UsageError("Set model_path=PATH_OR_ID (a model folder, a train.py .ckpt or a Hub id), or baseline=lead3.")
    if cfg.baseline is not None and cfg.baseline not in ("lead3", "reference"):
        raise UsageError(f"baseline={cfg.baseline!r}: use lead3, reference, or null to evaluate model_path.")
    check_device(cfg.get("device"), "device")
    if cfg.dtype not in (*DTYPE_NAMES, "int8"):
        raise UsageError(f"dtype={cfg.dtype}: use float32, bfloat16, float16, or int8 (CPU serving, not exact).")
    if cfg.dtype == "int8" and str(device_name(cfg.get("device"))).startswith("cuda"):
        raise UsageError("dtype=int8 is dynamic quantisation for the CPU: use device=cpu, or dtype=bfloat16 on a GPU.")
    if cfg.get("plots"):
        from encdec.evaluation.plots import pyplot

        pyplot()  # matplotlib missing: say so now, not after generating every summary
    data = cfg.data
    check_local_split(data.source, cfg.split, (data.text_column, data.summary_column, data.get("id_column")))


# ---------------------------------------------------------------------- recipes


QUICKSTART = Path(__file__).resolve().parents[2] / "conf" / "experiment" / "quickstart.yaml"
QUICKSTART_TRAINING_KEYS = ("optim.lr", "optim.warmup_steps", "optim.lr_scale", "trainer.max_steps",
                            "trainer.val_check_interval", "generation.max_length", "torch_threads")


def quickstart_notice(cfg: DictConfig, choices: dict[str, Any]) -> str | None:
    """With data=local (or any data but the sample set) under the default experiment=quickstart,
    the data config's own sizes apply, but the quickstart's training settings stay: name them."""
    data = choices.get("data")
    if choices.get("experiment") != "quickstart" or data in (None, "sample") or not QUICKSTART.is_file():
        return None
    quick = OmegaConf.load(QUICKSTART)
    kept = [f"{k}={OmegaConf.select(cfg, k)}" for k in QUICKSTART_TRAINING_KEYS
            if OmegaConf.select(quick, k, default=_ABSENT) == OmegaConf.select(cfg, k, default=None)]
    if not kept:
        return None
    return (f"data={data} runs with the default experiment=quickstart, which keeps its training settings "
            f"({', '.join(kept)}); add ~experiment to train with the base settings of conf/optim and "
            "conf/trainer instead, or override these keys.")
