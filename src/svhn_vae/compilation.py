"""``--compile``: a training step's loss and evaluation's importance weights through
``torch.compile`` (TorchInductor, CPU and CUDA).

Inductor fuses the elementwise work around the matrix products (the dequantization noise,
BatchNorm, ReLU, the heads' maths, the KL, the loss) into generated C++ (CPU, which needs a C++
compiler) or Triton (CUDA) kernels; autograd's backward is compiled with it. What is compiled is a
function of one batch, from its stored rows to its loss, so the code between the model's calls is
fused too. The first step of each batch shape compiles (seconds to tens of seconds on a CPU; a run
has two shapes, the full batch and the last), later ones reuse the code; Inductor keeps compiled
code on disk, so a second run compiles faster. Weights are the eager module's own, so checkpoints,
evaluation and resume see the same parameters under the same names. Random numbers come from
eager's random ops (Inductor's ``fallback_random``), so a compiled run draws what an eager one
draws and resumes as exactly.

Three modes (``train.compile``, ``EvalOptions.compile``): ``on`` compiles, and where the platform
cannot (no C++ compiler, an unsupported Python or device) the first step fails with a one-line
:class:`CompileUnavailable` that says to run without it; ``off`` never compiles; ``auto`` compiles
runs of at least :data:`AUTO_MIN_STEPS` optimizer steps, and evaluations of at least
:data:`AUTO_MIN_WEIGHT_CALLS` chunks of importance weights, where the compilation pays for itself,
and where the platform cannot compile, says so in one line and runs eagerly.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

import torch

from svhn_vae.config import COMPILE_MODES
from svhn_vae.errors import UserError

log = logging.getLogger(__name__)

AUTO_MIN_STEPS = 10_000
"""Optimizer steps from which ``auto`` compiles. Measured for ``fast`` on the 2-core Intel kind: its
two batch shapes compile in about 20 s with an empty Inductor cache and 3.5 s with a warm one (the
cache outlives the process, so every run after the first is warm), and a compiled step is about 1 ms
shorter (1.14-1.17x), so a run breaks even after some 3,500 steps, or 20,000 the very first time.
Its 40 epochs of SVHN are 22,900 steps; a test's few are far fewer."""


AUTO_MIN_WEIGHT_CALLS = 100
"""Chunks of importance weights (a batch of images times a chunk of samples) from which ``auto``
compiles an evaluation. Measured on the AMD kind, one thread (``bench/evaluate_speed.py``, K=100):
compiling takes 20-22 s, after which a chunk of 20 images x 100 samples takes 2.7 s instead of 6.9 s
for `discrete` (2.6x) and 2.3 s instead of 8.0 s for `hierarchical` (3.5x); `fast` gains nothing
(0.1 s a chunk either way, after 10 s of compiling). K=1000 on 10,000 images is 5,000 chunks; a
test's few are far fewer."""


def add_compile_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, dest: str, default: str | None,
                      help: str) -> None:
    """``--compile [auto|on|off]`` (alone: on) and ``--no-compile`` (off), both into ``dest``."""
    parser.add_argument("--compile", dest=dest, nargs="?", const="on", choices=COMPILE_MODES, default=default,
                        help=help)
    parser.add_argument("--no-compile", dest=dest, action="store_const", const="off", help="the same as --compile off")


class CompileUnavailable(UserError):
    """torch.compile could not compile the model on this platform."""


def wanted(mode: str, steps: int, *, auto_from: int = AUTO_MIN_STEPS) -> bool:
    """Whether work of ``steps`` calls (optimizer steps, by default) compiles under ``mode`` ('auto':
    from ``auto_from`` calls on, 'on' or 'off')."""
    return mode == "on" or (mode == "auto" and steps >= auto_from)


class Compiled:
    """``fn`` (a function or a bound method) through ``torch.compile`` with static shapes.

    A failure of the compiler is a one-line :class:`CompileUnavailable`, or with ``fall_back`` a
    one-line warning, after which this and every later call run ``fn`` eagerly.
    """

    def __init__(self, fn: Callable[..., Any], *, fall_back: bool = False) -> None:
        self.fn = fn
        self.fall_back = fall_back
        # static shapes: a training run has two (the full batch and the last); static code is the faster.
        # fallback_random: eager's random ops, so the same draws and an exact resume.
        self._call = torch.compile(fn, dynamic=False, options={"fallback_random": True})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from torch._dynamo.exc import TorchDynamoException

        try:
            return self._call(*args, **kwargs)
        except TorchDynamoException as err:  # the compiler's failures, wrapped by Dynamo (C++ errors too)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            if not self.fall_back:
                raise CompileUnavailable(f"torch.compile cannot compile this model here ({first}); "
                                         "run without --compile") from None
        log.warning("torch.compile cannot compile this model here (%s); running it eagerly", first)
        self._call = self.fn
        return self.fn(*args, **kwargs)
