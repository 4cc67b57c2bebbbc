"""Model registry. Every model maps inputs in [0, 1] [B, C, H, W] to logits [B, num_classes].

Each model is `head(features(x))`: `features` starts with the input normalisation (when asked) and ends at
the penultimate representation, which is exposed for representation attacks (Ilyas et al. 2019). The
`output` attribute says how logits become probabilities and which loss trains them:

- softmax: p = softmax(z), cross-entropy.
- sigmoid: independent p_c = sigmoid(z_c), one-vs-all binary cross-entropy (Goodfellow 2015's rubbish test).
- exp: p_c = exp(z_c) with z_c <= 0, the RBF network of Goodfellow 2015 (Sec. 5), one-vs-all likelihood.

`build_model(name, ...)` is the registry; a checkpoint's sidecar JSON holds exactly its arguments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advx.errors import ConfigError

OUTPUTS = ("softmax", "sigmoid", "exp")


class Normalize(nn.Module):
    """(x - mean) / std per channel; keeps the model's input space [0, 1] so attacks work in pixels."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """`head(features(x))` with an output kind and an optional max-norm constraint on its linear layers."""

    def __init__(self, features: nn.Module, head: nn.Module, output: str, max_col_norm: float = 0.0):
        super().__init__()
        self.features = features
        self.head = head
        self.output = output
        self.max_col_norm = max_col_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def constrain(self) -> None:
        """Rescale each unit's (or filter's) incoming weights to norm <= max_col_norm (pylearn2's max_col_norm).
        Called after every optimiser step, so the weights it touches are listed once."""
        if self.max_col_norm > 0:
            if not hasattr(self, "_constrained_weights"):
                self._constrained_weights = [m.weight for m in self.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
            for weight in self._constrained_weights:
                weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=self.max_col_norm))

    def first_weight(self) -> torch.Tensor:
        """The first layer's weight (for Goodfellow's L1 weight-decay observation)."""
        return next(p for p in self.parameters() if p.dim() >= 2)


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor, output: str) -> torch.Tensor:
    """Training loss per example [B] for logits [B, C] and integer labels [B], by output kind."""
    if output == "softmax":
        return F.cross_entropy(logits.float(), labels, reduction="none")
    target = F.one_hot(labels, logits.shape[1]).float()
    if output == "sigmoid":
        return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").sum(1)
    # exp: log p_c = z_c, log(1 - p_c) = log(-expm1(z_c)); z is clamped below 0 to keep the log finite.
    z = logits.float().clamp(max=-1e-6)
    return -(target * z + (1 - target) * torch.log(-torch.expm1(z))).sum(1)


def probabilities(logits: torch.Tensor, output: str) -> torch.Tensor:
    """Class probabilities [B, C]; they sum to one only for softmax outputs."""
    if output == "softmax":
        return logits.float().softmax(1)
    if output == "sigmoid":
        return logits.float().sigmoid()
    return logits.float().clamp(max=0).exp()


class Maxout(nn.Module):
    """Linear map to units x pieces, then the max over pieces (Goodfellow et al. 2013). [B, D] -> [B, units]."""

    def __init__(self, in_features: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(x.shape[0], self.units, self.pieces).amax(-1)


class MaxoutConv(nn.Module):
    """Convolution to channels x pieces feature maps, then the max over pieces. [B, C, H, W] -> [B, channels, H, W]."""

    def __init__(self, in_channels: int, channels: int, pieces: int, kernel: int):
        super().__init__()
        self.channels, self.pieces = channels, pieces
        self.conv = nn.Conv2d(in_channels, channels * pieces, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out.view(x.shape[0], self.channels, self.pieces, *out.shape[2:]).amax(2)


class RBF(nn.Module):
    """z_c = -(x - mu_c)^T diag(beta_c) (x - mu_c), beta_c > 0 (Goodfellow 2015, Sec. 5). [B, D] -> [B, C]."""

    def __init__(self, in_features: int, num_classes: int, init_beta: float):
        super().__init__()
        self.mu = nn.Parameter(torch.full((num_classes, in_features), 0.5))
        self.log_beta = nn.Parameter(torch.full((num_classes, in_features), math.log(init_beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.log_beta.exp()
        # sum_d beta (x - mu)^2 expanded, so the batch never materialises [B, C, D]
        quadratic = (x * x) @ beta.T - 2 * x @ (beta * self.mu).T + (beta * self.mu * self.mu).sum(1)
        return -quadratic


class TwoClassLogistic(nn.Module):
    """One linear unit z; logits [0, z] so softmax gives p(class 1) = sigmoid(z). [B, D] -> [B, 2]."""

    def __init__(self, in_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def _stem(normalize: bool, mean: list[float], std: list[float]) -> list[nn.Module]:
    return [Normalize(mean, std)] if normalize else []


def _uniform_init(module: nn.Module, init_range: float) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.uniform_(layer.weight, -init_range, init_range)
            nn.init.zeros_(layer.bias)


def build_softmax(shape, num_classes, mean, std, normalize=False, output="softmax"):
    features = nn.Sequential(*_stem(normalize, mean, std), nn.Flatten())
    return Classifier(features, nn.Linear(math.prod(shape), num_classes), output)


def build_logistic(shape, num_classes, mean, std, normalize=False, output="softmax"):
    if num_classes != 2:
        raise ConfigError(f"model=logistic needs a two-class dataset (e.g. dataset=mnist_3v7), got {num_classes}")
    features = nn.Sequential(*_stem(normalize, mean, std), nn.Flatten())
    return Classifier(features, TwoClassLogistic(math.prod(shape)), output)


def build_maxout(shape, num_classes, mean, std, normalize=False, output="softmax", units=240, pieces=5,
                 layers=2, input_include=0.8, hidden_include=0.5, max_col_norm=1.9365, init_range=0.005):
    blocks: list[nn.Module] = [*_stem(normalize, mean, std), nn.Flatten(), nn.Dropout(1 - input_include)]
    width = math.prod(shape)
    for _ in range(layers):
        blocks += [Maxout(width, units, pieces), nn.Dropout(1 - hidden_include)]
        width = units
    model = Classifier(nn.Sequential(*blocks), nn.Linear(width, num_classes), output, max_col_norm)
    _uniform_init(model, init_range)
    return model


def build_conv_maxout(shape, num_classes, mean, std, normalize=False, output="softmax", channels=(96, 192, 192),
                      pieces=2, kernels=(5, 5, 3), fc_units=500, fc_pieces=5, dropout=0.5, max_col_norm=1.9365):
    """Conv maxout (Goodfellow et al. 2013's CIFAR-10 shape: 3 maxout conv layers, a maxout FC layer, softmax),
    each conv followed by 2x2 max pooling; used by Goodfellow 2015's CIFAR-10 arm on GCN+ZCA inputs."""
    blocks: list[nn.Module] = list(_stem(normalize, mean, std))
    in_channels, side = shape[0], shape[1]
    for width, kernel in zip(channels, kernels, strict=True):
        blocks += [MaxoutConv(in_channels, width, pieces, kernel), nn.MaxPool2d(2), nn.Dropout(dropout)]
        in_channels, side = width, side // 2
    blocks += [nn.Flatten(), Maxout(in_channels * side * side, fc_units, fc_pieces), nn.Dropout(dropout)]
    return Classifier(nn.Sequential(*blocks), nn.Linear(fc_units, num_classes), output, max_col_norm)


def build_rbf(shape, num_classes, mean, std, normalize=False, output="exp", init_beta=0.01):
    features = nn.Sequential(*_stem(normalize, mean, std), nn.Flatten())
    return Classifier(features, RBF(math.prod(shape), num_classes, init_beta), output)


def build_cnn(shape, num_classes, mean, std, normalize=True, output="softmax", channels=(32, 64), hidden=128,
              dropout=0.0):
    blocks: list[nn.Module] = list(_stem(normalize, mean, std))
    in_channels, side = shape[0], shape[1]
    for width in channels:
        blocks += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        in_channels, side = width, side // 2
    blocks += [nn.Flatten(), nn.Linear(in_channels * side * side, hidden), nn.ReLU(), nn.Dropout(dropout)]
    return Classifier(nn.Sequential(*blocks), nn.Linear(hidden, num_classes), output)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(in_planes, planes * 4, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


def build_resnet(shape, num_classes, mean, std, normalize=True, output="softmax", depth=18, width=64):
    """CIFAR ResNet (He et al. 2016) with a 3x3 stem: depth 18 (BasicBlock) or 50 (Bottleneck)."""
    block, counts = (BasicBlock, (2, 2, 2, 2)) if depth == 18 else (Bottleneck, (3, 4, 6, 3))
    layers: list[nn.Module] = [*_stem(normalize, mean, std), nn.Conv2d(shape[0], width, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()]
    in_planes = width
    for stage, count in enumerate(counts):
        planes = width * 2**stage
        for index in range(count):
            layers.append(block(in_planes, planes, stride=2 if stage > 0 and index == 0 else 1))
            in_planes = planes * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), nn.Linear(in_planes, num_classes), output)


def build_relu_mlp(shape, num_classes, mean, std, normalize=False, output="softmax", width=1000, depth=2):
    """Gilmer et al. 2018's ReLU network: `depth` hidden layers of `width` units with batch norm. [B, d] -> [B, C]."""
    from advx.spheres import relu_mlp

    net = relu_mlp(math.prod(shape), width, depth, num_classes)
    return Classifier(nn.Sequential(nn.Flatten(), *net[:-1]), net[-1], output)


def build_quadratic(shape, num_classes, mean, std, normalize=False, output="softmax", hidden=None):
    """Gilmer et al. 2018's quadratic network (an ellipsoid decision boundary); two classes. [B, d] -> [B, 2]."""
    from advx.spheres import QuadraticNet

    if num_classes != 2:
        raise ConfigError(f"model=quadratic is a two-class model (dataset=spheres), got {num_classes} classes")
    return Classifier(nn.Flatten(), QuadraticNet(math.prod(shape), hidden), output)


MODELS = {
    "softmax": build_softmax,
    "logistic": build_logistic,
    "maxout": build_maxout,
    "rbf": build_rbf,
    "cnn": build_cnn,
    "conv_maxout": build_conv_maxout,
    "relu_mlp": build_relu_mlp,
    "quadratic": build_quadratic,
    "resnet": build_resnet,
}


def build_model(name: str, shape: tuple[int, ...], num_classes: int, mean: list[float], std: list[float],
                **hparams) -> Classifier:
    """Build a registered model for inputs [B, *shape] in [0, 1]; hparams are its config keys."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if hparams.get("output") == "exp" and name != "rbf":
        raise ConfigError("model.output=exp (p = exp(logit)) is only meaningful for model=rbf")
    return MODELS[name](tuple(shape), num_classes, mean, std, **hparams)
