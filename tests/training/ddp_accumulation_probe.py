"""One optimizer step on 2 gloo ranks x 2 accumulated micro-batches, for
test_precision.py::test_ddp_step_weighs_every_label_token_equally.

Usage: python tests/training/ddp_accumulation_probe.py DIR. Reads DIR/batches.pt (four micro-batches; rank r
takes batches 2r and 2r+1), trains with SGD at lr 1, and rank 0 writes DIR/step.pt: each
parameter's change (before - after), which is the gradient the step used.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning import Trainer

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests/: conftest and tiny_models, as under pytest
from test_precision import _no_dropout_model, sgd_module  # noqa: E402


class RankBatches(torch.utils.data.Dataset):
    def __init__(self, batches: list[dict], rank: int) -> None:
        self.batches = batches[2 * rank: 2 * rank + 2]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return self.batches[i]


def main(folder: Path) -> None:
    batches = torch.load(folder / "batches.pt")
    model = _no_dropout_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    module = sgd_module(model)
    module.train_dataloader = lambda: torch.utils.data.DataLoader(
        RankBatches(batches, module.global_rank), batch_size=None
    )
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=1, accumulate_grad_batches=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        use_distributed_sampler=False, default_root_dir=folder,
    )
    trainer.fit(module)
    if trainer.global_rank == 0:
        torch.save({n: before[n] - p.detach() for n, p in model.named_parameters()}, folder / "step.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
