"""The command line end to end: real MNIST where present, errors as one line, kill and resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svhn_vae import checkpoint as ckpt
from svhn_vae.cli import main

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST.exists(), reason=f"real MNIST not found at {MNIST}")

TINY = ["--dataset", "mnist", "--data-dir", str(MNIST), "--preset", "mnist-bernoulli", "--no-progress",
        "--encoder-shared", "64", "--decoder", "64", "--latent-dim", "8", "--sample-every", "0"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@needs_mnist
def test_data_verify_and_info_on_real_mnist(capsys):
    code, out, _ = run_cli(capsys, "data", "verify", "--dataset", "mnist", "--data-dir", str(MNIST))
    assert code == 0 and "verified" in out
    code, out, _ = run_cli(capsys, "data", "info", "--dataset", "mnist", "--data-dir", str(MNIST))
    assert code == 0 and "60000" in out and "10000" in out


@needs_mnist
def test_corrupted_copy_fails_naming_the_file(capsys, tmp_path):
    for f in MNIST.iterdir():
        shutil.copy(f, tmp_path / f.name)
    data = bytearray((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes())
    data[-20] ^= 0xFF  # flip bits inside the compressed stream
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "data", "verify", "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert code == 2 and "t10k-labels-idx1-ubyte" in err and len(err.strip().splitlines()) == 1


def test_user_errors_are_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "info", "--dataset", "cifar")
    assert code == 2 and "svhn" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", "--run-dir", str(tmp_path), "--dataset", "mnist", "--preset", "fast",
                           "--likelihood", "bernoulli")
    assert code == 2 and "model.likelihood" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "train", "--run-dir", str(tmp_path / "r"), "--dataset", "mnist",
                           "--data-dir", str(tmp_path / "nothing"), "--no-download")
    assert code == 2 and "svhn-vae data download" in err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--run-dir", str(tmp_path), "--latent-dim", "many"])
    assert exc.value.code == 2


def test_presets_lists_blog_2017_parameter_count(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and "blog-2017" in out and "48,489,020" in out and "(48.49M)" in out


def test_a_presets_recipe_for_another_likelihood_starts_the_run_and_flags_still_win():
    from svhn_vae.cli import build_parser, config_from_args
    from svhn_vae.config import get_preset

    def parse(argv: list[str]):
        return build_parser().parse_args([*argv[:1], "--run-dir", "runs/x", *argv[1:]])

    binarized = config_from_args(parse(["train", "--preset", "hierarchical", "--likelihood", "bernoulli"]))
    by_hand = get_preset("hierarchical").replace("model", likelihood="bernoulli", context_width=32, context_kernel=7)
    assert binarized == by_hand.replace("train", free_bits=0.0, epochs=40)  # the command behind 83.36 nats
    chosen = config_from_args(parse(["train", "--preset", "hierarchical", "--likelihood", "bernoulli",
                                     "--free-bits", "0.5", "--epochs", "3"]))
    assert (chosen.train.free_bits, chosen.train.epochs, chosen.model.context_width) == (0.5, 3, 32)
    eight_bit = config_from_args(parse(["train", "--preset", "hierarchical"]))
    assert eight_bit == get_preset("hierarchical") and eight_bit.train.free_bits == 0.5
    assert config_from_args(parse(["train", "--preset", "discrete", "--likelihood", "bernoulli"])) == \
        get_preset("discrete").replace("model", likelihood="bernoulli")  # no recipe: the flag alone


@needs_mnist
def test_pca_fit_prints_explained_variance(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "pca", "fit", "--dataset", "mnist", "--data-dir", str(MNIST), "--components", "50",
                           "--out", str(tmp_path / "pca.npz"))
    summary = json.loads(out)
    assert code == 0 and (tmp_path / "pca.npz").exists() and 0.8 < summary["explained_variance"] < 0.9


@needs_mnist
def test_train_one_epoch_on_mnist_writes_run_folder_and_refuses_second_run(capsys, tmp_path):
    run = tmp_path / "R"
    code, out, _ = run_cli(capsys, "train", *TINY, "--epochs", "1", "--limit", "3000", "--run-dir", str(run))
    assert code == 0 and json.loads(out)["epochs"] == 1
    assert (run / "config.json").exists() and (run / "metrics.jsonl").exists()
    assert ckpt.checkpoint_path(run, "last").exists() and ckpt.checkpoint_path(run, "best").exists()
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--limit", "3000", "--run-dir", str(run))
    assert code == 2 and "--overwrite" in err


@needs_mnist
def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    run = tmp_path / "R"
    cmd = [sys.executable, "-m", "svhn_vae.cli", "train", *TINY, "--limit", "2000", "--run-dir", str(run)]
    proc = subprocess.Popen([*cmd, "--epochs", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(ckpt.read_metrics(run)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = ckpt.load_checkpoint(ckpt.checkpoint_path(run))["epoch"]
    assert 1 <= done < 200  # the kill may land between the metrics line and the checkpoint
    result = subprocess.run([*cmd, "--resume", "--epochs", str(done + 2)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr
    assert f"resuming {run} from epoch {done}" in result.stderr
    assert [r["epoch"] for r in ckpt.read_metrics(run)] == list(range(1, done + 3))
