"""The hierarchical VAE: one layer is the plain VAE, the layers' KLs match Monte Carlo, sampling
and the shared model contract."""

import dataclasses

import pytest
import torch

from svhn_vae.config import Config, ModelConfig, get_preset
from svhn_vae.models import VAE, HierarchicalVAE, build_vae
from svhn_vae.models.hierarchical import gaussian_kl_between, soft_clamp

SHAPE = (4, 4, 1)


def model_config(**changes) -> ModelConfig:
    return ModelConfig(input="pixels", latent_dim=3, encoder_shared=(16,), decoder=(16,), dropout=0.0,
                       input_batchnorm=False, likelihood="logistic-mixture", mixtures=2, ladder_width=16, **changes)


def pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 16), generator=torch.Generator().manual_seed(seed)).float() / 255


def test_one_layer_is_the_plain_vae():
    cfg = model_config()
    plain = VAE(cfg, data_dim=16, image_shape=SHAPE).eval()
    single = HierarchicalVAE(cfg, data_dim=16, image_shape=SHAPE).eval()
    single.load_state_dict(plain.state_dict())  # the same parameters, by the same names
    x = pixels(5)
    a, b = (m(x, generator=torch.Generator().manual_seed(3)) for m in (plain, single))
    assert torch.allclose(a.rec, b.rec) and torch.allclose(a.kl, b.kl)
    wa, wb = (m.log_weights(x, 7, generator=torch.Generator().manual_seed(4)) for m in (plain, single))
    assert torch.allclose(wa, wb, atol=1e-4)
    assert all(torch.equal(p, q) for p, q in zip(plain.encode(x), single.encode(x)))


def test_build_vae_picks_the_family_from_the_config():
    assert type(build_vae(model_config(), data_dim=16, image_shape=SHAPE)) is VAE
    model = build_vae(model_config(hierarchy=(2, 4)), data_dim=16, image_shape=SHAPE)
    assert isinstance(model, HierarchicalVAE) and model.latent_dim == 3 + 2 + 4


def test_gaussian_kl_between_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(6, 5, generator=gen) for _ in range(4))
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu_q, (0.5 * lv_q).exp()),
                                                 torch.distributions.Normal(mu_p, (0.5 * lv_p).exp()))
    assert torch.allclose(gaussian_kl_between(mu_q, lv_q, mu_p, lv_p), expected, atol=1e-5)


SPATIAL_SHAPE = (8, 8, 1)


def spatial_config(**changes) -> ModelConfig:
    """Convolutional, lower layers of latent maps at the encoder's 4x4 feature map (8 -> 4 -> 2)."""
    return model_config(architecture="conv", conv_channels=(4, 4), ladder_spatial=True, **changes)


def trained_like_two_layer_model(spatial: bool = False) -> HierarchicalVAE:
    """Two lower layers whose priors and posteriors differ (random, not the zero-started posterior)."""
    torch.manual_seed(0)
    if spatial:
        model = HierarchicalVAE(spatial_config(hierarchy=(1, 1)), data_dim=64, image_shape=SPATIAL_SHAPE).eval()
    else:
        model = HierarchicalVAE(model_config(hierarchy=(2, 2)), data_dim=16, image_shape=SHAPE).eval()
    with torch.no_grad():
        for layer in model.ladder:
            layer.posterior[-1].weight.normal_(0, 0.5)
            layer.posterior[-1].bias.normal_(0, 0.5)
            layer.prior.weight.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("spatial", [False, True])
def test_the_layers_closed_form_kls_match_a_monte_carlo_estimate(spatial):
    """E_q[sum_l KL(q(z_l|x, z_<l) || p(z_l|z_<l))] = E_q[log q(z|x) - log p(z)]: two estimates of
    the same number from independent draws, within 5 standard errors (dense layers, or two 4x4 maps)."""
    model, n = trained_like_two_layer_model(spatial), 20_000
    x = torch.rand(3, 64, generator=torch.Generator().manual_seed(0)).mul(255).round() / 255 if spatial else pixels(3)
    with torch.no_grad():
        p = model._pass(x, samples=n, generator=torch.Generator().manual_seed(1))
        closed = p.kl_dims.sum(-1).view(n, 3)
        q = model._pass(x, samples=n, generator=torch.Generator().manual_seed(2))
        monte_carlo = -q.log_ratio.view(n, 3)
    lower_layers = p.kl_dims[:, 3:].sum(-1)
    assert float(lower_layers.mean()) > 0.1  # the lower layers' KLs are part of what is compared
    se = (closed.var(0) / n + monte_carlo.var(0) / n).sqrt()
    assert ((closed.mean(0) - monte_carlo.mean(0)).abs() < 5 * se).all()


def test_iwae_weights_sum_the_layers_and_the_elbo_is_below_the_iwae_bound():
    model, x = trained_like_two_layer_model(), pixels(4)
    w = model.log_weights(x, 64, generator=torch.Generator().manual_seed(0))
    assert w.shape == (64, 4)
    iwae = torch.logsumexp(w, 0) - torch.log(torch.tensor(64.0))
    assert (w.mean(0) <= iwae).all()
    terms = model(x, generator=torch.Generator().manual_seed(0), iw_samples=5)
    assert terms.log_ratio.shape == (5, 4) and torch.isfinite(terms.objective()).all()


def test_encode_decode_and_ancestral_samples_have_every_layer():
    model = trained_like_two_layer_model()
    model.train()
    running = model.ladder[0].top_down[0][1].running_mean.clone()
    z = model.sample_latents(6, generator=torch.Generator().manual_seed(0))
    assert z.shape == (6, 7) and model.training  # back in training mode
    assert torch.equal(running, model.ladder[0].top_down[0][1].running_mean)  # no statistics updated
    mu, logvar = model.eval().encode(pixels(2))
    assert mu.shape == logvar.shape == (2, 7)
    assert model.decode(z).mean().shape == (6, 16)
    assert torch.equal(model.sample_latents(3, temperature=0.0)[:, :3], torch.zeros(3, 3))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-logvar", "logistic-mixture"])
def test_a_training_step_moves_every_layer(likelihood):
    cfg = dataclasses.replace(model_config(hierarchy=(2,)), likelihood=likelihood)
    model = HierarchicalVAE(cfg, data_dim=16, image_shape=SHAPE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = pixels(8)
    for _ in range(2):  # the zero-started posterior output moves first, the blocks before it next
        opt.zero_grad()
        (-model(x).objective()).mean().backward()
        opt.step()
    posterior = model.ladder[0].posterior
    assert posterior[-1].weight.abs().sum() > 0 and posterior[0][0][0].weight.grad.abs().sum() > 0


def test_lower_layers_stay_bounded_whatever_their_networks_output():
    """Softly clamped (NVAE): small values pass unchanged, huge ones stop at the bound, so a prior
    variance cannot shrink without limit under a moving posterior mean (a KL of 10^7 nats in training)."""
    b = model_config().ladder_bound
    small = torch.linspace(-0.1, 0.1, 11)
    torch.testing.assert_close(soft_clamp(small, b), small, atol=1e-4, rtol=0)
    assert soft_clamp(torch.tensor([-1e6, 1e6]), b).abs().max() <= b
    model = HierarchicalVAE(model_config(hierarchy=(2,)), data_dim=16, image_shape=SHAPE).eval()
    with torch.no_grad():
        for layer in model.ladder:
            layer.prior.weight.mul_(1e4)
            layer.posterior[-1].weight.normal_(std=1e4)
        p = model._pass(pixels(8), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(p.kl_dims).all() and torch.isfinite(p.log_ratio).all()
    # KL = (-d_logvar + e^d_logvar + d_mu^2 / var_p - 1) / 2 with |d_mu|, |d_logvar|, |logvar_p| < b
    assert float(p.kl_dims[:, 3:].max()) < 0.5 * (b - 1 + (1 + b ** 2) * torch.e ** b)


def test_runs_saved_before_the_bound_load_unbounded_and_new_configs_bounded():
    cfg = get_preset("hierarchical")
    assert cfg.model.ladder_bound == 5.0
    saved = cfg.to_dict()
    del saved["model"]["ladder_bound"]  # a run saved by the release before the bound
    assert Config.from_saved(saved).model.ladder_bound == 0.0
    assert Config.from_saved(cfg.to_dict()).model.ladder_bound == 5.0
    assert Config.from_dict(saved).model.ladder_bound == 5.0  # a config file that leaves it out: the default
    model = HierarchicalVAE(model_config(hierarchy=(2,), ladder_bound=0.0), data_dim=16, image_shape=SHAPE).eval()
    with torch.no_grad():
        model.ladder[0].prior.weight.mul_(1e3)
        unbounded = model._pass(pixels(4), at_mean=True).mu[:, 3:]
    assert float(unbounded.abs().max()) > 5.0  # 0 leaves the layer's outputs as they are


def test_spatial_layers_are_maps_that_the_decoder_reads_where_they_lie():
    """Two layers of 4x4 maps (1 and 2 latents per position) under 3 top latents: 3 + 16 + 32 latents.
    A change of the lower latents at the top-left position moves the decoded image near the top-left
    only: the decoder adds the maps into its 4x4 feature map, and its convolutions reach pixels 0 to 2."""
    torch.manual_seed(0)
    model = build_vae(spatial_config(hierarchy=(1, 2)), data_dim=64, image_shape=SPATIAL_SHAPE).eval()
    assert isinstance(model, HierarchicalVAE) and model.latent_dim == 3 + 16 + 32
    z = model.sample_latents(2, generator=torch.Generator().manual_seed(1))
    moved = z.clone()
    moved[:, [3, 3 + 16, 3 + 32]] += 3.0  # position (0, 0) of each map's channels
    before, after = (model.decode(v).mean().view(2, 8, 8) for v in (z, moved))
    changed = (before - after).abs() > 1e-6
    assert changed[:, :2, :2].any() and not changed[:, 3:, :].any() and not changed[:, :, 3:].any()
    x = torch.rand(4, 64)
    features, feature_map = model.encoder.features_and_map(x)
    assert torch.equal(features, model.encoder.features(x)) and feature_map.shape == (4, 4, 4, 4)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, 51)
    w = model.log_weights(torch.rand(4, 64).mul(255).round() / 255, 8, generator=torch.Generator().manual_seed(0))
    assert w.shape == (8, 4) and torch.isfinite(w).all()


def test_spatial_layers_need_the_convolutional_architecture():
    from svhn_vae.errors import UserError

    with pytest.raises(UserError, match="model.ladder_spatial"):
        model_config(hierarchy=(2,), ladder_spatial=True)  # dense
    with pytest.raises(UserError, match="model.ladder_spatial"):
        model_config(architecture="conv", conv_channels=(4, 4), ladder_spatial=True)  # no lower layer
