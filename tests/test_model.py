"""Known answers for the likelihoods and the KL; shapes and parameter counts of the networks."""

import dataclasses

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Independent, Normal, kl_divergence

from svhn_vae.config import LIKELIHOODS, ModelConfig, get_preset
from svhn_vae.errors import UserError
from svhn_vae.likelihoods import Bernoulli, Gaussian
from svhn_vae.models.vae import (VAE, count_parameters, gaussian_kl, gaussian_kl_dims, loss_from_terms, prior_log_ratio,
                                  reparameterize)


def test_bernoulli_log_prob_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits, x = torch.randn(7, 11, generator=g), torch.rand(7, 11, generator=g).round()
    expected = Independent(TorchBernoulli(logits=logits), 1).log_prob(x)
    assert torch.allclose(Bernoulli(logits).log_prob(x), expected, atol=1e-5)


def test_gaussian_log_prob_matches_torch():
    g = torch.Generator().manual_seed(1)
    loc, var, x = torch.randn(5, 9, generator=g), torch.rand(5, 9, generator=g) + 0.01, torch.randn(5, 9, generator=g)
    expected = Independent(Normal(loc, var.sqrt()), 1).log_prob(x)
    assert torch.allclose(Gaussian(loc, var).log_prob(x), expected, atol=1e-5)
    shared = torch.rand(9, generator=g) + 0.1  # one variance per dimension, broadcast over the batch
    assert torch.allclose(Gaussian(loc, shared).log_prob(x), Independent(Normal(loc, shared.sqrt()), 1).log_prob(x),
                          atol=1e-5)


def test_gaussian_from_log_variance_matches_torch_and_broadcasts_over_samples():
    g = torch.Generator().manual_seed(3)
    loc, log_var, x = torch.randn(4, 5, 9, generator=g), torch.randn(4, 5, 9, generator=g), torch.randn(5, 9, generator=g)
    expected = Independent(Normal(loc, torch.exp(0.5 * log_var)), 1).log_prob(x.expand(4, 5, 9))
    dist = Gaussian(loc, log_var=log_var)
    assert torch.allclose(dist.log_prob(x), expected, atol=1e-5)  # x (B, D) against (S, B, D)
    assert torch.allclose(dist.var, torch.exp(log_var)) and torch.equal(dist.log_var, log_var)
    flat = Gaussian(loc.flatten(0, 1), log_var=log_var.flatten(0, 1)).unflatten(torch.Size([4, 5]))
    assert torch.equal(flat.loc, loc) and torch.equal(flat.log_var, log_var)
    with pytest.raises(ValueError):
        Gaussian(loc, torch.ones(9), log_var=log_var)


def test_decoding_latents_of_any_leading_shape_decodes_each_row():
    for likelihood in LIKELIHOODS:
        model = _tiny(likelihood).eval()
        z = torch.randn(3, 4, 3)
        with torch.no_grad():
            assert torch.allclose(model.decode(z).mean(), model.decode(z.flatten(0, 1)).mean().view(3, 4, -1))


def test_gaussian_sample_statistics():
    g = torch.Generator().manual_seed(2)
    dist = Gaussian(torch.full((20000, 2), 3.0), torch.tensor([0.25, 4.0]))
    s = dist.sample(generator=g)
    assert torch.allclose(s.mean(0), torch.tensor([3.0, 3.0]), atol=0.05)
    assert torch.allclose(s.var(0), torch.tensor([0.25, 4.0]), rtol=0.05)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros(4), torch.ones(4)), 1)
    assert torch.allclose(gaussian_kl(mu, logvar), kl_divergence(q, p), atol=1e-5)


def test_kl_and_log_ratio_against_a_scaled_prior_match_torch_distributions():
    g = torch.Generator().manual_seed(5)
    mu, logvar, prior_logvar = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    prior_logvar = prior_logvar[0]  # (L,): one scale a latent, shared by every example
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros(4, dtype=torch.float64), torch.exp(0.5 * prior_logvar)), 1)
    assert torch.allclose(gaussian_kl_dims(mu, logvar, prior_logvar).sum(-1), kl_divergence(q, p))
    z = q.sample((3,))
    assert torch.allclose(prior_log_ratio(z, mu, logvar, prior_logvar), p.log_prob(z) - q.log_prob(z))
    standard = torch.zeros(4, dtype=torch.float64)  # a learned scale of one is the standard prior
    assert torch.allclose(gaussian_kl_dims(mu, logvar, standard), gaussian_kl_dims(mu, logvar))
    assert torch.allclose(prior_log_ratio(z, mu, logvar, standard), prior_log_ratio(z, mu, logvar))


@pytest.mark.parametrize("hierarchy", [(), (2,)])
def test_a_learned_prior_scale_is_trained_scored_and_sampled_from(hierarchy):
    from svhn_vae.models import build_vae

    cfg = ModelConfig(input="pixels", likelihood="bernoulli", latent_dim=3, encoder_shared=(8,), decoder=(8,),
                      hierarchy=hierarchy, ladder_width=8)
    torch.manual_seed(0)
    standard = build_vae(cfg, data_dim=12, image_shape=(2, 2, 3)).eval()
    learned = build_vae(dataclasses.replace(cfg, prior="learned-scale"), data_dim=12, image_shape=(2, 2, 3)).eval()
    learned.load_state_dict(standard.state_dict(), strict=False)  # the same networks; the scales start at one
    x, seeded = torch.rand(5, 12).round(), lambda: torch.Generator().manual_seed(1)
    assert torch.equal(learned(x, generator=seeded()).kl, standard(x, generator=seeded()).kl)
    learned(x).kl.sum().backward()
    assert learned.prior_logvar.grad is not None and learned.prior_logvar.grad.abs().sum() > 0
    with torch.no_grad():
        learned.prior_logvar.copy_(torch.log(torch.tensor([4.0, 1.0, 0.25])))
    z = learned.sample_latents(40_000, generator=seeded())[:, :3]
    assert torch.allclose(z.std(0), torch.tensor([2.0, 1.0, 0.5]), rtol=0.03)
    mu, logvar = learned.encode(x)
    top = Independent(Normal(torch.zeros(3), torch.tensor([2.0, 1.0, 0.5])), 1)
    kl = kl_divergence(Independent(Normal(mu[:, :3], torch.exp(0.5 * logvar[:, :3])), 1), top)
    if not hierarchy:  # one layer: the closed-form KL against N(0, diag(s^2))
        assert torch.allclose(learned(x).kl, kl, atol=1e-5)
    assert torch.isfinite(learned.log_weights(x, 4, generator=seeded())).all()


def test_reparameterization_uses_standard_deviation():
    g = torch.Generator().manual_seed(4)
    mu, logvar = torch.zeros(100000, 1), torch.full((100000, 1), 2.0 * torch.log(torch.tensor(3.0)))
    z = reparameterize(mu, logvar, generator=g)
    assert z.std().item() == pytest.approx(3.0, rel=0.02)  # sd = exp(0.5 logvar) = 3, not var = 9


def _tiny(likelihood: str, **changes) -> VAE:
    cfg = ModelConfig(input="pixels" if likelihood == "bernoulli" else "pca", latent_dim=3, encoder_shared=(8,),
                      decoder=(8,), likelihood=likelihood, **changes)
    return VAE(cfg, data_dim=12, image_shape=(2, 2, 3))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_each_likelihood_gives_per_example_terms(likelihood):
    torch.manual_seed(0)
    model = _tiny(likelihood).eval()
    x = torch.rand(5, 12)
    terms = model(x)
    assert terms.rec.shape == terms.kl.shape == (5,)
    assert torch.isfinite(terms.rec).all() and (terms.kl >= 0).all()
    dist = model.decode(torch.zeros(5, 3))
    assert dist.mean().shape == dist.sample(generator=torch.Generator().manual_seed(0)).shape == (5, 12)
    assert loss_from_terms(terms).item() == pytest.approx(-(terms.rec - terms.kl).mean().item())


def test_relu_eps_variance_is_at_least_eps():
    model = _tiny("gaussian-relu-eps", eps=0.05, variance_head=(4,)).eval()
    var = model.decode(torch.randn(50, 3)).var
    assert var.min().item() >= 0.05 - 1e-7


def test_logvar_floor_bounds_the_variance():
    model = _tiny("gaussian-logvar", logvar_min=-3.0).eval()
    with torch.no_grad():
        model.decoder.head.logvar.bias.fill_(-100.0)
    assert model.decode(torch.randn(4, 3)).var.min().item() >= torch.exp(torch.tensor(-3.0)).item()


def test_logvar_soft_floor_is_floor_plus_softplus():
    model = _tiny("gaussian-logvar", logvar_min=-3.0, relative_variance=False).eval()
    head, h = model.decoder.head, torch.randn(6, 8)
    with torch.no_grad():
        expected = -3.0 + torch.nn.functional.softplus(head.logvar(h) + 3.0)
        assert torch.allclose(head.log_variance(h), expected, atol=1e-6)


def test_frozen_variance_head_is_not_trainable():
    model = _tiny("gaussian-relu-eps", variance_head=(4,), frozen_variance_head=True)
    assert not any(p.requires_grad for p in model.decoder.head.var_net.parameters())


def test_blog_2017_parameter_count():
    cfg = get_preset("blog-2017")
    assert count_parameters(VAE(cfg.model, data_dim=500, image_shape=(32, 32, 3))) == 48_489_020
    frozen = dataclasses.replace(cfg.model, frozen_variance_head=True)
    assert count_parameters(VAE(frozen, data_dim=500, image_shape=(32, 32, 3))) == 47_213_020  # the notebook's


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_conv_architecture_round_trips_shapes(shape):
    cfg = ModelConfig(input="pixels", architecture="conv", latent_dim=4, conv_channels=(4, 8, 8),
                      likelihood="bernoulli")
    d = shape[0] * shape[1] * shape[2]
    model = VAE(cfg, data_dim=d, image_shape=shape).eval()
    terms = model(torch.rand(3, d))
    assert model.decode(torch.zeros(3, 4)).mean().shape == (3, d) and terms.rec.shape == (3,)


def test_conv_decoder_runs_channels_last_with_the_same_numbers():
    cfg = ModelConfig(input="pixels", architecture="conv", latent_dim=4, conv_channels=(4, 8),
                      residual_blocks=1, likelihood="bernoulli")
    model = VAE(cfg, data_dim=16 * 16 * 3, image_shape=(16, 16, 3)).eval()
    formats = []
    model.decoder.deconvs.register_forward_hook(
        lambda _m, args, _out: formats.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    z = torch.randn(5, 4)
    with torch.no_grad():
        fast = model.decode(z).mean()
        ch, side = model.decoder.start
        plain = model.decoder.head(model.decoder.deconvs(model.decoder.fc(z).view(-1, ch, side, side))).mean()
    assert formats[0] and not formats[1]  # the decoder's maps were channels_last, the reference's not
    torch.testing.assert_close(fast, plain)


def test_importance_log_weights_shape():
    model = _tiny("gaussian-fixed").eval()
    assert model.log_weights(torch.rand(4, 12), 7, generator=torch.Generator().manual_seed(0)).shape == (7, 4)


def test_config_errors_name_the_field():
    with pytest.raises(UserError, match="model.likelihood"):
        ModelConfig(likelihood="poisson")
    with pytest.raises(UserError, match="model.likelihood"):
        get_preset("fast").replace("model", likelihood="bernoulli")
    with pytest.raises(UserError, match="model.architecture"):
        ModelConfig(input="pca", architecture="conv")
    with pytest.raises(UserError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(UserError, match="model.prior"):
        ModelConfig(prior="vamp")
    with pytest.raises(UserError, match="model.prior"):
        ModelConfig(prior="learned-scale", classes=10)


def test_dropout_zeroes_a_fraction_p_and_keeps_the_mean():
    from svhn_vae.networks import Dropout

    torch.manual_seed(0)
    drop, x = Dropout(0.2), torch.ones(1000, 500)
    y = drop.train()(x)
    assert abs(float((y == 0).float().mean()) - 0.2) < 0.005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1.25)) and abs(float(y.mean()) - 1.0) < 0.01
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
