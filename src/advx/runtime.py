"""Where and how tensors compute: device, autocast precision, torch.compile, eval mode and seeding, chosen once.

`Runtime.from_config` resolves `device=auto` / `precision=auto` a single time; everything else asks the
resulting object (no import-time device globals).

Seeds: a run's seed lies in [0, 2**31) (the config schemas check it); data that no run may train on (test sets,
Monte Carlo error rates, searches) comes from `held_out_generator`, seeded in [2**31, 2**32), so no run seed can
replay it. Not 2**32 and up: torch's CPU generator keeps only the low 32 bits of a seed (2**32 + s replays s).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from advx.errors import ConfigError

RUN_SEED_LIMIT = 2**31  # run seeds lie in [0, 2**31); held-out generators are seeded in [2**31, 2**32)


def resolve_device(device: str) -> str:
    """The device `runtime.device` names on this machine (auto: cuda when available, else cpu); ConfigError when
    the named device is not there."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device=cuda but no CUDA device is available; use runtime.device=auto or cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("runtime.device=mps but MPS is not available; use runtime.device=auto or cpu")
    return device


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    compile: bool
    progress: bool
    channels_last: str = "auto"  # auto (CUDA; the CPU where safe) | never

    @classmethod
    def from_config(cls, device: str = "auto", precision: str = "auto", compile: bool = False,
                    deterministic: bool = False, progress: bool = True, channels_last: str = "auto") -> Runtime:
        device = resolve_device(device)
        if precision == "auto":
            precision = "bf16" if device == "cuda" else "fp32"
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return cls(torch.device(device), precision, compile, progress, channels_last)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move the model to the device (channels-last when `channels_last` is auto and it is safe) and compile it
        when asked. Returns the module to call.

        Channels-last (auto): on CUDA for every convolutional model (cuDNN's bf16 convolutions prefer it); on the
        CPU only when every convolution has stride 1 (`channels_last_is_safe_on_cpu`), where it makes the
        cpu-scale CNN's input-gradient and training steps 1.25-1.6x faster (max pooling in the default layout is a
        third of the step), while a strided 1x1 convolution with few channels (a ResNet shortcut of width 4 or 8)
        corrupts the heap in its backward pass (torch 2.14.1, bisected under MALLOC_CHECK_=3). Its rounding
        differs from the default layout's by about 1e-7 relative; `never` keeps the default layout everywhere.

        Compiling starts from a fresh Dynamo state: its caches are per function and every advx model runs
        `Classifier.forward`, so the models compiled before in this process (a reproduction's stages, a sweep's
        jobs) would use up its recompile limit (8 graphs), past which Dynamo runs the function eagerly."""
        model = model.to(self.device)
        convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        if self.channels_last == "auto" and convolutional and (
                self.device.type != "cpu" or channels_last_is_safe_on_cpu(model)):
            model = model.to(memory_format=torch.channels_last)
        if not self.compile:
            return model
        torch.compiler.reset()
        return torch.compile(model)

    def describe(self) -> dict:
        info = {"device": str(self.device), "precision": self.precision, "compile": self.compile,
                "channels_last": self.channels_last}
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info


def channels_last_is_safe_on_cpu(model: torch.nn.Module) -> bool:
    """True when every convolution of `model` has stride 1: the layouts measured safe under MALLOC_CHECK_=3 on the
    CPU (torch 2.14.1); strided 1x1 convolutions with 4 or 8 input channels corrupt the heap there."""
    return all(m.stride == (1, 1) for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; both restored afterwards.

    Every evaluation runs under it (attacks, error rates, Monte Carlo rates, constructions), so batch norm uses
    its running statistics and never updates them, dropout is off, and the caller's mode comes back intact.
    """
    was_training = model.training
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), grad_flags, strict=True):
            p.requires_grad_(flag)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python and torch (CPU and CUDA) with a run seed in [0, 2**31); returns a CPU generator for data
    order."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def held_out_generator(stream: int) -> torch.Generator:
    """A CPU generator for held-out draws (test sets, Monte Carlo rates, searches) that no run seed replays:
    seeded with 2**31 + stream, above every run seed and below 2**32. `stream` in [0, 2**31) picks one."""
    if not 0 <= stream < RUN_SEED_LIMIT:
        raise ValueError(f"held-out stream must be in [0, 2**31), got {stream}")
    return torch.Generator().manual_seed(RUN_SEED_LIMIT + stream)
