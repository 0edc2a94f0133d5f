"""scripts/board-setup and the systemd unit it installs (no board here: the plan is read from
--dry-run, and the unit is checked by systemd-analyze verify in a root laid out as the plan says)."""

import re
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / 'scripts' / 'board-setup'
UNIT = REPO / 'board' / 'weldvision.service'
RECORD = yaml.safe_load((REPO / 'ros2_ws' / 'rosdep_keys.yaml').read_text())


def plan(*args: str) -> list[str]:
    done = subprocess.run(
        [str(SETUP), '--dry-run', *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line[2:] for line in done.stdout.splitlines() if line.startswith('+ ')]


def installed_files(commands: list[str]) -> dict[str, Path]:
    """destination -> source of every `install [-D] -m MODE SOURCE DESTINATION` in the plan."""
    files = {}
    for command in commands:
        match = re.fullmatch(r'install (?:-D )?-m \d+ (\S+) (\S+)', command)
        if match:
            files[match.group(2)] = Path(match.group(1))
    return files


def unit_settings(text: str) -> dict[str, str]:
    return dict(line.split('=', 1) for line in text.splitlines() if '=' in line and not line.startswith('#'))


def test_scripts_parse() -> None:
    for script in (SETUP, REPO / 'board' / 'weldvision-env'):
        assert subprocess.run(['bash', '-n', str(script)], check=False).returncode == 0, script
        assert script.stat().st_mode & 0o111, f'{script} must be executable'


def test_the_plan_installs_rosdep_keys_pip_libraries_workspace_user_and_unit() -> None:
    commands = plan('--camera', 'realsense')
    text = '\n'.join(commands)
    pip_keys = sorted(
        key for key, entry in RECORD['keys'].items() if entry.get('ubuntu', '').startswith('pip')
    )
    skipped = re.search(r"--skip-keys '([^']*)'", text)
    assert skipped and sorted(skipped.group(1).split()) == pip_keys, 'exactly the pip keys are left to pip'
    assert re.search(r'rosdep install --rosdistro humble --from-paths \S+ros2_ws/src\' --ignore-src -y', text)
    assert 'python3 -m venv --system-site-packages /opt/weldvision/venv' in text
    assert re.search(r'pip install .*-c \S+constraints.txt -r \S+requirements/board-pip.txt', text)
    assert re.search(r'pip install .*--no-deps -r \S+requirements/board-pip-nodeps.txt', text)
    assert 'build --merge-install' in text and "--install-base '/opt/weldvision/install'" in text
    assert re.search(r'useradd --system .* weldvision$', text, re.MULTILINE)
    assert 'install -d -o root -g weldvision -m 2775 /opt/weldvision/models' in text
    assert 'systemctl enable weldvision.service' in text and 'systemctl restart weldvision.service' in text
    files = installed_files(commands)
    for source in files.values():
        assert source.is_file(), f'the plan installs {source}, which does not exist'
    assert files['/etc/weldvision/site.yaml'].name == 'board_realsense.yaml'
    assert files['/etc/systemd/system/weldvision.service'] == UNIT
    assert 'systemctl restart' not in '\n'.join(plan('--no-start'))


def test_an_unknown_camera_is_refused() -> None:
    done = subprocess.run([str(SETUP), '--dry-run', '--camera', 'kinect'], capture_output=True, text=True)
    assert done.returncode == 2 and 'stereonet or realsense' in done.stderr


def test_the_unit_restarts_on_failure_logs_to_the_journal_and_runs_as_the_service_user() -> None:
    settings = unit_settings(UNIT.read_text())
    assert settings['User'] == 'weldvision' and settings['Group'] == 'weldvision'
    assert settings['Restart'] == 'on-failure' and float(settings['RestartSec']) > 0
    assert settings['StandardOutput'] == 'journal' and settings['StandardError'] == 'journal'
    assert settings['KillSignal'] == 'SIGINT', 'ros2 launch stops its nodes cleanly on SIGINT'
    assert settings['WantedBy'] == 'multi-user.target'
    assert settings['ExecStart'].split()[:4] == [
        '/opt/weldvision/bin/weldvision-env',
        'ros2',
        'launch',
        'weld_bringup',
    ]
    assert 'params_file:=/etc/weldvision/site.yaml' in settings['ExecStart']
    launch = REPO / 'ros2_ws/src/weld_bringup/launch' / settings['ExecStart'].split()[4]
    assert launch.is_file()


def verify(root: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    (root / 'etc/systemd/system/weldvision.service').write_text(unit_text)
    return subprocess.run(
        ['systemd-analyze', 'verify', f'--root={root}', '/etc/systemd/system/weldvision.service'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_systemd_analyze_verify_passes_in_a_root_laid_out_as_board_setup_installs(tmp_path: Path) -> None:
    assert shutil.which('systemd-analyze'), 'systemd-analyze missing (requirements/apt.txt lists systemd)'
    root = tmp_path / 'root'
    # the host's own units stand in for the board's (network-online.target, multi-user.target, ...)
    shutil.copytree('/usr/lib/systemd/system', root / 'usr/lib/systemd/system', symlinks=True)
    (root / 'tmp').mkdir()
    for destination, source in installed_files(plan()).items():
        target = root / destination.lstrip('/')
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    done = verify(root, UNIT.read_text())
    assert done.returncode == 0 and done.stdout + done.stderr == '', done.stdout + done.stderr

    # the same check sees a wrong setting and a missing program
    broken = verify(root, UNIT.read_text().replace('Restart=on-failure', 'Restart=sometimes'))
    assert 'Failed to parse service restart specifier' in broken.stderr
    (root / 'opt/weldvision/bin/weldvision-env').chmod(0o644)
    missing = verify(root, UNIT.read_text())
    assert missing.returncode != 0 and 'is not executable' in missing.stderr
