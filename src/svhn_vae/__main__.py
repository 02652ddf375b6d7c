"""``python -m svhn_vae`` is the ``svhn-vae`` command (torchrun needs a module to run)."""

import sys

from svhn_vae.cli import main

sys.exit(main())
