"""Link the share/ files of ament_python packages into a prefix, as colcon --symlink-install does.

pip's editable installs skip ``data_files``, so packages would be missing from the ament index
(ament_index_python.get_package_share_directory) without this. Links, not copies, keep config and
launch edits live. The data_files are read by running each setup.py with setup() captured.
"""

import argparse
import os
import runpy
import sys
from pathlib import Path
from typing import Any
from unittest import mock


def data_files_of(package: Path) -> list[tuple[str, list[str]]]:
    """The ``data_files`` argument a package's setup.py passes to setup(), paths relative to it."""
    captured: dict[str, Any] = {}
    cwd = os.getcwd()
    argv = sys.argv
    try:
        os.chdir(package)
        sys.argv = ['setup.py']
        with mock.patch('setuptools.setup', side_effect=lambda **kwargs: captured.update(kwargs)):
            runpy.run_path(str(package / 'setup.py'), run_name='__main__')
    finally:
        os.chdir(cwd)
        sys.argv = argv
    return [(target, list(files)) for target, files in captured.get('data_files', [])]


def link(prefix: Path, package: Path) -> int:
    count = 0
    for target, files in data_files_of(package):
        for relative in files:
            source = (package / relative).resolve()
            if not source.is_file():
                continue
            destination = prefix / target / source.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.is_symlink() and destination.resolve() == source:
                continue
            if destination.is_symlink() or destination.exists():
                destination.unlink()
            destination.symlink_to(source)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--prefix', type=Path, required=True)
    parser.add_argument('packages', type=Path, nargs='+')
    args = parser.parse_args()
    for package in args.packages:
        if (package / 'setup.py').is_file():
            link(args.prefix, package.resolve())


if __name__ == '__main__':
    main()
