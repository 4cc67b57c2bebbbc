"""Model registry. Every model maps inputs in [0, 1] [B, C, H, W] to logits [B, num_classes].

Each model is `head(features(x))`: `features` starts with the input normalisation (when asked) and ends at
the penultimate representation, which is exposed for representation attacks (Ilyas et al. 2019). The
`output` attribute says how logits become probabilities and which loss trains them:

- softmax: p = softmax(z), cross-entropy.
- sigmoid: independent p_c = sigmoid(z_c), one-vs-all binary cross-entropy (Goodfellow 2015's rubbish test).
- exp: p_c = exp(z_c) with z_c <= 0, the RBF network of Goodfellow 2015 (Sec. 5), one-vs-all likelihood.

Self-supervised encoders (Li et al. 2023's paradigms) are Classifiers too: `features(x)` is the representation
[B, D] and `head` a linear layer that their regimes leave untrained (a linear probe fits it later). The parts only
the pretext task uses live in `model.pretext` (None otherwise), so a probe that loads the `features.*` keys never
needs them: a SimCLR projection MLP on any encoder, the MAE decoder of `vit` (He et al. 2022), the up path of the
DDPM `unet` (Ho et al. 2020). `build_model(..., pretext=...)` attaches them.

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
    """`head(features(x))` with an output kind and an optional max-norm constraint on its linear layers.

    `pretext` holds the modules only a self-supervised objective uses (see advx.pretext); None otherwise."""

    def __init__(self, features: nn.Module, head: nn.Module, output: str, max_col_norm: float = 0.0,
                 pretext: nn.Module | None = None):
        super().__init__()
        self.features = features
        self.head = head
        self.output = output
        self.max_col_norm = max_col_norm
        self.pretext = pretext

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


class ProjectionHead(nn.Sequential):
    """SimCLR's projection g(h) = W2 relu(W1 h) (Chen et al. 2020, v1): [B, D] -> [B, out]. Li et al.'s code uses
    512-512-256 on ResNet-18, hence the defaults hidden = D and out = D // 2."""

    def __init__(self, in_features: int, hidden: int | None = None, out: int | None = None):
        hidden, out = hidden or in_features, out or max(in_features // 2, 1)
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out))


def sincos_positions(grid: tuple[int, int], width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings [1, rows * cols, width] in row-major patch order (MAE's choice):
    half the channels encode the row, half the column, each as sin/cos at width / 4 frequencies."""
    if width % 4:
        raise ConfigError(f"a ViT width must be a multiple of 4 for 2-D sin-cos positions, got {width}")
    frequencies = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    parts = []
    for position in (rows.flatten(), cols.flatten()):
        angles = position[:, None].double() * frequencies[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, 1).float()[None]


def _transformer_block(width: int, heads: int, mlp_ratio: int) -> nn.Module:
    # torch's own pre-norm block rather than timm's (not installed here): one dependency less, same block
    return nn.TransformerEncoderLayer(width, heads, dim_feedforward=mlp_ratio * width, dropout=0.0,
                                      activation="gelu", batch_first=True, norm_first=True)


class ViTEncoder(nn.Module):
    """A ViT encoder without class token (Dosovitskiy et al. 2021, as MAE uses it: He et al. 2022).

    `forward(x)`: x in [0, 1] [B, C, H, W] -> mean of the final-LayerNorm tokens over all patches [B, width].
    `encode(x, keep_index)`: the same encoder on the kept patches only -> tokens [B, K, width] (MAE's input).
    """

    def __init__(self, shape: tuple[int, ...], normalize: bool, mean, std, patch_size: int, width: int, depth: int,
                 heads: int, mlp_ratio: int):
        super().__init__()
        channels, height, side = shape
        if height % patch_size or side % patch_size:
            raise ConfigError(f"model.patch_size={patch_size} must divide the image size {height}x{side}")
        self.patch_size, self.grid = patch_size, (height // patch_size, side // patch_size)
        self.normalize = Normalize(mean, std) if normalize else nn.Identity()
        self.embed = nn.Conv2d(channels, width, patch_size, stride=patch_size)
        self.register_buffer("position", sincos_positions(self.grid, width), persistent=False)
        self.blocks = nn.ModuleList(_transformer_block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embeddings plus positions [B, N, width] of x in [0, 1] [B, C, H, W]."""
        return self.embed(self.normalize(x)).flatten(2).transpose(1, 2) + self.position

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """The (normalised) pixels of each patch [B, N, p * p * C], in the tokens' order: MAE's target."""
        p = self.patch_size
        x = self.normalize(x)
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def _run(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def encode(self, x: torch.Tensor, keep_index: torch.Tensor) -> torch.Tensor:
        """Encode only the patches `keep_index` [B, K] (int64 in [0, N)) of x: tokens [B, K, width]."""
        tokens = self.tokens(x)
        kept = tokens.gather(1, keep_index[..., None].expand(-1, -1, tokens.shape[-1]))
        return self._run(kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.tokens(x)).mean(1)


class MAEDecoder(nn.Module):
    """MAE's decoder (He et al. 2022): encoded visible tokens [B, K, width] and their indices [B, K] -> predicted
    patch pixels [B, N, p * p * C] (a shared mask token at the hidden patches, fixed sin-cos positions, a narrow
    transformer, a linear pixel predictor)."""

    def __init__(self, encoder: ViTEncoder, channels: int, width: int, decoder_width: int, decoder_depth: int,
                 decoder_heads: int, mlp_ratio: int):
        super().__init__()
        self.num_patches = encoder.num_patches
        self.embed = nn.Linear(width, decoder_width)
        self.mask_token = nn.Parameter(torch.randn(1, 1, decoder_width) * 0.02)  # MAE's init: N(0, 0.02^2)
        self.register_buffer("position", sincos_positions(encoder.grid, decoder_width), persistent=False)
        self.blocks = nn.ModuleList(_transformer_block(decoder_width, decoder_heads, mlp_ratio)
                                    for _ in range(decoder_depth))
        self.norm = nn.LayerNorm(decoder_width)
        self.predict = nn.Linear(decoder_width, encoder.patch_size ** 2 * channels)

    def forward(self, latent: torch.Tensor, keep_index: torch.Tensor) -> torch.Tensor:
        visible = self.embed(latent)
        b, _, width = visible.shape
        tokens = self.mask_token.to(visible.dtype).expand(b, self.num_patches, width)
        tokens = tokens.scatter(1, keep_index[..., None].expand(-1, -1, width), visible) + self.position
        for block in self.blocks:
            tokens = block(tokens)
        return self.predict(self.norm(tokens))


def build_vit(shape, num_classes, mean, std, normalize=True, output="softmax", patch_size=4, width=64, depth=4,
              heads=4, mlp_ratio=4, decoder_width=64, decoder_depth=2, decoder_heads=4, pretext="none"):
    """A small ViT encoder with a linear head on its mean-pooled tokens; `pretext="mae"` adds the MAE decoder."""
    encoder = ViTEncoder(shape, normalize, mean, std, patch_size, width, depth, heads, mlp_ratio)
    decoder = None
    if pretext == "mae":
        decoder = MAEDecoder(encoder, shape[0], width, decoder_width, decoder_depth, decoder_heads, mlp_ratio)
    return Classifier(encoder, nn.Linear(width, num_classes), output, pretext=decoder)


def _groups(channels: int) -> int:
    """GroupNorm groups: Ho et al.'s 32 where the channels allow, but at least 4 channels per group."""
    groups = math.gcd(32, channels)
    while groups > 1 and channels // groups < 4:
        groups //= 2
    return groups


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal embedding of integer steps t [B] -> [B, dim] (Ho et al. 2020, Sec. 4)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / max(half - 1, 1))
    angles = t.float()[:, None] * frequencies[None]
    return F.pad(torch.cat([angles.sin(), angles.cos()], 1), (0, dim % 2))


class ResBlock(nn.Module):
    """DDPM residual block: GroupNorm-SiLU-conv, plus a projection of the time embedding, twice. [B, in, H, W]
    -> [B, out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


FEATURE_NOISE_SEED = 0  # the fixed noise image of the DDPM representation (the same on every device)


class UNetEncoder(nn.Module):
    """The down path and middle of a DDPM UNet (Ho et al. 2020; no attention layers) and its linear beta schedule.

    `forward(x)`: Li et al. 2023's representation of x in [0, 1] [B, C, H, W]: scale to [-1, 1], noise to step
    `feature_t` with one fixed noise image (drawn once from a generator seeded FEATURE_NOISE_SEED, so every
    example's representation is a fixed function of it alone, whatever its batch: attacks see one function),
    encode, global-average-pool the middle output -> [B, channels * multipliers[-1]].
    `encode(x_t, t)`: x_t in [-1, 1] at integer steps t [B] -> (middle output, skip activations, time embedding)
    for the up path (`UNetDecoder`). Inputs whose side is not a multiple of 2^(levels-1) (28x28 MNIST under three
    levels) are zero-padded to the next one (the decoder's output is cropped back: `predict_noise`).
    """

    def __init__(self, shape: tuple[int, ...], channels: int, multipliers: list[int], res_blocks: int,
                 dropout: float, timesteps: int, beta_start: float, beta_end: float, feature_t: int):
        super().__init__()
        if not 0 <= feature_t < timesteps:
            raise ConfigError(f"model.feature_t={feature_t} must be in [0, model.timesteps={timesteps})")
        image_channels, height, width = shape
        stride = 2 ** (len(multipliers) - 1)
        self.pad = (0, -width % stride, 0, -height % stride)  # F.pad order: left, right, top, bottom
        self.channels, self.feature_t = channels, feature_t
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)  # Ho et al.'s linear schedule
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)
        noise = torch.randn(1, *shape, generator=torch.Generator().manual_seed(FEATURE_NOISE_SEED))
        self.register_buffer("feature_noise", noise, persistent=False)
        self.time_dim = 4 * channels  # Ho et al.: the embedding MLP widens to 4x the base channels
        self.time_embed = nn.Sequential(nn.Linear(channels, self.time_dim), nn.SiLU(),
                                        nn.Linear(self.time_dim, self.time_dim))
        self.stem = nn.Conv2d(image_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        self.skip_channels = [channels]
        width_now = channels
        for level, multiplier in enumerate(multipliers):
            for _ in range(res_blocks):
                self.down.append(ResBlock(width_now, channels * multiplier, self.time_dim, dropout))
                width_now = channels * multiplier
                self.skip_channels.append(width_now)
            if level < len(multipliers) - 1:
                self.down.append(nn.Conv2d(width_now, width_now, 3, stride=2, padding=1))
                self.skip_channels.append(width_now)
        self.middle = nn.ModuleList(ResBlock(width_now, width_now, self.time_dim, dropout) for _ in range(2))
        self.out_channels = width_now

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise for x0 in [-1, 1] [B, ...] and steps t [B]."""
        abar = self.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def encode(self, x_t: torch.Tensor, t: torch.Tensor):
        temb = self.time_embed(timestep_embedding(t, self.channels))
        h = self.stem(F.pad(x_t, self.pad))
        skips = [h]
        for block in self.down:
            h = block(h, temb) if isinstance(block, ResBlock) else block(h)
            skips.append(h)
        for block in self.middle:
            h = block(h, temb)
        return h, skips, temb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.full((x.shape[0],), self.feature_t, device=x.device, dtype=torch.long)
        x_t = self.q_sample(2 * x - 1, t, self.feature_noise)
        return self.encode(x_t, t)[0].mean((2, 3))


class UNetDecoder(nn.Module):
    """The up path of the DDPM UNet: (middle output, skips, time embedding) -> predicted noise [B, C, H', W'] at
    the padded size (nearest-neighbour upsampling and a conv, each level taking its skips by concatenation)."""

    def __init__(self, encoder: UNetEncoder, image_channels: int, multipliers: list[int], res_blocks: int,
                 dropout: float):
        super().__init__()
        skips, width_now, channels = list(encoder.skip_channels), encoder.out_channels, encoder.channels
        self.up = nn.ModuleList()
        for level in reversed(range(len(multipliers))):
            for _ in range(res_blocks + 1):
                self.up.append(ResBlock(width_now + skips.pop(), channels * multipliers[level], encoder.time_dim,
                                        dropout))
                width_now = channels * multipliers[level]
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(width_now, width_now, 3, padding=1)))
        self.out = nn.Sequential(nn.GroupNorm(_groups(width_now), width_now), nn.SiLU(),
                                 nn.Conv2d(width_now, image_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # Ho et al. zero-initialise the last conv: training starts at eps = 0
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        skips = list(skips)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], 1), temb) if isinstance(block, ResBlock) else block(h)
        return self.out(h)


def predict_noise(model: Classifier, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """DDPM's epsilon prediction [B, C, H, W] for x_t in [-1, 1] [B, C, H, W] at integer steps t [B] in [0, T),
    for a `unet` built with pretext="ddpm" (the up path lives in model.pretext)."""
    if not isinstance(model.pretext, UNetDecoder):
        raise ConfigError("predict_noise needs model=unet built with pretext=ddpm")
    eps = model.pretext(*model.features.encode(x_t, t))
    return eps[..., :x_t.shape[-2], :x_t.shape[-1]]


def build_unet(shape, num_classes, mean, std, normalize=False, output="softmax", channels=32, multipliers=(1, 2, 2),
               res_blocks=1, dropout=0.0, timesteps=1000, beta_start=1e-4, beta_end=0.02, feature_t=11,
               pretext="none"):
    """A DDPM UNet's encoder with a linear head on its pooled middle features (Li et al. 2023's representation);
    `pretext="ddpm"` adds the up path that predicts the noise. Inputs are scaled to [-1, 1] inside (DDPM's data
    range), so there is no mean/std normalisation."""
    if normalize:
        raise ConfigError("model=unet scales its inputs to [-1, 1] itself (DDPM); set model.normalize=false")
    multipliers = list(multipliers)
    encoder = UNetEncoder(shape, channels, multipliers, res_blocks, dropout, timesteps, beta_start, beta_end,
                          feature_t)
    decoder = UNetDecoder(encoder, shape[0], multipliers, res_blocks, dropout) if pretext == "ddpm" else None
    return Classifier(encoder, nn.Linear(encoder.out_channels, num_classes), output, pretext=decoder)


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
    "vit": build_vit,
    "unet": build_unet,
}
PRETEXTS = ("none", "simclr", "mae", "ddpm")  # the parts a self-supervised regime adds (`Classifier.pretext`)
PRETEXT_MODELS = {"mae": "vit", "ddpm": "unet"}  # pretexts tied to one architecture (simclr takes any encoder)


def build_model(name: str, shape: tuple[int, ...], num_classes: int, mean: list[float], std: list[float],
                pretext: str = "none", projection: list[int | None] | None = None, **hparams) -> Classifier:
    """Build a registered model for inputs [B, *shape] in [0, 1]; hparams are its config keys.

    `pretext` (none | simclr | mae | ddpm) attaches the self-supervised parts as `model.pretext`; `projection`
    ([hidden, out], None entries: D and D // 2) sizes SimCLR's projection MLP and is ignored by other pretexts.
    The `features.*` and `head.*` keys are the same whatever the pretext, so a probe rebuilds with pretext="none".
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if hparams.get("output") == "exp" and name != "rbf":
        raise ConfigError("model.output=exp (p = exp(logit)) is only meaningful for model=rbf")
    if pretext not in PRETEXTS:
        raise ConfigError(f"unknown pretext {pretext!r}; valid: {', '.join(PRETEXTS)}")
    if pretext in PRETEXT_MODELS and name != PRETEXT_MODELS[pretext]:
        raise ConfigError(f"regime={pretext} trains model={PRETEXT_MODELS[pretext]}, not model={name}")
    if name in ("vit", "unet"):
        hparams["pretext"] = pretext
    model = MODELS[name](tuple(shape), num_classes, mean, std, **hparams)
    if pretext == "simclr":
        hidden, out = projection or (None, None)
        model.pretext = ProjectionHead(model.head.in_features, hidden, out)
    return model
