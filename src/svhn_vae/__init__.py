"""svhn_vae: variational autoencoders on SVHN and other small image datasets."""

from svhn_vae.errors import UserError

__all__ = ["UserError", "__version__"]
__version__ = "0.1.0"
