"""Run under torchrun by tests/test_distributed.py: the production SimCLR loop on 2 CPU ranks (gloo).

Writes, from each rank, the uneven-batch loss and gradients; from rank 0, the trained weights and history.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.ssl.distributed import init_distributed, nt_xent_distributed, shutdown_distributed
from pipeline.ssl.train import pretrain_simclr
from tests.helpers.ddp_reference import CONFIG, UNEVEN_ROWS, make_chips, make_model, uneven_projections


def uneven_loss_and_grads(rank: int) -> dict:
    z_a, z_b = uneven_projections()
    start = sum(UNEVEN_ROWS[:rank])
    rows = slice(start, start + UNEVEN_ROWS[rank])
    local_a, local_b = z_a[rows].clone().requires_grad_(), z_b[rows].clone().requires_grad_()
    out = nt_xent_distributed(local_a, local_b, temperature=0.3)
    out.loss.backward()
    total = out.loss.detach().clone()
    dist.all_reduce(total)
    return {"loss_sum": total / dist.get_world_size(), "grad_a": local_a.grad, "grad_b": local_b.grad}


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    context = init_distributed("cpu")
    torch.save(uneven_loss_and_grads(context.rank), out_dir / f"uneven_rank{context.rank}.pt")
    model = make_model()
    history = pretrain_simclr(model, make_chips(), CONFIG, "remote_multispectral", seed=0, context=context)
    if context.is_main:
        torch.save({"state": model.state_dict(), "history": history.epochs}, out_dir / "trained.pt")
    shutdown_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
