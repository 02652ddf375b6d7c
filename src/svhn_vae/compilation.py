"""``--compile``: the model's training steps and evaluation's importance weights through
``torch.compile`` (TorchInductor, CPU and CUDA).

Inductor fuses the elementwise work around the matrix products (BatchNorm, ReLU, the heads'
maths, the KL) into generated C++ (CPU, which needs a C++ compiler) or Triton (CUDA) kernels;
autograd's backward is compiled with it. The first step of each batch shape compiles (tens of
seconds on a CPU; a run has two shapes, the full batch and the last), later ones reuse the code.
Weights are shared with the eager module, so checkpoints, evaluation and resume see the same
parameters under the same names. Random numbers come from eager's random ops (Inductor's
``fallback_random``), so a compiled run draws what an eager one draws and resumes as exactly.

Where the platform cannot compile (no C++ compiler, an unsupported Python or device), the first
call fails with a one-line :class:`CompileUnavailable` that says to run without ``--compile``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from svhn_vae.errors import UserError


class CompileUnavailable(UserError):
    """torch.compile could not compile the model on this platform."""


class Compiled(nn.Module):
    """``module`` called through ``torch.compile``; a compiler failure becomes :class:`CompileUnavailable`.

    Only calls go through the compiled code: parameters, buffers and ``state_dict`` are the
    wrapped module's own (no ``_orig_mod.`` prefix in checkpoints)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "_call", compiled(module))  # not a second registered child

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's forward, run as compiled code."""
        return self._call(*args, **kwargs)


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a module or a function such as a bound method) through ``torch.compile`` with static
    shapes; a failure of the compiler is a one-line :class:`CompileUnavailable`."""
    # static shapes: a training run has two (the full batch and the last); static code is the faster
    code = torch.compile(fn, dynamic=False)

    def call(*args: Any, **kwargs: Any) -> Any:
        from torch._dynamo.exc import TorchDynamoException
        from torch._inductor import config

        try:
            with config.patch(fallback_random=True):  # eager's random ops: the same draws, exact resume
                return code(*args, **kwargs)
        except TorchDynamoException as err:  # the compiler's failures, wrapped by Dynamo (C++ errors too)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CompileUnavailable(f"torch.compile cannot compile this model here ({first[:200]}); "
                                     "run without --compile") from None

    return call


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` itself, or with ``enabled`` a :class:`Compiled` wrapper of it."""
    return Compiled(module) if enabled else module
