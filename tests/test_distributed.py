"""Two-process data-parallel training on CPU (gloo) of a compressed task: both ranks keep the same pruning masks.

How fairseq-fixed runs distributed on CPU. `fairseq-train --distributed-world-size 2 --cpu` alone asserts that the
world size fits the GPU count (0), and under torchrun it takes the device id as rank % cuda.device_count()
(a division by zero), so neither works without a GPU. What does work is fairseq's explicit form: one process per
rank, each with --distributed-rank R --distributed-init-method tcp://HOST:PORT --distributed-no-spawn, plus
--distributed-backend gloo (NCCL is GPU-only) and --ddp-backend legacy_ddp (the default pytorch_ddp passes
device_ids=[0], which torch's DistributedDataParallel refuses for a CPU module).

fairseq saves checkpoints on rank 0 only; to compare the ranks, each rank here runs fairseq-train's own main with
checkpoint saving turned on for every rank and a per-rank file name (two Trainer properties, nothing else).
"""
import socket
import subprocess
import sys

import pytest
import torch

from clitools import REPO, clean_env, json_log_records
from conftest import TINY_TRANSFORMER, TRAIN_SETTINGS

pytestmark = pytest.mark.e2e

TARGET, END, EVERY, UPDATES = 0.6, 6, 2, 4  # gradual schedule, stopped half-way: the sparsity is still moving

# fairseq_cli.train first: importing it sets up fairseq's log format, which the JSON records are read by.
EVERY_RANK_SAVES = """
import sys
from fairseq_cli.train import cli_main
from fairseq.trainer import Trainer
Trainer.should_save_checkpoint_on_current_rank = property(lambda self: True)
Trainer.checkpoint_suffix = property(lambda self: f"-rank{self.data_parallel_rank}")
sys.argv[0] = "fairseq-train"
cli_main()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_run(multi30k_2k, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("two_ranks")
    port = free_port()
    common = [
        str(multi30k_2k / "bin"), "--user-dir", str(REPO / "fairseq_ext"), "--task", "compressed_translation",
        *TINY_TRANSFORMER, *TRAIN_SETTINGS, "--log-interval", "1", "--max-update", str(UPDATES),
        "--prune-sparsity", str(TARGET), "--prune-schedule", "gradual", "--prune-end-update", str(END),
        "--prune-every", str(EVERY), "--save-dir", str(save_dir), "--disable-validation",
        "--distributed-world-size", "2", "--distributed-init-method", f"tcp://127.0.0.1:{port}",
        "--distributed-no-spawn", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
    ]
    # One thread each: the two ranks share the machine.
    env = {**clean_env(), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", EVERY_RANK_SAVES, *common, "--distributed-rank", str(rank)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    for rank, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank} exited {proc.returncode}:\n{output[-5000:]}"
    return save_dir, outputs[0]


def expected_sparsity(update):
    from fairseq_ext.compression import sparsity_at

    return sparsity_at(update, schedule="gradual", target=TARGET, start=0, end=END, every=EVERY)


def test_both_ranks_trained_together(two_rank_run):
    _, output = two_rank_run
    assert "distributed init (rank 0)" in output and "training on 2 devices" in output
    assert [r["num_updates"] for r in json_log_records(output, "train_inner")] == [str(u) for u in range(1, UPDATES + 1)]


def test_logged_sparsity_follows_the_schedule(two_rank_run):
    _, output = two_rank_run
    logged = {int(r["num_updates"]): float(r["sparsity"]) for r in json_log_records(output, "train_inner")}
    assert logged == {u: pytest.approx(expected_sparsity(u), abs=1e-4) for u in range(1, UPDATES + 1)}
    assert 0 < logged[UPDATES] < TARGET


def test_both_ranks_hold_identical_weights_with_the_scheduled_zeros(two_rank_run):
    from fairseq import checkpoint_utils, tasks

    from fairseq_ext.compression import prunable_weights
    from fairseq_ext.compression.pruning import pruned_count

    save_dir, _ = two_rank_run
    states = [checkpoint_utils.load_checkpoint_to_cpu(str(save_dir / f"checkpoint_last-rank{r}.pt")) for r in (0, 1)]
    weights = [state["model"] for state in states]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), f"{name} differs between the ranks"
    cfg = states[0]["cfg"]
    names = prunable_weights(tasks.setup_task(cfg.task).build_model(cfg.model)).keys()
    total = sum(weights[0][n].numel() for n in names)
    zeros = sum(int((weights[0][n] == 0).sum()) for n in names)
    # The core prunes exact counts over all prunable weights together (global scope).
    assert zeros == pruned_count(expected_sparsity(UPDATES), total)
    assert states[0]["optimizer_history"][-1]["num_updates"] == UPDATES
