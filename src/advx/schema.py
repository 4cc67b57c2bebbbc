"""Structured-config schemas: the typed shape of every config group, with the range of every number.

Hydra merges the YAML files in `conf/` onto these dataclasses, so a value of the wrong type or a key that does
not exist fails while the config is composed, before any work starts. `OmegaConf.to_object` then builds the
dataclasses, and `Checked.__post_init__` checks each numeric key against the `Bound` declared with it
(`count(10)`: an integer >= 1; `ranged(0.5, 0, 1)`: a number in [0, 1]; lists element-wise and never empty;
NaN and infinity never pass), then the rules that span keys (`validate`).

The dataclasses are plain Python (no Hydra import): `hydra_bridge.py` registers them with Hydra's ConfigStore,
and the library code receives them as ordinary typed objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from advx.errors import ConfigError

MISSING: Any = "???"  # OmegaConf's missing-value marker is this string: no omegaconf import in the core

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NORMS = ("linf", "l2")
DATASET_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10}  # labels of the image datasets on disk


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_seed(seed: int) -> None:
    # held-out data is seeded in [2**31, 2**32) (runtime.held_out_generator): no run seed may reach it
    _check(0 <= seed < 2**31, f"seed must be in [0, 2**31), got {seed}")


@dataclass(frozen=True)
class Bound:
    """The allowed range of a numeric key: low/high (None: unbounded), each end open or closed. A list value
    must be non-empty and each element in range; None passes (the key's "off" or "all" value)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def holds(self, value: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return False
        if math.isinf(value):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.open_high else '<='} {self.high:g}"
        return "a finite number"

    def check(self, key: str, value: Any) -> None:
        """Raise ConfigError naming `key` unless `value` (a number, a list of numbers, or None) is in range."""
        if value is None:
            return
        if isinstance(value, dict):
            for name, item in value.items():
                self.check(f"{key}.{name}", item)
            return
        if isinstance(value, list | tuple):
            _check(len(value) > 0, f"{key} must not be empty")
            for item in value:
                _check(self.holds(item), f"{key} must be {self}, got {item!r} in {list(value)}")
            return
        _check(self.holds(value), f"{key} must be {self}, got {value!r}")


def ranged(default: Any, low: float | None = None, high: float | None = None, *, open_low: bool = False,
           open_high: bool = False) -> Any:
    """A dataclass field whose value must lie in [low, high] (ends open when asked); see `Bound`."""
    metadata = {"bound": Bound(low, high, open_low, open_high)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def count(default: Any) -> Any:
    """An integer (or list of integers) >= 1: sizes, counts, widths, steps, epochs."""
    return ranged(default, 1)


def positive(default: Any) -> Any:
    """A number (or list of numbers) > 0: learning rates, step sizes, radii that must move something."""
    return ranged(default, 0, open_low=True)


def non_negative(default: Any) -> Any:
    """A number (or list of numbers) >= 0, where 0 means off or none."""
    return ranged(default, 0)


def probability(default: Any) -> Any:
    """A number in [0, 1]."""
    return ranged(default, 0, 1)


class Checked:
    """Base of every schema dataclass: each field's `Bound` is checked when the object is built (that is, when
    a config is composed), then `validate` checks the rules that span several keys. `KEY` is the config
    group's prefix in messages ("train" -> "train.epochs must be >= 1, got 0")."""

    KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for item in fields(self):  # type: ignore[arg-type]
            bound = item.metadata.get("bound")
            if bound is not None:
                bound.check(self.key(item.name), getattr(self, item.name))
        self.validate()

    def key(self, name: str) -> str:
        return f"{self.KEY}.{name}" if self.KEY else name

    def validate(self) -> None:
        """Rules between keys; subclasses extend it."""


def _default_clip(name: str) -> bool:
    from advx.attacks import default_clip  # the one rule, in attacks.py (imported late: schema stays torch-free)

    return default_clip(name)


@dataclass
class DatasetConfig(Checked):
    KEY: ClassVar[str] = "dataset"

    name: str = MISSING  # mnist | fashion_mnist | cifar10 | synthetic | spheres | derived (mnist_3v7: classes=[3,7])
    data_dir: str = "${oc.env:ADVX_DATA_DIR,data}"  # where torchvision's folders live (MNIST/raw/...)
    download: bool = False  # these machines are offline; users online may set it
    classes: list[int] | None = non_negative(None)  # keep only these labels, renumbered 0..k-1 (3 vs 7: [3, 7])
    val_size: int = non_negative(0)  # held out from the end of the training set for early stopping
    train_size: int | None = count(None)  # a prefix subset of the training set (None: all)
    test_size: int | None = count(None)
    shape: str = "mnist"  # synthetic only: mnist (1x28x28) | cifar (3x32x32)
    num_classes: int = ranged(10, 2)  # synthetic only
    preprocess: str = "none"  # none (pixels in [0,1]) | gcn_zca (Goodfellow 2015's CIFAR-10 space; use clip=false)
    dim: int = ranged(500, 2)  # spheres only: the dimension d
    radius_outer: float = ranged(1.3, 1, open_low=True)  # spheres only: the outer radius R (the inner one is 1)
    path: str | None = None  # derived only: an `advx construct` run dir, or a folder of released CIFAR_ims/CIFAR_lab
    base: str = "cifar10"  # derived from released files only: whose test split to evaluate on (ours record theirs)

    def validate(self) -> None:
        _check_choice("dataset.name", self.name, (*DATASET_CLASSES, "synthetic", "spheres", "derived"))
        _check(self.name != "derived" or bool(self.path), "dataset=derived needs dataset.path=<construct run dir>")
        _check_choice("dataset.base", self.base, (*DATASET_CLASSES, "synthetic"))
        _check_choice("dataset.shape", self.shape, ("mnist", "cifar"))
        _check_choice("dataset.preprocess", self.preprocess, ("none", "gcn_zca"))
        if self.classes is not None:
            self.check_classes(self.labels())

    def labels(self) -> int | None:
        """How many labels the data has before `classes` picks some (None: known only once a derived dataset
        is read)."""
        if self.name == "synthetic":
            return self.num_classes
        return 2 if self.name == "spheres" else DATASET_CLASSES.get(self.name)

    def check_classes(self, labels: int | None) -> None:
        """`classes` names at least two distinct labels of the data (which has `labels` of them)."""
        classes = self.classes or []
        _check(self.name != "spheres", "dataset.classes does not apply to dataset=spheres (two classes already)")
        _check(len(classes) >= 2, f"dataset.classes needs at least two labels, got {classes}")
        _check(len(set(classes)) == len(classes), f"dataset.classes lists a label twice: {classes}")
        _check(labels is None or max(classes) < labels,
               f"dataset.classes={classes} is out of range: {self.name} has labels 0..{(labels or 1) - 1}")


@dataclass
class ModelConfig(Checked):
    KEY: ClassVar[str] = "model"

    name: str = MISSING
    normalize: bool = False  # subtract the dataset mean / divide by std inside the model (inputs stay in [0,1])
    output: str = "softmax"  # softmax | sigmoid (independent per-class outputs) | exp (RBF: p = exp(logit))

    def validate(self) -> None:
        _check_choice("model.output", self.output, ("softmax", "sigmoid", "exp"))


@dataclass
class SoftmaxModelConfig(ModelConfig):
    pass


@dataclass
class LogisticModelConfig(ModelConfig):
    pass


@dataclass
class MaxoutModelConfig(ModelConfig):
    units: int = count(240)
    pieces: int = count(5)
    layers: int = count(2)
    input_include: float = ranged(0.8, 0, 1, open_low=True)  # include probability of dropout on the input
    hidden_include: float = ranged(0.5, 0, 1, open_low=True)
    max_col_norm: float = non_negative(1.9365)  # 0: off
    init_range: float = positive(0.005)


@dataclass
class RbfModelConfig(ModelConfig):
    init_beta: float = positive(0.01)


@dataclass
class CnnModelConfig(ModelConfig):
    channels: list[int] = count([32, 64])
    hidden: int = count(128)
    dropout: float = ranged(0.0, 0, 1, open_high=True)  # a drop probability


@dataclass
class ConvMaxoutModelConfig(ModelConfig):
    channels: list[int] = count([96, 192, 192])
    pieces: int = count(2)
    kernels: list[int] = count([5, 5, 3])
    fc_units: int = count(500)
    fc_pieces: int = count(5)
    dropout: float = ranged(0.5, 0, 1, open_high=True)
    max_col_norm: float = non_negative(1.9365)

    def validate(self) -> None:
        super().validate()
        _check(len(self.channels) == len(self.kernels), "model.channels and model.kernels need the same length")


@dataclass
class ReluMlpModelConfig(ModelConfig):
    width: int = count(1000)
    depth: int = count(2)


@dataclass
class QuadraticModelConfig(ModelConfig):
    hidden: int | None = count(None)  # None: as many hidden units as input dimensions


@dataclass
class ResNetModelConfig(ModelConfig):
    depth: int = 18
    width: int = count(64)

    def validate(self) -> None:
        super().validate()
        _check_choice("model.depth", str(self.depth), ("18", "50"))


@dataclass
class VitModelConfig(ModelConfig):
    """A small ViT for MAE (He et al. 2022); Li et al.'s CIFAR-10 scale: patch 8, width 384, depth 12, heads 6."""

    normalize: bool = True
    patch_size: int = count(4)  # must divide the image side
    width: int = count(64)  # a multiple of 4 (2-D sin-cos positions) and of heads
    depth: int = count(4)
    heads: int = count(4)
    mlp_ratio: int = count(4)  # the ViT convention: MLP hidden width = 4 x width
    decoder_width: int = count(64)  # MAE's decoder: narrower than its encoder at paper scale (512 vs 1024)
    decoder_depth: int = count(2)
    decoder_heads: int = count(4)

    def validate(self) -> None:
        super().validate()
        for width, heads, key in ((self.width, self.heads, "model.width"),
                                  (self.decoder_width, self.decoder_heads, "model.decoder_width")):
            _check(width % 4 == 0, f"{key}={width} must be a multiple of 4 (2-D sin-cos positions)")
            _check(width % heads == 0, f"{key}={width} must be a multiple of its number of heads ({heads})")


@dataclass
class UNetModelConfig(ModelConfig):
    """A small DDPM UNet (Ho et al. 2020); paper scale: channels 128, T = 1000. Its beta schedule and the step of
    Li et al.'s representation are model keys, since features(x) depends on them."""

    channels: int = count(32)  # base width; level i has channels * multipliers[i]
    multipliers: list[int] = count([1, 2, 2])  # one level each; downsampling by 2 between levels
    res_blocks: int = count(1)  # residual blocks per level (Ho et al.: 2)
    dropout: float = ranged(0.0, 0, 1, open_high=True)  # Ho et al.: 0.1 on CIFAR-10
    timesteps: int = count(1000)  # T
    beta_start: float = ranged(1e-4, 0, 1, open_low=True, open_high=True)
    beta_end: float = ranged(0.02, 0, 1, open_low=True, open_high=True)
    feature_t: int = non_negative(11)  # the noise step of the representation (Li et al.'s code)

    def validate(self) -> None:
        super().validate()
        _check(not self.normalize, "model=unet scales its inputs to [-1, 1] itself (DDPM); set model.normalize=false")
        _check(self.beta_start < self.beta_end, f"model.beta_start={self.beta_start} must be < model.beta_end")
        _check(self.feature_t < self.timesteps,
               f"model.feature_t={self.feature_t} must be < model.timesteps={self.timesteps}")


@dataclass
class OptimConfig(Checked):
    KEY: ClassVar[str] = "optim"

    name: str = MISSING  # sgd | adam
    lr: float = positive(0.1)
    momentum: float = ranged(0.0, 0, 1, open_high=True)
    momentum_final: float | None = ranged(None, 0, 1, open_high=True)  # ramp from `momentum` up to saturate_epochs
    # epoch at which the linear/cosine lr decay and the momentum ramp reach their final values and stay (pylearn2's
    # `saturate`: 250 in the maxout recipe); None: the run's last epoch, i.e. the ramps are compressed to the run
    saturate_epochs: int | None = count(None)
    nesterov: bool = False
    betas: list[float] = ranged([0.9, 0.999], 0, 1, open_high=True)
    weight_decay: float = non_negative(0.0)
    l1_first_layer: float = non_negative(0.0)  # L1 penalty on the first layer's weights (Goodfellow 2015, Sec. 5)
    schedule: str = "constant"  # constant | linear | cosine | step
    lr_final_factor: float = probability(0.0)  # linear/cosine end at lr * this
    step_every: int = count(50)  # step schedule: lr * step_gamma every this many epochs
    step_gamma: float = ranged(0.1, 0, 1, open_low=True)

    def validate(self) -> None:
        _check_choice("optim.name", self.name, ("sgd", "adam"))
        _check_choice("optim.schedule", self.schedule, ("constant", "linear", "cosine", "step"))
        _check(len(self.betas) == 2, f"optim.betas needs two values, got {self.betas}")


AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-t", "square")  # advx.autoattack.COMPONENTS (schema stays torch-free)


@dataclass
class AttackConfig(Checked):
    """One threat model and its search. `eps` may be one number or a list (one evaluation per value)."""

    KEY: ClassVar[str] = "attack"

    name: str = MISSING  # none | fgsm | pgd | sign_noise | uniform_noise | autoattack
    eps: Any = 0.0  # float or list of floats >= 0, in pixel units of [0,1] inputs (checked in `validate`)
    norm: str = "linf"  # linf | l2
    steps: int = count(1)  # gradient steps per restart; autoattack: APGD iterations per run (its yaml: 100)
    step_size: float | None = positive(None)  # None: 2.5 * eps / steps (Madry et al.'s rule)
    random_start: bool = False
    restarts: int = count(1)
    targeted: bool = False
    target: str = "random"  # random | next  (next: t = (y + 1) mod C)
    clip: bool | None = None  # clip to the [0,1] box after every step; None: attacks.default_clip (pgd, autoattack)
    batch_size: int = count(1000)
    # autoattack only (advx.autoattack); restarts count per component there (apgd-t: per target class)
    components: list[str] = field(default_factory=lambda: list(AUTOATTACK_COMPONENTS))  # run in this order
    targets: int = count(9)  # apgd-t's target classes (the standard version's 9; at most classes - 1)
    square_queries: int = count(5000)  # Square's queries per example (the standard version's 5000)

    def validate(self) -> None:
        _check_choice("attack.name", self.name, ("none", "fgsm", "pgd", "sign_noise", "uniform_noise", "autoattack"))
        if self.clip is None:
            self.clip = _default_clip(self.name)
        _check(len(self.components) > 0, "attack.components must not be empty")
        for component in self.components:
            _check_choice("attack.components", component, AUTOATTACK_COMPONENTS)
        _check(len(set(self.components)) == len(self.components),
               f"attack.components lists a component twice: {list(self.components)}")
        if self.name == "autoattack":
            _check(not self.targeted, "attack=autoattack is untargeted (apgd-t is one of its components); set "
                                      "attack.targeted=false")
            _check(self.step_size is None, "attack=autoattack sets its own step sizes (APGD starts at 2 * eps and "
                                           "halves it); set attack.step_size=null")
        _check_choice("attack.norm", self.norm, NORMS)
        _check_choice("attack.target", self.target, ("random", "next"))
        values = list(self.eps) if isinstance(self.eps, list | tuple) else [self.eps]
        for value in values:
            _check(isinstance(value, int | float) and not isinstance(value, bool),
                   f"attack.eps must be a number or a list of numbers, got {value!r}")
        Bound(0).check("attack.eps", values)
        self.eps = [float(v) for v in values]


@dataclass
class RegimeConfig(Checked):
    """The training objective: standard, Goodfellow's alpha-mixed FGSM, Madry's PGD, noise augmentation, or a
    self-supervised pretext task (simclr | mae | ddpm: advx.pretext; the head stays untrained)."""

    KEY: ClassVar[str] = "regime"

    name: str = MISSING  # standard | fgsm_adv | pgd_adv | noise | simclr | mae | ddpm
    alpha: float = probability(0.5)  # weight of the clean loss in J~ = alpha*J(x) + (1-alpha)*J(x_adv)
    eps: float = non_negative(0.25)
    norm: str = "linf"
    steps: int = count(1)
    step_size: float | None = positive(None)
    random_start: bool = False
    # eps warm-up (a standard remedy when PGD training stalls at chance): epoch e < N of training uses
    # eps * (e + 1) / N, the step size in proportion; 0: the full eps from the first epoch
    eps_warmup_epochs: int = non_negative(0)
    noise: str = "sign"  # noise regime: sign (x + eps*sign(N)) | uniform (x + U(-eps, eps))
    clip: bool | None = None  # None: the regime attack's default (attacks.default_clip): pgd_adv clips, others not
    # simclr (Chen et al. 2020)
    temperature: float = positive(0.5)  # NT-Xent tau; conf/regime/simclr.yaml says why 0.5 at the cpu scale
    projection_hidden: int | None = count(None)  # projection MLP widths; None: D (hidden) and D // 2 (output)
    projection_dim: int | None = count(None)
    crop_scale: float = ranged(0.2, 0, 1, open_low=True)  # smallest area fraction of the random resized crop
    flip: bool = False  # random horizontal flips: natural images (CIFAR-10), not digits
    jitter: float = non_negative(0.5)  # colour-distortion strength s (3-channel data only; Chen et al.'s CIFAR s)
    grayscale: float = probability(0.2)  # random grayscale probability (3-channel data only)
    blur: float = probability(0.0)  # gaussian-blur probability (Chen et al. skip it on CIFAR-10's 32x32 images)
    # mae (He et al. 2022)
    mask_ratio: float = ranged(0.75, 0, 1, open_low=True, open_high=True)
    norm_pix_loss: bool = False  # per-patch normalised target (MAE's better variant at ImageNet scale)

    def validate(self) -> None:
        _check_choice("regime.name", self.name,
                      ("standard", "fgsm_adv", "pgd_adv", "noise", "simclr", "mae", "ddpm"))
        _check_choice("regime.norm", self.norm, NORMS)
        _check_choice("regime.noise", self.noise, ("sign", "uniform"))
        if self.clip is None:
            self.clip = _default_clip(self.name)


@dataclass
class RuntimeConfig(Checked):
    KEY: ClassVar[str] = "runtime"

    device: str = "auto"  # auto: cuda if available, else cpu
    precision: str = "auto"  # auto: bf16 autocast on cuda, fp32 on cpu
    compile: bool = False  # torch.compile the model (worth it on a GPU for long runs)
    # auto: channels-last convolutions on CUDA, and on the CPU for models whose convolutions all have stride 1
    # (1.25-1.6x faster CNN steps there; other strides are unsafe on the CPU, see advx.runtime) | never
    channels_last: str = "auto"
    deterministic: bool = False
    progress: bool = True  # rich progress bars (always off when stdout is not a terminal)

    def validate(self) -> None:
        _check_choice("runtime.device", self.device, DEVICES)
        _check_choice("runtime.precision", self.precision, PRECISIONS)
        _check_choice("runtime.channels_last", self.channels_last, ("auto", "never"))


@dataclass
class LoopConfig(Checked):
    KEY: ClassVar[str] = "train"

    epochs: int = count(10)
    batch_size: int = count(100)
    patience: int = non_negative(0)  # early-stop after this many epochs without validation improvement (0: off)
    early_stop_on: str = "val_error"  # val_error | val_adv_error (Goodfellow's 1600-unit model)
    eval_batch_size: int = count(1000)
    augment: str = "none"  # none | crop (random shifts) | crop_flip (and horizontal flips: CIFAR-10, not digits)
    crop_padding: int = non_negative(4)  # shifts of up to this many pixels, zero padded (the CIFAR-10 convention)

    def validate(self) -> None:
        _check_choice("train.augment", self.augment, ("none", "crop", "crop_flip"))
        _check_choice("train.early_stop_on", self.early_stop_on, ("val_error", "val_adv_error"))


@dataclass
class TrainTaskConfig(Checked):
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = MISSING
    regime: RegimeConfig = MISSING
    attack: AttackConfig = MISSING  # evaluated on the test set when training ends (none: skip)
    runtime: RuntimeConfig = MISSING
    train: LoopConfig = field(default_factory=LoopConfig)
    seed: int = 0  # in [0, 2**31): held-out data is seeded in [2**31, 2**32)
    resume: str | None = None  # a run dir to continue (the bridge reuses its overrides and directory)

    def validate(self) -> None:
        _check_seed(self.seed)
        dataset = self.dataset  # MISSING ("???") until composed
        if not isinstance(dataset, DatasetConfig):
            return
        if dataset.preprocess == "gcn_zca" or dataset.name == "spheres":
            data = "dataset.preprocess=gcn_zca" if dataset.preprocess == "gcn_zca" else "dataset=spheres"
            for key, group in (("regime.clip", self.regime), ("attack.clip", self.attack)):  # data.require_box's rule
                _check(not getattr(group, "clip", False),
                       f"{key}=true clips to the [0, 1] box, but {data} has none; set {key}=false")
        _check(not self.train.patience or dataset.val_size > 0,
               "train.patience needs a validation split: set dataset.val_size > 0")


@dataclass
class AttackTaskConfig(Checked):
    run: str = MISSING  # run dir of the model under attack
    source: str | None = None  # run dir of the model that crafts the examples (transfer); None: `run`
    attack: AttackConfig = MISSING
    runtime: RuntimeConfig = MISSING
    split: str = "test"  # test | train | val (the held-out end of the run's training set, or its source's)
    num_examples: int | None = count(None)  # first N examples of the split (None: all)
    data_dir: str | None = None  # where the dataset is now, if not where the run was trained
    derived: str | None = None  # evaluate on this derived dataset (an `advx construct` dir) instead of the run's own
    seed: int = 0

    def validate(self) -> None:
        _check_seed(self.seed)
        _check_choice("split", self.split, ("test", "train", "val"))


@dataclass
class ConstructConfig(Checked):
    """How `advx construct` derives a dataset from a source model (Ilyas et al. 2019, Sec. 3.1 and 3.2).

    robust / nonrobust: representation inversion from a random other training image towards each example's
    penultimate representation (robust: of a robust model; nonrobust: of a standard one), label kept.
    drand / ddet: targeted L2 PGD towards t (uniform random, or (y + 1) mod C), relabelled t.
    dnoise: D_det's labels with x moved by a fixed random pattern of class t of L2 norm eps (the leakage control).
    """

    KEY: ClassVar[str] = "construct"

    kind: str = MISSING  # robust | nonrobust | drand | ddet | dnoise
    steps: int = count(1000)  # normalised-gradient steps
    step_size: float = positive(0.1)  # L2 length of each step, in pixel units of [0, 1] inputs
    eps: float = positive(0.5)  # drand / ddet: the targeted attack's L2 radius; dnoise: the patterns' norm
    num_examples: int | None = count(None)  # the first N training examples of the source's dataset (None: all)
    chunk_size: int = count(500)  # examples per batch and per saved chunk: a killed run loses at most one chunk

    def validate(self) -> None:
        _check_choice("construct.kind", self.kind, ("robust", "nonrobust", "drand", "ddet", "dnoise"))

    @property
    def inverts(self) -> bool:
        """True for representation inversion (robust / nonrobust), False for targeted relabelling."""
        return self.kind in ("robust", "nonrobust")


@dataclass
class ConstructTaskConfig(Checked):
    source: str = MISSING  # run dir of the model whose representation or decisions define the dataset
    construct: ConstructConfig = MISSING
    runtime: RuntimeConfig = MISSING
    data_dir: str | None = None  # where the source's dataset is now, if not where it was trained
    seed: int = 0  # picks the start images (inversion) and the random targets (drand)
    resume: str | None = None  # a construct run dir to continue (the bridge reuses its overrides and directory)

    def validate(self) -> None:
        _check_seed(self.seed)


MODEL_SCHEMAS: dict[str, type[ModelConfig]] = {
    "softmax": SoftmaxModelConfig,
    "logistic": LogisticModelConfig,
    "maxout": MaxoutModelConfig,
    "rbf": RbfModelConfig,
    "cnn": CnnModelConfig,
    "conv_maxout": ConvMaxoutModelConfig,
    "relu_mlp": ReluMlpModelConfig,
    "quadratic": QuadraticModelConfig,
    "resnet": ResNetModelConfig,
    "vit": VitModelConfig,
    "unet": UNetModelConfig,
}


@dataclass
class ReproduceTaskConfig(Checked):
    paper: Any = MISSING  # the paper's own schema (`Config` of its module in advx.papers)
    scale: str = "cpu"  # smoke (seconds, synthetic data) | cpu (real data, a 2-core CPU) | paper (a GPU)
    seed: int = 0
    store: str = "outputs/stages"  # the stage store every reproduction shares (relative to the working dir)
    reuse: str = "exact"  # exact: reuse a stage only if made by this code from the same inputs | any: same inputs
    data_dir: str = "${oc.env:ADVX_DATA_DIR,data}"
    runtime: RuntimeConfig = MISSING

    def validate(self) -> None:
        _check_seed(self.seed)
        _check_choice("scale", self.scale, ("smoke", "cpu", "paper"))
        _check_choice("reuse", self.reuse, ("exact", "any"))
        scales = getattr(self.paper, "scales", {})
        _check(self.scale in scales, f"paper {getattr(self.paper, 'name', '?')} has no scale {self.scale!r}")


@dataclass
class ProbeConfig(Checked):
    """The linear probe of `advx probe` (Li et al. 2023): softmax regression on an encoder's frozen features."""

    KEY: ClassVar[str] = "probe"

    epochs: int = count(30)  # passes over the cached features; the fit is convex, so it converges well before
    lr: float = positive(0.01)  # Adam on standardised features
    batch_size: int = count(256)
    weight_decay: float = non_negative(0.0)
    eval_batch_size: int = count(1000)  # examples per forward pass when caching features and scoring
    untrained: bool = False  # probe the architecture at its seeded random initialisation (the control)


@dataclass
class ProbeTaskConfig(Checked):
    run: str = MISSING  # run dir of the encoder (any `advx train` run; its features(x) is the representation)
    dataset: DatasetConfig | None = None  # the probe's training and test data (None: the encoder's own dataset)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    runtime: RuntimeConfig = MISSING
    data_dir: str | None = None  # where the dataset is now, if not where the encoder was trained
    seed: int = 0  # the probe's minibatch order (and the untrained encoder's initialisation)

    def validate(self) -> None:
        _check_seed(self.seed)
