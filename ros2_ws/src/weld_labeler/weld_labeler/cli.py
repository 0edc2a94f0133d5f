"""weld-label: the labeler's services from a shell, where `ros2 service call` is not installed.

    weld-label porosity --count 5 --note 'seam 3'
    weld-label session start --name plate7 --operator ana --material 'S235 6 mm' --process GMAW
    weld-label session stop | list | export [SESSION_ID] [--output-dir DIR]
    weld-label continuous spatter [--note ...] | weld-label continuous --clear

Exit status: 0 done, 1 the labeler refused or captured fewer pairs than asked, 2 no labeler or no answer.
"""

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='weld-label',
        description='Label weld captures and control recording sessions of a running weld_labeler.',
        epilog='Capture: weld-label LABEL [--count N] [--note TEXT]. '
        'Sessions: weld-label session start|stop|list|export. '
        'Continuous: weld-label continuous LABEL|--clear.',
    )
    parser.add_argument('--labeler', default='/weld_labeler', help='the labeler node (namespace/name)')
    parser.add_argument(
        '--wait-s', type=float, default=10.0, help='how long to wait for the labeler to appear'
    )
    parser.add_argument(
        '--answer-s',
        type=float,
        default=120.0,
        help="how long to wait for the labeler's answer once the request is sent",
    )
    commands = parser.add_subparsers(dest='command', required=True)

    capture = commands.add_parser(
        'capture', help='label the next N frame pairs (default when a label is given)'
    )
    capture.add_argument('label')
    capture.add_argument('--count', '-n', type=int, default=1)
    capture.add_argument('--note', default='')

    session = commands.add_parser('session', help='start, stop, list or export recording sessions')
    actions = session.add_subparsers(dest='action', required=True)
    start = actions.add_parser('start')
    start.add_argument('--name', default='')
    start.add_argument('--operator', default=os.environ.get('USER', ''))
    start.add_argument('--material', default='')
    start.add_argument('--process', default='')
    start.add_argument('--wire', default='')
    start.add_argument('--current-a', type=float, default=0.0)
    start.add_argument('--note', default='')
    actions.add_parser('stop')
    actions.add_parser('list')
    export = actions.add_parser('export')
    export.add_argument(
        'session_id', nargs='?', default='', help='default: the most recently stopped session'
    )
    export.add_argument('--output-dir', default='', help="default: the labeler's export_dir")

    continuous = commands.add_parser('continuous', help='label every pair until cleared')
    continuous.add_argument('label', nargs='?', default='')
    continuous.add_argument('--note', default='')
    continuous.add_argument('--clear', action='store_true')
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    commands = {'capture', 'session', 'continuous', '-h', '--help'}
    # `weld-label porosity -n 5`: the first word that is not an option and not a command is a label
    positional = [index for index, word in enumerate(argv) if not word.startswith('-')]
    options_with_value = {'--labeler', '--wait-s', '--answer-s'}
    for index in positional:
        if index > 0 and argv[index - 1] in options_with_value:
            continue
        if argv[index] not in commands:
            argv.insert(index, 'capture')
        break
    args = _parser().parse_args(argv)
    if args.command == 'continuous' and bool(args.label) == bool(args.clear):
        _parser().error('continuous: give a LABEL or --clear')
    return args


def _call(node: Any, service_type: Any, name: str, request: Any, args: argparse.Namespace) -> Any:
    import rclpy

    client = node.create_client(service_type, name)
    if not client.wait_for_service(timeout_sec=args.wait_s):
        raise TimeoutError(
            f'no labeler service {name} after {args.wait_s:g} s: '
            'is weld_labeler running (same ROS_DOMAIN_ID)?'
        )
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=args.answer_s)
    if not future.done():
        client.remove_pending_request(future)
        raise TimeoutError(
            f'{name} gave no answer within {args.answer_s:g} s (--answer-s); the labeler may still have '
            "carried it out: see its log and 'weld-label session list'"
        )
    if future.result() is None:
        raise TimeoutError(f'{name} gave no answer: {future.exception()}')
    return future.result()


def run(args: argparse.Namespace) -> int:
    import rclpy

    from weld_interfaces.srv import (
        Capture,
        ExportSession,
        ListSessions,
        SetContinuousLabel,
        StartSession,
        StopSession,
    )

    base = args.labeler.rstrip('/')
    rclpy.init()
    node = rclpy.create_node(f'weld_label_cli_{os.getpid()}')
    try:
        if args.command == 'capture':
            request = Capture.Request(label=args.label, count=max(args.count, 0), note=args.note)
            reply = _call(node, Capture, f'{base}/capture', request, args)
            print(reply.message)
            wanted = max(args.count, 1)
            return EXIT_OK if reply.success and reply.captured >= wanted else EXIT_REFUSED
        if args.command == 'continuous':
            request = SetContinuousLabel.Request(label='' if args.clear else args.label, note=args.note)
            reply = _call(node, SetContinuousLabel, f'{base}/set_continuous_label', request, args)
        elif args.action == 'start':
            request = StartSession.Request(
                name=args.name,
                operator_name=args.operator,
                material=args.material,
                process=args.process,
                wire=args.wire,
                current_a=args.current_a,
                note=args.note,
            )
            reply = _call(node, StartSession, f'{base}/start_session', request, args)
            if reply.success:
                print(f'{reply.message}\nbag: {reply.bag_path}')
                return EXIT_OK
        elif args.action == 'stop':
            reply = _call(node, StopSession, f'{base}/stop_session', StopSession.Request(), args)
            if reply.success:
                print(f'{reply.message}\nbag: {reply.bag_path}')
                return EXIT_OK
        elif args.action == 'list':
            reply = _call(node, ListSessions, f'{base}/list_sessions', ListSessions.Request(), args)
            for session_id, path, pairs in zip(
                reply.session_ids, reply.bag_paths, reply.pairs_recorded, strict=True
            ):
                marker = '*' if session_id == reply.active_session_id else ' '
                print(f'{marker} {session_id}  {pairs:6d} pairs  {path}')
            if not reply.session_ids:
                print('no sessions')
            return EXIT_OK
        else:
            request = ExportSession.Request(session_id=args.session_id, output_dir=args.output_dir)
            reply = _call(node, ExportSession, f'{base}/export_session', request, args)
            if reply.success:
                print(reply.archive_path)
                return EXIT_OK
        print(reply.message, file=sys.stdout if reply.success else sys.stderr)
        return EXIT_OK if reply.success else EXIT_REFUSED
    except TimeoutError as exc:
        print(f'weld-label: {exc}', file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        node.destroy_node()
        with contextlib.suppress(Exception):
            rclpy.try_shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return EXIT_REFUSED


if __name__ == '__main__':
    sys.exit(main())
