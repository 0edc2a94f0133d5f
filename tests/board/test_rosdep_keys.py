"""Every package.xml key resolves with rosdep on the board, and every import has its key.

The keys were read from ros/rosdistro (rosdep/python.yaml, humble/distribution.yaml) and recorded with
their source in ros2_ws/rosdep_keys.yaml; this test needs no network and no rosdep.
"""

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKSPACE = REPO / 'ros2_ws' / 'src'
RECORD = yaml.safe_load((REPO / 'ros2_ws' / 'rosdep_keys.yaml').read_text())
DEPENDENCY_TAGS = (
    'depend', 'build_depend', 'build_export_depend', 'buildtool_depend', 'buildtool_export_depend',
    'exec_depend', 'test_depend', 'doc_depend',
)  # fmt: skip
PACKAGE_DIRS = sorted(path.parent for path in WORKSPACE.glob('*/package.xml'))
WORKSPACE_PACKAGES = {ET.parse(folder / 'package.xml').getroot().findtext('name') for folder in PACKAGE_DIRS}


def dependency_keys(package_dir: Path) -> dict[str, list[str]]:
    """tag -> keys, as a package.xml (format 3) lists them."""
    root = ET.parse(package_dir / 'package.xml').getroot()
    return {
        tag: [element.text.strip() for element in root.iter(tag) if element.text] for tag in DEPENDENCY_TAGS
    }


def imported_modules(package_dir: Path) -> set[str]:
    """Top-level modules the package imports; imports guarded by ``except ImportError`` are optional."""
    modules: set[str] = set()
    for path in package_dir.rglob('*.py'):
        if path.name == 'setup.py' or 'test' in path.relative_to(package_dir).parts[:1]:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        optional: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                isinstance(handler.type, ast.Name)
                and handler.type.id in ('ImportError', 'ModuleNotFoundError')
                for handler in node.handlers
            ):
                optional.update(id(child) for statement in node.body for child in ast.walk(statement))
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                modules.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split('.')[0])
    return modules - set(sys.stdlib_module_names)


def test_the_record_names_its_source_for_every_key() -> None:
    assert len(RECORD['rosdistro']['commit']) == 40
    for key, entry in RECORD['keys'].items():
        assert entry['file'] in ('rosdep/python.yaml', 'rosdep/base.yaml', 'humble/distribution.yaml'), key
        if entry['file'] == 'humble/distribution.yaml':
            assert entry['repository'] and entry['version'], key
        else:
            manager, _, package = entry['ubuntu'].partition(' ')
            assert manager in ('apt', 'pip') and package, key
    for module, key in RECORD['modules'].items():
        assert key in RECORD['keys'], f'module {module} maps to unrecorded key {key}'


@pytest.mark.parametrize('package_dir', PACKAGE_DIRS, ids=lambda path: path.name)
def test_every_dependency_key_is_a_workspace_package_or_a_recorded_rosdep_key(package_dir: Path) -> None:
    unknown = {
        f'<{tag}>{key}'
        for tag, keys in dependency_keys(package_dir).items()
        for key in keys
        if key not in WORKSPACE_PACKAGES and key not in RECORD['keys']
    }
    assert not unknown, (
        f'{package_dir.name}/package.xml names keys rosdep cannot resolve (not in ros2_ws/rosdep_keys.yaml): '
        f'{sorted(unknown)}'
    )


@pytest.mark.parametrize('package_dir', PACKAGE_DIRS, ids=lambda path: path.name)
def test_every_import_is_declared_by_its_key(package_dir: Path) -> None:
    keys = dependency_keys(package_dir)
    runtime = set(keys['depend'] + keys['exec_depend'] + keys['build_export_depend'])
    missing = []
    for module in sorted(imported_modules(package_dir) - {package_dir.name}):
        key = RECORD['modules'].get(module, module)
        if key not in RECORD['keys'] and key not in WORKSPACE_PACKAGES:
            missing.append(f'{module} (no rosdep key recorded for it)')
        elif key not in runtime:
            missing.append(f'{module} (add <exec_depend>{key}</exec_depend>)')
    assert not missing, f'{package_dir.name} imports modules its package.xml does not declare: {missing}'


def test_no_recorded_key_is_stale() -> None:
    used = {key for folder in PACKAGE_DIRS for keys in dependency_keys(folder).values() for key in keys}
    assert set(RECORD['keys']) - used == set(), 'keys recorded that no package.xml names any more'
