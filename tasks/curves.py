"""The loss-curve picture a reviewer looks at before approving: train and eval loss per step of the candidate,
with the foundation model's and the champion's eval loss on the same test split as reference lines.

`loss_curve_png` is pure (LossHistory in, PNG bytes out; matplotlib's Agg backend, no display, no files)."""

from __future__ import annotations

import base64
import io

from workspaces.ports import LossHistory

MAX_POINTS = 2000  # a long Azure job logs every few steps: thin the train line, keep its shape


def _thinned(points: tuple[tuple[int, float], ...]) -> list[tuple[int, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    stride = -(-len(points) // MAX_POINTS)
    return list(points[::stride]) + ([points[-1]] if (len(points) - 1) % stride else [])


def loss_curve_png(history: LossHistory, title: str) -> bytes:
    """A 8x4.5 inch, 100 dpi PNG (about 40 KB). Lines left out where there is no data; never raises for empty
    history (the picture says so instead)."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display here, and none wanted
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.subplots()
    train, evals = _thinned(history.train), list(history.eval)
    if train:
        axes.plot(*zip(*train, strict=True), color="#1f77b4", linewidth=1.2, label="train loss (candidate)")
    if evals:
        axes.plot(*zip(*evals, strict=True), color="#d62728", marker="o", linewidth=1.8, label="eval loss (candidate)")
    references = (
        (history.base_eval_loss, "#7f7f7f", "base model eval loss"),
        (history.champion_eval_loss, "#2ca02c", "champion eval loss"),
    )
    for value, color, label in references:
        if value is not None:
            axes.axhline(value, color=color, linestyle="--", linewidth=1.2, label=f"{label} {value:.4f}")
    if not (train or evals):
        axes.text(0.5, 0.5, "the job logged no loss per step", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """The picture inline (a data: URI): Prefect's artifact and pause-form pages show it with no file server."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
