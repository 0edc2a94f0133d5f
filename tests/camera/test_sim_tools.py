"""The simulator's command-line tools: the contact sheet and the render benchmark."""

import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from weld_camera.sim import benchmark, contact_sheet
from weld_core.classes import DEFAULT_CLASSES


def test_contact_sheet_command_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / 'sheets' / 'sheet.png'
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'weld_camera.sim.contact_sheet',
            '--out',
            str(out),
            '--width',
            '160',
            '--height',
            '120',
            '--per-class',
            '2',
            '--seed',
            '3',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sheet = cv2.imread(str(out))
    assert sheet is not None
    # one row per class, each tile a caption + RGB + depth, two tiles per row
    tile_height = 18 + 2 * 120
    assert sheet.shape[0] == len(DEFAULT_CLASSES) * tile_height + (len(DEFAULT_CLASSES) - 1) * 4
    assert sheet.shape[1] == 2 * 160 + 4
    depth_tile = sheet[18 + 120 : tile_height, :160]
    assert depth_tile.std() > 10  # a colour map, not a blank


def test_contact_sheet_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        contact_sheet.main(['--out', str(tmp_path / 'x.png'), '--per-class', '0'])
    assert '--per-class' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        contact_sheet.main(['--out', str(tmp_path / 'x.png'), '--width', '8'])
    assert 'width' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        contact_sheet.main(['--out', str(tmp_path / 'sheet.jpg')])
    assert '.png' in capsys.readouterr().err
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a directory')
    small = ['--width', '64', '--height', '48', '--per-class', '1']
    assert contact_sheet.main(['--out', str(blocker / 'sheet.png'), *small]) == 1
    assert 'could not write' in capsys.readouterr().err


def test_benchmark_prints_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert benchmark.main(['--frames', '2', '--sizes', '64x48', '--threads', '0']) == 0
    out = capsys.readouterr().out
    assert '64x48: wall' in out and 'ms/frame' in out
