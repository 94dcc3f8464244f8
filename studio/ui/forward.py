"""Forward process tab: a training image (or an upload) noised to any t with q(x_t | x0), with ā and the SNR;
DDIM inversion to x_T with the Sample tab's denoiser (or another), and the reconstruction with its error."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
from PIL import Image, ImageOps

from studio.limits import LimitError
from studio.serving import zerogpu
from studio.ui import charts, explain, loader, messages
from studio.ui.form import RunForm, Updates, Values

if TYPE_CHECKING:
    import torch

    from studio.config import RunConfig
    from studio.data.dataset import Dataset

SOURCES = ("training image", "upload")
POINTS_SHOWN = 500
SAMPLE_TABS = "the Sample tab's denoiser"
AUTO = "auto (trained network, else wiener)"
INVERSION_DENOISERS = (AUTO, SAMPLE_TABS, "unet", "wiener", "optimal", "pca_locality")
REFINE = 5  # fixed-point refinements per inversion step, by default
MAX_REFINE = 20


def upload_as_item(path: str, shape: tuple[int, ...]) -> torch.Tensor:
    """An uploaded picture as one item of the dataset's shape [C, H, W], values in [-1, 1]; only PNG, JPEG and
    WebP are decoded (the upload arrives as a file, not through PIL's every format)."""
    import torch

    from studio.data.folder import UNREADABLE, open_picture

    C, H, W = shape
    try:
        with open_picture(path, "upload") as opened:
            picture = ImageOps.exif_transpose(opened).convert("L" if C == 1 else "RGB")
    except LimitError:
        raise
    except UNREADABLE:
        raise ValueError("upload: not a readable PNG, JPEG or WebP picture") from None
    picture = picture.resize((W, H), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 127.5 - 1.0)
    return (x[None] if C == 1 else x.permute(2, 0, 1)).contiguous()


def noised(x0: torch.Tensor, ab: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, ε) with x_t = sqrt(ā) x0 + sqrt(1-ā) ε, ε from a seeded CPU generator."""
    import torch

    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed)))
    return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps, eps


def training_item(cfg: RunConfig, source: str, index: Any, upload: str | None) -> tuple[Dataset, torch.Tensor]:
    """(the run's dataset, the item to noise or invert as a batch of one; points: the first training points),
    after the policy gate."""
    from studio.data.registry import load_dataset
    from studio.serving.policy import check_loaded, check_sources

    check_sources(cfg)  # the policy gate, before any loading
    dataset = load_dataset(cfg.dataset.name, **cfg.dataset.options)
    check_loaded(dataset.n)
    if dataset.kind == "points":
        return dataset, dataset.x[:POINTS_SHOWN]
    if source == "upload":
        if upload is None:
            raise ValueError("upload: choose a picture to upload first")
        return dataset, upload_as_item(upload, dataset.shape)[None]
    i = int(index or 0)
    if not 0 <= i < dataset.n:
        raise ValueError(f"training image #: {i} is out of range [0, {dataset.n - 1}]")
    return dataset, dataset.x[i:i + 1]


def schedule_of(cfg: RunConfig) -> Any:
    from studio.diffusion.schedules import Schedule

    return Schedule.build(cfg.schedule.name, cfg.schedule.T, cfg.schedule.beta_start, cfg.schedule.beta_end)


def inversion_denoiser(choice: str, cfg: RunConfig, dataset: Dataset) -> str | None:
    """The denoiser the inversion uses: auto = the dataset's bundled network (whose inversion looks like the textbook's
    noise), else wiener; None = the Sample tab's."""
    if choice == AUTO:
        from studio.models.checkpoints import choose_bundled

        try:
            choose_bundled(dataset)
        except ValueError:
            return "wiener"
        return "unet"
    return None if not choice or choice == SAMPLE_TABS else choice


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the batch of the Pearson correlation of each pair of images (pixels as the samples)."""
    import torch

    pairs = torch.stack([a.flatten(1).double(), b.flatten(1).double()], 1)  # [B, 2, D]
    return float(torch.stack([torch.corrcoef(p)[0, 1] for p in pairs]).nan_to_num().mean())


def invert(config: dict[str, Any], source: str, index: Any, upload: str | None, steps: Any,
           denoiser: str, refine: Any = REFINE) -> tuple[Any, str]:
    """(picture, text) of x0 -> x_T -> reconstruction with the run's denoiser, or `denoiser` at its defaults, each
    step refined by up to `refine` fixed-point iterations. Plain arguments and results: on ZeroGPU this runs in the
    GPU process."""
    from studio import engine
    from studio.config import RunConfig
    from studio.diffusion.inversion import ddim_invert, reconstruct
    from studio.diffusion.spacing import timesteps
    from studio.limits import Limits
    from studio.presets import override
    from studio.ui import pictures

    try:
        cfg = RunConfig.from_dict(config)
        dataset, x0 = training_item(cfg, source, index, upload)
        name = inversion_denoiser(denoiser, cfg, dataset)
        if name and name != cfg.denoiser.name:
            cfg = override(cfg, {"denoiser": {"name": name}})
        K = int(steps or 0)
        Limits.from_env().check("max_steps", K, "inversion steps K")
        iterations = int(refine or 0)
        if not 0 <= iterations <= MAX_REFINE:
            raise ValueError(f"refinements per step: {iterations} is out of range [0, {MAX_REFINE}]")
        ts = timesteps(cfg.sampler.spacing, cfg.schedule.T, K)
        device = engine.resolve_device(cfg.device)
        fitted = engine.fitted_denoiser(cfg, dataset, device)
    except ValueError as err:
        raise messages.refuse(str(err).replace("sampler.steps", "inversion steps K")) from None
    schedule = schedule_of(cfg)
    x_T = ddim_invert(fitted, x0.to(device), schedule, ts, refine=iterations)
    back = reconstruct(fitted, x_T, schedule, ts).cpu()
    x_T = x_T.cpu()
    err = (back - x0).reshape(len(x0), -1)
    rel = float(err.norm(dim=1).div(x0.reshape(len(x0), -1).norm(dim=1).clamp_min(1e-12)).mean())
    rms = float(err.pow(2).mean().sqrt())
    if dataset.kind == "points":
        picture = pictures.hstack([pictures.view(v, dataset.x) for v in (x0, x_T, back)])
    else:
        shown = (back - x0).abs().clamp(max=2) - 1  # |error| on the images' own scale: black = none
        picture = pictures.hstack([pictures.view(v, target=160) for v in (x0, x_T.clamp(-1, 1), back, shown)])
    likeness = "" if dataset.kind == "points" else f", correlation with x0 {correlation(x_T, x0):.2f}"
    info = (f"{cfg.denoiser.name}, DDIM η = 0, {K} steps ({cfg.sampler.spacing}), up to {iterations} fixed-point "
            f"refinements a step · x_T std {float(x_T.std()):.3f}{likeness} · "
            f"reconstruction error: RMS {rms:.4f}, relative {100 * rel:.2f}%"
            + ("" if dataset.kind == "points" else " · error map: |x0 - reconstruction|, black = 0"))
    return picture, info


class ForwardTab:
    def __init__(self, form: RunForm) -> None:
        self.form = form
        gr.Markdown(explain.FORWARD, latex_delimiters=explain.LATEX, elem_classes=["studio-explain"])
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                self.source = gr.Radio(list(SOURCES), value=SOURCES[0], label="image", elem_id="fw-source")
                self.index = gr.Number(value=0, precision=0, label="training image #", elem_id="fw-index")
                self.upload = gr.Image(label="upload (resized to the dataset's shape)", type="filepath",
                                       image_mode=None, sources=["upload"], visible=False, elem_id="fw-upload",
                                       height=160)
                self.t = gr.Slider(0, 999, value=500, step=1, label="t", elem_id="fw-t")
                self.seed = gr.Number(value=0, precision=0, label="noise seed", elem_id="fw-seed")
                self.steps = gr.Number(value=50, precision=0, label="inversion steps K", elem_id="fw-steps")
                self.inv_denoiser = gr.Dropdown(list(INVERSION_DENOISERS), value=AUTO,
                                                label="denoiser for the inversion", elem_id="fw-denoiser",
                                                info="network: noise-like x_T · wiener: whitened image · "
                                                     "optimal: scaled copy")
                self.invert_btn = gr.Button("Invert to x_T and reconstruct", variant="primary", elem_id="fw-invert")
            with gr.Column(scale=7):
                self.message = messages.area("fw-message")
                self.picture = gr.Image(label="x0 | x_t | ε", format="png", type="pil", interactive=False,
                                        elem_id="fw-picture", elem_classes=["studio-pixels"])
                self.info = gr.Markdown(elem_id="fw-info", elem_classes=["studio-summary"])
                self.chart = gr.Plot(label="signal and noise over t", show_label=False, elem_id="fw-chart")
                self.inv_picture = gr.Image(label="x0 | x_T (inverted) | reconstruction | error", format="png",
                                            type="pil", interactive=False, elem_id="fw-inversion",
                                            elem_classes=["studio-pixels"])
                self.inv_info = gr.Markdown(elem_id="fw-inv-info", elem_classes=["studio-summary"])
        self.invert_on_device = zerogpu.gpu(invert)  # on ZeroGPU a spaces.GPU call, registered at the start

    def noise(self, values: Values) -> Updates:
        """x0 | x_t | ε at the chosen t, with ā, the SNR and the schedule's chart."""
        source, upload = values[self.source], values[self.upload]
        if source == "upload" and upload is None:
            return {}
        loader.load()
        from studio.ui import pictures

        try:
            cfg = self.form.read(values)
            dataset, x0 = training_item(cfg, source, values[self.index], upload)
        except ValueError as err:
            raise messages.refuse(str(err)) from None
        schedule = schedule_of(cfg)
        t = min(int(values[self.t]), schedule.T - 1)
        ab = schedule.ab(t)
        x_t, eps = noised(x0, ab, values[self.seed])
        if dataset.kind == "points":
            picture = pictures.hstack([pictures.view(x0, dataset.x), pictures.view(x_t, dataset.x)])
        else:
            picture = pictures.hstack([pictures.view(v, target=160) for v in (x0, x_t, eps.clamp(-1, 1))])
        snr = ab / (1 - ab)
        info = (f"t = {t} of {schedule.T} · ā_t = {ab:.5f} · √ā_t = {math.sqrt(ab):.4f} · √(1-ā_t) = "
                f"{math.sqrt(1 - ab):.4f} · SNR = ā/(1-ā) = {snr:.4g} ({10 * math.log10(snr):.1f} dB)")
        return {self.picture: picture, self.info: info, self.chart: charts.schedule(schedule.alpha_bar, t)}

    def invert(self, values: Values) -> Updates:
        """The inversion of the chosen item (the form's values become plain arguments for the device)."""
        loader.load()
        try:
            config = self.form.read(values).to_dict()
        except ValueError as err:
            raise messages.refuse(str(err)) from None
        picture, info = self.invert_on_device(config, values[self.source], values[self.index], values[self.upload],
                                              values[self.steps], values[self.inv_denoiser])
        return {self.inv_picture: picture, self.inv_info: info}

    def wire(self, tab: gr.Tab) -> None:
        picked = {*self.form.inputs, self.source, self.index, self.upload}
        noise_inputs = {*picked, self.t, self.seed}
        outputs = [self.picture, self.info, self.chart, self.message]
        noise = messages.to_page(self.noise, self.message)
        # t follows the keyboard (arrow keys) and dragging as it moves, without the progress timer flickering
        self.t.input(noise, noise_inputs, outputs, api_name="noise", api_visibility="undocumented",
                     trigger_mode="always_last", show_progress="hidden")
        gr.on([tab.select, *(control.change for control in (self.index, self.seed, self.source, self.upload))],
              noise, noise_inputs, outputs, api_visibility="private", trigger_mode="always_last",
              show_progress="minimal")
        self.source.change(lambda s: gr.update(visible=s == "upload"), self.source, self.upload, queue=False,
                           show_progress="hidden", api_visibility="private")
        self.invert_btn.click(messages.to_page(self.invert, self.message), {*picked, self.inv_denoiser, self.steps},
                              [self.inv_picture, self.inv_info, self.message], api_name="invert",
                              api_visibility="undocumented", concurrency_limit=2)
