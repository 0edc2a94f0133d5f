"""A report folder per run: metrics JSON, confusion-matrix and training-curve PNGs, and a grid of
misclassified samples (colour + height) so a person can see what the model gets wrong."""

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np


def plot_confusion(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str
) -> None:
    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(matrix, cmap='Blues')
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha='right')
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(title)
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(
            col,
            row,
            str(value),
            ha='center',
            va='center',
            color='white' if value > matrix.max() / 2 else 'black',
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# loss panel, validation-metric panel (the per-class recalls get a third)
_CURVE_PANELS = (('train/loss_epoch', 'val/loss'), ('val/macro_recall', 'val/acc'))
_CURVE_KEYS = frozenset(key for panel in _CURVE_PANELS for key in panel)


def plot_curves(metrics_csv: Path, path: Path) -> bool:
    """Training loss, validation metrics and per-class validation recall per epoch (CSVLogger file)."""
    if not metrics_csv.is_file():
        return False
    with metrics_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    series: dict[str, dict[int, float]] = {}
    for row in rows:
        if not row.get('epoch'):
            continue
        epoch = int(float(row['epoch']))
        for key, value in row.items():
            if value and (key in _CURVE_KEYS or key.startswith('val/recall_')):
                series.setdefault(key, {})[epoch] = float(value)
    if not series:
        return False
    # the third panel: a class that stays near 0 there was not learnt in this run
    panels = [
        [key for key in _CURVE_PANELS[0] if key in series],
        [key for key in _CURVE_PANELS[1] if key in series],
        sorted(key for key in series if key.startswith('val/recall_')),
    ]
    panels = [keys for keys in panels if keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, keys in zip(axes[0], panels, strict=True):
        for key in keys:
            axis.plot(list(series[key]), list(series[key].values()), label=key.removeprefix('val/recall_'))
        axis.set_xlabel('epoch')
        axis.legend(fontsize='small')
        if not keys[0].endswith('loss') and not keys[0].endswith('loss_epoch'):
            axis.set_ylim(0, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_misclassified(
    inputs: np.ndarray,
    targets: np.ndarray,
    preds: np.ndarray,
    channels: Sequence[str],
    class_names: Sequence[str],
    path: Path,
    limit: int = 16,
) -> int:
    """Grid of wrongly classified samples: colour (if any) and height above the plate side by side."""
    wrong = np.nonzero(targets != preds)[0][:limit]
    if wrong.size == 0:
        return 0
    has_rgb = all(name in channels for name in ('r', 'g', 'b'))
    has_height = 'height' in channels
    cols = int(has_rgb) + int(has_height)
    fig, axes = plt.subplots(wrong.size, cols, figsize=(3.2 * cols, 2.5 * wrong.size), squeeze=False)
    for row, index in enumerate(wrong):
        col = 0
        sample = inputs[index].astype(np.float32)
        if has_rgb:
            rgb = np.stack([sample[channels.index(c)] for c in ('r', 'g', 'b')], -1)
            axes[row, col].imshow(np.clip(rgb * 0.25 + 0.5, 0, 1))
            col += 1
        if has_height:
            axes[row, col].imshow(sample[channels.index('height')], cmap='viridis', vmin=-1, vmax=3)
        axes[row, 0].set_title(
            f'#{index} true {class_names[targets[index]]}, said {class_names[preds[index]]}', fontsize=8
        )
        for ax in axes[row]:
            ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return int(wrong.size)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    path.write_text(json.dumps(metrics, indent=1))
