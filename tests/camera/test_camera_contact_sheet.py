"""The documented contact-sheet command writes a PNG a person can look at."""

import subprocess
from pathlib import Path

import cv2

from tests.conftest import REPO_ROOT


def test_contact_sheet_script_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / 'sheet.png'
    result = subprocess.run(
        [
            str(REPO_ROOT / 'scripts' / 'contact_sheet'),
            '--out',
            str(out),
            '--per-class',
            '1',
            '--width',
            '96',
            '--height',
            '64',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    sheet = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert sheet is not None, 'not a readable PNG'
    assert sheet.shape[0] >= 5 * 2 * 64 and sheet.shape[1] >= 96  # five classes, RGB above depth each
    assert sheet.std() > 10
