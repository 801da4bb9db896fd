"""Seq2SeqModule: the LightningModule that trains an EncoderDecoderModel and scores it with ROUGE.

Besides the loss it watches for the failures that make encoder-decoder fine-tuning go silently
wrong: no decoder_start_token_id, labels padded with the pad id instead of -100 (the model learns
to predict padding and outputs the same text for every input), and collapsed predictions.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import random
import time
from typing import Any, Callable

import numpy as np
import torch
from lightning import LightningModule
from torch import Tensor, nn

from encdec.base.errors import UsageError
from encdec.data.batching import LABEL_PAD
from encdec.evaluation.rouge import ROUGE_TYPES, score_pairs
from encdec.tokenization.tokenizer import Tokenizer

logger = logging.getLogger("encdec")
logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score logs "Using default tokenizer" per call
GUARDED_STEPS = 20  # label checks run on the first batches only: they cost a host sync


def weight_decay_groups(
    model: nn.Module, weight_decay: float, lr: float | None = None, lr_scale: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """Decay matrices (linear and embedding weights), never biases or LayerNorm gains (1-D).
    `lr_scale` maps a parameter-name substring to an LR multiplier: newly initialised
    cross-attention learns faster with a larger step than the pretrained weights around it."""
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():  # shared (tied) parameters appear once
        if param.requires_grad:
            scale = next((s for key, s in (lr_scale or {}).items() if key in name), 1.0)
            groups.setdefault((param.ndim >= 2, float(scale)), []).append(param)
    out = []
    for (decay, scale), params in sorted(groups.items()):
        group = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if scale != 1.0:
            if lr is None:
                raise ValueError("lr_scale needs the base learning rate (optim.lr).")
            group["lr"] = lr * scale
        out.append(group)
    return out


# `decoder.lm`: a decoder-only LM's own weights, everything of the decoder but the cross-attention it
# was given (its attention, norms and gates), so that only those train on a frozen LM.
LM_PATTERN = "decoder.lm"


def _matches(name: str, pattern: str) -> bool:
    if pattern == LM_PATTERN:
        return name.startswith("decoder.") and ".cross_attn" not in name
    return name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern)


def freeze_parameters(model: nn.Module, patterns: list[str]) -> int:
    """Stop training every parameter whose name (under any alias: BERTShare's shared weights have
    two) is a pattern, starts with pattern + ".", or matches it as a glob; `decoder.lm` names a
    decoder LM's own weights (LM_PATTERN). Returns how many tensors were frozen; a pattern that
    matches nothing is an error (a typo would train all)."""
    frozen: dict[int, nn.Parameter] = {}
    for pattern in patterns:
        hits = [p for name, p in model.named_parameters(remove_duplicate=False) if _matches(name, pattern)]
        if not hits:
            roots = sorted({".".join(n.split(".")[:2]) for n, _ in model.named_parameters()})
            raise ValueError(
                f"optim.freeze pattern {pattern!r} matches no parameter; names look like {', '.join(roots[:8])}, ..."
            )
        frozen.update((id(p), p) for p in hits)
    for param in frozen.values():
        param.requires_grad_(False)
    if frozen:
        logger.info("Frozen: %d parameter tensors (%d values) matching %s", len(frozen),
                    sum(p.numel() for p in frozen.values()), patterns)
    return len(frozen)


def _params_with_grad(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def check_labels(labels: Tensor, pad_token_id: int | None) -> None:
    """Labels padded with the pad id make the model learn to emit padding; they must be -100."""
    if pad_token_id is None or labels.shape[1] < 2 or bool((labels == LABEL_PAD).any()):
        return
    tail = labels[:, -2:] == pad_token_id
    if bool(tail.all(dim=1).any()):
        raise ValueError(
            f"labels end in runs of the pad id {pad_token_id} and contain no -100: padding is being "
            "scored as target text, and the model will learn to output the same thing for every input. "
            "Pad labels with -100 (encdec.data.batching.collate does) or replace pad ids by -100."
        )


def collapsed(predictions: list[str], sources: list[str]) -> bool:
    """True when different inputs all got the same prediction."""
    return len(predictions) >= 4 and len(set(sources)) > 1 and len(set(predictions)) == 1


class Seq2SeqModule(LightningModule):
    """Trains `model` on batches from Seq2SeqDataModule; validation generates and logs ROUGE."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        weight_decay: float = 0.01,
        lr_scale: dict[str, float] | None = None,
        generation: dict[str, Any] | None = None,
        table_rows: int = 8,
        run_config: dict[str, Any] | None = None,
        freeze: list[str] | None = None,
        compile: bool | str = False,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.model.train()  # from_pretrained-style loaders return eval mode; Lightning keeps the mode it finds
        freeze_parameters(model, list(freeze or []))
        if compile:  # in place, so parameter names (and checkpoints) stay the same
            self.model.compile(dynamic=True, backend="inductor" if compile is True else compile)
        self.make_optimizer, self.make_scheduler, self.weight_decay = optimizer, scheduler, weight_decay
        self.lr_scale = dict(lr_scale or {})
        if not 0.0 <= label_smoothing < 1.0:
            raise UsageError(f"module.label_smoothing={label_smoothing}: must be in [0, 1) (e.g. 0.1).")
        self.label_smoothing = label_smoothing
        self.generation = dict(generation or {})
        self.table_rows, self.run_config = table_rows, run_config
        self._val: list[dict[str, Any]] = []
        self._last_time: float | None = None
        self._rng_to_restore: dict | None = None
        self._window_tokens: Tensor | None = None  # label tokens of this rank since the last optimizer step
        self.history: list[dict[str, float]] = []  # validation metrics, in order

    # ------------------------------------------------------------------ guards

    def on_fit_start(self) -> None:
        """Fail before the first step on ids the loss and generation need."""
        cfg = self.model.config
        missing = [k for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id") if getattr(cfg, k) is None]
        if missing:
            raise ValueError(
                f"model.config.{', '.join(missing)} unset: the decoder cannot be fed or stopped. Set them from "
                "the decoder tokenizer (e.g. BERT: decoder_start_token_id=[CLS] 101, eos_token_id=[SEP] 102, "
                "pad_token_id=0; GPT-2: all three 50256), as encdec.serving.parts.build_seq2seq does."
            )

    # ------------------------------------------------------------------ training

    def forward(self, batch: dict[str, Any]) -> Any:
        """The loss through the model's training fast path (real tokens only, no logits kept)."""
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
            decoder_attention_mask=batch.get("decoder_attention_mask"), return_logits=False,
            label_smoothing=self.label_smoothing,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Logs the per-token mean loss; returns the token-summed loss, which
        `on_before_optimizer_step` turns into the gradient of the mean over every label token of
        the accumulation window on every rank."""
        if self.global_step < GUARDED_STEPS:
            check_labels(batch["labels"], self.model.config.pad_token_id)
        loss = self(batch).loss
        tokens = batch["labels"].ne(LABEL_PAD).sum()
        self._window_tokens = tokens if self._window_tokens is None else self._window_tokens + tokens
        size = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self._log_throughput(batch, size)
        return loss * tokens

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the summed gradients by the window's label tokens over all ranks (before clipping).
        Lightning divided each micro-batch's loss by accumulate_grad_batches and DDP averaged over
        ranks; both are undone here, so micro-batches and ranks with more tokens weigh more: the
        gradient of one big batch, not the mean of per-batch means (transformers#34575)."""
        tokens, self._window_tokens = self._window_tokens, None
        if tokens is None:
            return
        tokens = tokens.to(torch.float64)
        if self.trainer.world_size > 1:
            torch.distributed.all_reduce(tokens)
        factor = self.trainer.world_size * self.trainer.accumulate_grad_batches / max(float(tokens), 1.0)
        grads = [p.grad for p in _params_with_grad(optimizer)]
        if grads:
            torch._foreach_mul_(grads, factor)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """`trainer.gradient_clip_val` applied here rather than by Lightning, which refuses fused
        optimizers under any mixed precision (even bf16, which has no loss scaler). Under a loss
        scaler that the fused optimizer unscales itself, the threshold is scaled instead."""
        if not gradient_clip_val:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        scaled = scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False)
        limit = gradient_clip_val * (float(scaler.get_scale()) if scaled else 1.0)
        params = _params_with_grad(optimizer)
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, limit)
        else:
            torch.nn.utils.clip_grad_norm_(params, limit)

    def _log_throughput(self, batch: dict[str, Any], size: int) -> None:
        """Real tokens per second (this rank), the share of padding in the batch, records skipped so far
        and the share of this batch's sources cut at data.max_source_length."""
        real = int(batch["attention_mask"].sum()) + int((batch["labels"] != LABEL_PAD).sum())
        padded = batch["input_ids"].numel() + batch["labels"].numel()
        now = time.perf_counter()
        if self._last_time is not None:
            self.log("train/tokens_per_s", real / max(now - self._last_time, 1e-9), batch_size=size)
        self._last_time = now
        self.log("train/padding_fraction", 1.0 - real / padded, batch_size=size)
        if "skipped" in batch:
            self.log("data/skipped", float(batch["skipped"]), batch_size=size)
        if "truncated" in batch:  # the share of sources cut at data.max_source_length
            self.log("data/truncated", batch["truncated"] / size, batch_size=size)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        opt = self.trainer.optimizers[0] if self.trainer.optimizers else None
        if opt is not None:
            self.log("train/lr", opt.param_groups[0]["lr"], batch_size=1)

    def configure_optimizers(self) -> Any:
        base_lr = getattr(self.make_optimizer, "keywords", {}).get("lr")  # a functools.partial from Hydra
        optimizer = self.make_optimizer(weight_decay_groups(self.model, self.weight_decay, base_lr, self.lr_scale))
        if self.make_scheduler is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        if not math.isfinite(total):
            raise ValueError("Set trainer.max_steps: the training stream is endless, so steps size the schedule.")
        scheduler = self.make_scheduler(optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ validation

    def on_validation_epoch_start(self) -> None:
        self._val = []
        self._last_time = None  # validation time is not training throughput

    @torch.no_grad()
    def generate(self, batch: dict[str, Any]) -> list[str]:
        ids = self.model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **self.generation)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        size = batch["input_ids"].shape[0]
        self.log("val/loss", self(batch).loss, sync_dist=True, batch_size=size)
        predictions = self.generate(batch)
        sources = [tuple(row) for row in batch["input_ids"].tolist()]
        for i, prediction in enumerate(predictions):
            self._val.append(
                {"id": batch["ids"][i], "prediction": prediction, "reference": batch["references"][i],
                 "source": hash(sources[i])}
            )

    def _all_ranks(self) -> list[dict[str, Any]]:
        if self.trainer.world_size == 1:
            return self._val
        gathered: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, self._val)
        return [row for rank_rows in gathered for row in rank_rows]

    def on_validation_epoch_end(self) -> None:
        """ROUGE over every rank's predictions, the same number logged on each rank."""
        rows = self._all_ranks()
        if not rows:
            return
        scores = score_pairs([r["prediction"] for r in rows], [r["reference"] for r in rows])
        metrics = {
            f"val/{t}": 100.0 * float(np.mean([s[t].fmeasure for s in scores])) for t in ROUGE_TYPES
        }
        metrics["val/gen_len"] = float(np.mean([len(r["prediction"].split()) for r in rows]))
        self.log_dict(metrics, sync_dist=False, rank_zero_only=False)
        if not self.trainer.sanity_checking:
            self.history.append({"step": self.global_step, **metrics})
        self._warn_if_collapsed(rows)
        from encdec.training.run_records import log_predictions

        log_predictions(self.trainer, rows[: self.table_rows], self.global_step)

    def _warn_if_collapsed(self, rows: list[dict[str, Any]]) -> None:
        if self.global_step == 0 or not collapsed([r["prediction"] for r in rows], [r["source"] for r in rows]):
            return
        logger.warning(
            "\n%s\nALL %d VALIDATION PREDICTIONS ARE IDENTICAL after %d steps: %r\nUsual causes: labels padded "
            "with the pad id instead of -100, a wrong decoder_start_token_id, a learning rate too high or too "
            "few steps.\n%s", "!" * 80, len(rows), self.global_step, rows[0]["prediction"][:200], "!" * 80,
        )

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the RNG states (dropout masks after a resume equal an uninterrupted run's) and the
        resolved run config."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_states"] = {  # plain types and tensors: loadable with weights_only=True
            "torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        if self.run_config is not None:
            checkpoint["encdec_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        """Restore RNG states here, after Lightning's own start-up work, right before the next step."""
        states, self._rng_to_restore = self._rng_to_restore, None
        if not states:
            return
        torch.set_rng_state(states["torch"])
        random.setstate(states["python"])
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        if states.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
