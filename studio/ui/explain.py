"""Classroom text beside the controls: what x_t and x̂0 are, how the samplers differ, what each denoiser assumes.

Markdown with LaTeX ($…$ inline, $$…$$ display). A denoiser or sampler without an entry here shows its
registered `summary`, so new ones still get a line of explanation.
"""

from __future__ import annotations

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

INTRO = r"""
**Diffusion in one picture.** Training images $x_0$ are blurred into noise by the *forward process*
$$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\qquad \varepsilon\sim\mathcal N(0, I),$$
where $\bar\alpha_t$ falls from 1 (clean) to almost 0 (pure noise) as $t$ goes from 0 to $T-1$.
Sampling runs it backwards: start from noise $x_T$ and, at every step, ask a **denoiser** for its best guess
$\hat x_0(x_t, t)$ of the clean image; the **sampler** uses that guess to move to a slightly less noisy $x_{t'}$.

* **left picture — $x_t$**: where the sample is now (noisy);
* **right picture — $\hat x_0$**: what the denoiser thinks it will become.

The denoisers here need no training: they are computed from the training set in closed form.
"""

SAMPLERS = {
    "ddpm": r"""
**DDPM** (Ho et al. 2020) draws the next point from the true reverse step given the guess:
$$x_{t'} \sim q(x_{t'}\mid x_t, \hat x_0),\qquad \beta = 1-\bar\alpha_t/\bar\alpha_{t'},$$
$$\text{mean} = \frac{\sqrt{\bar\alpha_{t'}}\,\beta}{1-\bar\alpha_t}\,\hat x_0
+ \frac{\sqrt{1-\beta}\,(1-\bar\alpha_{t'})}{1-\bar\alpha_t}\,x_t.$$
Fresh noise is added at every step, so the same start can end in different images.
""",
    "ddim": r"""
**DDIM** (Song et al. 2021) re-noises the guess with the noise it *already has*,
$\hat\varepsilon = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0)/\sqrt{1-\bar\alpha_t}$:
$$x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma^2}\,\hat\varepsilon + \sigma z.$$
With $\eta = 0$ ($\sigma = 0$) the path is deterministic: one start, one image. $\eta = 1$ behaves like DDPM.
""",
    "generalized": r"""
**Generalized sampler** (Permenter & Yuan) in $\sigma$-space, $\sigma^2 = (1-\bar\alpha)/\bar\alpha$:
$\gamma$ averages the current and previous noise estimates, $\mu$ sets how much fresh noise is injected.
DDIM is $(\gamma,\mu) = (1, 0)$, DDPM is $(1, 0.5)$, the accelerated sampler is $(2, 0)$.
""",
}

DIFFUSERS_SAMPLER = r"""
**{name}** comes from the diffusers library. It is fed the noise estimate
$\hat\varepsilon = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0)/\sqrt{1-\bar\alpha_t}$ computed from our denoiser's guess.
"""

DENOISERS = {
    "optimal": r"""
**Optimal** — the exact posterior mean if the training set *were* the whole world:
$$\hat x_0 = \sum_{i=1}^N w_i\,x_i,\qquad w_i \propto \exp\!\Big(-\frac{\lVert x_t-\sqrt{\bar\alpha_t}\,x_i\rVert^2}{2(1-\bar\alpha_t)\,\tau}\Big).$$
At low noise one weight wins, so it reproduces training images: it **memorises**. $\tau$ is a temperature.
""",
    "nearest": r"""
**Nearest** — copy the closest training point, $\hat x_0 = x_{i^*}$ with
$i^* = \arg\min_i \lVert x_t - \sqrt{\bar\alpha_t}\,x_i\rVert$: the zero-temperature limit of *optimal*.
""",
    "wiener": r"""
**Wiener** — assumes the data are **Gaussian**, $x_0\sim\mathcal N(\mu, \Sigma)$ with
$\Sigma = U\,\mathrm{diag}(\lambda)\,U^\top$:
$$\hat x_0 = \mu + U\,\mathrm{diag}\!\Big(\frac{\bar\alpha\lambda}{\bar\alpha\lambda + 1-\bar\alpha}\Big)U^\top\Big(\frac{x_t}{\sqrt{\bar\alpha}}-\mu\Big).$$
A linear filter: it keeps the main directions of variation and blurs the rest; it never copies.
""",
    "pca_locality": r"""
**PCA locality** (Lukoianov et al. 2025) — each pixel $m$ gets its own softmax over training images,
but only the pixels $n$ that the Gaussian model links to $m$ count: mask $M[n,m] = 1$ where
$|W_t[n,m]/W_t[m,m]|$ is large, $W_t = U\,\mathrm{diag}(\tfrac{\bar\alpha\lambda}{\bar\alpha\lambda+1-\bar\alpha})U^\top$.
Small masks at low noise let it mix patches of different images: it **generalises**.
""",
    "ls": r"""
**Local score machine** (Kamb & Ganguli 2024) — each pixel is predicted from training patches taken at the
**same location**, compared over a $k\times k$ window whose size shrinks with the noise level.
""",
    "els": r"""
**Equivariant local score machine** (Kamb & Ganguli 2024) — like LS but patches from **every location** count
(translation equivariance), so it can assemble new images from local pieces.
""",
    "scfdm": r"""
**Smoothed closed form** (Scarvelis et al. 2023) — the optimal denoiser averaged over slightly perturbed
inputs, $\hat x_0 = \frac1M\sum_j \mathrm{optimal}(x_t + \sigma_s\varepsilon_j)$. It copies training images like
the optimal denoiser while $\sigma_s$ is small next to the distances between them (the default 0.1 on small
images copies every digit); from about $\sigma_s = 0.6$ on digits most samples are new, at 1.0 none are copies.
""",
    "unet": r"""
**U-Net** — a trained network predicts the noise, $\hat x_0 = (x_t - \sqrt{1-\bar\alpha}\,\hat\varepsilon_\theta(x_t,t))/\sqrt{\bar\alpha}$:
a learned denoiser to hold the analytic ones against.
""",
}

NEIGHBOURS = r"""
For each sample, its closest training images (Euclidean distance in pixel space, values in $[-1, 1]$).
**Memorisation score** = distance to the nearest ÷ distance to the second nearest. A score below $1/3$
means the sample sits right on top of one training image: a copy (flagged **memorised**).
"""

LOCALITY = r"""
Which input pixels does the denoiser use to predict one output pixel? For the Gaussian (Wiener) model the answer
is a row of the linear filter $W_t = U\,\mathrm{diag}\big(\frac{\bar\alpha_t\lambda}{\bar\alpha_t\lambda+1-\bar\alpha_t}\big)U^\top$:
output pixel $m$ is $\sum_n W_t[m,n]\,(x_t[n]/\sqrt{\bar\alpha_t} - \mu[n])$ plus the mean.
At high noise the row spreads over the whole image; as the noise falls it shrinks around the pixel — the
**locality** that *pca_locality* turns into a mask. Click a pixel of the sample to choose it.
"""

COMPARE = r"""
Two runs from the **same starting noise** (same seed), side by side. The default pair is DDPM vs DDIM with the
same denoiser: DDIM's path is deterministic, DDPM adds fresh noise every step. The chart shows the RMS distance
between the two trajectories at every step. Both sides use the **Sample** tab's dataset, schedule, spacing, number
of samples and seed.
"""

FORWARD = r"""
**Forward process**: $q(x_t\mid x_0)$ gives $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$.
The signal-to-noise ratio is $\mathrm{SNR}(t) = \bar\alpha_t/(1-\bar\alpha_t)$.

**DDIM inversion** runs DDIM ($\eta=0$) backwards, each step refined by fixed-point iteration so that sampling
back returns the image. A trained network (*auto*) inverts an image to the textbook's noise-like $x_T$; Wiener to
the whitened image (the image still visible); the memorising *optimal* to a scaled copy,
$x_T \approx \sqrt{\bar\alpha_T}\,x_0$.

Uses the **Sample** tab's dataset, schedule and spacing (and its denoiser, if chosen below).
"""


def denoiser_text(name: str, summary: str) -> str:
    return DENOISERS.get(name, f"**{name}** — {summary}")


def sampler_text(name: str, summary: str) -> str:
    if name in SAMPLERS:
        return SAMPLERS[name]
    return DIFFUSERS_SAMPLER.format(name=name) + f"\n{summary}"
