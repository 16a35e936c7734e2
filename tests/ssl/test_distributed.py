"""Data-parallel SimCLR on CPU (gloo): 2 processes × batch B must equal 1 process × batch 2B.

The 2-process side is the production loop launched by real ``torchrun``; the 1-process side is the same
loop in this process. Tolerance: 1e-5 absolute on losses and gradients, 1e-4 on weights after 2 epochs
(summation order differs between one 2B matmul and gathered blocks, nothing else does).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.ssl.loss import nt_xent
from pipeline.ssl.train import pretrain_simclr
from tests.fixtures.ddp_reference import CONFIG, UNEVEN_ROWS, make_chips, make_model, uneven_projections
from tests.fixtures.paths import REPO



@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "fixtures" / "ddp_worker.py"), str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_uneven_batches_give_the_global_loss_and_gradient(two_rank_run):
    z_a, z_b = (z.clone().requires_grad_() for z in uneven_projections())
    reference = nt_xent(z_a, z_b, temperature=0.3)
    reference.loss.backward()
    start = 0
    for rank, rows in enumerate(UNEVEN_ROWS):
        result = torch.load(two_rank_run / f"uneven_rank{rank}.pt")
        # Each rank's scaled loss averages (over ranks) to the global mean loss ...
        torch.testing.assert_close(result["loss_sum"], reference.loss.detach(), atol=1e-5, rtol=0)
        # ... and its gradient, after DDP's division by the world size, is the global gradient.
        torch.testing.assert_close(result["grad_a"] / 2, z_a.grad[start : start + rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(result["grad_b"] / 2, z_b.grad[start : start + rows], atol=1e-5, rtol=0)
        start += rows


def test_two_ranks_train_like_one_process_with_twice_the_batch(two_rank_run):
    torch.set_num_threads(1)
    model = make_model()
    history = pretrain_simclr(model, make_chips(), CONFIG, "remote_multispectral", seed=0)
    distributed = torch.load(two_rank_run / "trained.pt")
    for single_row, ddp_row in zip(history.epochs, distributed["history"], strict=True):
        assert ddp_row["loss"] == pytest.approx(single_row["loss"], abs=1e-5)
        assert ddp_row["top1"] == pytest.approx(single_row["top1"], abs=1e-6)
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(distributed["state"][key], tensor, atol=1e-4, rtol=0, msg=key)
    assert not torch.equal(make_model().state_dict()["head.layers.0.weight"], model.state_dict()["head.layers.0.weight"])
