"""Encoders and decoders: dense blocks (the write-up's recipe) and a convolutional variant (stride-2
convolutions, optionally with ResNet blocks at every resolution).

All networks take and return flat rows (B, D); the convolutional ones reshape internally, with
pixels flattened in (H, W, C) order like the datasets' NHWC arrays.
"""

from __future__ import annotations

import torch
from torch import nn

from svhn_vae.config import ModelConfig
from svhn_vae.likelihoods import make_head


class Dropout(nn.Module):
    """Inverted dropout (as ``nn.Dropout``) whose mask is ``rand >= p``: on a CPU, drawing uniforms
    takes half the time of ``bernoulli_``, which was 9% of a `blog-2017` training step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * ((torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p)))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DenseBlock(nn.Sequential):
    """Linear -> BatchNorm -> ReLU (in place: BatchNorm's backward does not need its output) -> Dropout."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True), Dropout(dropout))


def dense_stack(in_dim: int, widths: tuple[int, ...], dropout: float) -> tuple[nn.Sequential, int]:
    """Dense blocks of the given widths; returns the stack and its output width."""
    blocks, dim = [], in_dim
    for width in widths:
        blocks.append(DenseBlock(dim, width, dropout))
        dim = width
    return nn.Sequential(*blocks), dim


class DenseEncoder(nn.Module):
    """q(z|x): optional input BatchNorm, a shared trunk, then separate mean and log-variance branches."""

    def __init__(self, cfg: ModelConfig, data_dim: int) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm1d(data_dim) if cfg.input_batchnorm else nn.Identity()
        self.trunk, hidden = dense_stack(data_dim, cfg.encoder_shared, cfg.dropout)
        self.mu_branch, h_mu = dense_stack(hidden, cfg.encoder_branch, cfg.dropout)
        self.logvar_branch, h_lv = dense_stack(hidden, cfg.encoder_branch, cfg.dropout)
        self.mu = nn.Linear(h_mu, cfg.latent_dim)
        self.logvar = nn.Linear(h_lv, cfg.latent_dim)

        self.feature_dim = hidden

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, feature_dim) the shared trunk's features (what lower latent layers also read)."""
        return self.trunk(self.input_norm(x))

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, feature_dim) -> mean (B, L) and log-variance (B, L) of the diagonal Gaussian posterior."""
        return self.mu(self.mu_branch(h)), self.logvar(self.logvar_branch(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) -> mean (B, L) and log-variance (B, L) of the diagonal Gaussian posterior."""
        return self.posterior(self.features(x))


class DenseDecoder(nn.Module):
    """p(x|z): dense blocks, then the likelihood head named by the config."""

    def __init__(self, cfg: ModelConfig, data_dim: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.trunk, hidden = dense_stack(cfg.latent_dim, cfg.decoder, cfg.dropout)

        def var_net() -> nn.Module:
            blocks, width = dense_stack(hidden, cfg.variance_head, cfg.dropout)
            return nn.Sequential(blocks, nn.Linear(width, data_dim))

        self.head = make_head(cfg, data_dim=data_dim, image_shape=image_shape,
                              output_layer=lambda n: nn.Linear(hidden, n), var_net=var_net)

    def forward(self, z: torch.Tensor):
        return self.head(self.trunk(z))


# --- convolutional variant for pixel inputs ------------------------------------------------------

def conv_sizes(size: int, n: int) -> list[int]:
    """Spatial sizes after each stride-2, kernel-3, padding-1 convolution: 28 -> 14 -> 7 -> 4."""
    sizes = [size]
    for _ in range(n):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


class ResidualBlock(nn.Module):
    """x + Conv(ReLU(BN(Conv(ReLU(BN(x)))))): a pre-activation ResNet block at one resolution, 3x3 kernels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ToHWC(nn.Module):
    """(B, C, H, W) -> (B, H * W * C), the datasets' flattening order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


class ToNCHW(nn.Module):
    """(B, H * W * C) rows -> (B, C, H, W) images."""

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, c = self.image_shape
        return x.view(-1, h, w, c).permute(0, 3, 1, 2)


def conv_stack(image_shape: tuple[int, int, int], channels: tuple[int, ...], residual_blocks: int = 0
               ) -> tuple[nn.Sequential, int]:
    """Stride-2 3x3 convolutions (BatchNorm, ReLU, optional ResNet blocks) over (B, C, H, W) images,
    flattened at the end; returns the stack and its output width."""
    layers, ch = [], image_shape[2]
    for out_ch in channels:
        layers += [nn.Conv2d(ch, out_ch, 3, stride=2, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU()]
        layers += [ResidualBlock(out_ch) for _ in range(residual_blocks)]
        ch = out_ch
    side = conv_sizes(image_shape[0], len(channels))[-1]
    return nn.Sequential(*layers, nn.Flatten()), ch * side * side


class ConvEncoder(nn.Module):
    """q(z|x) on pixels: stride-2 convolutions (``conv_channels``, optional ResNet blocks), then linear mean
    and log-variance heads; maps (B, H * W * C) rows to two (B, latent_dim) tensors."""

    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.to_images = ToNCHW(image_shape)
        self.convs, self.feature_dim = conv_stack(image_shape, cfg.conv_channels, cfg.residual_blocks)
        self.mu = nn.Linear(self.feature_dim, cfg.latent_dim)
        self.logvar = nn.Linear(self.feature_dim, cfg.latent_dim)
        # where the second-to-last convolution's block ends: its feature map feeds spatial latents
        self.map_end = (len(cfg.conv_channels) - 1) * (3 + cfg.residual_blocks)
        side = conv_sizes(image_shape[0], len(cfg.conv_channels))[-2]
        self.map_shape = (cfg.conv_channels[-2] if len(cfg.conv_channels) > 1 else image_shape[2], side, side)
        """(C', H', W') of that feature map."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H * W * C) -> (B, feature_dim) the flattened features of the last convolution."""
        return self.convs(self.to_images(x))

    def features_and_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`features` and the feature map (B, C', H', W') of the second-to-last convolution."""
        feature_map = self.convs[:self.map_end](self.to_images(x))
        return self.convs[self.map_end:](feature_map), feature_map

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), self.logvar(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.posterior(self.features(x))


class ConvDecoder(nn.Module):
    """p(x|z) on pixels: a dense layer to the smallest feature map, stride-2 transposed convolutions that
    invert the encoder's sizes, and a convolutional output head; maps (B, latent_dim) to the likelihood's
    distribution over (B, H * W * C)."""

    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        sizes = conv_sizes(image_shape[0], len(cfg.conv_channels))
        chans = list(reversed(cfg.conv_channels))
        self.start = (chans[0], sizes[-1])
        self.fc = nn.Sequential(nn.Linear(cfg.latent_dim, chans[0] * sizes[-1] ** 2), nn.ReLU())
        layers = []
        for i, out_ch in enumerate(chans[1:] + [chans[-1]]):
            size_in, size_out = sizes[-1 - i], sizes[-2 - i]
            pad_out = size_out - (2 * size_in - 1)  # makes each transposed conv exactly invert the encoder
            layers += [nn.ConvTranspose2d(chans[i], out_ch, 3, stride=2, padding=1, output_padding=pad_out),
                       nn.BatchNorm2d(out_ch), nn.ReLU()]
            layers += [ResidualBlock(out_ch) for _ in range(cfg.residual_blocks)]
        self.deconvs = nn.Sequential(*layers)
        # spatial latents (ModelConfig.ladder_spatial) join after the first block, at the size of the
        # encoder's second-to-last feature map, through a 1x1 convolution
        self.inject_at = 3 + cfg.residual_blocks
        self.inject = nn.Conv2d(sum(cfg.hierarchy), chans[1], 1) if cfg.ladder_spatial else None
        data_dim = image_shape[0] * image_shape[1] * image_shape[2]

        def output_layer(n: int) -> nn.Module:  # n outputs: n / (H W) channels per pixel
            return nn.Sequential(nn.Conv2d(chans[-1], n // (image_shape[0] * image_shape[1]), 3, padding=1), ToHWC())

        self.head = make_head(cfg, data_dim=data_dim, image_shape=image_shape, output_layer=output_layer,
                              var_net=lambda: output_layer(data_dim))

    def forward(self, z: torch.Tensor, spatial: torch.Tensor | None = None):
        """The distribution for latents z (B, latent_dim) and, with spatial latents, their maps (B, C, H', W')."""
        ch, side = self.start
        # channels_last, as the encoder's images already are (pixel rows are H, W, C): 1.14x a
        # training step of `discrete --architecture conv` on a CPU (bench/train_throughput.py)
        maps = self.fc(z).view(-1, ch, side, side).contiguous(memory_format=torch.channels_last)
        if self.inject is None:
            return self.head(self.deconvs(maps))
        maps = self.deconvs[:self.inject_at](maps) + self.inject(spatial.to(maps.dtype))
        return self.head(self.deconvs[self.inject_at:](maps))


def build_encoder(cfg: ModelConfig, *, data_dim: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """q(z|x) of ``cfg.latent_dim`` latents for the configured architecture."""
    return ConvEncoder(cfg, image_shape) if cfg.architecture == "conv" else DenseEncoder(cfg, data_dim)


def build_decoder(cfg: ModelConfig, *, data_dim: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """p(x|z) from ``cfg.latent_dim`` latents for the configured architecture."""
    if cfg.architecture == "conv":
        return ConvDecoder(cfg, image_shape)
    return DenseDecoder(cfg, data_dim, image_shape)
