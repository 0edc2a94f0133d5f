"""weld-label argument parsing (the calls themselves run against a live labeler in test_labeler_node)."""

import pytest

from weld_labeler.cli import parse_args


def test_a_bare_label_is_a_capture() -> None:
    args = parse_args(['porosity', '--count', '5', '--note', 'seam 3'])
    assert (args.command, args.label, args.count, args.note) == ('capture', 'porosity', 5, 'seam 3')
    args = parse_args(['--labeler', '/ns/weld_labeler', 'gap', '-n', '2'])
    assert (args.labeler, args.command, args.label, args.count) == ('/ns/weld_labeler', 'capture', 'gap', 2)


def test_session_and_continuous_commands() -> None:
    start = parse_args(['session', 'start', '--name', 'plate', '--material', 'S235', '--current-a', '180'])
    assert (start.action, start.name, start.material, start.current_a) == ('start', 'plate', 'S235', 180.0)
    export = parse_args(['session', 'export', '20261127-120000_plate', '--output-dir', '/tmp/x'])
    assert (export.session_id, export.output_dir) == ('20261127-120000_plate', '/tmp/x')
    assert parse_args(['continuous', 'spatter']).label == 'spatter'
    assert parse_args(['continuous', '--clear']).clear


@pytest.mark.parametrize('argv', [['continuous'], ['continuous', 'gap', '--clear'], ['session'], []])
def test_incomplete_commands_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parse_args(argv)
    assert raised.value.code == 2
