"""The real graph for the console's page tests: simulator camera, labeler, inference and the console,
each in its own process on this test's loopback DDS domain, and a real browser (Debian's chromium
driven by Playwright; no browser download) on the console's page."""

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_FLAGS = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
]
URL_LINE = re.compile(r'operator console at (http://\S+)')
REPO_ROOT = Path(__file__).resolve().parents[2]


def converted_labels(source: Path, dataset: Path) -> list[str]:
    """``training.convert`` of a review session (bag folder or .tar.gz) in its own process, as a user
    runs it; the labels of the dataset it made, sorted."""
    command = [sys.executable, '-m', 'training.convert', str(source), '-o', str(dataset), '--quiet']
    done = subprocess.run(
        [*command, '--workers', '1'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((dataset / 'manifest.json').read_text())
    return sorted(frame['label'] for frame in manifest['frames'])


def node_args(module: str, *params: str) -> list[str]:
    args = ['-m', module, '--ros-args']
    for param in params:
        args += ['-p', param]
    return args


class Graph:
    """Camera (sim, 320x240 at 10 Hz), labeler, inference and console, with their folders in ``root``."""

    def __init__(self, spawn_node: Callable[..., Any], root: Path, *console_params: str) -> None:
        self.root = root
        self.models = root / 'models'
        self.sessions = root / 'sessions'
        self.exports = root / 'exports'
        self.review = root / 'review'
        self.models.mkdir(parents=True, exist_ok=True)
        self.camera = spawn_node(
            node_args('weld_camera.camera_node', 'width:=320', 'height:=240', 'rate_hz:=10.0', 'seed:=11'),
            name='camera',
        )
        self.labeler = spawn_node(
            node_args(
                'weld_labeler.labeler_node',
                f'recording_dir:={self.sessions}',
                f'export_dir:={self.exports}',
                'min_free_space_mb:=0.0',
                'capture_timeout_s:=10.0',
            ),
            name='labeler',
        )
        self.inference = spawn_node(
            node_args(
                'weld_inference.inference_node',
                f'models_dir:={self.models}',
                'model_poll_interval_s:=0.5',
                'rules_on_every_pair:=true',
                'max_rate_hz:=5.0',
            ),
            name='inference',
        )
        self.console = self.start_console(spawn_node, *console_params)

    def start_console(self, spawn_node: Callable[..., Any], *params: str) -> Any:
        return spawn_node(
            node_args(
                'weld_console.console_node',
                'port:=0',
                f'models_dir:={self.models}',
                f'recording_dir:={self.sessions}',
                f'export_dir:={self.exports}',
                f'review_dir:={self.review}',
                'min_free_space_mb:=0.0',
                'review_min_interval_s:=0.3',
                f'token_file:={self.root / "token"}',
                *params,
            ),
            name='console',
        )

    def url(self, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = URL_LINE.search(self.console.output)
            if found:
                return found.group(1)
            if not self.console.alive():
                break
            time.sleep(0.1)
        raise AssertionError(f'the console did not say where it listens:\n{self.console.output}')


@contextlib.contextmanager
def browser_page() -> Iterator[Page]:
    """A page of a fresh headless chromium (its own temporary profile)."""
    assert CHROMIUM.is_file(), f'{CHROMIUM} is missing: ./scripts/setup installs requirements/apt.txt'
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 900})
            errors: list[str] = []
            page.on('pageerror', lambda error: errors.append(str(error)))
            yield page
            assert not errors, f'the page raised: {errors}'
        finally:
            browser.close()


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f'timed out after {timeout_s} s waiting for {what}')
