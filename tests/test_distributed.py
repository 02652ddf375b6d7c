"""torchrun with 2 CPU processes (gloo): same weights on every rank, the same losses as one process
with the same global batch, one metrics line per epoch, and a resume after kill -9."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from svhn_vae import checkpoint as ckpt
from svhn_vae.errors import UserError
from svhn_vae.train import TrainData, train
from test_train import synthetic_images, tiny_config

TINY = ["--preset", "fast", "--dataset", "synth-digits", "--limit", "512", "--components", "20", "--latent-dim", "4",
        "--encoder-shared", "32", "--decoder", "32", "--batch-size", "64", "--warmup-steps", "0",
        "--sample-every", "0", "--device", "cpu", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(tiny_config(epochs=2), data=TrainData(synthetic_images(256, (8, 8, 3))))
    weights = {k: v.detach() for k, v in result.model.state_dict().items()}
    torch.save({"weights": weights, "loss": result.history[-1]["loss"]}, f"{folder}/rank{rank}.pt")


def test_ranks_hold_identical_weights_and_match_one_process(tmp_path):
    mp.spawn(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for k, w in ranks[0]["weights"].items():  # BatchNorm's running statistics too: rank 0's after an epoch
        assert torch.equal(w, ranks[1]["weights"][k]), k
    assert ranks[0]["loss"] == ranks[1]["loss"]  # the epoch's sums are added up over the ranks
    alone = train(tiny_config(epochs=2), data=TrainData(synthetic_images(256, (8, 8, 3))))
    # The ranks draw other noise than one process does, so they agree up to the seed-to-seed
    # spread of this tiny run (22.5 to 23.4 nats over seeds 0-4 alone).
    assert ranks[0]["loss"] == pytest.approx(alone.history[-1]["loss"], rel=0.05)


def test_sync_batchnorm_on_cpu_is_a_clear_error():
    from svhn_vae.distributed import World, wrap

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    with pytest.raises(UserError, match="needs CUDA"):
        wrap(model, World(0, 2), sync_batchnorm=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    subprocess.run([sys.executable, "-m", "svhn_vae", "-q", "data", "generate", "--dataset", "synth-digits",
                    "--split", "train", "--num-examples", "512", "--data-dir", str(folder)], check=True,
                   stdout=subprocess.DEVNULL)
    return folder


def _torchrun(run, data_dir, *flags):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
            str(_free_port()), "-m", "svhn_vae", "-q", "train", *TINY, "--data-dir", str(data_dir),
            "--run-dir", str(run), "--resume", *flags]


def test_torchrun_run_writes_one_line_per_epoch_and_resumes_after_kill_9(tmp_path, data_dir):
    run, env = tmp_path / "run", {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_torchrun(run, data_dir, "--epochs", "500"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(ckpt.read_metrics(run)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    # torchrun starts its workers in their own sessions: kill -9 the launcher and every worker
    pids = subprocess.run(["pgrep", "-f", "--", f"--run-dir {run}"], capture_output=True, text=True).stdout.split()
    assert len(pids) >= 3, f"expected the launcher and 2 workers, pgrep found {pids}"  # else nothing is killed
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    proc.wait()
    done = ckpt.load_checkpoint(ckpt.checkpoint_path(run))["epoch"]
    result = subprocess.run(_torchrun(run, data_dir, "--epochs", str(done + 2)), env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout  # one summary, from rank 0
    assert json.loads(result.stdout)["epochs"] == done + 2
    assert [r["epoch"] for r in ckpt.read_metrics(run)] == list(range(1, done + 3))
