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

from omegaconf import MISSING

from advx.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NORMS = ("linf", "l2")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


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
    clip: bool = True  # clip to the [0,1] box after every step (Goodfellow 2015 never clips)
    batch_size: int = 1000

    def __post_init__(self) -> None:
        _check_choice("attack.name", self.name, ("none", "fgsm", "pgd", "sign_noise", "uniform_noise"))
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
    clip: bool = False

    def __post_init__(self) -> None:
        _check_choice("regime.name", self.name, ("standard", "fgsm_adv", "pgd_adv", "noise"))
        _check_choice("regime.norm", self.norm, NORMS)
        _check_choice("regime.noise", self.noise, ("sign", "uniform"))
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
    seed: int = 0
    resume: str | None = None  # a run dir to continue (the bridge reuses its overrides and directory)


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
class Goodfellow2015Scale:
    """Sizes of one scale of the goodfellow2015 pipeline (epochs per model family, ensemble size, ...)."""

    dataset: str = "mnist"  # mnist | synthetic (smoke)
    train_size: int | None = None
    test_size: int | None = None
    val_size: int = 0  # > 0 with patience: the paper's early stopping on a validation split
    patience: int = 0
    maxout_epochs: int = 30
    maxout_schedule: str = "linear"  # linear: pylearn2's lr decay to 0.05x, compressed to the run | constant
    adv_epochs: int = 20
    control_epochs: int = 10  # sign / uniform noise, sigmoid-output maxout, ensemble members
    softmax_epochs: int = 10
    rbf_epochs: int = 10
    logistic_epochs: int = 10
    l1_epochs: int = 5
    ensemble_members: int = 3  # the paper's ensemble has 12
    large_units: int = 0  # 1600-unit variant (paper scale); 0 skips it
    large_epochs: int = 0
    rubbish_samples: int = 10000
    cifar: bool = False  # the conv-maxout CIFAR-10 arm (needs CIFAR-10 on disk)
    cifar_epochs: int = 0
    cifar_synthetic: bool = False  # run the CIFAR arm on synthetic CIFAR-shaped data (tests)
    cifar_channels: list[int] = field(default_factory=lambda: [96, 192, 192])
    cifar_fc_units: int = 500

    def __post_init__(self) -> None:
        _check_choice("maxout_schedule", self.maxout_schedule, ("linear", "constant"))


@dataclass
class Goodfellow2015Config:
    name: str = "goodfellow2015"
    eps: float = 0.25  # the paper's MNIST FGSM size
    cifar_eps: float = 0.1  # in GCN+ZCA space
    eps_grid: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    l1: float = 0.0025
    scales: dict[str, Goodfellow2015Scale] = field(default_factory=dict)


@dataclass
class Gilmer2018Scale:
    """Sizes of one scale of the gilmer2018 pipeline."""

    dims: list[int] = field(default_factory=lambda: [50, 100, 200, 500])
    budgets: list[int] = field(default_factory=lambda: [1, 2, 4])  # epochs of fresh samples; one stage each
    samples_per_epoch: int = 100_000
    batch_size: int = 50
    lr: float = 1e-4  # Adam, as in public reproductions
    relu_width: int = 1000
    relu_depth: int = 2
    error_samples: int = 1_000_000  # Monte Carlo points per sphere for the error rate
    search_points: int = 1000  # points whose nearest error is searched (d(E) is their mean)
    search_steps: int = 400
    search_step: float = 0.01  # chord length of a step, as a fraction of the radius
    restarts: int = 2
    calibration_mus: list[float] = field(default_factory=lambda: [0.01, 0.001])


@dataclass
class Gilmer2018Config:
    name: str = "gilmer2018"
    radius_outer: float = 1.3
    scales: dict[str, Gilmer2018Scale] = field(default_factory=dict)


@dataclass
class Ilyas2019Scale:
    """Sizes of one scale of the ilyas2019 pipeline."""

    dataset: str = "cifar10"  # cifar10 (paper) | mnist (cpu) | synthetic (smoke)
    train_size: int | None = None
    test_size: int | None = None
    model: list[str] = field(default_factory=lambda: ["model=resnet50"])  # overrides naming the architecture
    source_epochs: int = 150  # the standard and the robust source models
    source_step_every: int = 50  # their lr x 0.1 every this many epochs (the robustness library's default)
    epochs: int = 150  # models trained on the derived datasets (not published; the library default)
    step_every: int = 50
    augment: str = "crop_flip"  # the paper's augmentation, where it is on (MNIST digits: crop only)
    crop_padding: int = 4
    train_eps: float = 0.5  # L2 radius of the robust source's adversarial training
    robust_alpha: float = 0.0  # weight of the clean loss in the robust source's objective (the paper: 0)
    eval_eps: list[float] = field(default_factory=lambda: [0.25, 0.5])  # robust accuracy at these L2 radii
    eval_steps: list[int] = field(default_factory=lambda: [20, 100])  # the authors' rule: step 2.5 * eps / steps
    eval_examples: int | None = None  # test examples under attack (None: all)
    construct_examples: int | None = None  # training examples turned into derived ones (None: all)
    invert_steps: int = 1000
    invert_step_size: float = 0.1
    relabel_eps: float = 0.5
    relabel_steps: int = 100
    relabel_step_size: float = 0.1
    robust_relabel: bool = True  # also build D_rand / D_det from the robust model (Table 2's last comparison)
    chunk_size: int = 500
    gaussian_samples: int = 5000

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, ("cifar10", "mnist", "synthetic"))


@dataclass
class Ilyas2019Config:
    name: str = "ilyas2019"
    # the paper's training of models on derived datasets: SGD, momentum 0.9, weight decay 5e-4, batch 128, and
    lr: dict[str, float] = field(default_factory=lambda: {"robust": 0.1, "nonrobust": 0.1, "drand": 0.01,
                                                          "ddet": 0.1})
    augmented: list[str] = field(default_factory=lambda: ["robust", "nonrobust", "drand"])  # D_det: off
    gaussian_dim: int = 10
    gaussian_smallest_std: float = 0.1  # variances from 0.01 to 1: a condition number of 100
    gaussian_eps: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.5, 1.0, 2.0])
    scales: dict[str, Ilyas2019Scale] = field(default_factory=dict)


PAPER_SCHEMAS: dict[str, type] = {"goodfellow2015": Goodfellow2015Config, "gilmer2018": Gilmer2018Config,
                                  "ilyas2019": Ilyas2019Config}


@dataclass
class ReproduceTaskConfig:
    paper: Any = MISSING  # the paper's own schema (Goodfellow2015Config, ...)
    scale: str = "cpu"  # smoke (seconds, synthetic data) | cpu (real data, a 2-core CPU) | paper (a GPU)
    seed: int = 0
    data_dir: str = "${oc.env:ADVX_DATA_DIR,data}"
    runtime: RuntimeConfig = MISSING

    def __post_init__(self) -> None:
        _check_choice("scale", self.scale, ("smoke", "cpu", "paper"))
        scales = getattr(self.paper, "scales", {})
        _check(self.scale in scales, f"paper {getattr(self.paper, 'name', '?')} has no scale {self.scale!r}")
