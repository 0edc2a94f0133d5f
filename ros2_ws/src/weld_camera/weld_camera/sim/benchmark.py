"""Print how fast the simulator renders, per resolution: wall and CPU time per frame.

    python -m weld_camera.sim.benchmark [--frames 50] [--threads 1] [--sizes 320x240 640x480]

``--threads 1`` keeps OpenCV on one thread, so the CPU figure is the cost on one core; run it
under ``taskset -c N`` to pin the process to one core as well.
"""

import argparse
import sys
import time
from collections.abc import Sequence

import cv2

from weld_camera.sim.config import SimConfig
from weld_camera.sim.simulator import WeldSimulator


def measure(width: int, height: int, frames: int, seed: int = 0) -> tuple[float, float]:
    """Seconds per frame (wall, CPU) over ``frames`` frames after one warm-up frame."""
    simulator = WeldSimulator(SimConfig(width=width, height=height, seed=seed))
    simulator.render(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(1, frames + 1):
        simulator.render(index)
    return (time.perf_counter() - wall) / frames, (time.process_time() - cpu) / frames


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split('x'))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'size must look like 640x480, got {text!r}') from exc
    return width, height


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=50)
    parser.add_argument('--threads', type=int, default=1, help='OpenCV threads (0: OpenCV default)')
    parser.add_argument('--sizes', type=_size, nargs='+', default=[(320, 240), (640, 480)])
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error('--frames must be at least 1')
    if args.threads > 0:
        cv2.setNumThreads(args.threads)
    print(f'weld-scene simulator, {args.frames} frames per size, OpenCV threads: {cv2.getNumThreads()}')
    for width, height in args.sizes:
        wall, cpu = measure(width, height, args.frames)
        print(
            f'{width}x{height}: wall {1000 * wall:6.1f} ms/frame ({1 / wall:6.1f} fps), '
            f'cpu {1000 * cpu:6.1f} ms/frame ({1 / cpu:6.1f} frames per core-second)'
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
