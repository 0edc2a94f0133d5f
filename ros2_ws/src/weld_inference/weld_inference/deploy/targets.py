"""Deploy targets: a models folder on this machine, or one on a board over ssh.

An ssh target (``user@board:/opt/weldvision/models``) runs the same steps on the board: the model
goes over ssh's stdin into the board's ``weld-deploy - FOLDER --expect-sha256 ...``, which receives
it into a hidden file, refuses it unless the digest matches, and then places it, checks and waits
exactly as for a local folder, with the board's own ONNX Runtime and its own /weld/defects. It
answers with one JSON line, which becomes this target's report.
"""

import json
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from weld_core.model_file import ModelError
from weld_inference.deploy.report import Confirmation, Report
from weld_inference.deploy.store import Change, change_as_dict, place, rollback

# what a board set up by scripts/board-setup runs for an ssh target
DEFAULT_REMOTE_COMMAND = '/opt/weldvision/bin/weldvision-env python3 -m weld_inference.deploy'
DEFAULT_SSH = 'ssh -o BatchMode=yes -o ConnectTimeout=10'
SSH_SLACK_S = 120.0


def is_ssh_target(text: str) -> bool:
    """``[user@]host:/path`` as scp and rsync read it: a colon before the first slash."""
    head, colon, _ = text.partition(':')
    return bool(colon) and '/' not in head and bool(head)


def _describe(change: Change, confirmation: Confirmation | None) -> tuple[bool, str]:
    current = change.current
    now = (
        f'{current.model_id} ({current.name})'
        if current
        else 'no deployed model (the rules or an older file)'
    )
    before = change.previous.model_id if change.previous else 'none'
    message = f'{now}; previous {before}' + (' (was already running)' if change.unchanged else '')
    if confirmation is None:
        return True, message
    expected = current.model_id if current else ''
    ok = confirmation.status in ('confirmed', 'unreachable')
    return ok, f'{message}; {confirmation.describe(expected)}'


def run_local(
    target: str,
    action: str,
    model: Path | None,
    name: str | None,
    confirm: Callable[[str, float], Confirmation] | None,
) -> Report:
    """Deploy to / roll back a models folder on this machine; ``confirm(model_id, since)`` waits for it."""
    since = time.monotonic()
    try:
        change = place(model, Path(target), name) if action == 'deploy' else rollback(Path(target))
    except ModelError as exc:
        return Report(target, False, action, str(exc))
    confirmation = None
    if confirm is not None:
        confirmation = confirm(change.current.model_id if change.current else '', since)
    ok, message = _describe(change, confirmation)
    return Report(
        target,
        ok,
        action,
        message,
        change_as_dict(change),
        asdict(confirmation) if confirmation else None,
    )


def remote_command(remote: str, folder: str, action: str, name: str, sha256: str, wait_s: float) -> str:
    """The command line the board runs for this target (one string, quoted for its shell)."""
    base = f'{remote} '
    if action == 'deploy':
        args = ['-', folder, '--name', name, '--expect-sha256', sha256]
    else:
        args = ['--rollback', folder]
    args += ['--wait-s', f'{wait_s:g}', '--json']
    return base + ' '.join(shlex.quote(arg) for arg in args)


def run_ssh(
    target: str,
    action: str,
    model: Path | None,
    name: str,
    sha256: str,
    wait_s: float,
    ssh: str = DEFAULT_SSH,
    remote: str = DEFAULT_REMOTE_COMMAND,
) -> Report:
    """Deploy to / roll back a models folder on a board: the same steps, run there over ssh."""
    host, _, folder = target.partition(':')
    command = [*shlex.split(ssh), host, remote_command(remote, folder, action, name, sha256, wait_s)]
    try:
        with model.open('rb') if model is not None else open('/dev/null', 'rb') as stdin:
            done = subprocess.run(
                command, stdin=stdin, capture_output=True, timeout=wait_s + SSH_SLACK_S, check=False
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Report(target, False, action, f'ssh did not complete: {exc}')
    lines = done.stdout.decode(errors='replace').strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or 'ok' not in answer:
        errors = done.stderr.decode(errors='replace').strip().splitlines()[-3:]
        return Report(
            target,
            False,
            action,
            f'the board gave no report (ssh exit {done.returncode}): {" / ".join(errors) or "no output"}',
        )
    return Report(
        target,
        bool(answer['ok']),
        action,
        str(answer.get('message', '')),
        answer.get('change'),
        answer.get('confirmation'),
    )
