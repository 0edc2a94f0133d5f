"""Which defects the simulator's sensor shows: the board's rules' recall by severity band per class.

Renders ``--per-band`` frames of each defect class in each severity band (0-0.2, ..., 0.8-1; the
severity forced, so the floor does not apply) from simulator seed ``--seed`` at 320x240, runs the
rule-based detector on each, and prints, per class and band, the frames the rules call that class.
The floor a class should have is the lower edge of the first band from which the rules find at least
``--visible`` of the frames in that band and every band above it; the table ends with those floors
next to the simulator's ``SEVERITY_FLOOR``. With ``--model M.onnx`` a second table gives the same
shares for that model (arg-max, through the node's loader and the model's own preprocessing): which
bands a trained model misses where the rules see the defect. Not a test: it prints figures.

    .venv/bin/python bench/bench_sim_severity.py [--per-band 40] [--seed 11] [--visible 0.5] [--model M.onnx]
"""

import argparse
import itertools
import sys

import numpy as np

from weld_camera.sim import SimConfig, WeldSimulator
from weld_camera.sim.scene import SEVERITY_FLOOR
from weld_inference.model_runner import ModelRunner
from weld_inference.rules import RuleDetector

BANDS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--per-band', type=int, default=40, help='frames per class and severity band')
    parser.add_argument('--seed', type=int, default=11, help='simulator seed (0-3 tuned the rules)')
    parser.add_argument('--visible', type=float, default=0.5, help='share the rules must find in a band')
    parser.add_argument('--model', help='an ONNX model file: its shares by band as well')
    args = parser.parse_args()
    simulator = WeldSimulator(SimConfig(width=320, height=240, seed=args.seed))
    detector = RuleDetector()
    fx = float(simulator.camera_info.k[0])
    answerers = {'rules': lambda frame: detector(frame.rgb, frame.depth_m, fx=fx, fy=fx).label}
    if args.model:
        runner = ModelRunner.load(args.model)
        answerers[runner.model_id] = lambda frame: runner.class_names[
            int(np.argmax(runner.infer(frame.rgb, frame.depth_m)))
        ]
    rng = np.random.default_rng(args.seed)
    found: dict[str, dict[str, list[float]]] = {name: {} for name in answerers}
    index = 0
    for label in SEVERITY_FLOOR:
        for lo, hi in itertools.pairwise(BANDS):
            hits = dict.fromkeys(answerers, 0)
            for _ in range(args.per_band):
                frame = simulator.render(index, label=label, severity=float(rng.uniform(lo, hi)))
                index += 1
                for name, answer in answerers.items():
                    hits[name] += answer(frame) == label
            for name in answerers:
                found[name].setdefault(label, []).append(hits[name] / args.per_band)
    header = ' '.join(f'{lo:.1f}-{hi:.1f}' for lo, hi in itertools.pairwise(BANDS))
    for name, shares_by_label in found.items():
        print(f'{name} recall by severity band, sim seed {args.seed}, 320x240, {args.per_band} frames a cell')
        print(f'{"class":<9} {header}   floor found / SEVERITY_FLOOR')
        for label, shares in shares_by_label.items():
            visible = [all(share >= args.visible for share in shares[i:]) for i in range(len(shares))]
            floor = BANDS[visible.index(True)] if any(visible) else None
            cells = ' '.join(f'{share:>7.2f}' for share in shares)
            print(f'{label:<9} {cells}   {floor if floor is not None else "none"} / {SEVERITY_FLOOR[label]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
