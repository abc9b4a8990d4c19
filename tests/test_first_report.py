"""A report imports nothing: a module imported lazily inside a hook is paid by the run that first reaches it
(``np.median`` imports ``numpy.ma``, ~10 ms, once: 3% of a 400-step smoke run of a 1 ms/step model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A plain fit first, so that everything Lightning and TensorBoard import on their own is in place; then a fit
# with LossGuard whose reports take every common path (gradients, validation, logged loss terms).
CHILD = """
import sys, warnings
warnings.filterwarnings("ignore")
import lightning as L, torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from lightning_lossguard import LossGuard

class TwoTerms(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x).squeeze(1)
        fit, size = F.mse_loss(out, y), 1e-3 * out.pow(2).mean()
        self.log_dict({"train_fit": fit, "train_size": size})
        return fit + size

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x).squeeze(1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

def fit(callbacks, root):
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    data = TensorDataset(x, x.sum(1) + 0.1 * torch.randn(256))
    trainer = L.Trainer(max_steps=160, log_every_n_steps=10, val_check_interval=16, callbacks=callbacks,
                        default_root_dir=root, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.fit(TwoTerms(), DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=64))

fit([], sys.argv[1] + "/plain")
before = set(sys.modules)
guard = LossGuard()
fit([guard], sys.argv[1] + "/guarded")
assert guard._diagnostician.logged_terms.weights, "the logged terms were not read: the test would prove little"
print("NEW MODULES:", sorted(set(sys.modules) - before))
"""


def test_reports_import_no_module_a_plain_fit_did_not(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NEW MODULES: []" in done.stdout, done.stdout[-2000:]
