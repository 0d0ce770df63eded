"""A small conditional VAE over inputs: the dreaming learner's generative model (no stored samples).

Brain-inspired / generative replay (van de Ven et al. 2020): instead of keeping
past examples, keep a generator of them and rehearse on its samples. The VAE
is conditioned on the class, so a dream of class c is x ~ p(x | z, c) with
z ~ N(0, I) (Kingma & Welling 2014; Sohn et al. 2015 for the conditional form).
Inputs are assumed in [0, 1] (pixel intensities), so the decoder is Bernoulli
(binary cross-entropy) and a dream is the decoder's mean image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConditionalVAE(nn.Module):
    """q(z | x, y) and p(x | z, y) as one-hidden-layer MLPs; y enters both as a one-hot vector."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, latent: int = 16):
        super().__init__()
        if hidden < 1 or latent < 1:
            raise ValueError(f"VAE needs hidden >= 1 and latent >= 1, got hidden={hidden}, latent={latent}")
        self.num_classes = num_classes
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(in_features + num_classes, hidden), nn.ReLU())
        self.to_mean = nn.Linear(hidden, latent)
        self.to_logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, in_features)
        )

    def _onehot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.num_classes).float()

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, self._onehot(y)], dim=-1))

    def noise(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` draws of z ~ N(0, I)."""
        return torch.randn(count, self.latent, generator=generator)

    def forward(self, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per example, averaged: BCE reconstruction + KL(q(z|x,y) || N(0, I)).

        The training loss is the forward pass so that DDP syncs its gradients; the caller draws the
        reparameterisation `noise` (one row per example) so data-parallel ranks can share one draw.
        """
        hidden = self.encoder(torch.cat([x, self._onehot(y)], dim=-1))
        mean, logvar = self.to_mean(hidden), self.to_logvar(hidden)
        z = mean + noise * (0.5 * logvar).exp()
        reconstruction = F.binary_cross_entropy_with_logits(self.decode_logits(z, y), x, reduction="none").sum(-1)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        return (reconstruction + kl).mean()

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One dream per label in `y`: the decoder mean at a prior draw of z."""
        return torch.sigmoid(self.decode_logits(self.noise(len(y), generator), y))
