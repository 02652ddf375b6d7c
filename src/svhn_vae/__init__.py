"""svhn_vae: variational autoencoders on SVHN and other small image datasets.

``svhn_vae.load(path)`` loads a trained model from a run card (``svhn-vae export``), a run folder
or a checkpoint file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from svhn_vae.errors import UserError

if TYPE_CHECKING:
    from svhn_vae.checkpoint import TrainedModel

__all__ = ["UserError", "__version__", "load"]
__version__ = "0.1.0"


def load(path: str | Path, *, device: Any = "cpu") -> TrainedModel:
    """The trained model at ``path``: ``.model`` (a VAE in eval mode), ``.representation`` (pixels <->
    model input, with the PCA), ``.config``, ``.epoch``. See :func:`svhn_vae.export.load`."""
    from svhn_vae.export import load as load_exported  # torch is imported only when a model is loaded

    return load_exported(path, device=device)
