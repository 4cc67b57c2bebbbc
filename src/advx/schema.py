"""Structured-config schemas: the typed shape of every config group.

Hydra merges the YAML files in `conf/` onto these dataclasses, so a value of the wrong type or a key that does
not exist fails while the config is composed, before any work starts. `OmegaConf.to_object` then builds the
dataclasses, and each `__post_init__` checks value ranges (eps >= 0, probabilities in (0, 1], ...).

The dataclasses are plain Python (no Hydra import): `hydra_bridge.py` registers them with Hydra's ConfigStore,
and the library code receives them as ordinary typed objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advx.errors import ConfigError

MISSING: Any = "???"  # OmegaConf's missing-value marker is this string: no omegaconf import in the core

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NORMS = ("linf", "l2")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_seed(seed: int) -> None:
    # held-out data is seeded in [2**31, 2**32) (runtime.held_out_generator): no run seed may reach it
    _check(0 <= seed < 2**31, f"seed must be in [0, 2**31), got {seed}")


def _default_clip(name: str) -> bool:
    from advx.attacks import default_clip  # the one rule, in attacks.py (imported late: schema stays torch-free)

    return default_clip(name)


@dataclass
class DatasetConfig:
    name: str = MISSING  # mnist | cifar10 | synthetic | spheres | derived (mnist_3v7 is mnist with classes=[3,7])
    data_dir: str = "${oc.env:ADVX_DATA_DIR,data}"  # where torchvision's folders live (MNIST/raw/...)
    download: bool = False  # these machines are offline; users online may set it
    classes: list[int] | None = None  # keep only these labels, renumbered 0..k-1 (3 vs 7: [3, 7])
    val_size: int = 0  # held out from the end of the training set for early stopping
    train_size: int | None = None  # a prefix subset of the training set (None: all)
    test_size: int | None = None
    shape: str = "mnist"  # synthetic only: mnist (1x28x28) | cifar (3x32x32)
    num_classes: int = 10  # synthetic only
    preprocess: str = "none"  # none (pixels in [0,1]) | gcn_zca (Goodfellow 2015's CIFAR-10 space; use clip=false)
    dim: int = 500  # spheres only: the dimension d
    radius_outer: float = 1.3  # spheres only: the outer radius R (the inner one is 1)
    path: str | None = None  # derived only: an `advx construct` run dir, or a folder of released CIFAR_ims/CIFAR_lab
    base: str = "cifar10"  # derived from released files only: whose test split to evaluate on (ours record theirs)

    def __post_init__(self) -> None:
        _check_choice("dataset.name", self.name, ("mnist", "cifar10", "synthetic", "spheres", "derived"))
        _check(self.name != "derived" or bool(self.path), "dataset=derived needs dataset.path=<construct run dir>")
        _check_choice("dataset.base", self.base, ("mnist", "cifar10", "synthetic"))
        _check(self.dim >= 2 and self.radius_outer > 1, "dataset.dim must be >= 2 and dataset.radius_outer > 1")
        _check_choice("dataset.shape", self.shape, ("mnist", "cifar"))
        _check_choice("dataset.preprocess", self.preprocess, ("none", "gcn_zca"))
        _check(self.val_size >= 0, f"dataset.val_size must be >= 0, got {self.val_size}")
        for key in ("train_size", "test_size"):
            value = getattr(self, key)
            _check(value is None or value > 0, f"dataset.{key} must be > 0 or null, got {value}")
        _check(self.num_classes >= 2, f"dataset.num_classes must be >= 2, got {self.num_classes}")


@dataclass
class ModelConfig:
    name: str = MISSING
    normalize: bool = False  # subtract the dataset mean / divide by std inside the model (inputs stay in [0,1])
    output: str = "softmax"  # softmax | sigmoid (independent per-class outputs) | exp (RBF: p = exp(logit))

    def __post_init__(self) -> None:
        _check_choice("model.output", self.output, ("softmax", "sigmoid", "exp"))


@dataclass
class SoftmaxModelConfig(ModelConfig):
    pass


@dataclass
class LogisticModelConfig(ModelConfig):
    pass


@dataclass
class MaxoutModelConfig(ModelConfig):
    units: int = 240
    pieces: int = 5
    layers: int = 2
    input_include: float = 0.8
    hidden_include: float = 0.5
    max_col_norm: float = 1.9365
    init_range: float = 0.005

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.units > 0 and self.pieces > 0 and self.layers > 0, "model.units/pieces/layers must be > 0")
        for key in ("input_include", "hidden_include"):
            value = getattr(self, key)
            _check(0 < value <= 1, f"model.{key} is an include probability in (0, 1], got {value}")
        _check(self.max_col_norm >= 0, f"model.max_col_norm must be >= 0 (0: off), got {self.max_col_norm}")


@dataclass
class RbfModelConfig(ModelConfig):
    init_beta: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.init_beta > 0, f"model.init_beta must be > 0, got {self.init_beta}")


@dataclass
class CnnModelConfig(ModelConfig):
    channels: list[int] = field(default_factory=lambda: [32, 64])
    hidden: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.dropout < 1, f"model.dropout is a drop probability in [0, 1), got {self.dropout}")


@dataclass
class ConvMaxoutModelConfig(ModelConfig):
    channels: list[int] = field(default_factory=lambda: [96, 192, 192])
    pieces: int = 2
    kernels: list[int] = field(default_factory=lambda: [5, 5, 3])
    fc_units: int = 500
    fc_pieces: int = 5
    dropout: float = 0.5
    max_col_norm: float = 1.9365

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(len(self.channels) == len(self.kernels), "model.channels and model.kernels need the same length")
        _check(0 <= self.dropout < 1, f"model.dropout is a drop probability in [0, 1), got {self.dropout}")


@dataclass
class ReluMlpModelConfig(ModelConfig):
    width: int = 1000
    depth: int = 2


@dataclass
class QuadraticModelConfig(ModelConfig):
    hidden: int | None = None  # None: as many hidden units as input dimensions


@dataclass
class ResNetModelConfig(ModelConfig):
    depth: int = 18
    width: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("model.depth", str(self.depth), ("18", "50"))


@dataclass
class OptimConfig:
    name: str = MISSING  # sgd | adam
    lr: float = 0.1
    momentum: float = 0.0
    momentum_final: float | None = None  # ramp linearly from `momentum` to this over `momentum_epochs`
    momentum_epochs: int | None = None  # None: over the whole run
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    l1_first_layer: float = 0.0  # L1 penalty on the first layer's weights (Goodfellow 2015, Sec. 5)
    schedule: str = "constant"  # constant | linear | cosine | step
    lr_final_factor: float = 0.0  # linear/cosine end at lr * this
    step_every: int = 50
    step_gamma: float = 0.1

    def __post_init__(self) -> None:
        _check_choice("optim.name", self.name, ("sgd", "adam"))
        _check_choice("optim.schedule", self.schedule, ("constant", "linear", "cosine", "step"))
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(0 <= self.momentum < 1, f"optim.momentum must be in [0, 1), got {self.momentum}")
        final = self.momentum_final
        _check(final is None or 0 <= final < 1, f"optim.momentum_final must be in [0, 1), got {final}")
        _check(self.weight_decay >= 0 and self.l1_first_layer >= 0, "optim weight decays must be >= 0")
        _check(len(self.betas) == 2, f"optim.betas needs two values, got {self.betas}")


@dataclass
class AttackConfig:
    """One threat model and its search. `eps` may be one number or a list (one evaluation per value)."""

    name: str = MISSING  # none | fgsm | pgd | sign_noise | uniform_noise
    eps: Any = 0.0  # float or list of floats, in pixel units of [0,1] inputs
    norm: str = "linf"  # linf | l2
    steps: int = 1
    step_size: float | None = None  # None: 2.5 * eps / steps (Madry et al.'s rule)
    random_start: bool = False
    restarts: int = 1
    targeted: bool = False
    target: str = "random"  # random | next  (next: t = (y + 1) mod C)
    clip: bool | None = None  # clip to the [0,1] box after every step; None: attacks.default_clip (pgd only)
    batch_size: int = 1000

    def __post_init__(self) -> None:
        _check_choice("attack.name", self.name, ("none", "fgsm", "pgd", "sign_noise", "uniform_noise"))
        if self.clip is None:
            self.clip = _default_clip(self.name)
        _check_choice("attack.norm", self.norm, NORMS)
        _check_choice("attack.target", self.target, ("random", "next"))
        values = self.eps if isinstance(self.eps, list | tuple) else [self.eps]
        for value in values:
            _check(
                isinstance(value, int | float) and not isinstance(value, bool),
                f"attack.eps must be a number or a list of numbers, got {value!r}",
            )
            _check(value >= 0, f"attack.eps must be >= 0, got {value}")
        self.eps = [float(v) for v in values]
        _check(self.steps >= 1, f"attack.steps must be >= 1, got {self.steps}")
        _check(self.restarts >= 1, f"attack.restarts must be >= 1, got {self.restarts}")
        _check(self.step_size is None or self.step_size > 0, f"attack.step_size must be > 0, got {self.step_size}")
        _check(self.batch_size > 0, f"attack.batch_size must be > 0, got {self.batch_size}")


@dataclass
class RegimeConfig:
    """The training objective: standard, Goodfellow's alpha-mixed FGSM, Madry's PGD, or noise augmentation."""

    name: str = MISSING  # standard | fgsm_adv | pgd_adv | noise
    alpha: float = 0.5  # weight of the clean loss in J~ = alpha*J(x) + (1-alpha)*J(x_adv)
    eps: float = 0.25
    norm: str = "linf"
    steps: int = 1
    step_size: float | None = None
    random_start: bool = False
    noise: str = "sign"  # noise regime: sign (x + eps*sign(N)) | uniform (x + U(-eps, eps))
    clip: bool | None = None  # None: the regime attack's default (attacks.default_clip): pgd_adv clips, others not

    def __post_init__(self) -> None:
        _check_choice("regime.name", self.name, ("standard", "fgsm_adv", "pgd_adv", "noise"))
        _check_choice("regime.norm", self.norm, NORMS)
        _check_choice("regime.noise", self.noise, ("sign", "uniform"))
        if self.clip is None:
            self.clip = _default_clip(self.name)
        _check(0 <= self.alpha <= 1, f"regime.alpha must be in [0, 1], got {self.alpha}")
        _check(self.eps >= 0, f"regime.eps must be >= 0, got {self.eps}")
        _check(self.steps >= 1, f"regime.steps must be >= 1, got {self.steps}")


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: str = "auto"  # auto: bf16 autocast on cuda, fp32 on cpu
    compile: bool = False  # torch.compile the model (worth it on a GPU for long runs)
    deterministic: bool = False
    progress: bool = True  # rich progress bars (always off when stdout is not a terminal)

    def __post_init__(self) -> None:
        _check_choice("runtime.device", self.device, DEVICES)
        _check_choice("runtime.precision", self.precision, PRECISIONS)


@dataclass
class LoopConfig:
    epochs: int = 10
    batch_size: int = 100
    patience: int = 0  # early-stop after this many epochs without validation improvement (0: off)
    early_stop_on: str = "val_error"  # val_error | val_adv_error (Goodfellow's 1600-unit model)
    eval_batch_size: int = 1000
    augment: str = "none"  # none | crop (random shifts) | crop_flip (and horizontal flips: CIFAR-10, not digits)
    crop_padding: int = 4  # shifts of up to this many pixels, zero padded (the CIFAR-10 convention)

    def __post_init__(self) -> None:
        _check_choice("train.augment", self.augment, ("none", "crop", "crop_flip"))
        _check(self.crop_padding >= 0, f"train.crop_padding must be >= 0, got {self.crop_padding}")
        _check(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        _check(self.patience >= 0, f"train.patience must be >= 0, got {self.patience}")
        _check_choice("train.early_stop_on", self.early_stop_on, ("val_error", "val_adv_error"))


@dataclass
class TrainTaskConfig:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = MISSING
    regime: RegimeConfig = MISSING
    attack: AttackConfig = MISSING  # evaluated on the test set when training ends (none: skip)
    runtime: RuntimeConfig = MISSING
    train: LoopConfig = field(default_factory=LoopConfig)
    seed: int = 0  # in [0, 2**31): held-out data is seeded in [2**31, 2**32)
    resume: str | None = None  # a run dir to continue (the bridge reuses its overrides and directory)

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        dataset = self.dataset  # MISSING ("???") until composed
        if isinstance(dataset, DatasetConfig) and (dataset.preprocess == "gcn_zca" or dataset.name == "spheres"):
            data = "dataset.preprocess=gcn_zca" if dataset.preprocess == "gcn_zca" else "dataset=spheres"
            for key, group in (("regime.clip", self.regime), ("attack.clip", self.attack)):  # data.require_box's rule
                _check(not getattr(group, "clip", False),
                       f"{key}=true clips to the [0, 1] box, but {data} has none; set {key}=false")


@dataclass
class AttackTaskConfig:
    run: str = MISSING  # run dir of the model under attack
    source: str | None = None  # run dir of the model that crafts the examples (transfer); None: `run`
    attack: AttackConfig = MISSING
    runtime: RuntimeConfig = MISSING
    split: str = "test"  # test | train
    num_examples: int | None = None  # first N examples of the split (None: all)
    data_dir: str | None = None  # where the dataset is now, if not where the run was trained
    derived: str | None = None  # evaluate on this derived dataset (an `advx construct` dir) instead of the run's own
    seed: int = 0

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        _check_choice("split", self.split, ("test", "train"))
        _check(self.num_examples is None or self.num_examples > 0, "num_examples must be > 0 or null")


@dataclass
class ConstructConfig:
    """How `advx construct` derives a dataset from a source model (Ilyas et al. 2019, Sec. 3.1 and 3.2).

    robust / nonrobust: representation inversion from a random other training image towards each example's
    penultimate representation (robust: of a robust model; nonrobust: of a standard one), label kept.
    drand / ddet: targeted L2 PGD towards t (uniform random, or (y + 1) mod C), relabelled t.
    """

    kind: str = MISSING  # robust | nonrobust | drand | ddet
    steps: int = 1000  # normalised-gradient steps
    step_size: float = 0.1  # L2 length of each step, in pixel units of [0, 1] inputs
    eps: float = 0.5  # drand / ddet: radius of the targeted attack's L2 ball (inversion is unbounded)
    num_examples: int | None = None  # the first N training examples of the source's dataset (None: all)
    chunk_size: int = 500  # examples per batch and per saved chunk: a killed run loses at most one chunk

    def __post_init__(self) -> None:
        _check_choice("construct.kind", self.kind, ("robust", "nonrobust", "drand", "ddet"))
        _check(self.steps >= 1, f"construct.steps must be >= 1, got {self.steps}")
        _check(self.step_size > 0 and self.eps > 0, "construct.step_size and construct.eps must be > 0")
        _check(self.num_examples is None or self.num_examples > 0, "construct.num_examples must be > 0 or null")
        _check(self.chunk_size > 0, f"construct.chunk_size must be > 0, got {self.chunk_size}")

    @property
    def inverts(self) -> bool:
        """True for representation inversion (robust / nonrobust), False for targeted relabelling."""
        return self.kind in ("robust", "nonrobust")


@dataclass
class ConstructTaskConfig:
    source: str = MISSING  # run dir of the model whose representation or decisions define the dataset
    construct: ConstructConfig = MISSING
    runtime: RuntimeConfig = MISSING
    data_dir: str | None = None  # where the source's dataset is now, if not where it was trained
    seed: int = 0  # picks the start images (inversion) and the random targets (drand)
    resume: str | None = None  # a construct run dir to continue (the bridge reuses its overrides and directory)

    def __post_init__(self) -> None:
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
}



@dataclass
class ReproduceTaskConfig:
    paper: Any = MISSING  # the paper's own schema (`Config` of its module in advx.papers)
    scale: str = "cpu"  # smoke (seconds, synthetic data) | cpu (real data, a 2-core CPU) | paper (a GPU)
    seed: int = 0
    store: str = "outputs/stages"  # the stage store every reproduction shares (relative to the working dir)
    reuse: str = "exact"  # exact: reuse a stage only if made by this code from the same inputs | any: same inputs
    data_dir: str = "${oc.env:ADVX_DATA_DIR,data}"
    runtime: RuntimeConfig = MISSING

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        _check_choice("scale", self.scale, ("smoke", "cpu", "paper"))
        _check_choice("reuse", self.reuse, ("exact", "any"))
        scales = getattr(self.paper, "scales", {})
        _check(self.scale in scales, f"paper {getattr(self.paper, 'name', '?')} has no scale {self.scale!r}")
