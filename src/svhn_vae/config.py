"""Typed configuration: data, PCA, model and training settings, and the named presets.

Every default lives here. Each dataclass validates itself in ``__post_init__`` and names the bad
field in its error, so a misspelt or out-of-range setting fails at once instead of silently doing
nothing. Presets are plain data: a dict of small factories returning a full :class:`Config`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from svhn_vae.data.custom import canonical_name, is_own, parse_resize
from svhn_vae.errors import UserError

LIKELIHOODS = ("bernoulli", "gaussian-fixed", "gaussian-relu-eps", "gaussian-logvar", "gaussian-shared",
               "logistic-mixture", "categorical")
DISCRETE_LIKELIHOODS = ("logistic-mixture", "categorical")
"""Likelihoods of the 8-bit values themselves (see svhn_vae.likelihoods.discrete)."""
AUTO_LIKELIHOOD = "auto"
"""A likelihood chosen when training starts, from the images' channels (:func:`for_images`)."""
CONTEXT_LIKELIHOODS = ("logistic-mixture", "bernoulli")
"""Likelihoods whose pixels may also see the pixels before them (ModelConfig.context_width)."""
INPUTS = ("pca", "pixels")
ARCHITECTURES = ("dense", "conv")
PRIORS = ("standard", "learned-scale")
AUTO_DECODE = "auto"
DECODES = (AUTO_DECODE, "mean", "mode")
"""How the sample quality decodes generated images from p(x|z) (see svhn_vae.figures.point_decode)."""
EARLY_STOPPING = ("train", "val", "none")
LR_SCHEDULES = ("constant", "cosine")
COMPLEMENTS = ("diagonal", "isotropic")
PRECISIONS = ("fp32", "bf16")
"""Training precisions (see svhn_vae.precision)."""

COMPILE_MODES = ("auto", "on", "off")
"""When training steps go through torch.compile (see svhn_vae.compilation)."""


def scored_data(likelihood: str) -> str:
    """What a likelihood is a distribution of, the one place that says it: 'binarized' pixels
    (Bernoulli; bits/dim = NLL / (D ln 2) of binary values), the '8-bit' values themselves (the
    discrete likelihoods; NLL / (D ln 2), no dequantization term) or 'dequantized' pixels in [0, 1]
    (the Gaussian densities; (NLL + D ln 256) / (D ln 2))."""
    if likelihood == "bernoulli":
        return "binarized"
    return "8-bit" if likelihood in DISCRETE_LIKELIHOODS else "dequantized"


def for_images(cfg: Config, channels: int) -> Config:
    """``cfg`` for images of ``channels`` channels: an 'auto' likelihood becomes the discretized
    logistic mixture on grey images and the Gaussian with a per-pixel log-variance on colour ones.

    Measured with M2 (docs/few-labels.md): on MNIST a Gaussian's variance shrinks onto the blank
    background and the label goes unread (40% test error with 100 labels, against 8% with one
    logistic); on colour digits the Gaussian classifies as well, its decoded images read as their
    label more often, and it trains 8 times faster on a CPU.
    """
    if cfg.model.likelihood != AUTO_LIKELIHOOD:
        return cfg
    return cfg.replace("model", likelihood="logistic-mixture" if channels == 1 else "gaussian-logvar")


def check(ok: bool, section: str, name: str, message: str) -> None:
    """Raise a UserError naming ``section.name`` with ``message`` unless ``ok``."""
    if not ok:
        raise UserError(f"config {section}.{name}: {message}")


NON_FINITE_OK = {"logvar_min": -math.inf}
"""Float fields that may take one non-finite value (the log-variance floor may be -inf: no floor)."""


def _valid_type(value: Any, annotation: str) -> bool:
    """Whether ``value`` fits a field annotated ``annotation`` (int, float, str, bool, optional str, int tuple)."""
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation == "str":
        return isinstance(value, str)
    if annotation == "str | None":
        return value is None or isinstance(value, str)
    if annotation == "tuple[int, ...]":
        return isinstance(value, (tuple, list)) and all(_valid_type(v, "int") for v in value)
    raise TypeError(f"no type check for annotation {annotation!r}")


def check_fields(obj: Any, section: str) -> None:
    """Every field of a config section has its annotated type and, if a number, is finite; ints
    given for float fields become floats. Raises a UserError naming the field and the value."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        check(_valid_type(value, str(f.type)), section, f.name, f"{value!r} is not a valid {f.type}")
        if str(f.type) == "float":
            value = float(value)
            setattr(obj, f.name, value)
            check(math.isfinite(value) or NON_FINITE_OK.get(f.name) == value, section, f.name,
                  f"{value} is not a finite number")


def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each dataclass field (its docstring), read from the source."""
    tree = ast.parse(inspect.getsource(cls))
    body, docs = tree.body[0].body, {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = str(nxt.value.value)
    return docs


@dataclass
class DataConfig:
    """Which images to train on."""

    dataset: str = "svhn"
    """Dataset name: svhn, mnist, fashion-mnist, synth-digits (generated on the machine, no download),
    or own images: folder:PATH (ImageFolder layout) or npz:PATH (arrays)."""
    data_dir: str | None = None
    """Folder with the dataset files; None: $SVHN_VAE_DATA, else the per-user cache."""
    train_split: str = "train"
    """Training split; several may be joined with '+', e.g. 'train+extra' for SVHN."""
    test_split: str = "test"
    """Held-out split used for figures and evaluation."""
    limit: int = 0
    """Use only the first N training images (0: all); for quick trials and tests."""
    val_fraction: float = 0.0
    """Fraction of the training split held out for validation (0: none)."""
    download: bool = True
    """Download missing files (never happens in tests)."""
    dequantize: bool = True
    """Gaussian models train on (x + U[0, 1)) / 256 with fresh noise every step, the data evaluation
    scores, and fit the PCA on it; off: pixels / 255, as the write-up did. Bernoulli models binarize."""
    resize: str = ""
    """Own images only: resize every image to HxW (e.g. 32x32) with Pillow's Lanczos filter; '': keep
    the size, which must then be one for all."""
    test_fraction: float = 0.0
    """Own images only: share held out (seeded) as the test split; 0: the source's test/ folder or
    test arrays, else 0.1."""

    def __post_init__(self) -> None:
        check_fields(self, "data")
        if is_own(self.dataset):
            self.dataset = canonical_name(self.dataset)  # absolute: the run evaluates from any folder
            parse_resize(self.resize)
        for name in ("resize", "test_fraction"):
            check(is_own(self.dataset) or not getattr(self, name), "data", name,
                  "--resize and --test-fraction are for own images (folder:PATH or npz:PATH)")
        check(0.0 <= self.test_fraction < 1.0, "data", "test_fraction", "must be in [0, 1)")
        check(0.0 <= self.val_fraction < 0.5, "data", "val_fraction", "must be in [0, 0.5)")
        check(self.limit >= 0, "data", "limit", "must be >= 0")


@dataclass
class PCAConfig:
    """The write-up's "PCA trick": the VAE models the top principal components of pixels/255."""

    components: int = 500
    """Number of principal components K kept."""
    whiten: bool = False
    """Scale codes to unit variance (the write-up did not)."""
    complement: str = "diagonal"
    """Density of the D - K discarded directions in pixel space: 'diagonal', a Gaussian with each
    direction's own eigenvalue (the full-covariance Gaussian's density there; stores their D - K
    eigenvectors), or 'isotropic', one variance, their mean (probabilistic PCA's)."""

    def __post_init__(self) -> None:
        check_fields(self, "pca")
        check(self.components > 0, "pca", "components", "must be a positive integer")
        check(self.complement in COMPLEMENTS, "pca", "complement", f"must be one of {COMPLEMENTS}")


@dataclass
class ModelConfig:
    """Architecture of the VAE and its output likelihood."""

    input: str = "pca"
    """What the VAE models: 'pca' codes or raw 'pixels' scaled to [0, 1]."""
    architecture: str = "dense"
    """'dense' blocks (Linear -> BatchNorm -> ReLU -> Dropout) or 'conv' (pixels only)."""
    latent_dim: int = 64
    """Number of latent dimensions."""
    encoder_shared: tuple[int, ...] = (1024, 512)
    """Widths of the encoder blocks shared by the mean and log-variance branches."""
    encoder_branch: tuple[int, ...] = ()
    """Widths of the separate blocks of each branch (mean, log-variance) after the shared trunk."""
    decoder: tuple[int, ...] = (512, 1024)
    """Widths of the decoder blocks."""
    conv_channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the stride-2 convolutions of the 'conv' architecture."""
    residual_blocks: int = 0
    """'conv': ResNet blocks (two 3x3 convolutions and a skip) after every resolution change."""
    dropout: float = 0.1
    """Dropout probability in every dense block."""
    input_batchnorm: bool = True
    """BatchNorm on the encoder's input (the write-up normalised its PCA codes this way)."""
    likelihood: str = "gaussian-relu-eps"
    """Output distribution: one of LIKELIHOODS, or 'auto' (chosen from the images' channels when
    training starts; the run stores the one chosen)."""
    eps: float = 0.01
    """gaussian-relu-eps: variance = ReLU(v) + eps (times each dimension's data variance if relative_variance)."""
    variance_head: tuple[int, ...] = ()
    """gaussian-relu-eps: widths of dense blocks before the variance output (write-up: (500,))."""
    frozen_variance_head: bool = False
    """Leave the variance head untrained, as the write-up's published code effectively did."""
    fixed_variance: float = 0.01
    """gaussian-fixed: the constant output variance (times each dimension's data variance if relative_variance).
    With fixed_variance_dims N: the pixel-space variance shared by the N pinned outputs (times that of
    the N-th if relative_variance)."""
    logvar_min: float = -9.0
    """gaussian-logvar: soft floor of the output log-variance (plus log data variance if relative_variance; -inf: none)."""
    fixed_variance_dims: int = 0
    """Gaussian heads: the first N outputs (the top principal components: colour, coarse shape; all
    outputs if fewer) share one constant pixel-space variance instead of learned ones, so the latent
    must carry them, the larger ones more precisely (each at most fixed_variance of its own variance
    when relative). Encoding a Gaussian direction is break-even in the ELBO: with a learned variance
    the decoder leaves them to its noise and its means (samples, analogies) come out grey."""
    fixed_variance_floor: float = 0.01
    """The smallest variance of a pinned output, as a fraction of its own data variance."""
    relative_variance: bool = True
    """eps, fixed_variance and logvar_min are relative to each output dimension's variance in the training
    data (PCA codes range over orders of magnitude); off: absolute, as the write-up's eps=0.01."""
    binarize: bool = True
    """bernoulli: dynamically binarize training inputs (x ~ Bernoulli(pixel))."""
    mixtures: int = 5
    """logistic-mixture: components of the discretized logistic mixture of each pixel."""
    context_width: int = 0
    """logistic-mixture and bernoulli: channels of a small masked-convolution network (PixelCNN's) through
    which each pixel also depends on the pixels above it and to its left, with a linear masked
    convolution beside it (0: pixels independent given z)."""
    context_kernel: int = 5
    """Kernel size of that network's first masked convolution and of the linear one (the network's
    reach: kernel // 2 + 1 pixels)."""
    hierarchy: tuple[int, ...] = ()
    """Sizes of further stochastic layers under the top latent (latent_dim), each inferred top-down
    given the ones above (a hierarchical VAE); (): the single-layer VAE."""
    ladder_width: int = 256
    """Width of the dense blocks that give each lower layer its prior and posterior."""
    ladder_spatial: bool = False
    """Convolutional architecture: each lower layer is a map of ``hierarchy[i]`` latents per position,
    at the size of the encoder's second-to-last convolution (8x8 on 32x32 images, 7x7 on 28x28),
    its prior and posterior from 3x3 convolutions there, as wide as that feature map (the posterior
    also reads it), added into the decoder's feature map of that size through a 1x1 convolution
    (VDVAE's spatial latents); the decoder's dense layer reads the top latents only. False: dense
    lower layers (``ladder_width``)."""
    ladder_bound: float = 5.0
    """How far a lower layer's prior means and log-variances, and its posterior's shifts of them, may
    go: softly, b * tanh(v / b) (NVAE's soft clamp). 0: unbounded, as runs saved before it existed."""
    coarse_size: int = 0
    """Pixel models: the latents the decoder reads must also predict the image average-pooled to this
    size (a training term outside the likelihood, svhn_vae.models.coarse); 0: none."""
    coarse_variance: float = 0.01
    """The fixed variance of each pooled value in that term, as a fraction of its variance in the data."""
    prior: str = "standard"
    """p(z) of the (top) latents: 'standard' N(0, I), or 'learned-scale' N(0, diag(s^2)) with the scales s
    trained with the rest, so that prior draws land where the codes of the data lie."""
    classes: int = 0
    """M2 (Kingma et al. 2014): the label is a latent variable with this many values, inferred by a
    classifier q(y|x) and read by the encoder q(z|x,y) and the decoder p(x|y,z); 0: no label latent."""
    classifier: tuple[int, ...] = (512, 512)
    """M2: widths of the dense blocks of the classifier q(y|x)."""
    m1: str | None = None
    """M1+M2 (Kingma et al. 2014's stacked model): a trained single-layer VAE run whose latents
    (posterior draws) are this model's data instead of the images (its input and PCA settings are
    then unused); None: images; '' (the m1-m2 preset): still to be given."""
    classifier_inputs: int = 0
    """M2: the classifier reads only the first N inputs (the top N principal components of PCA codes,
    which carry the digit's shape, not the noise the others whiten up); 0: all."""
    classifier_channels: tuple[int, ...] = ()
    """M2 on pixels: channels of stride-2 3x3 convolutions before the classifier's dense blocks (): none."""

    def __post_init__(self) -> None:
        check_fields(self, "model")
        self.encoder_shared, self.encoder_branch = tuple(self.encoder_shared), tuple(self.encoder_branch)
        self.decoder, self.variance_head = tuple(self.decoder), tuple(self.variance_head)
        self.conv_channels, self.hierarchy = tuple(self.conv_channels), tuple(self.hierarchy)
        self.classifier, self.classifier_channels = tuple(self.classifier), tuple(self.classifier_channels)
        check(self.input in INPUTS, "model", "input", f"must be one of {INPUTS}")
        check(self.architecture in ARCHITECTURES, "model", "architecture", f"must be one of {ARCHITECTURES}")
        check(self.likelihood in (*LIKELIHOODS, AUTO_LIKELIHOOD), "model", "likelihood",
              f"must be one of {LIKELIHOODS} or '{AUTO_LIKELIHOOD}'")
        check(self.latent_dim > 0, "model", "latent_dim", "must be positive")
        check(0.0 <= self.dropout < 1.0, "model", "dropout", "must be in [0, 1)")
        check(self.eps > 0, "model", "eps", "must be positive")
        check(self.fixed_variance > 0, "model", "fixed_variance", "must be positive")
        check(self.fixed_variance_dims >= 0, "model", "fixed_variance_dims", "must be >= 0")
        check(0.0 <= self.fixed_variance_floor < 1.0, "model", "fixed_variance_floor", "must be in [0, 1)")
        check(self.mixtures > 0, "model", "mixtures", "must be positive")
        check(self.residual_blocks >= 0, "model", "residual_blocks", "must be >= 0")
        check(self.context_width >= 0, "model", "context_width", "must be >= 0")
        check(self.context_kernel >= 3 and self.context_kernel % 2 == 1, "model", "context_kernel",
              "must be an odd number >= 3")
        check(self.context_width == 0 or self.likelihood in CONTEXT_LIKELIHOODS, "model", "context_width",
              f"works with the likelihoods {CONTEXT_LIKELIHOODS}; set it to 0 for '{self.likelihood}'")
        check(self.ladder_width > 0, "model", "ladder_width", "must be positive")
        check(self.ladder_bound >= 0, "model", "ladder_bound", "must be >= 0 (0: unbounded)")
        check(not self.ladder_spatial or (self.architecture == "conv" and self.hierarchy
                                          and len(self.conv_channels) >= 2), "model", "ladder_spatial",
              "spatial lower layers need --architecture conv, at least two --conv-channels and a --hierarchy")
        check(self.coarse_size >= 0, "model", "coarse_size", "must be >= 0")
        check(self.coarse_variance > 0, "model", "coarse_variance", "must be positive")
        check(self.coarse_size == 0 or (self.input == "pixels" and self.classes == 0), "model", "coarse_size",
              "a coarse view needs input 'pixels' and no label latent: use --coarse-size 0")
        check(self.prior in PRIORS, "model", "prior", f"must be one of {PRIORS}")
        check(self.prior == "standard" or self.classes == 0, "model", "prior",
              "M2's style latent keeps the standard prior: use --prior standard")
        check(self.classes == 0 or self.classes >= 2, "model", "classes", "must be 0 (no label latent) or >= 2")
        check(self.classes == 0 or (self.architecture == "dense" and not self.hierarchy), "model", "classes",
              "M2 is built from dense blocks on one latent layer: use --architecture dense and --hierarchy ''")
        check(self.m1 is None or (self.classes > 0 and self.likelihood.startswith("gaussian")), "model", "m1",
              "the stacked M1+M2 trains M2 with a Gaussian likelihood on M1's latents: use --preset m1-m2")
        check(self.classifier_inputs >= 0, "model", "classifier_inputs", "must be >= 0")
        check(not self.classifier_channels or (self.input == "pixels" and self.m1 is None), "model",
              "classifier_channels",
              "convolutions need input 'pixels' (PCA codes have no image layout)")
        for name in ("encoder_shared", "encoder_branch", "decoder", "variance_head", "conv_channels", "hierarchy",
                     "classifier", "classifier_channels"):
            check(all(w > 0 for w in getattr(self, name)), "model", name, "widths must be positive")
        check(
            self.architecture == "dense" or self.input == "pixels",
            "model", "architecture", "'conv' needs input 'pixels' (PCA codes have no image layout)",
        )


@dataclass
class TrainConfig:
    """Optimisation, early stopping and the NaN guard."""

    epochs: int = 30
    """Maximum number of epochs."""
    batch_size: int = 256
    """Examples per Adam step."""
    lr: float = 1e-3
    """Adam learning rate (the peak of the schedule)."""
    lr_schedule: str = "constant"
    """'constant', or 'cosine': decay to 0 over all epochs' steps (Loshchilov & Hutter 2017)."""
    warmup_steps: int = 0
    """Raise the learning rate linearly from 0 over this many steps first (0: none)."""
    iw_samples: int = 1
    """Importance samples per example of the training objective: 1 is the ELBO, k > 1 the IWAE bound
    (Burda et al. 2016)."""
    early_stopping: str = "train"
    """Quantity watched for early stopping: 'train' loss (the write-up), 'val' loss, or 'none'."""
    patience: int = 10
    """Epochs without an improvement of more than min_delta before stopping."""
    min_delta: float = 0.1
    """Smallest decrease of the watched loss (nats per example) that counts as an improvement."""
    kl_warmup_epochs: int = 0
    """Linearly raise the KL weight from 0 to 1 over this many epochs (0: no warm-up)."""
    free_bits: float = 0.0
    """Nats of KL per latent dimension (batch mean) that cost nothing in training (Kingma et al. 2016),
    so latents stay in use; metrics and evaluation always count the whole KL. 0: off; needs iw_samples 1."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    nan_lr_factor: float = 0.5
    """On a NaN/Inf loss, restore the last good state and multiply the learning rate by this."""
    nan_retries: int = 3
    """How many times to recover from a NaN before stopping with an error."""
    labels: int = 0
    """Training labels the model may read (M2, model.classes > 0): a balanced, seeded subset of this
    many training examples keeps its labels, the rest are hidden from training; 0: none."""
    alpha: float = 0.1
    """M2: weight of the classifier's log q(y|x) on the labelled examples, as a fraction of the
    training set's size N (Kingma et al.'s alpha = 0.1 N)."""
    labelled_batch: int = 100
    """M2: labelled examples drawn (with replacement) into every step, for the classifier's term."""
    labelled_weight: float = 0.0
    """M2: also add this weight times the drawn labelled examples' mean negative ELBO to every step's
    loss (0: Kingma et al.'s objective exactly, see svhn_vae.semi_supervised)."""
    consistency: float = 0.0
    """M2: also add this weight times the cross-entropy with which the classifier q(y|x), held fixed,
    reads the decoder's mean images of prior styles and uniform labels (one per batch row) as their
    labels: it teaches the decoder to draw the digit y names (0: Kingma et al.'s objective)."""
    seed: int = 0
    """Seed of every random choice (initialisation, batches, noise)."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."""
    precision: str = "fp32"
    """'fp32', or 'bf16': hidden layers under bfloat16 autocast, output heads, KL and loss in float32."""
    compile: str = "off"
    """Each training step's loss through torch.compile (TorchInductor; see svhn_vae.compilation): 'on',
    'off', or 'auto': on for runs of at least 10,000 steps, and eager where the platform cannot compile.
    The first step of each batch shape compiles (seconds to tens of seconds on a CPU)."""
    sync_batchnorm: bool = False
    """Under torchrun with several CUDA processes: BatchNorm statistics over the whole global batch."""
    sample_every: int = 5
    """Write a sample grid into the run folder every this many epochs (0: never)."""
    checkpoint_every_steps: int = 0
    """Also write a checkpoint inside an epoch every this many optimizer steps (0: only at epoch ends
    and by time); a resume continues from that step exactly."""
    checkpoint_every_minutes: float = 10.0
    """Also write a checkpoint inside an epoch when this many minutes passed since the last one (0: never):
    a crash loses at most that much work, even in epochs of hours."""

    def __post_init__(self) -> None:
        if isinstance(self.compile, bool):  # configs written before the 'auto' mode
            self.compile = "on" if self.compile else "off"
        check_fields(self, "train")
        check(self.epochs > 0, "train", "epochs", "must be positive")
        check(self.batch_size > 0, "train", "batch_size", "must be positive")
        check(self.lr > 0, "train", "lr", "must be positive")
        check(self.lr_schedule in LR_SCHEDULES, "train", "lr_schedule", f"must be one of {LR_SCHEDULES}")
        check(self.warmup_steps >= 0, "train", "warmup_steps", "must be >= 0")
        check(self.iw_samples > 0, "train", "iw_samples", "must be positive")
        check(self.free_bits >= 0, "train", "free_bits", "must be >= 0")
        check(self.free_bits == 0 or self.iw_samples == 1, "train", "free_bits",
              "works on the one-sample ELBO: use --iw-samples 1")
        check(self.early_stopping in EARLY_STOPPING, "train", "early_stopping", f"must be one of {EARLY_STOPPING}")
        check(self.patience > 0, "train", "patience", "must be positive")
        check(0 < self.nan_lr_factor < 1, "train", "nan_lr_factor", "must be in (0, 1)")
        check(self.nan_retries >= 0, "train", "nan_retries", "must be >= 0")
        check(self.sample_every >= 0, "train", "sample_every", "must be >= 0")
        check(self.precision in PRECISIONS, "train", "precision", f"must be one of {PRECISIONS}")
        check(self.compile in COMPILE_MODES, "train", "compile", f"must be one of {COMPILE_MODES}")
        check(self.checkpoint_every_steps >= 0, "train", "checkpoint_every_steps", "must be >= 0")
        check(self.checkpoint_every_minutes >= 0, "train", "checkpoint_every_minutes", "must be >= 0")
        check(self.labels >= 0, "train", "labels", "must be >= 0")
        check(self.alpha >= 0, "train", "alpha", "must be >= 0")
        check(self.labelled_batch > 0, "train", "labelled_batch", "must be positive")
        check(self.labelled_weight >= 0, "train", "labelled_weight", "must be >= 0")
        check(self.consistency >= 0, "train", "consistency", "must be >= 0")


@dataclass
class Config:
    """Everything a run needs; stored as ``config.json`` in the run folder and in checkpoints."""

    data: DataConfig = field(default_factory=DataConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "custom"

    def __post_init__(self) -> None:
        m2 = self.model.classes > 0
        check(m2 or self.train.labels == 0, "train", "labels",
              "labels train the M2 model: use --preset m2 (or --classes 10)")
        check(not m2 or self.train.labels > 0, "model", "classes",
              "the M2 model learns from labels: give --labels N (e.g. 100)")
        check(not m2 or (self.train.iw_samples == 1 and self.train.free_bits == 0), "train", "iw_samples",
              "M2 trains on its ELBO: use --iw-samples 1 and --free-bits 0")
        check(self.model.coarse_size == 0 or self.train.iw_samples == 1, "model", "coarse_size",
              "the coarse view is a term of the one-sample ELBO: use --iw-samples 1")
        check(self.train.consistency == 0 or m2, "train", "consistency",
              "the term reads decoded images with M2's classifier: use --preset m2, or --consistency 0")
        check(self.train.consistency == 0 or self.model.context_width == 0, "train", "consistency",
              "images whose pixels see their context decode pixel by pixel, without gradients: "
              "use --consistency 0 or --context-width 0")
        if self.model.likelihood == AUTO_LIKELIHOOD or scored_data(self.model.likelihood) != "dequantized":
            check(self.model.input == "pixels", "model", "likelihood",
                  f"'{self.model.likelihood}' is a distribution of pixels: needs input 'pixels'")
        check(self.pca.complement == "isotropic" or self.data.dequantize or self.model.input != "pca", "pca",
              "complement", "'diagonal' needs --dequantize (undequantized pixels can have eigenvalues of 0); "
              "use --complement isotropic")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they would be silently ignored)."""
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(d) - set(sections)
        if unknown:
            raise UserError(f"config has unknown keys {sorted(unknown)}; was it written by a newer svhn-vae?")
        kwargs: dict[str, Any] = {"preset": d.get("preset", "custom")}
        for name, section_cls in SECTIONS.items():
            kwargs[name] = _section_from_dict(section_cls, d.get(name, {}), name)
        return cls(**kwargs)

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> Config:
        """:meth:`from_dict` of a configuration a run saved, perhaps with an earlier release: a field
        added since (:data:`ADDED_SINCE`) that it lacks takes the value that release behaved as."""
        d = {**d, **{name: {**added, **d[name]} for name, added in ADDED_SINCE.items() if name in d}}
        return cls.from_dict(d)

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some fields of one section changed (validated again)."""
        new_section = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: new_section})


SECTIONS: dict[str, type] = {"data": DataConfig, "pca": PCAConfig, "model": ModelConfig, "train": TrainConfig}

ADDED_SINCE: dict[str, dict[str, Any]] = {"model": {"ladder_bound": 0.0}}
"""Fields added after runs were saved whose default behaves differently: their value for a saved
configuration that lacks them (:meth:`Config.from_saved`), so old checkpoints score as they trained."""


def _section_from_dict(section_cls: type, values: dict[str, Any], name: str) -> Any:
    known = {f.name for f in dataclasses.fields(section_cls)}
    unknown = set(values) - known
    if unknown:
        raise UserError(f"config section '{name}' has unknown keys {sorted(unknown)}")
    return section_cls(**values)


# --- presets -------------------------------------------------------------------------------------

def _blog_2017() -> Config:
    """The write-up's final SVHN model (see docs/presets.md: 48,489,020 trainable parameters).

    Kept as the write-up had it: codes of pixels/255 (no dequantization) and the absolute eps=0.01
    of its ReLU+eps variance, larger than most of the eigenvalues of unwhitened SVHN codes.
    """
    return Config(
        preset="blog-2017",
        data=DataConfig(dataset="svhn", dequantize=False),
        pca=PCAConfig(components=500, whiten=False, complement="isotropic"),
        model=ModelConfig(
            input="pca", latent_dim=512, input_batchnorm=True,
            encoder_shared=(2048,) * 3, encoder_branch=(2048,) * 2, decoder=(2048,) * 5,
            dropout=0.2, likelihood="gaussian-relu-eps", eps=0.01, relative_variance=False, variance_head=(500,),
        ),
        train=TrainConfig(
            epochs=2000, batch_size=1000, lr=1e-4, early_stopping="train", min_delta=0.1, patience=100,
            sample_every=50,
        ),
    )


def _fast() -> Config:
    """A PCA model that beats every linear baseline after minutes on a 2-core CPU.

    700 whitened components of dequantized pixels (the discarded directions each with its own
    variance), a log-variance output head floored at 1e-4 of each code's variance and started at
    it, except for the 32 top components, which share one fixed pixel-space variance (0.1 of the
    32nd's, at least 0.01 of each one's) so that the latents carry colour and coarse shape
    (``--likelihood gaussian-relu-eps`` gets eps = 2e-2 of each code's variance: smaller lets ReLU
    units die at the floor; 4.496 bits/dim on MNIST), 2x512 dense blocks without dropout, 24
    latents, cosine learning rate, KL warm-up over 10 epochs. On MNIST (docs/results.md) it
    trains in 199 s on a 2-core CPU and reaches 4.449 bits/dim on test (IWAE, K=1000), 0.84 better
    than the full-covariance Gaussian, with 27.5% k-NN error from its latents with 100 labels; on
    synth-digits 3.572 (K=100), 0.063 better, in 336 s, and its samples are coloured digits.
    Runs of 10,000 steps and more compile their steps (``compile="auto"``, 1.13-1.17x here).
    """
    return Config(
        preset="fast",
        data=DataConfig(dataset="svhn"),
        pca=PCAConfig(components=700, whiten=True),
        model=ModelConfig(
            input="pca", latent_dim=24, encoder_shared=(512, 512), decoder=(512, 512), dropout=0.0,
            input_batchnorm=False, likelihood="gaussian-logvar", logvar_min=math.log(1e-4), eps=2e-2,
            fixed_variance_dims=32, fixed_variance=0.1,
        ),
        train=TrainConfig(epochs=40, batch_size=128, lr=1e-3, lr_schedule="cosine", warmup_steps=200,
                          kl_warmup_epochs=10, early_stopping="none", compile="auto"),
    )


def _mnist_bernoulli() -> Config:
    """Pixels with a Bernoulli output on dynamically binarized MNIST, trained on the IWAE bound.

    2x512 dense blocks, 50 latents, k=5 importance samples (Burda et al. 2016), cosine learning
    rate over 150 epochs. On MNIST (docs/results.md) it trains in about 25 minutes on a 2-core
    CPU (9.7 s per epoch) and reaches a test NLL of 85.64 nats (IWAE, K=1000; the IWAE paper's
    one-layer VAE: 86.76).
    """
    return Config(
        preset="mnist-bernoulli",
        data=DataConfig(dataset="mnist"),
        model=ModelConfig(
            input="pixels", latent_dim=50, encoder_shared=(512, 512), decoder=(512, 512),
            dropout=0.0, input_batchnorm=False, likelihood="bernoulli", binarize=True,
        ),
        train=TrainConfig(epochs=150, batch_size=128, lr=1e-3, lr_schedule="cosine", warmup_steps=500,
                          iw_samples=5, early_stopping="none"),
    )


def _discrete() -> Config:
    """Pixels in, the 8-bit values out: a discretized logistic mixture whose pixels see their neighbours.

    A dense encoder and decoder (2x512, no dropout) around 32 latents. The decoder gives every pixel
    a mixture of 3 logistics (for colour, PixelCNN++'s channel coupling: G's mean moves with R's
    value, B's with R's and G's), corrected by a 16-channel masked-convolution network and a linear
    masked convolution over the pixels above and to the left (``context_width``; 0 makes the pixels
    independent given z). Cosine learning rate, KL warm-up over 5 epochs, 10 epochs. Measured on
    test (docs/results.md; IWAE, K=100; one thread beside another run): MNIST (54,000 training
    images) 1.147 bits/dim after 8 minutes, 0.54 better than the independent per-pixel histogram;
    synth-digits 3.329 after 32 minutes, 0.30 better than the full-covariance Gaussian. Its latents
    code colour and background more than the digit (probe and sample quality in docs/results.md).
    """
    return Config(
        preset="discrete",
        data=DataConfig(dataset="svhn", dequantize=False),
        model=ModelConfig(
            input="pixels", latent_dim=32, encoder_shared=(512, 512), decoder=(512, 512), dropout=0.0,
            input_batchnorm=False, likelihood="logistic-mixture", mixtures=3, context_width=16,
        ),
        train=TrainConfig(epochs=10, batch_size=128, lr=1e-3, lr_schedule="cosine", warmup_steps=200,
                          kl_warmup_epochs=5, early_stopping="none"),
    )


def _hierarchical() -> Config:
    """`discrete` with two stochastic layers: 32 top latents and 32 under them, inferred top-down.

    The lower layer's prior and posterior come from 512-wide blocks given the top layer (and, for the
    posterior, the encoder's features), softly bounded (``ladder_bound``); the decoder reads both
    layers; free bits of 0.5 nats per latent. Measured on test as `discrete` was: synth-digits
    3.361 bits/dim after 31 minutes, 0.27 better than the full-covariance Gaussian; MNIST 1.159
    after 8.5 minutes. Without the bound and the free bits one batch's KL blew up and the latents
    collapsed (3.534 on synth-digits). With ``--likelihood bernoulli`` it is
    :func:`_hierarchical_binarized`.
    """
    cfg = _discrete()
    cfg.preset = "hierarchical"
    cfg.model = dataclasses.replace(cfg.model, hierarchy=(32,), ladder_width=512)
    cfg.train = dataclasses.replace(cfg.train, free_bits=0.5)
    return cfg


def _discrete_coarse() -> Config:
    """`discrete` whose latents also predict an 8x8 view of each image, under a learned prior scale:
    for colour images, whose samples should be digits.

    The latents must predict the image average-pooled to 8x8 per channel, under a Gaussian whose
    fixed variances are 0.001 of each pooled value's variance in the data (``coarse_size``,
    ``coarse_variance``; a training term outside the likelihood). The prior of the 32 latents is
    N(0, diag(s^2)) with the scales learned (``prior``), and `evaluate` decodes samples to their mode.
    Measured (docs/results.md; 90% of the training images, one thread beside another run):
    synth-digits 3.312 bits/dim (IWAE, K=100, first 5,000 test images; `discrete` 3.329) after 48
    minutes, classifier FID 89.6 (10,000 samples, 10 of 10 classes; `fast` 108.4, `discrete` 556.7
    as means); MNIST 1.284 after 11 minutes (`discrete` 1.147).
    """
    cfg = _discrete()
    cfg.preset = "discrete-coarse"
    cfg.model = dataclasses.replace(cfg.model, coarse_size=8, coarse_variance=0.001, prior="learned-scale")
    cfg.train = dataclasses.replace(cfg.train, epochs=15)
    return cfg


def _hierarchical_binarized(cfg: Config) -> Config:
    """`hierarchical` for binarized pixels (``--likelihood bernoulli``): no free bits, a 32-channel
    7x7 context, 40 epochs. Binarized MNIST: 83.36 nats (IWAE, K=1000, all 10,000 test images)
    after 35 minutes on one thread (docs/results.md). With the 8-bit recipe's 0.5 free bits per
    latent it reached 86.74: the floor holds KL that the objective no longer pays for and the
    scored bound does; with the 8-bit recipe's 16-channel 5x5 context and 20 epochs (before the
    linear term), 85.06.
    """
    cfg.model = dataclasses.replace(cfg.model, likelihood="bernoulli", context_width=32, context_kernel=7)
    cfg.train = dataclasses.replace(cfg.train, free_bits=0.0, epochs=40)
    return cfg


def _with_label_latent(cfg: Config, preset: str, *, epochs: int, **model: Any) -> Config:
    """``cfg`` turned into an M2 run: 10 label values, 100 labels, ``model``'s fields replaced."""
    cfg.preset = preset
    cfg.model = dataclasses.replace(cfg.model, classes=10, **model)
    # eager: the unlabelled rows are picked by a mask, a shape Inductor cannot compile whole
    cfg.train = dataclasses.replace(cfg.train, labels=100, epochs=epochs, compile="off")
    return cfg


def _m2() -> Config:
    """Kingma et al. 2014's M2 on pixels: 100 labels, the rest of the images unlabelled.

    The label y is a latent with 10 values beside 4 style latents (few enough that the digit goes
    through y, not the style); the classifier q(y|x) is three stride-2 convolutions (32, 64, 128
    channels) feeding the output layer directly; the encoder and decoder are `fast`'s 2x512 dense
    blocks on the pixels; the output is chosen from the images (``--likelihood auto``,
    :func:`for_images`): one discretized logistic per pixel on grey images, a Gaussian with a
    per-pixel log-variance on colour ones; alpha = 10 (the labelled examples' log q(y|x) weighted by
    ten times their number); consistency 100 (the classifier, held fixed, reads the decoder's images
    of prior styles as their labels); 100 labelled examples in every step; 5 epochs, KL warm-up
    over 2. Measured (docs/few-labels.md): synth-digits with 1000 labels, three label draws of 27
    minutes each on one thread: test error 19.5%, 16.0%, 16.7% (validation 19.9%, 16.1%, 16.3%),
    and 95.6%, 94.7%, 92.0% of its decoded (prior style, label) images read as their label. MNIST
    with 100 labels, three label draws on a GPU: 8.1%, 8.6%, 7.3%, 93.0-97.3% read; with
    ``--epochs 10``, 5.4%, 6.8%, 5.0%; with 1000 labels and ``--epochs 20``, 2.96% and 2.97% (two
    draws), 99.5-99.7% read. With the Gaussian on MNIST (100 labels), 40.3%.
    """
    cfg = _fast()
    cfg.model = dataclasses.replace(cfg.model, input="pixels", fixed_variance_dims=0, likelihood=AUTO_LIKELIHOOD,
                                    mixtures=1)
    cfg = _with_label_latent(cfg, "m2", epochs=5, latent_dim=4, classifier=(), classifier_channels=(32, 64, 128))
    cfg.train = dataclasses.replace(cfg.train, kl_warmup_epochs=2, alpha=10.0, consistency=100.0)
    return cfg


def _m1_m2() -> Config:
    """Kingma et al. 2014's stacked M1+M2: M2 on the latents of a trained VAE run (``--m1 RUN``).

    M2 learns from fresh posterior draws of M1's latents at every step: 16 style latents, a
    512-512 dense classifier reading all of M1's latents, `fast`'s dense blocks, alpha = 0.1 N, 100
    labelled examples in every step. Measured on MNIST (docs/few-labels.md), 45 epochs here
    (17 minutes on one thread): with M1 = `mnist-bernoulli --epochs 100 --iw-samples 1` (8.6
    minutes) test error 4.87% with 100 labels (mean of 3 label draws: 5.30%, 5.46%, 3.84%); with
    the 30-epoch M1, 5.32% there, and 3.12-3.24% with 1000 labels and ``--alpha 0.01``; 98.8% of
    its decoded (prior style, label) images are read as their label.
    """
    return _with_label_latent(_fast(), "m1-m2", epochs=45, m1="", latent_dim=16, fixed_variance_dims=0,
                              classifier=(512, 512))


PRESETS: dict[str, Callable[[], Config]] = {
    "fast": _fast,
    "blog-2017": _blog_2017,
    "mnist-bernoulli": _mnist_bernoulli,
    "discrete": _discrete,
    "discrete-coarse": _discrete_coarse,
    "hierarchical": _hierarchical,
    "m2": _m2,
    "m1-m2": _m1_m2,
}
# A preset's recipe for another likelihood than its own, where the likelihood changes what works:
# ``--preset P --likelihood L`` starts from LIKELIHOOD_RECIPES[P, L](P's config); flags still win.
LIKELIHOOD_RECIPES: dict[tuple[str, str], Callable[[Config], Config]] = {
    ("hierarchical", "bernoulli"): _hierarchical_binarized,
}
# `svhn-vae train`'s default: it beats the best baseline on grey and colour data alike and is the best
# density on grey images (docs/results.md; `discrete-coarse` is on colour ones, and its samples are
# digits); `make demo` trains `fast`, which also beats them on colour, in a tenth of the time.
DEFAULT_PRESET = "discrete"


CONFIG_SUFFIXES = (".json", ".toml")


def load_config_file(path: str | Path) -> Config:
    """A :class:`Config` from a file: JSON as every run folder's ``config.json``, or TOML with the
    same sections (``[model]``, ``[train]``, ...); settings it leaves out keep their defaults."""
    path = Path(path)
    if path.suffix not in CONFIG_SUFFIXES:
        raise UserError(f"config file {path} must end in {' or '.join(CONFIG_SUFFIXES)}")
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"config file {path} is not valid {path.suffix[1:].upper()}: {e}") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a table of sections (data, pca, model, train)")
    return Config.from_dict(values)


def get_preset(name: str, likelihood: str | None = None) -> Config:
    """A fresh copy of the named preset; with ``likelihood``, its recipe for that likelihood where it
    has one (:data:`LIKELIHOOD_RECIPES`), else the preset as it is."""
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    cfg, recipe = PRESETS[name](), LIKELIHOOD_RECIPES.get((name, likelihood))
    return recipe(cfg) if recipe else cfg
