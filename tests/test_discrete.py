"""Discrete likelihoods of 8-bit pixels: known answers (normalization, the logistic's integral),
sampling, the histogram baseline, and bits/dim without a dequantization term."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from svhn_vae.baselines import histogram_metrics, pixel_histogram, value_rows
from svhn_vae.figures import decode_images
from svhn_vae.likelihoods import Categorical, DiscretizedLogisticMixture, log_bin_mass, logistic_mixture_params
from svhn_vae.representation import Representation

LEVELS = torch.arange(256)


@pytest.mark.parametrize("loc, log_scale", [(0.0, -1.0), (-0.99, -5.0), (1.3, -7.0), (0.3, 2.0), (-1.0, -3.0)])
def test_the_256_bin_probabilities_sum_to_one_edges_included(loc, log_scale):
    log_p = log_bin_mass(LEVELS, torch.tensor(loc, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64))
    assert torch.isfinite(log_p).all()
    assert math.isclose(float(log_p.exp().sum()), 1.0, rel_tol=0, abs_tol=1e-12)


@pytest.mark.parametrize("k", [0, 1, 100, 127, 254, 255])
def test_bin_probability_is_the_integral_of_the_logistic_density(k):
    loc, scale = 0.1, 0.05
    pdf = stats.logistic(loc=loc, scale=scale).pdf
    centre = 2 * k / 255 - 1
    low = -math.inf if k == 0 else centre - 1 / 255
    high = math.inf if k == 255 else centre + 1 / 255
    expected = integrate.quad(pdf, low, high, epsabs=1e-300, epsrel=1e-12, points=None if k in (0, 255) else [loc])[0]
    got = float(log_bin_mass(torch.tensor(k), torch.tensor(loc, dtype=torch.float64),
                             torch.tensor(math.log(scale), dtype=torch.float64)).exp())
    assert got == pytest.approx(expected, rel=1e-8)


def random_mixture(channels: int, mixtures: int, pixels: int = 1, seed: int = 0) -> DiscretizedLogisticMixture:
    gen = torch.Generator().manual_seed(seed)
    params = torch.randn(1, pixels, logistic_mixture_params(channels, mixtures), generator=gen)
    params[..., mixtures:mixtures + 2 * channels * mixtures] *= 0.5  # means within [-1, 1], scales near e^0
    return DiscretizedLogisticMixture(params.double(), channels=channels, mixtures=mixtures)


def test_grey_mixture_sums_to_one_over_the_256_values():
    dist = random_mixture(1, 3)
    dist.params = dist.params.double()
    x = (LEVELS.double() / 255).view(256, 1)  # 256 one-pixel images
    assert float(dist.log_prob(x).exp().sum()) == pytest.approx(1.0, abs=1e-6)


def test_colour_mixture_with_channel_coupling_sums_to_one_over_all_256_cubed_colours():
    dist = random_mixture(3, 2)
    assert dist.coupling is not None and dist.coupling.abs().min() > 0
    g, b = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    total = 0.0
    for r in range(256):  # one R value at a time: 65,536 colours
        x = torch.stack([torch.full_like(g, r), g, b], dim=-1).view(-1, 3).float() / 255
        total += float(dist.log_prob(x).double().exp().sum())
    assert total == pytest.approx(1.0, abs=1e-4)  # float32 parameters: each of 16.7M terms to ~1e-7


def test_coupling_moves_green_with_red():
    """With a positive R->G coefficient, a redder pixel makes a greener one more likely."""
    params = torch.zeros(1, 1, logistic_mixture_params(3, 1))
    params[..., 1 + 2 * 3 + 0] = 3.0  # log-scales at -3 would be narrow; keep 0 = wide, raise the G|R coefficient
    params[..., 1 + 3:1 + 6] = -3.0
    params[..., 1 + 6] = 3.0  # tanh(3) ~ 1: G's mean = its own + R's value
    dist = DiscretizedLogisticMixture(params, channels=3, mixtures=1)
    green_given_red = [float(dist.log_prob(torch.tensor([[r / 255, 230 / 255, 128 / 255]]))) for r in (25, 230)]
    assert green_given_red[1] > green_given_red[0] + 5


def test_log_prob_broadcasts_samples_against_examples():
    dist = random_mixture(3, 2, pixels=4)  # parameters of one example, (1, 4, K)
    per_example = DiscretizedLogisticMixture(dist.params.expand(3, 4, -1), channels=3, mixtures=2)
    x = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(1)).float() / 255
    samples = DiscretizedLogisticMixture(dist.params.expand(15, 4, -1), channels=3, mixtures=2).unflatten(
        torch.Size((5, 3)))
    broadcast = samples.log_prob(x)  # (5, 3, ...) parameters against (3, 12) data
    assert broadcast.shape == (5, 3)
    assert torch.allclose(broadcast, per_example.log_prob(x).expand(5, 3))


def test_samples_are_8_bit_values_with_the_model_frequencies():
    params = torch.zeros(20_000, 1, logistic_mixture_params(1, 2))
    params[..., 0], params[..., 1] = 0.0, math.log(3.0)  # weights 1/4, 3/4
    params[..., 2], params[..., 3] = -0.5, 0.5  # means
    params[..., 4:6] = math.log(0.05)
    dist = DiscretizedLogisticMixture(params, channels=1, mixtures=2)
    x = dist.sample(generator=torch.Generator().manual_seed(0))
    k = x * 255
    assert float((k - k.round()).abs().max()) < 1e-4 and x.min() >= 0 and x.max() <= 1
    assert float((x > 0.5).float().mean()) == pytest.approx(0.75, abs=0.015)
    assert float(dist.mean()[0]) == pytest.approx(0.25 * 0.25 + 0.75 * 0.75, abs=1e-6)


def test_colour_samples_follow_the_coupling():
    params = torch.zeros(5_000, 1, logistic_mixture_params(3, 1))
    params[..., 1 + 3:1 + 6] = math.log(0.02)  # narrow
    params[..., 1 + 6] = 10.0  # G's mean = R's value (tanh(10) = 1)
    params[..., 1] = torch.linspace(-0.8, 0.8, 5_000).view(-1, 1)  # R's mean varies over the batch
    x = DiscretizedLogisticMixture(params, channels=3, mixtures=1).sample(generator=torch.Generator().manual_seed(0))
    r, g = x[:, 0], x[:, 1]
    assert np.corrcoef(r.numpy(), g.numpy())[0, 1] > 0.95


@pytest.mark.parametrize("loc, log_scale", [(0.3, -3.0), (-0.71, -5.0), (0.9, -4.5), (0.01, -2.0)])
def test_the_mode_of_one_logistic_away_from_the_edges_is_its_most_probable_value(loc, log_scale):
    params = torch.tensor([[[0.0, loc, log_scale]]], dtype=torch.float64)
    dist = DiscretizedLogisticMixture(params, channels=1, mixtures=1)
    brute_force = dist.log_prob((LEVELS.double() / 255).view(256, 1, 1)).argmax()
    assert round(float(dist.mode()) * 255) == int(brute_force)


def test_the_colour_mode_takes_the_channels_of_the_heaviest_component_at_their_coupled_centres():
    params = torch.zeros(1, 1, logistic_mixture_params(3, 2))
    params[..., :2] = torch.tensor([0.0, 1.0])  # the second component is the heavier
    params[..., 2:8] = torch.tensor([[-0.9, 0.2], [0.5, -0.1], [0.0, 0.4]]).flatten()  # (C, M) centres
    params[..., 14:20] = 10.0  # every coupling coefficient tanh(10) = 1: G + R, B + R + G
    dist = DiscretizedLogisticMixture(params, channels=3, mixtures=2)
    r, g = 0.2, -0.1 + 0.2
    expected = torch.tensor([r, g, 0.4 + r + g]).clamp(-1, 1)
    assert torch.equal(dist.mode(), torch.round((expected + 1) / 2 * 255).view(1, 3) / 255)


def test_the_mode_of_a_bimodal_pixel_is_a_value_its_mean_is_not():
    """A pixel that is dark with weight 1/4 and bright with 3/4: the mean is a grey the model
    almost never gives; the mode is the bright component's peak."""
    params = torch.zeros(1, 1, logistic_mixture_params(1, 2))
    params[..., 0], params[..., 1] = 0.0, math.log(3.0)
    params[..., 2], params[..., 3] = -0.5, 0.5
    params[..., 4:6] = math.log(0.05)
    dist = DiscretizedLogisticMixture(params, channels=1, mixtures=2)
    assert float(dist.mode()) * 255 == pytest.approx(round(0.75 * 255))  # v = 0.5 on [-1, 1] is k = 191.25 -> 191
    assert abs(float(dist.mean()) - 0.625) < 1e-6


def test_categorical_normalizes_and_its_mean_is_the_expectation():
    logits = torch.randn(2, 3, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    one_subpixel = Categorical(logits[:, :1])
    every_value = (LEVELS.double() / 255).view(256, 1, 1)  # (256, 2, 1) against (2, 1, 256) logits
    assert torch.allclose(one_subpixel.log_prob(every_value).exp().sum(0).double(), torch.ones(2, dtype=torch.float64))
    expected = (torch.softmax(logits, -1) * LEVELS / 255).sum(-1)
    assert torch.allclose(Categorical(logits).mean().double(), expected, atol=1e-6)


def test_histogram_baseline_is_the_smoothed_counts():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(50, 2, 2, 1), dtype=np.uint8)
    train[:, 0, 0, 0] = 7  # one pixel always 7
    test = train[:5].copy()
    hist = pixel_histogram(train)
    log_p = torch.log_softmax(hist.logits, -1)
    assert float(log_p[0, 7].exp()) == pytest.approx((50 + 0.5) / (50 + 128))
    assert float(log_p[0, 8].exp()) == pytest.approx(0.5 / (50 + 128))
    counts = np.array([[np.sum(train.reshape(50, -1)[:, d] == v) for v in range(256)] for d in range(4)])
    expected = np.log((counts + 0.5) / (50 + 128))
    flat = test.reshape(5, -1)
    nll = -np.mean([expected[np.arange(4), row].sum() for row in flat])
    out = histogram_metrics(train_images=train, test_images=test, batch_size=3)
    assert out["histogram_nats"] == pytest.approx(nll, rel=1e-6)
    assert out["histogram_bpd"] == pytest.approx(nll / (4 * math.log(2)), rel=1e-6)


def test_value_rows_are_the_exact_8_bit_values():
    images = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    x = torch.cat(list(value_rows(images, batch_size=3)))
    assert torch.equal(torch.round(x * 255).to(torch.uint8), torch.from_numpy(images.reshape(4, -1)))


# --- the autoregressive mixture: pixels given z and the pixels before them ------------------------

def autoregressive_head(shape: tuple[int, int, int], seed: int = 0, likelihood: str = "logistic-mixture"):
    from svhn_vae.config import ModelConfig
    from svhn_vae.likelihoods import make_head

    torch.manual_seed(seed)
    cfg = ModelConfig(input="pixels", likelihood=likelihood, mixtures=2, context_width=4, context_kernel=3)
    head = make_head(cfg, data_dim=shape[0] * shape[1] * shape[2], image_shape=shape,
                     output_layer=lambda n: torch.nn.Linear(3, n), var_net=None)
    with torch.no_grad():  # a correction and a linear term that matter (both start at zero)
        head.correction[-1].weight.normal_(0, 0.5)
        head.linear.weight.normal_(0, 0.5)
    return head


def test_autoregressive_mixture_is_a_distribution_over_whole_images():
    head = autoregressive_head((1, 2, 1))  # two grey pixels: 65,536 images
    dist = head(torch.randn(1, 3))
    a, b = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    x = torch.stack([a, b], -1).view(-1, 2).float() / 255
    assert float(dist.log_prob(x).detach().double().exp().sum()) == pytest.approx(1.0, abs=1e-5)


def test_autoregressive_bernoulli_is_a_distribution_over_binary_images():
    dist = autoregressive_head((2, 3, 1), likelihood="bernoulli")(torch.randn(1, 3))
    x = torch.tensor([[(i >> b) & 1 for b in range(6)] for i in range(64)], dtype=torch.float32)
    assert float(dist.log_prob(x).detach().double().exp().sum()) == pytest.approx(1.0, abs=1e-6)
    draw = dist.sample(generator=torch.Generator().manual_seed(0))
    assert draw.shape == (1, 6) and bool(((draw == 0) | (draw == 1)).all())


def test_a_pixel_depends_only_on_the_pixels_before_it():
    head = autoregressive_head((5, 5, 3))
    x = torch.randint(0, 256, (2, 75), generator=torch.Generator().manual_seed(0)).float() / 255
    base = head(torch.randn(2, 3)).base
    for j in (0, 7, 12, 24):
        changed = x.clone()
        changed[:, 3 * j:3 * j + 3] = 1 - changed[:, 3 * j:3 * j + 3]
        before, after = (head.params(base, head.context_of(v)) for v in (x, changed))
        assert torch.equal(before[:, :j + 1], after[:, :j + 1])  # pixel j's own parameters too
        assert j == 24 or not torch.equal(before[:, j + 1:], after[:, j + 1:])


def test_the_decoding_window_gives_the_same_context_as_the_whole_image():
    head = autoregressive_head((6, 7, 3))
    x = torch.rand(3, 6 * 7 * 3)
    full = head.context_of(x)
    window = torch.stack([head.context_at(x, i // 7, i % 7) for i in range(42)], dim=1)
    assert torch.allclose(full, window, atol=1e-6)


def test_a_checkpoint_from_before_the_linear_term_loads_as_the_same_model():
    head = autoregressive_head((3, 4, 3))
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.zero_()
    x, h = torch.rand(2, 36), torch.randn(2, 3)
    old = {k: v for k, v in head.state_dict().items() if not k.startswith("linear.")}
    fresh = autoregressive_head((3, 4, 3), seed=1)
    fresh.load_state_dict(old)  # strict: the missing linear term is filled in, not an error
    assert torch.equal(fresh(h).log_prob(x), head(h).log_prob(x))


def test_autoregressive_samples_are_seeded_8_bit_images_and_the_mean_is_deterministic():
    dist = autoregressive_head((3, 3, 3))(torch.randn(4, 3))
    one, two = (dist.sample(generator=torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(one, two) and one.shape == (4, 27)
    assert float((one * 255 - (one * 255).round()).abs().max()) < 1e-4
    assert torch.equal(dist.mean(), dist.mean()) and 0 <= float(dist.mean().min()) <= float(dist.mean().max()) <= 1
    mode = dist.mode()
    assert torch.equal(mode, dist.mode()) and float((mode * 255 - (mode * 255).round()).abs().max()) < 1e-4


def test_the_autoregressive_mode_is_each_pixels_mode_given_the_ones_decoded_before():
    head = autoregressive_head((2, 2, 1))
    dist = head(torch.randn(3, 3))
    mode = dist.mode()
    params = head.params(dist.base, head.context_of(mode))  # every pixel's conditional given the decoded image
    assert torch.equal(mode, dist.template.with_pixel_params(params).mode())


@pytest.mark.parametrize("architecture", ["dense", "conv"])
@pytest.mark.parametrize("likelihood, context", [("logistic-mixture", 0), ("logistic-mixture", 4), ("categorical", 0),
                                                 ("bernoulli", 4)])
def test_every_architecture_decodes_the_pixel_likelihoods(architecture, likelihood, context):
    """Dense and convolutional (ResNet blocks) decoders give the discrete likelihoods, with or without
    the masked context, a finite ELBO whose gradient reaches the encoder, and images back."""
    from svhn_vae.config import ModelConfig
    from svhn_vae.models import build_vae

    cfg = ModelConfig(input="pixels", architecture=architecture, latent_dim=3, encoder_shared=(16,), decoder=(16,),
                      conv_channels=(4, 8), residual_blocks=1, likelihood=likelihood, mixtures=2,
                      context_width=context, context_kernel=3)
    torch.manual_seed(0)
    model = build_vae(cfg, data_dim=8 * 8 * 3, image_shape=(8, 8, 3))
    x = torch.randint(0, 256, (4, 192)).float() / 255
    x = torch.bernoulli(x) if likelihood == "bernoulli" else x
    terms = model(x)
    assert torch.isfinite(terms.rec).all() and (terms.rec < 0).all()
    (-terms.objective().mean()).backward()
    encoder_grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert encoder_grads and any(g.abs().sum() > 0 for g in encoder_grads)
    model.eval()
    z = model.sample_latents(2)
    assert model.decode(z).mean().shape == (2, 192)
    shown = decode_images(model, Representation((8, 8, 3)), z)  # the figures' default: auto
    expected = "mean" if likelihood == "bernoulli" else "mode"  # the mode of the 8-bit likelihoods
    assert torch.equal(shown, decode_images(model, Representation((8, 8, 3)), z, mode=expected))


def test_settings_that_would_do_nothing_are_refused():
    from svhn_vae.config import Config, DataConfig, ModelConfig
    from svhn_vae.errors import UserError

    with pytest.raises(UserError, match="model.context_width"):
        ModelConfig(input="pixels", likelihood="categorical", context_width=4)
    with pytest.raises(UserError, match="model.context_kernel"):
        ModelConfig(input="pixels", likelihood="logistic-mixture", context_kernel=4)
    with pytest.raises(UserError, match="needs input 'pixels'"):
        Config(data=DataConfig(), model=ModelConfig(input="pca", likelihood="logistic-mixture"))
