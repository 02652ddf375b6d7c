"""Known answers for what the models are fitted with: the IWAE objective, dequantized training data,
heads that start from the data, and the learning-rate schedule (exact on resume)."""

import math

import numpy as np
import pytest
import torch

from svhn_vae import checkpoint as ckpt
from svhn_vae.baselines import RIDGE, diagonal_log_prob, fit_full_pca, full_gaussian, split_pca
from svhn_vae.config import LIKELIHOODS, ModelConfig
from svhn_vae.errors import UserError
from svhn_vae.models.vae import VAE, ElboTerms, gaussian_kl, loss_from_terms
from svhn_vae.pca import PCA
from svhn_vae.representation import NOISE_STD, Representation, code_noise_kurtosis, dequantize
from svhn_vae.schedule import lr_factor
from svhn_vae.train import TrainData, train
from test_train import synthetic_images, tiny_config


def _vae(likelihood: str = "gaussian-logvar", **changes) -> VAE:
    cfg = ModelConfig(input="pixels" if likelihood == "bernoulli" else "pca", latent_dim=3, encoder_shared=(16,),
                      decoder=(16,), dropout=0.0, likelihood=likelihood, **changes)
    torch.manual_seed(0)
    return VAE(cfg, data_dim=12, image_shape=(2, 2, 3)).eval()


# --- the IWAE objective -------------------------------------------------------------------------

def test_iwae_objective_with_one_sample_is_the_elbo():
    rec, log_ratio = torch.randn(1, 6), torch.randn(1, 6)
    terms = ElboTerms(rec=rec[0], kl=-log_ratio[0], log_ratio=log_ratio, rec_samples=rec)
    assert torch.allclose(terms.objective(), terms.elbo)  # log-mean-exp of one log-weight is the weight
    assert torch.allclose(terms.objective(beta=0.5), rec[0] + 0.5 * log_ratio[0])


def test_one_sample_iwae_estimates_the_closed_form_elbo():
    model, x = _vae(), torch.randn(4, 12)
    mu, logvar = model.encode(x)
    with torch.no_grad():
        terms = model(x.repeat(20000, 1), iw_samples=2, generator=torch.Generator().manual_seed(1))
    mc_kl = terms.kl.view(20000, 4).mean(0)  # mean of log q - log p over 40,000 draws per example
    assert torch.allclose(mc_kl, gaussian_kl(mu, logvar).detach(), rtol=0.03, atol=0.02)


def test_iwae_training_bound_equals_the_evaluation_bound():
    model, x = _vae(), torch.randn(5, 12)
    with torch.no_grad():
        terms = model(x, iw_samples=7, generator=torch.Generator().manual_seed(3))
    log_w = model.log_weights(x, 7, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(terms.objective(), torch.logsumexp(log_w, 0) - math.log(7), atol=1e-5)
    assert torch.allclose(loss_from_terms(terms), -terms.objective().mean())
    # Jensen: the k-sample bound is at least the mean of its log-weights (the k-sample ELBO), per example
    assert (terms.objective() >= log_w.mean(0) - 1e-5).all()


def test_free_bits_count_each_dimension_at_least_the_threshold():
    rec = torch.tensor([-10.0, -20.0])
    kl_dims = torch.tensor([[0.1, 3.0, 0.0], [0.3, 1.0, 0.4]])  # batch means 0.2, 2.0, 0.2
    terms = ElboTerms(rec=rec, kl=kl_dims.sum(1), kl_dims=kl_dims)
    assert loss_from_terms(terms, free_bits=0.5).item() == pytest.approx(15.0 + 0.5 + 2.0 + 0.5)
    assert loss_from_terms(terms, free_bits=0.1).item() == pytest.approx(loss_from_terms(terms).item())
    model, x = _vae(), torch.randn(4, 12)
    terms = model(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(terms.kl_dims.sum(1), terms.kl) and terms.kl_dims.shape == (4, 3)


def test_iwae_training_runs_and_reports_the_bound(tmp_path):
    data = TrainData(synthetic_images(96, (8, 8, 3)))
    result = train(tiny_config(epochs=2, iw_samples=3, early_stopping="none"), data=data)
    first, last = result.history[0], result.history[-1]
    assert all(math.isfinite(r["loss"]) for r in result.history) and last["loss"] < first["loss"]
    # the IWAE bound is at least the ELBO estimated from the same samples: loss <= -(rec - kl)
    assert last["loss"] <= -(last["rec"] - last["kl"]) + 1e-4


# --- dequantized training data ------------------------------------------------------------------

@pytest.fixture
def images() -> np.ndarray:
    return synthetic_images(200, (8, 8, 1), seed=5)


def test_dequantized_inputs_lie_in_their_bins_and_change_every_time(images):
    cfg = tiny_config().replace("model", input="pixels", likelihood="gaussian-logvar")
    rep = Representation.fit(cfg, [images])
    stored = rep.prepare(images)
    a, b = rep.to_input(stored, noise=True), rep.to_input(stored, noise=True)
    assert stored.dtype == torch.uint8 and rep.dequantized
    assert a.min() >= 0 and a.max() < 1 and not torch.equal(a, b)
    assert torch.equal(torch.floor(a * 256).to(torch.uint8), stored)  # each value inside its pixel's bin
    assert torch.allclose(rep.to_input(stored), (stored.float() + 0.5) / 256)  # fixed input: bin centres


def test_pca_code_noise_has_the_projected_uniform_noises_mean_and_covariance(images):
    """Training noise drawn in code space: fresh every time, and of the exact first two moments of the
    projected pixel noise ((U - 1/2) / 256 @ V^T, whitened), which is what the slow way drew."""
    cfg = tiny_config().replace("pca", components=16, whiten=True)
    rep = Representation.fit(cfg, [images])
    stored = rep.prepare(np.repeat(images, 20, axis=0))  # 4,000 rows: covariances to a few percent
    centres = rep.to_input(stored)
    assert torch.allclose(centres, rep.encode(np.repeat(images, 20, axis=0)))  # no noise: the bin centres' codes
    a, b = rep.to_input(stored, noise=True), rep.to_input(stored, noise=True)
    assert not torch.equal(a, b) and stored.dtype == torch.float32
    lam = rep.pca.explained_variance_.double()
    expected = torch.diag(NOISE_STD ** 2 / lam)
    drawn = torch.cov((a - centres).double().T)
    pixels = torch.tensor(np.repeat(images, 20, axis=0).reshape(len(stored), -1), dtype=torch.float64)
    exact = torch.cov((rep.pca.transform(dequantize(pixels, generator=torch.Generator().manual_seed(0)))
                       - centres.double()).T)
    for cov in (drawn, exact):
        assert torch.allclose(cov, expected, atol=0.1 * float(expected.max()))
    assert (a - centres).mean(0).abs().max() < 4 * (NOISE_STD / lam.sqrt()).max() / len(a) ** 0.5


def test_code_noise_kurtosis_of_spread_and_of_one_pixel_components():
    pca = PCA(4)
    pca.components_ = torch.eye(4, dtype=torch.float64)  # each component one pixel: the uniform itself
    assert code_noise_kurtosis(pca) == pytest.approx(1.2)
    pca.components_ = torch.full((1, 4), 0.5, dtype=torch.float64)  # spread evenly: 1.2 / D
    assert code_noise_kurtosis(pca) == pytest.approx(0.3)


def test_training_sees_different_noise_each_epoch(images, monkeypatch):
    seen = []
    real = Representation.to_input

    def spy(self, stored, **kw):
        out = real(self, stored, **kw)
        if kw.get("noise"):
            seen.append(out.clone())
        return out

    monkeypatch.setattr(Representation, "to_input", spy)
    train(tiny_config(epochs=2, batch_size=200, early_stopping="none"), data=TrainData(images))
    assert len(seen) >= 2 and not torch.equal(seen[-1], seen[-2])


def test_dequantized_pca_makes_whitening_safe_on_constant_pixels():
    padded = np.zeros((2000, 10, 10, 1), np.uint8)
    padded[:, 1:9, 1:9] = synthetic_images(2000, (8, 8, 1), seed=5)  # a constant border, as MNIST's
    cfg = tiny_config().replace("pca", components=90, whiten=True)
    rep = Representation.fit(cfg, [padded])
    noise_var = 1 / (12 * 256 ** 2)  # the uniform noise's variance; sample eigenvalues of 2000 draws scatter
    assert float(rep.pca.explained_variance_.min()) > 0.5 * noise_var
    result = train(cfg.replace("train", epochs=1), data=TrainData(padded))
    assert math.isfinite(result.history[0]["loss"])
    with pytest.raises(UserError, match="whitening divides"):
        Representation.fit(cfg.replace("pca", complement="isotropic").replace("data", dequantize=False), [padded])


def test_diagonal_complement_is_the_full_gaussians_density_on_the_discarded_directions():
    images = synthetic_images(50, (8, 8, 1), seed=2)  # fewer images than pixels: 14 directions unseen
    rep = Representation.fit(tiny_config().replace("pca", components=10), [images])
    assert rep.pca.discarded_components_.shape == (54, 64)
    assert float(rep.pca.discarded_variance_.min()) == 0.0
    full = fit_full_pca(images, seed=0)  # dequantized with the seed Representation.fit used
    u = dequantize(images, generator=torch.Generator().manual_seed(9))
    gaussian = full_gaussian(full).log_prob(u)  # the baseline: kept part plus discarded part
    coords, rest = split_pca(u, rep.pca)
    kept = diagonal_log_prob(coords, full.explained_variance_[:10] + RIDGE)
    assert torch.allclose(kept + rest, gaussian, rtol=1e-6)
    with pytest.raises(UserError, match="complement"):
        tiny_config().replace("data", dequantize=False)


# --- heads that start from the data -------------------------------------------------------------

GAUSSIANS = [name for name in LIKELIHOODS if name.startswith("gaussian")]


@pytest.mark.parametrize("likelihood", GAUSSIANS)
def test_head_initialised_from_data_starts_at_the_data_variance(likelihood):
    gen = torch.Generator().manual_seed(0)
    scales = torch.logspace(-5, 0.5, 12)  # PCA-code-like: variances from 1e-10 to 10
    x = torch.randn(5000, 12, generator=gen) * scales + 0.3
    model = _vae(likelihood, variance_head=(8,))
    model.init_from_data(x)
    dist = model.decode(torch.randn(64, 3, generator=gen))
    expected = x.double().var(0).float()
    if likelihood == "gaussian-fixed":
        expected = expected * model.cfg.fixed_variance  # a constant, relative to the data variance
    assert torch.allclose(dist.var.expand(64, 12), expected.expand(64, 12), rtol=1e-4)


def test_relative_eps_floors_each_dimension_at_a_fraction_of_its_variance():
    x = torch.randn(4000, 12) * torch.logspace(-3, 0, 12)
    model = _vae("gaussian-relu-eps", eps=0.01, variance_head=(8,))
    model.init_from_data(x)
    with torch.no_grad():
        model.decoder.head.var_net[-1].bias.fill_(-100.0)  # drive ReLU(v) to 0: only eps is left
    var = model.decode(torch.randn(8, 3)).var
    assert torch.allclose(var, 0.01 * x.double().var(0).float().expand(8, 12), rtol=1e-4)
    absolute = _vae("gaussian-relu-eps", eps=0.01, relative_variance=False)
    absolute.init_from_data(x)
    with torch.no_grad():
        absolute.decoder.head.var_net[-1].bias.fill_(-100.0)
    assert torch.allclose(absolute.decode(torch.randn(8, 3)).var, torch.full((8, 12), 0.01))


PINNABLE = [name for name in GAUSSIANS if name != "gaussian-fixed"]


def _pinned_model(likelihood: str, gen: torch.Generator, **changes) -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """A head with its first 4 of 12 outputs pinned, started from whitened-like codes x (4000, 12)
    whose units have the pixel-space variances ``unit`` (12,); returns (model, x, unit)."""
    x = torch.randn(4000, 12, generator=gen) * torch.logspace(-1, 0, 12)
    unit = torch.logspace(1, -2, 12)  # eigenvalues, descending
    settings = {"variance_head": (8,), "fixed_variance_dims": 4, "fixed_variance": 0.05, "fixed_variance_floor": 0.0}
    model = _vae(likelihood, **{**settings, **changes})
    model.init_from_data(x, unit)
    return model, x, unit


def _perturbed_variances(model: VAE, gen: torch.Generator) -> torch.Tensor:
    """(16, 12) output variances after adding noise to every decoder weight."""
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
        return model.decode(torch.randn(16, 3, generator=gen)).var.expand(16, 12)


@pytest.mark.parametrize("likelihood", PINNABLE)
def test_fixed_variance_dims_share_one_pixel_space_variance(likelihood):
    gen = torch.Generator().manual_seed(1)
    model, x, unit = _pinned_model(likelihood, gen)
    var = _perturbed_variances(model, gen)  # any weights: the first 4 variances must not move
    pixel_var = x.double().var(0).float() * unit
    level = 0.05 * pixel_var[3]  # fixed_variance times the last pinned output's pixel-space variance
    assert torch.allclose(var[:, :4] * unit[:4], level.expand(16, 4), rtol=1e-4)
    assert (var[:, :4] * unit[:4] <= 0.05 * pixel_var[:4] * (1 + 1e-4)).all()  # at most 5% of each's own
    assert not torch.allclose(var[:, 4:] * unit[4:], level.expand(16, 8), rtol=1e-2)  # learned, not pinned
    absolute, _, _ = _pinned_model(likelihood, gen, relative_variance=False)
    assert torch.allclose(absolute.decoder.head.pinned_var * unit[:4], torch.full((4,), 0.05))
    floored, x, _ = _pinned_model(likelihood, gen, fixed_variance_floor=0.035)  # the top two would be tighter
    pixel_var = x.double().var(0).float() * unit
    expected = torch.maximum(0.05 * pixel_var[3], 0.035 * pixel_var[:4])
    assert (expected > 0.05 * pixel_var[3]).tolist() == [True, True, False, False]
    assert torch.allclose(floored.decoder.head.pinned_var * unit[:4], expected, rtol=1e-3)
    assert _vae(likelihood, fixed_variance_dims=13).decoder.head.pinned == 12  # at most all outputs


@pytest.mark.parametrize("likelihood", PINNABLE)
def test_a_head_saved_before_pinned_var_keeps_its_fraction_of_each_variance(likelihood):
    gen = torch.Generator().manual_seed(2)
    model, x, _ = _pinned_model(likelihood, gen)
    old = {k: v for k, v in model.state_dict().items() if not k.endswith("pinned_var")}  # format 2 had none
    restored = _vae(likelihood, variance_head=(8,), fixed_variance_dims=4, fixed_variance=0.05)
    restored.load_state_dict(old)
    assert torch.allclose(restored.decoder.head.pinned_var, 0.05 * x.double().var(0).float()[:4], rtol=1e-4)


def test_bernoulli_head_initialised_from_data_starts_at_the_pixel_means():
    x = torch.bernoulli(torch.linspace(0.05, 0.95, 12).expand(4000, 12), generator=torch.Generator().manual_seed(0))
    model = _vae("bernoulli")
    model.init_from_data(x)
    assert torch.allclose(model.decode(torch.randn(5, 3)).mean(), x.mean(0).expand(5, 12), atol=1e-5)


def test_data_variance_is_saved_with_the_model(tmp_path):
    run = tmp_path / "run"
    data = TrainData(synthetic_images(64, (8, 8, 3)))
    result = train(tiny_config(epochs=1), run_dir=run, data=data)
    loaded = ckpt.load_trained(run, which="last")
    assert torch.equal(loaded.model.decoder.head.data_var, result.model.decoder.head.data_var)
    assert not torch.equal(loaded.model.decoder.head.data_var, torch.ones(10))


# --- learning-rate schedule ---------------------------------------------------------------------

def test_lr_factor_known_values():
    kw = {"total_steps": 110, "warmup_steps": 10}
    assert [lr_factor(s, schedule="cosine", **kw) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(60, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(110, schedule="cosine", **kw) == pytest.approx(0.0)
    assert lr_factor(60, schedule="constant", **kw) == 1.0


@pytest.mark.parametrize("changes", [{"lr_schedule": "cosine", "warmup_steps": 3}, {"iw_samples": 2}])
def test_resume_continues_exactly_with_schedule_and_importance_samples(tmp_path, changes):
    data = TrainData(synthetic_images(128, (8, 8, 3)))
    cfg = tiny_config(epochs=3, early_stopping="none", **changes)
    straight = train(cfg, run_dir=tmp_path / "a", data=data)
    lrs = [r["lr"] for r in straight.history]
    if "lr_schedule" in changes:
        assert lrs[0] > lrs[1] > lrs[2] and lrs[2] == pytest.approx(0.0, abs=1e-12)
    resumed = _resume_after_one_epoch(cfg, tmp_path / "b", data)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    assert [r["lr"] for r in resumed.history] == pytest.approx(lrs)


def _resume_after_one_epoch(cfg, run, data):
    """Train ``cfg`` (the schedule spans all its epochs), interrupted after one epoch, then resume to the end."""
    from svhn_vae import train as train_module

    real = train_module._run_epoch
    calls = {"n": 0}

    def stop_after_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    train_module._run_epoch = stop_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run_dir=run, data=data)
    finally:
        train_module._run_epoch = real
    return train(cfg, run_dir=run, data=data, resume=True)


def test_nan_recovery_halves_the_whole_cosine_curve(monkeypatch):
    from test_train import _inject_nan

    data = TrainData(synthetic_images(128, (8, 8, 3)))
    cfg = tiny_config(epochs=3, early_stopping="none", lr_schedule="cosine", warmup_steps=2)
    straight = [r["lr"] for r in train(cfg, data=data).history]
    _inject_nan(monkeypatch, {5})  # once, in epoch 2 (4 steps per epoch)
    recovered = [r["lr"] for r in train(cfg, data=data).history]
    assert recovered[0] == pytest.approx(straight[0])
    assert recovered[1] == pytest.approx(0.5 * straight[1])  # the epoch rerun on the lowered curve, same step count


# --- reduced precision ----------------------------------------------------------------------------

def test_bf16_autocast_keeps_heads_kl_and_likelihood_in_float32():
    from svhn_vae.precision import autocast

    model, x = _vae(), torch.randn(6, 12)
    with autocast("bf16", x.device):
        hidden = model.decoder.trunk(torch.randn(6, 3))
        terms = model(x)
        mu, logvar = model.encode(x)
    assert hidden.dtype == torch.bfloat16  # the hidden layers do run in bf16
    assert terms.rec.dtype == terms.kl.dtype == mu.dtype == logvar.dtype == torch.float32
    assert torch.allclose(terms.kl, gaussian_kl(mu, logvar))


def test_bf16_training_follows_fp32_closely():
    images = synthetic_images(256, (8, 8, 3))
    losses = {p: train(tiny_config(epochs=3, precision=p), data=TrainData(images)).history[-1]["loss"]
              for p in ("fp32", "bf16")}
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
