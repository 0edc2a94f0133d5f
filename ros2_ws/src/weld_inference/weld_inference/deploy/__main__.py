"""weld-deploy: deploy a model to models folders and boards, confirm it on /weld/defects, roll back.

    weld-deploy MODEL.onnx TARGET [TARGET ...] [--name NAME] [--wait-s 30]
    weld-deploy --rollback TARGET [TARGET ...]
    python -m weld_inference.deploy ...            (the same)

A TARGET is a models folder on this machine or ``user@board:/opt/weldvision/models``. The model is
checked once here (every check the inference node makes) and refused with nothing changed anywhere if
it fails; each target is then deployed on its own and reported on its own line. Exit code: 0 every
target done, 1 some target failed, 2 the model or the arguments were refused.
"""

import argparse
import contextlib
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from weld_core.model_file import ModelError
from weld_core.model_store import check_model, check_model_name
from weld_inference.deploy.report import Report
from weld_inference.deploy.store import receive
from weld_inference.deploy.targets import (
    DEFAULT_REMOTE_COMMAND,
    DEFAULT_SSH,
    is_ssh_target,
    run_local,
    run_ssh,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='weld-deploy',
        description='Deploy an ONNX model to models folders and boards (user@board:/opt/weldvision/models), '
        'or roll the last deploy back.',
    )
    parser.add_argument(
        'items',
        nargs='+',
        metavar='MODEL TARGET',
        help='the model file (- reads it from stdin, what an ssh target runs), then one or more targets; '
        'with --rollback only targets',
    )
    parser.add_argument('--rollback', action='store_true', help='run the previous model again')
    parser.add_argument('--name', help='file name in the models folder (default: the model file name)')
    parser.add_argument(
        '--wait-s',
        type=float,
        default=30.0,
        help='how long to wait for /weld/defects to report the new model_id (0: do not wait)',
    )
    parser.add_argument('--domain-id', type=int, help='ROS_DOMAIN_ID to watch (default: the environment)')
    parser.add_argument('--ssh', default=DEFAULT_SSH, help=f'ssh command for board targets ({DEFAULT_SSH!r})')
    parser.add_argument(
        '--remote-command',
        default=DEFAULT_REMOTE_COMMAND,
        help=f'weld-deploy as the board runs it ({DEFAULT_REMOTE_COMMAND!r})',
    )
    parser.add_argument('--expect-sha256', help='with MODEL -: the digest the sender computed')
    parser.add_argument('--json', action='store_true', help='one JSON report per target')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wait_s < 0:
        parser.error('--wait-s must be >= 0')
    if args.rollback:
        model_arg, targets = None, list(args.items)
    elif len(args.items) < 2:
        parser.error('give the model file and at least one target')
    else:
        model_arg, targets = args.items[0], list(args.items[1:])
    action = 'rollback' if args.rollback else 'deploy'
    if model_arg == '-' and (not args.expect_sha256 or not args.name or len(targets) != 1):
        parser.error('MODEL - (from stdin) needs --name, --expect-sha256 and exactly one local folder')

    def emit(reports: list[Report]) -> None:
        for report in reports:
            print(report.to_json() if args.json else report.line(), flush=True)

    with contextlib.ExitStack() as stack:
        model, name, sha256 = None, '', ''
        if model_arg is not None:
            try:
                if model_arg == '-':
                    model = receive(sys.stdin.buffer, Path(targets[0]), args.name, args.expect_sha256)
                    stack.callback(model.unlink, missing_ok=True)
                else:
                    model = Path(model_arg)
                name = check_model_name(args.name or model.name)
                sha256 = check_model(model).info.sha256
            except ModelError as exc:
                emit(
                    [Report(target, False, action, f'refused, nothing changed: {exc}') for target in targets]
                )
                return 2
        local = [target for target in targets if not is_ssh_target(target)]
        confirm = None
        if local and args.wait_s > 0:
            from weld_inference.deploy.watch import DefectsWatch  # rclpy only where something is watched

            watch = stack.enter_context(DefectsWatch(domain_id=args.domain_id))

            def confirm(model_id: str, since: float):
                return watch.wait_for(model_id, since, args.wait_s)

        def run(target: str) -> Report:
            if is_ssh_target(target):
                return run_ssh(
                    target, action, model, name, sha256, args.wait_s, args.ssh, args.remote_command
                )
            return run_local(target, action, model, name or None, confirm)

        with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
            reports = list(pool.map(run, targets))
    emit(reports)
    return 0 if all(report.ok for report in reports) else 1


if __name__ == '__main__':
    sys.exit(main())
