"""How people already work: ``python -m svhn_vae``, ``--config FILE``, TensorBoard, the evaluation
summary, and run cards that ``svhn_vae.load`` reads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import svhn_vae
from svhn_vae import checkpoint as ckpt
from svhn_vae.cli import main
from svhn_vae.cli_evaluate import summary

TIMING = {"seconds", "images_per_s"}


def tiny_flags(data_dir) -> list[str]:
    return ["--dataset", "mnist", "--data-dir", str(data_dir), "--components", "8", "--latent-dim", "3",
            "--encoder-shared", "16", "--decoder", "16", "--epochs", "2", "--batch-size", "32", "--sample-every", "1",
            "--device", "cpu", "--no-progress"]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_python_dash_m_is_the_command(capsys):
    assert main(["presets"]) == 0
    expected = capsys.readouterr().out
    result = subprocess.run([sys.executable, "-m", "svhn_vae", "presets"], capture_output=True, text=True, check=True)
    assert result.stdout == expected and "blog-2017" in expected


def test_config_file_reproduces_a_run_epoch_by_epoch(tmp_path, data_dir, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--preset", "fast", *tiny_flags(data_dir), "--run-dir", str(a)]) == 0
    assert main(["train", "--config", str(a / "config.json"), "--no-progress", "--run-dir", str(b)]) == 0
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    assert without_timing(ckpt.read_metrics(a)) == without_timing(ckpt.read_metrics(b))
    assert len(ckpt.read_metrics(b)) == 2


def test_toml_config_and_flags_on_top(tmp_path, data_dir, capsys):
    toml = tmp_path / "small.toml"
    toml.write_text('preset = "mine"\n[data]\ndataset = "mnist"\n[pca]\ncomponents = 8\n'
                    '[model]\nlatent_dim = 3\nencoder_shared = [16]\ndecoder = [16]\n[train]\nepochs = 5\n')
    run = tmp_path / "r"
    argv = ["train", "--config", str(toml), "--data-dir", str(data_dir), "--epochs", "1", "--sample-every", "0",
            "--no-progress", "--run-dir", str(run)]
    assert main(argv) == 0
    cfg = ckpt.load_run_config(run)
    assert cfg.preset == "mine" and cfg.model.latent_dim == 3 and cfg.train.epochs == 1  # the flag wins
    assert cfg.model.likelihood == "gaussian-relu-eps"  # a default: the file did not set it


def test_config_file_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"latent_dimm": 3}}')
    assert main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "latent_dimm" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "broken.toml").write_text("[model\n")
    assert main(["train", "--config", str(tmp_path / "broken.toml"), "--run-dir", str(tmp_path / "r")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.json"), "--run-dir", str(tmp_path / "r")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not allowed with
        main(["train", "--config", str(bad), "--preset", "fast", "--run-dir", str(tmp_path / "r")])
    assert "not allowed with" in capsys.readouterr().err


def test_tensorboard_logs_what_metrics_jsonl_holds(tmp_path, data_dir, capsys):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "r"
    assert main(["train", "--preset", "fast", *tiny_flags(data_dir), "--tensorboard", "--run-dir", str(run)]) == 0
    assert main(["evaluate", str(run), "--importance-samples", "2", "--no-probe", "--no-quality", "--no-progress",
                 "--device", "cpu", "--tensorboard"]) == 0
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    records = ckpt.read_metrics(run)
    for key in ("loss", "rec", "kl", "lr", "images_per_s"):
        logged = events.Scalars(f"train/{key}")
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([r[key] for r in records], rel=1e-6)
    assert [e.step for e in events.Images("samples")] == [1, 2]
    bpd = json.loads((run / "eval.json").read_text())["bpd_iwae"]
    assert events.Scalars("eval_test/bpd_iwae")[0].value == pytest.approx(bpd, rel=1e-6)


def test_evaluation_summary_covers_every_section():
    result = {"run": "r", "preset": "fast", "dataset": "mnist", "epoch": 3, "n": 10, "split": "test",
              "importance_samples": 5, "seconds": 1.0, "data": "dequantized", "elbo_nats": 1.0, "iwae_nats": 2.0,
              "bpd_elbo": 4.6, "bpd_iwae": 4.5, "bpd_gain_over_ppca": 0.7,
              "baselines": {"gaussian_bpd": 5.3, "ppca_bpd": 5.2, "ppca_components": 700},
              "pca_space": {"rec": 600.0, "kl": 20.0, "reference_blog_2017": {"rec": -106.93, "kl": 13.58}},
              "reconstruction": {"mse": 0.01, "psnr": 20.0, "pca_only_psnr": 50.0},
              "probe": {"results": {"100": {"knn_error": 0.25, "knn_error_std": 0.02, "logreg_error": 0.2,
                                            "logreg_error_std": 0.01},
                                    "all": {"knn_error": 0.03, "knn_error_std": 0.0, "logreg_error": 0.05,
                                            "logreg_error_std": 0.0}},
                        "reference": {"mnist": {"M1+TSVM_100": 0.1182, "M1+M2_100": 0.0333}}},
              "quality": {"fid_classifier": 12.5, "fid_floor_train_vs_test": 0.7, "classes_covered": 10,
                          "label_entropy_bits": 3.3, "label_entropy_max_bits": 3.32}}
    text = summary(result)
    for expected in ("4.5000 bits/dim", "Gaussian 5.3000", "PCA space", "PSNR 20.00", "100 labels 25.0±2.0% / 20.0±1.0%",
                     "all labels 3.0% / 5.0%", "M1+TSVM at 100 labels 11.8%", "classifier FID 12.50", "floor 0.70",
                     "10 of 10 classes"):
        assert expected in text, expected
    bare = summary({**result, "probe": None, "quality": None})
    assert "probe" not in bare and "FID" not in bare


def test_run_card_loads_with_one_call(tmp_path, data_dir, capsys):
    run, card = tmp_path / "r", tmp_path / "card"
    assert main(["train", "--preset", "fast", *tiny_flags(data_dir), "--run-dir", str(run)]) == 0
    assert main(["export", str(run), str(card)]) == 0
    info = json.loads((card / "card.json").read_text())
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["svhn_vae"] == svhn_vae.__version__
    assert info["dataset"]["files_md5"]["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
    assert info["epoch"] == 2 and info["train_metrics"]["epoch"] == 2
    assert {p.name for p in card.iterdir()} == {"card.json", "model.pt", "config.json", "metrics.jsonl"}
    loaded, original = svhn_vae.load(card), ckpt.load_trained(run)
    x = original.representation.encode(torch.zeros(4, 28, 28, 1, dtype=torch.uint8).numpy())
    assert torch.equal(loaded.model.encode(x)[0], original.model.encode(x)[0])
    assert loaded.config == original.config and loaded.representation.data_dim == 8
    assert main(["export", str(run), str(card)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run), str(card), "--overwrite"]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("preset, extra", [("discrete", []), ("hierarchical", []),
                                           ("hierarchical", ["--likelihood", "bernoulli"]),
                                           ("discrete", ["--coarse-size", "4", "--prior", "learned-scale"]),
                                           ("hierarchical", ["--architecture", "conv", "--conv-channels", "4,8",
                                                             "--ladder-spatial"])])
def test_new_model_families_train_evaluate_report_export_and_resume(tmp_path, data_dir, capsys, preset, extra):
    """Every tool works for the discrete and hierarchical families: training and its resume,
    evaluate (bounds, baselines, probe, sample quality), the report's figures and a run card."""
    run, card = tmp_path / "r", tmp_path / "card"
    flags = [*tiny_flags(data_dir), "--mixtures", "2", "--hierarchy", "2", "--ladder-width", "8", *extra]
    assert main(["train", "--preset", preset, *flags, "--epochs", "1", "--run-dir", str(run)]) == 0
    assert main(["train", "--preset", preset, *flags, "--run-dir", str(run), "--resume"]) == 0
    assert [r["epoch"] for r in ckpt.read_metrics(run)] == [1, 2]
    assert main(["evaluate", str(run), "--importance-samples", "8", "--probe-draws", "1", "--quality-samples", "64",
                 "--no-progress", "--data-dir", str(data_dir)]) == 0
    result = json.loads((run / "eval.json").read_text())
    binarized = "bernoulli" in extra
    assert result["data"] == ("binarized" if binarized else "8-bit")
    assert result["quality"]["decode"] == ("mean" if binarized else "mode")  # auto: the mode of 8-bit likelihoods
    assert result["bpd_elbo"] >= result["bpd_iwae"] > 0
    if not binarized:  # a probability of the 8-bit values: bits/dim are -log2 p / D, compared with every baseline
        assert result["bpd_iwae"] * 784 * 0.6931 == pytest.approx(result["nll_nats"], rel=1e-3)
        base = result["baselines"]
        assert base["best_bpd"] == min(base["gaussian_bpd"], base["ppca_bpd"], base["histogram_bpd"])
        assert result["bpd_gain_over_best_baseline"] == pytest.approx(base["best_bpd"] - result["bpd_iwae"])
    assert main(["report", str(run), "--data-dir", str(data_dir)]) == 0
    assert (run / "report.html").stat().st_size > 10_000
    assert main(["export", str(run), str(card)]) == 0
    loaded, x = svhn_vae.load(card), torch.rand(3, 784)
    assert torch.equal(loaded.model.encode(x)[0], ckpt.load_trained(run).model.encode(x)[0])


def test_make_demo_names_its_run_folder_after_preset_and_dataset():
    """`make demo`'s recipe as make expands it: a value with a trailing comment once put spaces into
    the run folder's name (`runs/fast  -svhn`), and own images need the name's last part."""
    root = Path(__file__).resolve().parents[1]
    recipe = subprocess.run(["make", "-n", "demo", "DATASET=folder:/data/my digits"], cwd=root, capture_output=True,
                            text=True, check=True).stdout
    assert 'run="runs/fast-$(basename "$dataset")";' in recipe and '--preset fast --dataset "$dataset"' in recipe
    name = subprocess.run(["sh", "-c", 'dataset="folder:/data/my digits"; echo runs/fast-$(basename "$dataset")'],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert name == "runs/fast-my digits"
