"""The report's pictures, drawn with matplotlib (Agg, no display) from stage outputs only.

Each function takes plain data (lists, arrays, dicts read from JSON) and writes one PNG of a fixed
pixel size, so the report stage and its tests know what to expect. Nothing here computes a metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
import numpy as np  # noqa: E402

DPI = 100
INIT_COLOURS = {"floor": "#7f7f7f", "random": "#d62728", "imagenet": "#1f77b4", "simclr": "#2ca02c"}
CURVE_PANELS = (("loss", "NT-Xent loss"), ("top1", "contrastive top-1"), ("embedding_std", "embedding std"),
                ("knn_acc", "kNN accuracy (val)"))


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)  # no bbox_inches="tight": the pixel size stays exactly figsize × DPI
    plt.close(figure)
    return path


def training_curves(history: list[dict], path: Path, title: str, embedding_reference: float | None = None) -> Path:
    """SimCLR monitors per epoch; epoch 0 is the untrained network (kNN only)."""
    figure, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for axis, (key, label) in zip(axes, CURVE_PANELS):
        points = [(row["epoch"], row[key]) for row in history if key in row and not math.isnan(row[key])]
        if points:
            axis.plot(*zip(*points), marker="o", color=INIT_COLOURS["simclr"])
        if key == "embedding_std" and embedding_reference:
            axis.axhline(embedding_reference, ls="--", color="grey", lw=1, label="uniform (1/√D)")
            axis.legend(fontsize=7)
        axis.set(title=label, xlabel="epoch")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.94))  # leave the top strip to the suptitle
    return _save(figure, path)


def label_efficiency(curves: dict[str, list[tuple[float, float, float]]], metric: str, path: Path, title: str,
                     paired: Sequence[tuple[float, float, float, float]] = ()) -> Path:
    """Left: metric vs label fraction (log axis), one line per init with its 95 % CI band. Right: the paired
    difference SimCLR − ImageNet with its bootstrap interval, where the question is answered.

    ``curves`` maps init → [(fraction, mean, ci95 half-width), …]; ``paired`` is [(fraction, Δ, low, high), …].
    """
    figure, (axis, difference) = plt.subplots(1, 2, figsize=(12, 4))
    for init, points in curves.items():
        if not points:
            continue
        fraction, mean, half = (np.asarray(values, dtype=float) for values in zip(*sorted(points)))
        colour = INIT_COLOURS.get(init)
        axis.plot(fraction, mean, marker="o", label=init, color=colour, ls="--" if init == "floor" else "-")
        axis.fill_between(fraction, mean - half, mean + half, color=colour, alpha=0.15)
    axis.set_xscale("log")
    axis.set(xlabel="fraction of training labels", ylabel=metric, title=title)
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    difference.axhline(0, color="grey", lw=1)
    if paired:
        fraction, delta, low, high = (np.asarray(values, dtype=float) for values in zip(*sorted(paired)))
        difference.plot(fraction, delta, marker="o", color=INIT_COLOURS["simclr"], label="SimCLR − ImageNet")
        difference.fill_between(fraction, low, high, color=INIT_COLOURS["simclr"], alpha=0.2,
                                label="95 % paired bootstrap interval")
        difference.legend()
    else:
        difference.text(0.5, 0.5, "no SimCLR / ImageNet pair", ha="center", va="center",
                        transform=difference.transAxes)
    difference.set_xscale("log")
    difference.set(xlabel="fraction of training labels", ylabel=f"Δ {metric}", title="SimCLR − ImageNet (paired)")
    difference.grid(alpha=0.3, which="both")
    figure.tight_layout()
    return _save(figure, path)


def confusion_matrices(matrices: dict[str, Sequence[Sequence[int]]], classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrices side by side, counts in the cells (summed over seeds)."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4.2), squeeze=False)
    for axis, (name, matrix) in zip(axes[0], matrices.items()):
        counts = np.asarray(matrix, dtype=float)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (row, col), count in np.ndenumerate(counts):
            axis.text(col, row, f"{int(count)}", ha="center", va="center", fontsize=8,
                      color="white" if rates[row, col] > 0.5 else "black")
        ticks = np.arange(len(classes))
        axis.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(ticks, classes, fontsize=8)
        axis.set(title=name, xlabel="predicted", ylabel="true")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.94))  # leave the top strip to the suptitle
    return _save(figure, path)


def embedding_maps(maps: dict[str, dict], classes: list[str], path: Path, title: str) -> Path:
    """2-D t-SNE maps of test features per init, coloured by class."""
    figure, axes = plt.subplots(1, len(maps), figsize=(4.5 * len(maps), 4.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis, (name, points) in zip(axes[0], maps.items()):
        labels = np.asarray(points["label"])
        for index, class_name in enumerate(classes):
            chosen = labels == index
            axis.scatter(np.asarray(points["x"])[chosen], np.asarray(points["y"])[chosen], s=8,
                         color=colours(index % 10), label=class_name)
        axis.set(title=name, xticks=[], yticks=[])
    axes[0][0].legend(fontsize=7, markerscale=2)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.94))  # leave the top strip to the suptitle
    return _save(figure, path)


def augmentation_gallery(rows: list[list[np.ndarray]], column_titles: list[str], path: Path, title: str) -> Path:
    """A grid of display-ready images: one row per chip, e.g. original | view a | view b.

    Each image is (H, W) grey or (H, W, 3) RGB in [0, 1], already windowed / composited by the caller.
    """
    figure, axes = plt.subplots(len(rows), len(column_titles), figsize=(2 * len(column_titles), 2 * len(rows)),
                                squeeze=False)
    for row_axes, images in zip(axes, rows):
        for axis, image in zip(row_axes, images):
            axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
    for axis, column in zip(axes[0], column_titles):
        axis.set_title(column, fontsize=9)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.94))  # leave the top strip to the suptitle
    return _save(figure, path)


def segmentation_overlays(images: list[np.ndarray], columns: dict[str, list[np.ndarray]], classes: list[str],
                          path: Path, title: str, ignore: int = 255) -> Path:
    """Rows = test chips; first column the image, then one column per mask set (truth, each init's prediction).

    Masks are drawn in the tab10 colours over the image at 50 % opacity; ignored pixels stay unpainted.
    """
    colours = plt.get_cmap("tab10")(np.arange(10))[:, :3]
    figure, axes = plt.subplots(len(images), 1 + len(columns), figsize=(2 * (1 + len(columns)), 2 * len(images)),
                                squeeze=False)
    for row, image in enumerate(images):
        rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
        axes[row][0].imshow(rgb, interpolation="nearest")
        for col, masks in enumerate(columns.values(), start=1):
            mask = np.asarray(masks[row])
            paint = np.where((mask != ignore)[..., None], colours[mask % 10], rgb)
            axes[row][col].imshow(0.5 * rgb + 0.5 * paint, interpolation="nearest")
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for axis, name in zip(axes[0], ["image", *columns]):
        axis.set_title(name, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i % 10]) for i in range(len(classes))]
    figure.legend(handles, classes, loc="lower center", ncol=min(len(classes), 6), fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.06, 1, 0.94))
    return _save(figure, path)


def detection_boxes(images: list[np.ndarray], columns: dict[str, list[np.ndarray]], classes: list[str],
                    path: Path, title: str) -> Path:
    """Rows = test chips; one column per box set (truth, then each init's predictions) drawn over the image.

    Boxes are (K, 5) ``x0, y0, x1, y1, class_index`` (truth) or (K, 6) with a score before the class index
    (predictions, already filtered by the caller); edge colour = class (tab10), predictions show their score.
    """
    colours = plt.get_cmap("tab10")(np.arange(10))[:, :3]
    figure, axes = plt.subplots(len(images), len(columns), figsize=(2.2 * len(columns), 2.2 * len(images)),
                                squeeze=False)
    for row, image in enumerate(images):
        for col, boxes in enumerate(columns.values()):
            axis = axes[row][col]
            axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            for box in np.asarray(boxes[row], dtype=np.float32):
                colour = colours[int(box[-1]) % 10]
                axis.add_patch(plt.Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1],
                                             fill=False, edgecolor=colour, linewidth=1))
                if len(box) == 6:
                    axis.text(box[0], box[1] - 1, f"{box[4]:.2f}", color=colour, fontsize=5)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for axis, name in zip(axes[0], columns):
        axis.set_title(name, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, fill=False, edgecolor=colours[i % 10]) for i in range(len(classes))]
    figure.legend(handles, classes, loc="lower center", ncol=min(len(classes), 6), fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.06, 1, 0.94))
    return _save(figure, path)
