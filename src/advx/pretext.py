"""Self-supervised objectives: the regimes simclr, mae and ddpm (Li et al. 2023's paradigms besides supervision).

Each maps a minibatch x in [0, 1] [B, C, H, W] (labels unused) to a scalar loss computed in fp32, training
`model.features` and `model.pretext` (see advx.models) while `model.head` stays untouched:
- simclr (Chen et al. 2020): two augmented views of every image, made on the device as batched kornia ops;
  NT-Xent (`info_nce`) between their projections `simclr_embed`.
- mae (He et al. 2022): the ViT encodes a random `mask_ratio`-complement of its patches, the decoder predicts
  the pixels of the hidden ones; MSE on the hidden patches only.
- ddpm (Ho et al. 2020): epsilon-prediction MSE at a uniform random step t in [0, T), the model's linear schedule.
MAE's masks and DDPM's steps and noise come from the run's data generator (saved every epoch, so a resumed run
draws the same); kornia draws its augmentation parameters from torch's global RNG, which the loop saves too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advx.errors import ConfigError
from advx.models import MAEDecoder, ProjectionHead, UNetDecoder, predict_noise
from advx.schema import RegimeConfig

SELF_SUPERVISED = ("simclr", "mae", "ddpm")  # regimes that train no classifier head


def is_self_supervised(regime: RegimeConfig) -> bool:
    return regime.name in SELF_SUPERVISED


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020, Eq. 1) per example [B], symmetric in the two views, computed in fp32.

    z_a, z_b: [B, P] projections of two views of the same B images (row i of each is a positive pair). Each of the
    2B embeddings is classified against the 2B - 1 others by cosine similarity / temperature; example i's loss is
    the mean of its two views' cross-entropies. Lower when the views agree and differ from the other images.
    """
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))  # an embedding is not its own negative
    b = z_a.shape[0]
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    loss = F.cross_entropy(similarity, positives, reduction="none")
    return (loss[:b] + loss[b:]) / 2


def simclr_embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SimCLR's projection g(f(x)) [B, P] of x in [0, 1] [B, C, H, W], for a model built with pretext="simclr"."""
    if not isinstance(model.pretext, ProjectionHead):
        raise ConfigError("simclr_embed needs a model trained with regime=simclr (a projection head in pretext)")
    return model.pretext(model.features(x))


_AUGMENTATIONS: dict[tuple, nn.Module] = {}  # one kornia pipeline per (regime keys, image shape)


def simclr_augmentation(regime: RegimeConfig, channels: int, size: tuple[int, int]) -> nn.Module:
    """SimCLR's view distribution as a batched kornia module on [B, C, H, W] in [0, 1]: random resized crop, flips
    (`regime.flip`), colour distortion of strength s = `regime.jitter` with p = 0.8 (brightness, contrast,
    saturation 0.8 s, hue 0.2 s) and random grayscale (3-channel data only), and gaussian blur (`regime.blur`)."""
    key = (regime.crop_scale, regime.flip, regime.jitter, regime.grayscale, regime.blur, channels, size)
    if key not in _AUGMENTATIONS:
        import kornia.augmentation as K  # imported here: only simclr needs it

        # cropping_mode="resample": one batched warp, not a loop over the batch
        steps: list[nn.Module] = [K.RandomResizedCrop(size, scale=(regime.crop_scale, 1.0), cropping_mode="resample")]
        if regime.flip:
            steps.append(K.RandomHorizontalFlip())
        if channels == 3 and regime.jitter > 0:
            s = regime.jitter
            steps.append(K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5), p=0.8))
        if channels == 3 and regime.grayscale > 0:
            steps.append(K.RandomGrayscale(p=regime.grayscale))
        if regime.blur > 0:
            kernel = max(3, size[0] // 10 * 2 + 1)  # Chen et al.: about 10% of the image side, odd
            steps.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=regime.blur))
        _AUGMENTATIONS[key] = nn.Sequential(*steps)
    return _AUGMENTATIONS[key]


def simclr_loss(model: nn.Module, x: torch.Tensor, regime: RegimeConfig) -> torch.Tensor:
    """Mean NT-Xent over the batch of two random views of each image (one forward pass of both views)."""
    augmentation = simclr_augmentation(regime, x.shape[1], (x.shape[2], x.shape[3]))
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):  # views in fp32 whatever the precision
        views = augmentation(torch.cat([x, x])).clamp_(0, 1)
    z_a, z_b = simclr_embed(model, views).chunk(2)
    return info_nce(z_a, z_b, regime.temperature).mean()


def random_masking(batch: int, num_patches: int, mask_ratio: float, generator: torch.Generator,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE's per-image random masking: (keep_index [B, K] int64, hidden [B, N] bool), K = round(N (1 - ratio))
    >= 1, from one random permutation of the patches per image (drawn with `generator`)."""
    keep = max(1, round(num_patches * (1 - mask_ratio)))
    order = torch.rand(batch, num_patches, generator=generator).argsort(1).to(device)
    keep_index = order[:, :keep]
    hidden = torch.ones(batch, num_patches, dtype=torch.bool, device=device)
    hidden.scatter_(1, keep_index, False)
    return keep_index, hidden


def mae_loss(model: nn.Module, x: torch.Tensor, regime: RegimeConfig, generator: torch.Generator) -> torch.Tensor:
    """MSE between predicted and true pixels of the hidden patches (optionally each patch normalised to zero mean
    and unit variance, `regime.norm_pix_loss`), averaged over hidden patches."""
    if not isinstance(model.pretext, MAEDecoder):
        raise ConfigError("regime=mae needs model=vit built with pretext=mae")
    encoder = model.features
    keep_index, hidden = random_masking(x.shape[0], encoder.num_patches, regime.mask_ratio, generator, x.device)
    prediction = model.pretext(encoder.encode(x, keep_index), keep_index).float()
    target = encoder.patchify(x).float()
    if regime.norm_pix_loss:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (prediction - target).pow(2).mean(-1)
    return (per_patch * hidden).sum() / hidden.sum()


def ddpm_loss(model: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Ho et al.'s simple loss: || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2, mean over
    pixels, with x0 = 2x - 1, t ~ U{0, ..., T - 1} and eps ~ N(0, I) drawn with `generator`."""
    if not isinstance(model.pretext, UNetDecoder):
        raise ConfigError("regime=ddpm needs model=unet built with pretext=ddpm")
    encoder = model.features
    steps = encoder.alphas_cumprod.shape[0]
    t = torch.randint(0, steps, (x.shape[0],), generator=generator).to(x.device)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    x_t = encoder.q_sample(2 * x - 1, t, noise)
    return F.mse_loss(predict_noise(model, x_t, t).float(), noise)


def pretext_loss(model: nn.Module, x: torch.Tensor, regime: RegimeConfig, generator: torch.Generator,
                 ) -> torch.Tensor:
    """The self-supervised regime's scalar minibatch loss (fp32) for x in [0, 1] [B, C, H, W]."""
    if regime.name == "simclr":
        return simclr_loss(model, x, regime)
    if regime.name == "mae":
        return mae_loss(model, x, regime, generator)
    if regime.name == "ddpm":
        return ddpm_loss(model, x, generator)
    raise ConfigError(f"regime={regime.name} is not a self-supervised regime ({', '.join(SELF_SUPERVISED)})")
