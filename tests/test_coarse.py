"""The coarse view: its pooling and Gaussian are known answers, it is a training term only, and the
configs that cannot have one are refused."""

import math

import pytest
import torch

from svhn_vae.config import Config, ModelConfig, TrainConfig
from svhn_vae.errors import UserError
from svhn_vae.models import VAE, HierarchicalVAE, loss_from_terms
from svhn_vae.models.coarse import VARIANCE_FLOOR, CoarseView

SHAPE = (8, 8, 3)


def model_config(**changes) -> ModelConfig:
    fields = dict(input="pixels", latent_dim=3, encoder_shared=(16,), decoder=(16,), dropout=0.0,
                  input_batchnorm=False, likelihood="logistic-mixture", mixtures=2, context_width=4,
                  ladder_width=16, coarse_size=2, coarse_variance=0.05)
    return ModelConfig(**{**fields, **changes})


def pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 8 * 8 * 3), generator=torch.Generator().manual_seed(seed)).float() / 255


def test_the_target_is_each_channel_averaged_over_blocks_and_its_variances_are_fixed_from_the_data():
    view = CoarseView(latent_dim=3, image_shape=SHAPE, size=2, variance=0.05)
    x = pixels(50)
    images = x.reshape(50, 8, 8, 3)
    blocks = images.reshape(50, 2, 4, 2, 4, 3).mean(dim=(2, 4))  # (N, 2, 2, C): 4x4 blocks
    expected = blocks.permute(0, 3, 1, 2).flatten(1)  # channel-major, as the head outputs them
    assert torch.allclose(view.target(x), expected, atol=1e-6)
    view.init_from_data(x)
    assert torch.allclose(view.log_var.exp(), 0.05 * expected.double().var(0).float(), rtol=1e-5)
    assert torch.allclose(view.head[-1].bias, expected.mean(0), atol=1e-6)


def test_values_constant_over_the_data_get_the_floor_variance():
    view = CoarseView(latent_dim=3, image_shape=SHAPE, size=2, variance=0.05)
    x = pixels(20)
    x.reshape(20, 8, 8, 3)[:, :4, :4, :] = 0.0  # the top-left block is blank in every image
    view.init_from_data(x)
    blank = view.log_var.reshape(3, 2, 2)[:, 0, 0]
    assert torch.allclose(blank, torch.full((3,), math.log(VARIANCE_FLOOR)))
    assert (view.log_var.reshape(3, 2, 2)[:, 1, 1] > math.log(VARIANCE_FLOOR)).all()


def test_its_log_density_is_the_fixed_variance_gaussian_of_torch_distributions():
    view = CoarseView(latent_dim=3, image_shape=SHAPE, size=2, variance=0.05)
    x, z = pixels(6), torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    view.init_from_data(pixels(40, seed=2))
    normal = torch.distributions.Normal(view.head(z), (0.5 * view.log_var).exp())
    assert torch.allclose(view.log_prob(z, x), normal.log_prob(view.target(x)).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("hierarchy", [(), (2,)])
def test_it_adds_to_the_training_loss_and_leaves_the_scored_bound_alone(hierarchy):
    family = HierarchicalVAE if hierarchy else VAE
    torch.manual_seed(0)
    model = family(model_config(hierarchy=hierarchy), data_dim=192, image_shape=SHAPE)
    model.init_from_data(pixels(40, seed=3))
    model.eval()
    x = pixels(5)
    with torch.no_grad():
        terms = model(x, generator=torch.Generator().manual_seed(4))
    assert terms.coarse.shape == (5,) and model.coarse.head[0].in_features == model.latent_dim
    for free_bits in (0.0, 0.5):
        with_view = loss_from_terms(terms, free_bits=free_bits)
        terms.coarse, view = None, terms.coarse
        assert with_view == pytest.approx((loss_from_terms(terms, free_bits=free_bits) - view.mean()).item())
        terms.coarse = view
    weights = model.log_weights(x, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for p in model.coarse.parameters():
            p.add_(1.0)
    assert torch.equal(weights, model.log_weights(x, 4, generator=torch.Generator().manual_seed(5)))
    with torch.no_grad():
        assert torch.equal(model(x, generator=torch.Generator().manual_seed(4)).elbo, terms.elbo)


@pytest.mark.parametrize("model, train, flag", [
    ({"input": "pca"}, {}, "--coarse-size 0"),
    ({"classes": 10}, {"labels": 100}, "--coarse-size 0"),
    ({}, {"iw_samples": 2}, "--iw-samples 1"),
])
def test_configs_that_cannot_have_one_are_refused_with_the_fix(model, train, flag):
    with pytest.raises(UserError, match=flag):
        Config(model=model_config(**model), train=TrainConfig(**train))
