"""Where and how tensors compute: device, autocast precision, torch.compile and seeding, chosen once.

`Runtime.from_config` resolves `device=auto` / `precision=auto` a single time; everything else asks the
resulting object (no import-time device globals).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import torch

from advx.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    compile: bool
    progress: bool

    @classmethod
    def from_config(cls, device: str = "auto", precision: str = "auto", compile: bool = False,
                    deterministic: bool = False, progress: bool = True) -> Runtime:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("runtime.device=cuda but no CUDA device is available; use runtime.device=auto or cpu")
        if device == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("runtime.device=mps but MPS is not available; use runtime.device=auto or cpu")
        if precision == "auto":
            precision = "bf16" if device == "cuda" else "fp32"
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return cls(torch.device(device), precision, compile, progress)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move the model to the device and compile it when asked. Returns the module to call."""
        model = model.to(self.device)
        return torch.compile(model) if self.compile else model

    def describe(self) -> dict:
        info = {"device": str(self.device), "precision": self.precision, "compile": self.compile}
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info


def seed_everything(seed: int) -> torch.Generator:
    """Seed python and torch (CPU and CUDA); returns a CPU generator for data order."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
