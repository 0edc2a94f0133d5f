"""Every ROS package in ros2_ws/src is a standard package that colcon would build unchanged."""

import configparser
import re
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC = REPO_ROOT / 'ros2_ws' / 'src'
EXPECTED = {
    'weld_interfaces',
    'weld_core',
    'weld_camera',
    'weld_labeler',
    'weld_inference',
    'weld_bringup',
    'weld_console',
}
PACKAGES = sorted(path.parent for path in SRC.glob('*/package.xml'))


def test_the_designed_packages_are_all_there() -> None:
    assert {path.name for path in PACKAGES} >= EXPECTED


@pytest.mark.parametrize('package', PACKAGES, ids=lambda path: path.name)
def test_package_xml_is_valid_format_3(package: Path) -> None:
    manifest = parse_package(str(package / 'package.xml'))  # validates against REP 149
    assert manifest.package_format == 3
    assert manifest.name == package.name
    assert manifest.maintainers and manifest.licenses and manifest.description
    build_types = [export.content for export in manifest.exports if export.tagname == 'build_type']
    assert build_types in (['ament_python'], ['ament_cmake']), build_types
    if build_types == ['ament_cmake']:
        cmake = (package / 'CMakeLists.txt').read_text()
        assert re.search(rf'project\({package.name}\)', cmake)
        assert 'ament_package()' in cmake
    else:
        setup_py = (package / 'setup.py').read_text()
        assert re.search(rf"package_name = '{package.name}'", setup_py), 'setup.py names another package'
        assert (package / 'resource' / package.name).is_file(), 'ament resource marker missing'
        assert (package / package.name / '__init__.py').is_file()
        config = configparser.ConfigParser()
        config.read(package / 'setup.cfg')
        assert config['install']['install_scripts'] == f'$base/lib/{package.name}', 'ros2 run needs lib/<pkg>'


@pytest.mark.parametrize('package', PACKAGES, ids=lambda path: path.name)
def test_installed_into_the_ament_index(package: Path) -> None:
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory(package.name))
    assert (share / 'package.xml').is_file()
