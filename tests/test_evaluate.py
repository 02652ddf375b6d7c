"""Evaluation: known answers for the bounds and the pixel-space density, then the CLI end to end."""

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from svhn_vae import cli
from svhn_vae.baselines import RIDGE, bits_per_dim, dequantize
from svhn_vae.checkpoint import TrainedModel
from svhn_vae.cli_evaluate import format_table, lookup
from svhn_vae.config import ModelConfig, get_preset
from svhn_vae.data.fakes import write_fake_split
from svhn_vae.errors import UserError
from svhn_vae.evaluate import (
    EvalOptions, evaluate, importance_bounds, likelihood_metrics, pca_space_elbo, pixels_to_model_space, psnr,
    reconstruction_metrics,
)
from svhn_vae.models.vae import VAE
from svhn_vae.pca import PCA
from svhn_vae.representation import Representation
from svhn_vae.train import TrainData, train

# --- a linear-Gaussian VAE: x = A z + b + N(0, s2 I), z ~ N(0, I), so p(x) = N(b, A A^T + s2 I) ---------


def linear_gaussian_vae(a: torch.Tensor, b: torch.Tensor, s2: float, *, logvar_shift: float = 0.0) -> VAE:
    """A VAE whose decoder is exactly x = A z + b + noise; its encoder is the true posterior's mean and
    diagonal variances times exp(logvar_shift) (exact when A's columns are orthogonal and the shift 0)."""
    d, latent = a.shape
    cfg = ModelConfig(latent_dim=latent, encoder_shared=(), decoder=(), dropout=0.0, input_batchnorm=False,
                      likelihood="gaussian-fixed", fixed_variance=s2)
    model = VAE(cfg, data_dim=d, image_shape=(1, 1, d))
    cov = torch.linalg.inv(torch.eye(latent) + a.T @ a / s2)  # posterior covariance (L, L)
    gain = cov @ a.T / s2  # posterior mean = gain @ (x - b)
    with torch.no_grad():
        model.decoder.head.loc.weight.copy_(a)
        model.decoder.head.loc.bias.copy_(b)
        model.encoder.mu.weight.copy_(gain)
        model.encoder.mu.bias.copy_(-(gain @ b))
        model.encoder.logvar.weight.zero_()
        model.encoder.logvar.bias.copy_(torch.diagonal(cov).log() + logvar_shift)
    return model.eval()


def exact_marginal(a: torch.Tensor, b: torch.Tensor, s2: float) -> MultivariateNormal:
    return MultivariateNormal(b.double(), (a @ a.T + s2 * torch.eye(len(b))).double())


@pytest.fixture
def linear_case() -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """A, b, s2 and 200 points drawn from the exact marginal."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 2, generator=gen)
    b = torch.randn(5, generator=gen)
    x = exact_marginal(a, b, 0.3).sample((200,)).float()
    return a, b, 0.3, x


def test_iwae_converges_to_exact_log_likelihood(linear_case):
    a, b, s2, x = linear_case
    model = linear_gaussian_vae(a, b, s2, logvar_shift=0.5)  # an imperfect q: the bounds have a gap
    exact = exact_marginal(a, b, s2).log_prob(x.double()).mean().item()
    gaps = []
    for k in (1, 10, 1000):
        elbo, iwae = importance_bounds(model, x, n_samples=k, generator=torch.Generator().manual_seed(1),
                                       sample_chunk=64)
        assert iwae.dtype == torch.float64 and iwae.shape == (200,)
        assert (iwae >= elbo - 1e-9).all()  # log-mean-exp >= mean of the same log-weights
        gaps.append(exact - iwae.mean().item())
    assert gaps[0] > 0.1 and gaps[0] > gaps[1] > abs(gaps[2])
    assert abs(gaps[2]) < 0.005  # nats: K = 1000 reaches the exact log-likelihood


def test_bounds_are_exact_when_the_posterior_is(linear_case):
    _, b, s2, x = linear_case
    a = torch.tensor([[2.0, 0], [0, 1], [0, 0], [0, 0], [0, 0]])  # orthogonal columns: diagonal posterior
    model = linear_gaussian_vae(a, b, s2)
    exact = exact_marginal(a, b, s2).log_prob(x.double())
    elbo, iwae = importance_bounds(model, x, n_samples=7, generator=torch.Generator().manual_seed(0), sample_chunk=3)
    assert torch.allclose(elbo, exact, atol=1e-4) and torch.allclose(iwae, exact, atol=1e-4)


def test_single_sample_iwae_is_the_elbo(linear_case):
    a, b, s2, x = linear_case
    elbo, iwae = importance_bounds(linear_gaussian_vae(a, b, s2), x, n_samples=1)
    assert torch.allclose(elbo, iwae)


def test_elbo_matches_the_analytic_kl_elbo_on_average(linear_case):
    a, b, s2, x = linear_case
    model = linear_gaussian_vae(a, b, s2, logvar_shift=0.5)
    elbo, _ = importance_bounds(model, x, n_samples=2000, generator=torch.Generator().manual_seed(2))
    terms = [model(x, generator=torch.Generator().manual_seed(i)).elbo for i in range(200)]
    assert elbo.mean().item() == pytest.approx(torch.stack(terms).mean().item(), abs=0.02)


# --- the pixel-space density of a PCA model ---------------------------------------------------------

def pca_trained(*, whiten: bool, images: np.ndarray, diagonal: bool = False
                ) -> tuple[TrainedModel, torch.Tensor, torch.Tensor, float]:
    """A PCA(2) of 6-pixel images with an exact linear-Gaussian VAE on its codes; also A, b, s2."""
    pca = PCA(2, whiten=whiten, keep_discarded=diagonal).fit(images.reshape(len(images), -1) / 255.0)
    a, b, s2 = torch.tensor([[0.5, 0.0], [0.0, 0.2]]), torch.tensor([0.1, -0.05]), 0.01
    cfg = get_preset("fast").replace("pca", components=2, whiten=whiten,
                                     complement="diagonal" if diagonal else "isotropic")
    trained = TrainedModel(cfg, linear_gaussian_vae(a, b, s2), Representation((1, 2, 3), pca), None, 0)
    return trained, a, b, s2


def direct_pixel_density(trained: TrainedModel, a: torch.Tensor, b: torch.Tensor, s2: float) -> MultivariateNormal:
    """The same model written as one 6-dim Gaussian on pixels: N(m + V^T c0, V^T S V + C), where C
    is sigma2 (I - V^T V) for the isotropic complement, W^T diag(discarded eigenvalues + ridge) W
    for the diagonal one (W: the discarded eigenvectors)."""
    pca = trained.representation.pca
    v, lam = pca.components_, pca.explained_variance_
    scale = lam.sqrt() if pca.whiten else torch.ones(2, dtype=torch.float64)
    code_cov = scale[:, None] * (a @ a.T + s2 * torch.eye(2)).double() * scale[None, :]
    if pca.keep_discarded:
        w = pca.discarded_components_.double()
        rest = w.T @ torch.diag(pca.discarded_variance_ + RIDGE) @ w
    else:
        rest = pca.noise_variance_ * (torch.eye(6, dtype=torch.float64) - v.T @ v)
    cov = v.T @ code_cov @ v + rest
    return MultivariateNormal(pca.mean_ + (scale * b.double()) @ v, cov)


@pytest.fixture
def six_pixel_images() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 2)) @ rng.normal(size=(2, 6)) * 30 + 128
    return np.clip(base + rng.normal(0, 8, (400, 6)), 0, 255).astype(np.uint8).reshape(400, 1, 2, 3)


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("whiten", [False, True])
def test_pca_model_pixel_density_equals_direct_gaussian(whiten, diagonal, six_pixel_images):
    trained, a, b, s2 = pca_trained(whiten=whiten, images=six_pixel_images, diagonal=diagonal)
    u = dequantize(six_pixel_images[:50], generator=torch.Generator().manual_seed(0))
    x, correction = pixels_to_model_space(trained.representation, u)
    _, iwae = importance_bounds(trained.model, x, n_samples=5)
    direct = direct_pixel_density(trained, a, b, s2).log_prob(u)
    assert torch.allclose(iwae + correction, direct, atol=1e-3)


def test_likelihood_metrics_in_bits_per_dim(six_pixel_images):
    trained, a, b, s2 = pca_trained(whiten=False, images=six_pixel_images)
    out = likelihood_metrics(trained, six_pixel_images[:64], importance_samples=3, seed=4, batch_size=10)
    u = dequantize(six_pixel_images[:64], generator=torch.Generator().manual_seed(4))
    nll = -direct_pixel_density(trained, a, b, s2).log_prob(u).mean().item()
    assert out["data"] == "dequantized" and out["dims"] == 6
    assert out["nll_nats"] == pytest.approx(nll, abs=1e-3)
    assert out["bpd_iwae"] == pytest.approx((nll + 6 * math.log(256)) / (6 * math.log(2)), abs=1e-3)


def test_bernoulli_coin_model_scores_one_bit_per_pixel():
    cfg = get_preset("mnist-bernoulli").replace("model", latent_dim=3, encoder_shared=(), decoder=())
    model = VAE(cfg.model, data_dim=12, image_shape=(2, 2, 3))
    for p in model.parameters():  # logits 0 (p = 0.5) and q(z|x) = N(0, I) = the prior: weights are exact
        torch.nn.init.zeros_(p)
    trained = TrainedModel(cfg, model.eval(), Representation((2, 2, 3)), None, 0)
    images = np.random.default_rng(0).integers(0, 256, (20, 2, 2, 3), dtype=np.uint8)
    out = likelihood_metrics(trained, images, importance_samples=4)
    assert out["data"] == "binarized"
    assert out["nll_nats"] == pytest.approx(12 * math.log(2), rel=1e-6)
    assert out["bpd_iwae"] == pytest.approx(1.0) and out["bpd_elbo"] == pytest.approx(1.0)


def test_bits_per_dim_of_a_uniform_density_is_8():
    assert bits_per_dim(0.0, dims=6) == pytest.approx(8.0)


# --- PCA-space ELBO, reconstructions, evaluate() -----------------------------------------------------

def test_pca_space_and_reconstruction(six_pixel_images):
    trained, *_ = pca_trained(whiten=False, images=six_pixel_images)
    pca_space = pca_space_elbo(trained, six_pixel_images, seed=0)
    assert pca_space["elbo"] == pytest.approx(pca_space["rec"] - pca_space["kl"])
    assert pca_space["components"] == 2 and pca_space["reference_blog_2017"]["kl"] == 13.58
    rec = reconstruction_metrics(trained, six_pixel_images, batch_size=64)
    target = torch.as_tensor(six_pixel_images).double() / 255
    projected = trained.representation.project(six_pixel_images).double()
    assert rec["pca_only_mse"] == pytest.approx((projected - target).pow(2).mean().item(), rel=1e-5)
    assert rec["psnr"] == pytest.approx(psnr(rec["mse"]))
    assert psnr(0.01) == pytest.approx(20.0)


def test_evaluate_does_not_change_the_model_and_is_reproducible(six_pixel_images):
    trained, *_ = pca_trained(whiten=False, images=six_pixel_images)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    options = EvalOptions(importance_samples=4, max_examples=50, batch_size=16, sample_chunk=3)
    first = evaluate(trained, images=six_pixel_images, train_images=six_pixel_images, options=options)
    second = evaluate(trained, images=six_pixel_images, train_images=six_pixel_images, options=options)
    assert all(torch.equal(before[k], v) for k, v in trained.model.state_dict().items())
    assert first["n"] == 50 and first["baselines"]["ppca_components"] == 2
    drop = ("timings", "seconds")
    assert {k: v for k, v in first.items() if k not in drop} == {k: v for k, v in second.items() if k not in drop}


def test_eval_options_validate():
    with pytest.raises(UserError, match="importance_samples"):
        EvalOptions(importance_samples=0)


# --- compare helpers ----------------------------------------------------------------------------------

def test_lookup_and_table():
    record = {"eval": {"baselines": None, "bpd_iwae": 4.5}}
    assert lookup(record, "eval.bpd_iwae") == 4.5
    assert lookup(record, "eval.baselines.ppca_bpd") is None and lookup(record, "metrics.loss") is None
    table = format_table(["run", "x"], [["a", "1.0"], ["long-name", "-"]]).splitlines()
    assert len({len(line) for line in table}) == 1 and table[3].endswith("-")


# --- the CLI end to end on a tiny MNIST-shaped run -------------------------------------------------

def tiny_run(tmp_path, name: str = "run") -> tuple:
    data_dir = tmp_path / "data"
    train_images, _ = write_fake_split("mnist", "train", data_dir, num_examples=64, seed=1)
    write_fake_split("mnist", "test", data_dir, num_examples=20, seed=2)
    cfg = get_preset("fast").replace("data", dataset="mnist", download=False)
    cfg = cfg.replace("model", latent_dim=3, encoder_shared=(16,), decoder=(16,), dropout=0.0)
    cfg = cfg.replace("pca", components=8).replace("train", epochs=1, batch_size=32, sample_every=0, device="cpu")
    run_dir = tmp_path / name
    train(cfg, run_dir=run_dir, data=TrainData(train_images))
    return run_dir, data_dir


def test_cli_evaluate_writes_eval_json_and_compare_prints_it(tmp_path, capsys):
    run_dir, data_dir = tiny_run(tmp_path)
    argv = ["evaluate", str(run_dir), "--data-dir", str(data_dir), "--importance-samples", "5", "--max-examples",
            "12", "--no-probe", "--no-quality", "--no-progress", "--device", "cpu", "--sample-chunk", "2"]
    assert cli.main(argv) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["n"] == 12 and result["importance_samples"] == 5 and result["split"] == "test"
    assert result["dims"] == 784 and result["pca_space"]["components"] == 8
    assert result["iwae_nats"] >= result["elbo_nats"]
    assert set(result["baselines"]) >= {"gaussian_bpd", "ppca_bpd", "ppca_components"}
    assert set(result["reconstruction"]) == {"mse", "psnr", "pca_only_mse", "pca_only_psnr"}
    assert "probe" not in result and "quality" not in result
    assert "bits/dim" in capsys.readouterr().out

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["compare", str(run_dir), str(empty)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "bpd IWAE" in lines[0] and f"{result['bpd_iwae']:.4f}" in lines[2]
    assert set(lines[3].split()[1:]) == {"-"}  # a folder with nothing in it


def test_cli_evaluate_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path), "--no-probe", "--no-quality"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli.main(["compare", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_a_non_finite_metric_is_an_error_naming_it():
    from svhn_vae.evaluate import MetricNotFinite, check_finite

    check_finite({"a": 1.0, "b": [2.0, {"c": None}], "d": "text"})
    with pytest.raises(MetricNotFinite, match=r"metric b\[1\]\.c is nan"):
        check_finite({"a": 1.0, "b": [2.0, {"c": float("nan")}]})
    with pytest.raises(MetricNotFinite, match="metric bpd is inf"):
        check_finite({"bpd": math.inf})
    assert psnr(0.0) is None and psnr(0.01) == pytest.approx(20.0)


def test_cli_evaluate_refuses_a_nan_metric_and_writes_nothing(tmp_path, capsys):
    run_dir, data_dir = tiny_run(tmp_path)
    path = run_dir / "checkpoints" / "best.pt"
    state = torch.load(path, weights_only=True)
    state["model"] = {k: v * float("nan") if k.endswith("loc.bias") else v for k, v in state["model"].items()}
    torch.save(state, path)
    argv = ["evaluate", str(run_dir), "--data-dir", str(data_dir), "--importance-samples", "2", "--max-examples", "4",
            "--no-probe", "--no-quality", "--no-baselines", "--no-progress", "--device", "cpu"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is nan" in err and "nothing was written" in err
    assert not (run_dir / "eval.json").exists()


def test_cli_evaluate_on_the_held_out_validation_part(tmp_path, capsys):
    data_dir = tmp_path / "data"
    train_images, _ = write_fake_split("mnist", "train", data_dir, num_examples=80, seed=1)
    cfg = get_preset("fast").replace("data", dataset="mnist", download=False, data_dir=str(data_dir),
                                     val_fraction=0.25)
    cfg = cfg.replace("model", latent_dim=3, encoder_shared=(16,), decoder=(16,), dropout=0.0)
    cfg = cfg.replace("pca", components=8).replace("train", epochs=1, batch_size=32, sample_every=0, device="cpu")
    train(cfg, run_dir=tmp_path / "run")
    argv = ["evaluate", str(tmp_path / "run"), "--split", "val", "--importance-samples", "2", "--no-probe",
            "--no-quality", "--no-progress", "--device", "cpu"]
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert result["split"] == "val" and result["n"] == 20 and result["baselines"]["train_n"] == 60
    capsys.readouterr()
    tiny, _ = tiny_run(tmp_path, "no-val")
    assert cli.main(["evaluate", str(tiny), "--split", "val", "--data-dir", str(data_dir), "--no-probe",
                     "--no-quality"]) == 2
    assert "--val-fraction" in capsys.readouterr().err
