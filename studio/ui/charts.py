"""Plotly figures: per-step statistics, 2-D sample paths, trajectory distances, heatmaps of filter rows/masks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

FONT = dict(family="Inter, system-ui, sans-serif", size=12)
COLORS = ("#4f46e5", "#ea580c", "#059669", "#db2777")


def _layout(fig, height: int, **extra) -> Any:
    fig.update_layout(height=height, margin=dict(l=48, r=16, t=40, b=40), font=FONT, template="plotly_white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), **extra)
    return fig


def per_step(rows: Sequence[dict[str, Any]]) -> Any:
    """x̂0's RMS distance to its nearest training item, its RMS change per step, and the effective number of
    training points (softmax denoisers), against the step."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    # short two-line titles: three panels side by side stay readable on a phone
    panels = [("x0_nn_dist", "x̂0 → nearest<br>training item"), ("x0_change", "x̂0 change<br>per step")]
    if any(r.get("ess") is not None for r in rows):
        panels.append(("ess", "effective #<br>of training pts"))
    fig = make_subplots(1, len(panels), subplot_titles=[t for _, t in panels], horizontal_spacing=0.08)
    k = [r["k"] + 1 for r in rows]
    hover = [f"step {r['k'] + 1}, t = {r['t']}, ā = {r['alpha_bar']:.4g}" for r in rows]
    for col, ((key, title), color) in enumerate(zip(panels, COLORS), start=1):
        fig.add_trace(go.Scatter(x=k, y=[r.get(key) for r in rows], mode="lines+markers", name=title,
                                 line=dict(color=color, width=2), marker=dict(size=4), text=hover,
                                 hovertemplate="%{text}<br>%{y:.4g}<extra></extra>", connectgaps=True), 1, col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    if len(panels) == 3:
        fig.update_yaxes(type="log", dtick=1, row=1, col=3)
    for annotation in fig.layout.annotations:
        annotation.font.size = 12
    fig = _layout(fig, 320, showlegend=False)
    fig.update_layout(margin=dict(t=64))
    return fig


def paths(x_t: torch.Tensor, x0: torch.Tensor, background: torch.Tensor, max_samples: int = 200) -> Any:
    """Training points in grey and, per sample, the path of x_t (solid) and of x̂0 (dotted); x_t, x0 [K, N, 2]."""
    import plotly.graph_objects as go

    n = min(x_t.shape[1], max_samples)

    def joined(x: torch.Tensor) -> tuple[list, list]:
        xs, ys = [], []
        for i in range(n):
            xs += x[:, i, 0].tolist() + [None]
            ys += x[:, i, 1].tolist() + [None]
        return xs, ys

    bg = background[:5000].numpy()
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=bg[:, 0], y=bg[:, 1], mode="markers", name="training points",
                               marker=dict(color="#bbbbbb", size=3)))
    for x, name, color, dash, alpha in ((x_t, "x_t path", COLORS[0], "solid", 0.35),
                                        (x0, "x̂0 path", COLORS[1], "dot", 0.8)):
        xs, ys = joined(x)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, opacity=alpha,
                                 line=dict(color=color, width=1.2, dash=dash)))
    start, end = x_t[0, :n].numpy(), x0[-1, :n].numpy()
    fig.add_trace(go.Scatter(x=start[:, 0], y=start[:, 1], mode="markers", name="start (noise)",
                             marker=dict(color=COLORS[0], size=5, symbol="circle-open")))
    fig.add_trace(go.Scatter(x=end[:, 0], y=end[:, 1], mode="markers", name="final sample",
                             marker=dict(color="#d62728", size=7)))
    # the data live in [-1, 1]; the first noisy steps reach further out (zoom out to follow them)
    fig.update_xaxes(range=[-1.6, 1.6])
    fig.update_yaxes(range=[-1.3, 1.3], scaleanchor="x", scaleratio=1)
    return _layout(fig, 520)


def distances(series: dict[str, Sequence[float]], steps: Sequence[int], title: str) -> Any:
    """One line per named series over the steps."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (name, ys), color in zip(series.items(), COLORS):
        fig.add_trace(go.Scatter(x=list(steps), y=list(ys), mode="lines+markers", name=name,
                                 line=dict(color=color, width=2), marker=dict(size=4)))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="RMS distance")
    fig = _layout(fig, 320, title=dict(text=title, font=dict(size=13)))
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))
    return fig


def heatmaps(maps: Sequence[np.ndarray], titles: Sequence[str], symmetric: bool = True, height: int = 300,
             marker: tuple[int, int] | None = None, title: str | None = None) -> Any:
    """Maps [H, W] side by side as images (row 0 at the top), a shared diverging scale centred on 0 when
    `symmetric`; `marker` = (x, y) outlines the chosen pixel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(1, len(maps), subplot_titles=list(titles), horizontal_spacing=0.02)
    top = max(float(np.abs(m).max()) for m in maps) or 1.0
    for col, m in enumerate(maps, start=1):
        scale = dict(colorscale="RdBu", zmid=0, zmin=-top, zmax=top) if symmetric else dict(
            colorscale=[[0, "#eef2ff"], [1, "#1e1b4b"]], zmin=0, zmax=1)
        fig.add_trace(go.Heatmap(z=m, showscale=col == len(maps), hovertemplate="x=%{x}, y=%{y}: %{z:.3g}"
                                 "<extra></extra>", **scale), 1, col)
        bare = dict(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{col if col > 1 else ''}", row=1, col=col, **bare)
        fig.update_xaxes(row=1, col=col, **bare)
        if marker is not None:
            x, y = marker
            fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5,
                          line=dict(color="#16a34a", width=2), row=1, col=col)
    for annotation in fig.layout.annotations:
        annotation.font.size = 11
    extra = dict(title=dict(text=title, font=dict(size=13), x=0.01)) if title else {}
    fig = _layout(fig, height, **extra)
    if title:
        fig.update_layout(margin=dict(t=64))
    return fig


def schedule(alpha_bar: torch.Tensor, t: int) -> Any:
    """ā_t and sqrt(1-ā_t) over t, with the chosen t marked."""
    import plotly.graph_objects as go

    ab = alpha_bar.numpy()
    ts = np.arange(len(ab))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ts, y=np.sqrt(ab), name="signal √ā", line=dict(color=COLORS[0], width=2)))
    fig.add_trace(go.Scatter(x=ts, y=np.sqrt(1 - ab), name="noise √(1-ā)", line=dict(color=COLORS[1], width=2)))
    fig.add_vline(x=t, line=dict(color="#444", dash="dash"))
    fig.update_xaxes(title_text="t")
    return _layout(fig, 240)


def line(xs: Sequence[float], ys: Sequence[float], x_title: str, y_title: str, title: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers", line=dict(color=COLORS[2], width=2)))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return _layout(fig, 240, title=dict(text=title, font=dict(size=13)))


def neighbour_lines(queries: torch.Tensor, data: torch.Tensor, indices: torch.Tensor) -> Any:
    """2-D: training points in grey, each query in red, a line from it to each of its neighbours."""
    import plotly.graph_objects as go

    bg = data[:5000].numpy()
    xs, ys = [], []
    for q, idx in zip(queries.tolist(), indices.tolist()):
        for j in idx:
            xs += [q[0], float(data[j, 0]), None]
            ys += [q[1], float(data[j, 1]), None]
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=bg[:, 0], y=bg[:, 1], mode="markers", name="training points",
                               marker=dict(color="#bbbbbb", size=3)))
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="to nearest", line=dict(color=COLORS[0], width=1)))
    q = queries.numpy()
    fig.add_trace(go.Scatter(x=q[:, 0], y=q[:, 1], mode="markers", name="samples",
                             marker=dict(color="#d62728", size=6)))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _layout(fig, 480)
