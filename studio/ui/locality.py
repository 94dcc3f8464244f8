"""Locality tab: for one output pixel and one step, the Wiener-filter row (which input pixels the Gaussian model
uses for it) and the PCA-locality mask cut from it (studio.analysis.locality), the same across the steps of
the run as a strip, and the patch size per step of the LS/ELS machines."""

from __future__ import annotations

import gradio as gr
import numpy as np

from studio.ui import charts, explain, loader
from studio.ui.form import Updates
from studio.ui.session import Session

CLICK_SIDE = 288  # the clickable sample is shown about this many pixels wide
STRIP_STEPS = 8
CHANNELS = ("R", "G", "B")
NO_RUN = "Run an image dataset on the Sample tab, then pick a pixel here."


def mask_settings(cfg) -> tuple[float | None, str, str]:
    """θ and the normalisation of the run's pca_locality denoiser (defaults for other denoisers), and a note."""
    if cfg.denoiser.name == "pca_locality":
        p = cfg.denoiser.params
        return p.get("mask_threshold"), p.get("mask_normalization") or "self", "the mask this run's denoiser used"
    return None, "self", "the mask pca_locality would use here"


def patch_sizes(run) -> list[float] | None:
    """Patch size per step of LS/ELS runs, from the step records or the saved extras."""
    traj = run.trajectory
    found = [s.get("patch_size") for s in traj.shared] if traj.shared else []
    if found and all(v is not None for v in found):
        return [float(np.mean(v)) for v in found]
    if "patch_size" in traj.extras:
        return traj.extras["patch_size"].float().reshape(len(traj.timesteps), -1).mean(1).tolist()
    return None


def scale_for(side: int) -> int:
    return max(1, CLICK_SIDE // side)


class LocalityTab:
    def __init__(self, session: gr.State) -> None:
        self.session = session
        gr.Markdown(explain.LOCALITY, latex_delimiters=explain.LATEX, elem_classes=["studio-explain"])
        self.info = gr.Markdown(NO_RUN, elem_id="loc-info", elem_classes=["studio-summary"])
        with gr.Row(equal_height=False, visible=False) as self.body:
            with gr.Column(scale=3, min_width=300):
                self.picture = gr.Image(label="click a pixel of the sample", format="png", type="pil",
                                        interactive=False, elem_id="loc-picture", elem_classes=["studio-pixels"])
                self.sample = gr.Slider(1, 2, value=1, step=1, label="sample", elem_id="loc-sample")
                with gr.Row():
                    self.x = gr.Slider(0, 7, value=4, step=1, label="pixel x", elem_id="loc-x")
                    self.y = gr.Slider(0, 7, value=4, step=1, label="pixel y", elem_id="loc-y")
                self.channel = gr.Radio(list(CHANNELS), value="R", label="output channel", visible=False,
                                        elem_id="loc-channel")
                self.step = gr.Slider(1, 2, value=1, step=1, label="step", elem_id="loc-step")
            with gr.Column(scale=7):
                with gr.Row(equal_height=True):
                    self.row_plot = gr.Plot(label="Wiener-filter row W_t[m, :]", show_label=False, elem_id="loc-row")
                    self.mask_plot = gr.Plot(label="PCA-locality mask M[:, m]", show_label=False, elem_id="loc-mask")
                self.mask_note = gr.Markdown(elem_id="loc-mask-note", elem_classes=["studio-small"])
                self.strip = gr.Plot(label="the mask across the steps of the run", show_label=False,
                                     elem_id="loc-strip")
                self.patch = gr.Plot(label="patch size per step", show_label=False, visible=False, elem_id="loc-patch")

    @property
    def outputs(self) -> list:
        return [self.body, self.picture, self.info, self.row_plot, self.mask_plot, self.mask_note, self.strip,
                self.patch]

    @property
    def controls(self) -> list:
        return [self.sample, self.x, self.y, self.channel, self.step]

    def update(self, session: Session, sample: float, x: float, y: float, channel: str, step: float) -> Updates:
        """The filter row, the mask and the strip for one output pixel at one step of the session's run."""
        result = session.sample
        if result is None or not result.run.is_image:
            return {self.body: gr.update(visible=False), self.picture: None, self.info: NO_RUN, self.row_plot: None,
                    self.mask_plot: None, self.mask_note: "", self.strip: None, self.patch: gr.update(visible=False)}
        loader.load()
        from studio.analysis.locality import locality_stack
        from studio.images import column_indices
        from studio.ui import pictures

        run, dataset = result.run, result.dataset
        traj = run.trajectory
        C, H, W = dataset.shape
        K = len(traj.timesteps)
        i = min(max(int(sample), 1), traj.x0.shape[1]) - 1
        k = min(max(int(step), 1), K) - 1
        px, py = min(int(x), W - 1), min(int(y), H - 1)
        c = CHANNELS.index(channel) if C == 3 and channel in CHANNELS else 0
        theta, norm, whose = mask_settings(run.config)
        cols = sorted(set(column_indices(K, STRIP_STEPS)) | {k})
        stack = locality_stack(dataset, (py, px), [int(traj.timesteps[j]) for j in cols],
                               [float(traj.alpha_bar[j]) for j in cols], c, mask_threshold=theta,
                               mask_normalization=norm)
        now = cols.index(k)
        row, mask = stack.wiener_rows[now].numpy(), stack.masks[now].numpy()
        titles = [f"from {CHANNELS[j]}" for j in range(C)] if C == 3 else [""]
        row_fig = charts.heatmaps(list(row), titles, marker=(px, py), title="Wiener-filter row W_t[m, :]")
        mask_fig = charts.heatmaps(list(mask.astype(float)), titles, symmetric=False, marker=(px, py),
                                   title="PCA-locality mask M[:, m] (black = used)")
        strip_fig = charts.heatmaps([stack.masks[j, c].numpy().astype(float) for j in range(len(cols))],
                                    [f"step {j + 1}<br>t={int(traj.timesteps[j])}" for j in cols],
                                    symmetric=False, height=250, marker=(px, py),
                                    title="the mask at the steps of the run")
        sizes = patch_sizes(run)
        patch_update = gr.update(visible=False)
        if sizes is not None:
            patch_update = gr.update(value=charts.line(range(1, K + 1), sizes, "step", "patch size k",
                                                       f"{run.config.denoiser.name}: patch size per step"),
                                     visible=True)
        used = int(mask.sum())
        info = (f"pixel (x={px}, y={py}{', ' + CHANNELS[c] if C == 3 else ''}) of sample {i + 1} · step {k + 1}/{K}, "
                f"t = {int(traj.timesteps[k])}, ā = {float(traj.alpha_bar[k]):.4f}")
        note = (f"Mask: {whose} (θ = {stack.mask_threshold:g}, normalisation {norm}) — **{used} of {mask.size}** "
                f"input values ({100 * used / mask.size:.1f}%) enter this pixel's softmax; the whole mask at this "
                f"level keeps {100 * stack.mask_densities[now]:.1f}%. The strip shows the mask at every step.")
        picture = pictures.with_marker(traj.x0[-1, i], px, py, scale_for(max(H, W)))
        return {self.body: gr.update(visible=True), self.picture: picture, self.info: info, self.row_plot: row_fig,
                self.mask_plot: mask_fig, self.mask_note: note, self.strip: strip_fig, self.patch: patch_update}

    def after_run(self, session: Session, sample: float, x: float, y: float, channel: str, step: float) -> Updates:
        """Resize the sliders to the new run, keep the pixel where it fits, show the middle step."""
        result = session.sample
        if result is None or not result.run.is_image:
            return self.update(session, sample, x, y, channel, step)
        C, H, W = result.dataset.shape
        K = len(result.run.trajectory.timesteps)
        n = result.run.trajectory.x0.shape[1]
        x, y = min(int(x), W - 1), min(int(y), H - 1)
        x, y = (W // 2, H // 2) if (x, y) == (0, 0) else (x, y)
        step = max(1, K // 2)
        return {self.sample: gr.update(maximum=max(n, 2), value=min(int(sample), n), interactive=n > 1),
                self.x: gr.update(maximum=W - 1, value=x), self.y: gr.update(maximum=H - 1, value=y),
                self.channel: gr.update(visible=C == 3),
                self.step: gr.update(maximum=max(K, 2), value=step, interactive=K > 1),
                **self.update(session, sample, x, y, channel, step)}

    def clicked(self, session: Session, sample: float, x: float, y: float, channel: str, step: float,
                evt: gr.SelectData) -> Updates:
        """The pixel clicked on the upscaled sample, and its views."""
        if session.sample is None or not session.sample.run.is_image:
            return {}
        _, H, W = session.sample.dataset.shape
        scale = scale_for(max(H, W))
        cx, cy = evt.index
        x, y = min(int(cx) // scale, W - 1), min(int(cy) // scale, H - 1)
        return {self.x: x, self.y: y, **self.update(session, sample, x, y, channel, step)}

    def wire(self, shown: gr.State) -> None:
        """The controls and a click on the sample redraw; a new result (`shown` changes) resizes the controls."""
        inputs = [self.session, *self.controls]
        gr.on([control.input for control in self.controls], self.update, inputs, self.outputs,
              api_visibility="private", trigger_mode="always_last", show_progress="minimal")
        self.picture.select(self.clicked, inputs, [self.x, self.y, *self.outputs], api_visibility="private",
                            show_progress="minimal")
        shown.change(self.after_run, inputs, [*self.controls, *self.outputs], api_visibility="private",
                     show_progress="hidden")
