"""A contact sheet of simulator frames: every class from subtle to obvious, RGB above depth.

python -m weld_camera.sim.contact_sheet --out sheet.png [--width 320 --height 240 --per-class 4 --seed 0]
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from weld_camera.sim.config import SimConfig, SimConfigError
from weld_camera.sim.simulator import SimFrame, WeldSimulator

_LABEL_HEIGHT = 18
_GAP = 4


def colourise_depth(depth_m: np.ndarray) -> np.ndarray:
    """Depth as an RGB image: turbo over the frame's 1st..99th percentile (near = red), no data black."""
    valid = depth_m > 0
    out = np.zeros((*depth_m.shape, 3), np.uint8)
    if not valid.any():
        return out
    near, far = np.percentile(depth_m[valid], [1, 99])
    scaled = np.clip((far - depth_m) / max(far - near, 1e-6), 0.0, 1.0)
    out[:] = cv2.cvtColor(
        cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB
    )
    out[~valid] = 0
    return out


def _tile(frame: SimFrame) -> np.ndarray:
    width = frame.rgb.shape[1]
    caption = np.full((_LABEL_HEIGHT, width, 3), 32, np.uint8)
    text = f'{frame.label}  sev {frame.severity:.2f}  #{frame.index}'
    cv2.putText(
        caption, text, (4, _LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1, cv2.LINE_AA
    )
    return np.vstack([caption, frame.rgb, colourise_depth(frame.depth_m)])


def contact_sheet(simulator: WeldSimulator, per_class: int) -> np.ndarray:
    """One row per class, ``per_class`` frames from subtle to obvious (good: just different frames)."""
    rows = []
    for class_index, label in enumerate(simulator.classes):
        # render a pool of frames and pick evenly spread severities, so the row runs subtle -> obvious
        pool = [simulator.render(1000 * (class_index + 1) + i, label=label) for i in range(per_class * 3)]
        pool.sort(key=lambda frame: frame.severity)
        picks = np.linspace(0, len(pool) - 1, per_class).round().astype(int)
        tiles = [_tile(pool[i]) for i in picks]
        spacer = np.full((tiles[0].shape[0], _GAP, 3), 255, np.uint8)
        row = [tiles[0]]
        for tile in tiles[1:]:
            row += [spacer, tile]
        rows.append(np.hstack(row))
    spacer = np.full((_GAP, rows[0].shape[1], 3), 255, np.uint8)
    sheet = [rows[0]]
    for row in rows[1:]:
        sheet += [spacer, row]
    return np.vstack(sheet)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, type=Path, help='PNG file to write')
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--per-class', type=int, default=4, help='frames per class (1-16)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.suffix.lower() != '.png':
        parser.error(f'--out must name a .png file, got {args.out}')
    if not 1 <= args.per_class <= 16:
        parser.error(f'--per-class must be 1..16, got {args.per_class}')
    try:
        simulator = WeldSimulator(SimConfig(width=args.width, height=args.height, seed=args.seed))
    except SimConfigError as error:
        parser.error(str(error))
    sheet = contact_sheet(simulator, args.per_class)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    except (OSError, cv2.error) as error:
        written, reason = False, str(error).strip().splitlines()[-1]
    else:
        reason = 'OpenCV could not write it'
    if not written:
        print(f'could not write {args.out}: {reason}', file=sys.stderr)
        return 1
    print(f'wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
