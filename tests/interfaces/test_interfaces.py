"""weld_interfaces matches ../shared/CONTRACT.md field for field, and every copy of it agrees."""

import re
from pathlib import Path

import pytest

from weld_core.bag_types import INTERFACE_MSGS, weld_typestore

REPO_ROOT = Path(__file__).resolve().parents[2]
INTERFACES = REPO_ROOT / 'ros2_ws' / 'src' / 'weld_interfaces'
CONTRACT = REPO_ROOT.parent / 'shared' / 'CONTRACT.md'
INTERFACE_DOC = REPO_ROOT / 'docs' / 'interfaces.md'
CONTRACT_FILES = ('msg/DefectLabel.msg', 'msg/DefectResult.msg', 'srv/Capture.srv')


def fields(text: str) -> list[str]:
    """The definition lines of a .msg/.srv text: comments and blank lines removed, spaces folded."""
    lines = []
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            lines.append(' '.join(line.split()))
    return lines


def code_blocks_by_file(markdown: str) -> dict[str, str]:
    """Code blocks of a markdown text keyed by the file their first line names (# Name.msg - ...)."""
    blocks = {}
    for block in re.findall(r'```\n(.*?)```', markdown, flags=re.S):
        first = block.splitlines()[0]
        match = re.match(r'#\s*(\w+\.(?:msg|srv))\b', first)
        if match:
            blocks[match.group(1)] = block
    return blocks


@pytest.mark.parametrize('relative', CONTRACT_FILES)
def test_contract_interfaces_match_field_for_field(relative: str) -> None:
    if not CONTRACT.is_file():
        pytest.skip(f'{CONTRACT} is not beside this checkout')
    contract = code_blocks_by_file(CONTRACT.read_text())
    name = Path(relative).name
    assert name in contract, f'{name} not found in CONTRACT.md'
    assert fields((INTERFACES / relative).read_text()) == fields(contract[name])


def test_interface_doc_shows_every_interface_as_built() -> None:
    documented = code_blocks_by_file(INTERFACE_DOC.read_text())
    for path in sorted([*INTERFACES.glob('msg/*.msg'), *INTERFACES.glob('srv/*.srv')]):
        assert path.name in documented, f'{path.name} is missing from docs/interfaces.md'
        assert fields(documented[path.name]) == fields(path.read_text()), (
            f'docs/interfaces.md differs on {path.name}'
        )


def test_every_interface_file_is_built() -> None:
    cmake = (INTERFACES / 'CMakeLists.txt').read_text()
    for path in [*INTERFACES.glob('msg/*.msg'), *INTERFACES.glob('srv/*.srv')]:
        assert f'"{path.parent.name}/{path.name}"' in cmake, (
            f'{path.name} is not in rosidl_generate_interfaces'
        )


@pytest.mark.parametrize('msgtype', sorted(INTERFACE_MSGS))
def test_bag_type_definitions_equal_the_msg_files(msgtype: str) -> None:
    name = msgtype.rsplit('/', 1)[1]
    assert INTERFACE_MSGS[msgtype] == (INTERFACES / 'msg' / f'{name}.msg').read_text()


def test_built_python_types_have_the_contract_fields() -> None:
    from weld_interfaces.msg import DefectLabel, DefectResult
    from weld_interfaces.srv import Capture

    assert list(DefectLabel.get_fields_and_field_types()) == ['header', 'label', 'session_id', 'note']
    assert list(DefectResult.get_fields_and_field_types()) == [
        'header',
        'label',
        'confidence',
        'class_names',
        'scores',
        'source',
        'model_id',
        'fallback_reason',
        'latency_ms',
    ]
    assert list(Capture.Request.get_fields_and_field_types()) == ['label', 'count', 'note']
    assert list(Capture.Response.get_fields_and_field_types()) == [
        'success',
        'message',
        'captured',
        'session_id',
    ]


def test_rosbags_hash_of_defect_label_matches_the_recorded_sessions() -> None:
    """Bags we write must carry the same type hash as bags recorded elsewhere (rosidl's RIHS01)."""
    metadata = REPO_ROOT.parent / 'shared' / 'datasets' / 'weldsim' / 's01' / 'metadata.yaml'
    if not metadata.is_file():
        pytest.skip('shared weldsim sessions are not beside this checkout')
    recorded = re.search(r'DefectLabel\n\s+type_description_hash: *\n?\s*(RIHS01_\w+)', metadata.read_text())
    assert recorded, 'no DefectLabel hash in the recorded metadata'
    assert weld_typestore().hash_rihs01('weld_interfaces/msg/DefectLabel') == recorded.group(1)


def test_interface_doc_names_every_required_model_metadata_key() -> None:
    from weld_core.model_file import REQUIRED_METADATA_KEYS

    text = INTERFACE_DOC.read_text()
    missing = [key for key in REQUIRED_METADATA_KEYS if f'`{key}`' not in text]
    assert not missing, f'docs/interfaces.md does not describe model metadata keys {missing}'
