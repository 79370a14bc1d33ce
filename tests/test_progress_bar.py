"""The progress bar reads the logged values (a host-device sync on a GPU) every log_every_n_steps only."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_modules.callbacks import SyncFreeRichProgressBar


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(bar: SyncFreeRichProgressBar, tmp_path, steps: int, log_every: int) -> list[int]:
    calls = []
    original = bar._update_metrics

    def counting(trainer, pl_module):
        calls.append(trainer.global_step)
        original(trainer, pl_module)

    bar._update_metrics = counting
    data = TensorDataset(torch.randn(steps * 2, 3), torch.randn(steps * 2, 1))
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        log_every_n_steps=log_every,
        default_root_dir=tmp_path,
        enable_model_summary=False,
    )
    trainer.fit(_Tiny(), DataLoader(data, batch_size=2))
    return calls


def test_metrics_column_refreshes_every_log_interval_not_every_step(tmp_path):
    calls = _fit(SyncFreeRichProgressBar(), tmp_path, steps=12, log_every=4)
    # after steps 4, 8, 12 and once at the epoch's end (Lightning's own refresh)
    assert calls == [4, 8, 12, 12]
    explicit = _fit(SyncFreeRichProgressBar(metrics_interval=6), tmp_path, steps=12, log_every=4)
    assert explicit == [6, 12, 12]
