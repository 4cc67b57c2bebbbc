"""`python -m advx.gpu_check`: timed slices of each paper's scale=paper workload, with projected stage times.

CIFAR-10 is not on the machines this project is built on, so the slices run on synthetic CIFAR-shaped tensors
(uniform pixels, random labels): the arithmetic of a step does not depend on the pixels, so the figures time the
real workload. Each slice builds the paper-scale model from advx's registry and runs advx's own step (the
training regime's loss and an optimiser step, an evaluation attack, a representation-inversion chunk, a Monte
Carlo error-rate chunk) after warm-up steps, synchronising the device around the timed steps. The projection
multiplies the measured rate by the work conf/paper/<paper>.yaml asks for at scale=paper: an estimate of one
stage's compute, not a measured run. `--tiny` shrinks models and batches so the script runs on a CPU in seconds
(what the tests run); `make gpu-check` runs it on CUDA after the `gpu` tests.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from advx.attacks import Attack
from advx.construct import representation_inversion
from advx.models import build_model
from advx.runtime import Runtime
from advx.schema import RegimeConfig
from advx.spheres import relu_mlp, sample_spheres, sphere_error_rate
from advx.train import regime_loss

CIFAR = (3, 32, 32)
CIFAR_TRAIN = 50_000  # images per epoch at scale=paper


@dataclass
class Slice:
    paper: str
    what: str
    samples_per_step: int  # what one timed step processes (images, example-steps or sphere points)
    step: Callable[[], object]
    projected_samples: float  # the samples one scale=paper stage processes
    projected: str  # what the projection covers


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *CIFAR, generator=generator).to(device)
    return x, torch.randint(0, 10, (batch,), generator=generator).to(device)


def _training_step(model, runtime: Runtime, regime: RegimeConfig, x, y) -> Callable[[], None]:
    net = runtime.prepare(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        model.train()
        with runtime.autocast():
            loss, _ = regime_loss(net, x, y, regime, model.output)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _cifar_model(name: str, tiny: bool, runtime: Runtime, paper: dict, small: dict):
    """The registry's model with the paper's hyperparameters (`small` ones with --tiny), on the device."""
    return build_model(name, CIFAR, 10, [0.5] * 3, [0.25] * 3, **(small if tiny else paper)).to(runtime.device)


def slices(runtime: Runtime, tiny: bool) -> list[Slice]:
    """The timed workloads of each paper at scale=paper (smaller with `tiny`)."""
    device = runtime.device
    batch = 16 if tiny else 128  # the papers' CIFAR batch size
    x, y = _images(batch, device)
    maxout = _cifar_model("conv_maxout", tiny, runtime, {}, {"channels": [8, 8, 8], "fc_units": 16})
    resnet = _cifar_model("resnet", tiny, runtime, {"depth": 50}, {"depth": 18, "width": 4})
    standard = RegimeConfig(name="standard")
    robust = RegimeConfig(name="pgd_adv", alpha=0.0, eps=0.5, norm="l2", steps=7, step_size=0.1, clip=True)
    with torch.no_grad():  # label each image with the model's own prediction: every example starts undecided
        maxout_y, resnet_y = maxout.eval()(x).argmax(1), resnet.eval()(x).argmax(1)
    fgsm = Attack(name="fgsm", eps=0.1)
    pgd = Attack(name="pgd", eps=0.5, norm="l2", steps=20, step_size=0.0625)
    inversion_steps = 10
    dim, sphere_batch = (50, 64) if tiny else (500, 50)  # Gilmer et al.: d = 500, batch 50
    sphere_net = relu_mlp(dim, width=32 if tiny else 1000).to(device)
    sphere_x, sphere_y = sample_spheres(sphere_batch, dim, generator=torch.Generator().manual_seed(0))
    sphere_train = _sphere_step(sphere_net, sphere_x.to(device), sphere_y.to(device), runtime)
    mc_batch = 10_000 if tiny else 1_000_000
    simclr = _cifar_model("resnet", tiny, runtime, {"depth": 18, "pretext": "simclr"},
                          {"depth": 18, "width": 4, "pretext": "simclr"})
    mae = _cifar_model("vit", tiny, runtime, {"patch_size": 8, "width": 384, "depth": 12, "heads": 6, "pretext": "mae"},
                       {"patch_size": 8, "width": 32, "depth": 2, "heads": 2, "decoder_width": 32, "decoder_depth": 1,
                        "decoder_heads": 2, "pretext": "mae"})
    ddpm = _cifar_model("unet", tiny, runtime, {"channels": 128, "multipliers": [1, 2, 2, 2], "res_blocks": 2,
                                                "pretext": "ddpm"},
                        {"channels": 8, "multipliers": [1, 2], "pretext": "ddpm"})
    li2023 = [  # the authors' encoders: SimCLR ResNet-18 (tau 0.007), MAE ViT patch 8 / 384 / 12, DDPM UNet 128
        Slice("li2023", "SimCLR ResNet-18 step (two views)", batch,
              _training_step(simclr, runtime, RegimeConfig(name="simclr", temperature=0.007, flip=True), x, y),
              1000 * CIFAR_TRAIN, "1000 epochs"),
        Slice("li2023", "MAE ViT step (mask 0.75)", batch, _training_step(mae, runtime, RegimeConfig(name="mae"), x, y),
              1000 * CIFAR_TRAIN, "1000 epochs"),
        Slice("li2023", "DDPM UNet step", batch, _training_step(ddpm, runtime, RegimeConfig(name="ddpm"), x, y),
              1000 * CIFAR_TRAIN, "1000 epochs"),
    ]
    return [
        Slice("goodfellow2015", "conv maxout training step (CIFAR arm)", batch,
              _training_step(maxout, runtime, standard, x, y), 200 * CIFAR_TRAIN, "200 epochs"),
        Slice("goodfellow2015", "FGSM evaluation of the conv maxout", batch,
              lambda: fgsm.evaluate(maxout, x, maxout_y), 10_000, "the 10k test set, one eps"),
        Slice("ilyas2019", f"ResNet-{18 if tiny else 50} L2 PGD-7 adversarial training step", batch,
              _training_step(resnet, runtime, robust, x, y), 150 * CIFAR_TRAIN, "150 epochs of the robust source"),
        Slice("ilyas2019", f"representation inversion, {inversion_steps} steps", batch * inversion_steps,
              lambda: representation_inversion(resnet, x, x.flip(0), steps=inversion_steps, step_size=0.1),
              CIFAR_TRAIN * 1000, "D_R: 50k images x 1000 steps"),
        Slice("ilyas2019", "PGD-20 L2 evaluation (active set)", batch, lambda: pgd.evaluate(resnet, x, resnet_y),
              10_000, "the 10k test set, one eps"),
        Slice("gilmer2018", "2 x 1000 ReLU net training step, d = 500", sphere_batch, sphere_train,
              50_000_000, "50M samples (the largest budget)"),
        Slice("gilmer2018", "Monte Carlo error rate", mc_batch,
              lambda: sphere_error_rate(sphere_net, dim, 1.0, 0, mc_batch, device=device, batch_size=mc_batch),
              10_000_000, "10M points, one sphere"),
        *li2023,
    ]


def _sphere_step(model, x, y, runtime: Runtime) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)  # Gilmer et al.'s optimiser

    def step() -> None:
        model.train()
        with runtime.autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_slice(piece: Slice, device: torch.device, steps: int, warmup: int = 3) -> dict:
    """Seconds per step (median of `steps` timed steps after `warmup`), samples/s and peak device memory."""
    for _ in range(min(warmup, steps)):
        piece.step()
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        piece.step()
        _synchronize(device)
        times.append(time.perf_counter() - started)
    per_step = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    rate = piece.samples_per_step / per_step
    return {"per_step": per_step, "rate": rate, "peak_gib": peak, "projected_s": piece.projected_samples / rate}


def _machine(runtime: Runtime) -> str:
    device = runtime.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    return (f"{name}: torch {torch.__version__}{cuda}, precision {runtime.precision}, "
            f"compile {'on' if runtime.compile else 'off'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m advx.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per slice (after 3 warm-up steps)")
    parser.add_argument("--tiny", action="store_true", help="small models and batches: a CPU check in seconds")
    parser.add_argument("--compile", action="store_true", help="torch.compile the trained models")
    args = parser.parse_args(argv)
    runtime = Runtime.from_config(device=args.device, compile=args.compile, progress=False)
    torch.manual_seed(0)
    print(f"advx gpu-check on {_machine(runtime)}; synthetic CIFAR-shaped data; projections are estimates of one "
          f"scale=paper stage's compute from the measured rate, not measured runs", flush=True)
    for piece in slices(runtime, args.tiny):
        result = time_slice(piece, runtime.device, args.steps)
        memory = f", peak {result['peak_gib']:.1f} GiB" if result["peak_gib"] is not None else ""
        print(f"{piece.paper:15s} {piece.what}: {result['per_step'] * 1000:.1f} ms/step, {result['rate']:,.0f} "
              f"samples/s{memory}; projected {result['projected_s'] / 3600:.2f} h for {piece.projected}", flush=True)


if __name__ == "__main__":
    main()
