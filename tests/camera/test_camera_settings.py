"""Camera parameters: defaults, parsing and the messages invalid values get (ROS-free)."""

from pathlib import Path

import pytest
import yaml

from weld_camera.errors import CameraConfigError
from weld_camera.settings import PARAMETER_SPECS, parse_class_mix, parse_replay_rate, settings_from_values

PACKAGE = Path(__file__).resolve().parents[2] / 'ros2_ws' / 'src' / 'weld_camera'


def test_defaults_are_the_contract_topics_and_a_vga_sim() -> None:
    settings = settings_from_values({})
    assert settings.source == 'sim'
    assert (settings.width, settings.height, settings.rate_hz) == (640, 480, 30.0)
    assert settings.rgb_topic == '/weld/rgb/image_raw'
    assert settings.depth_topic == '/weld/depth/image_raw'
    assert settings.frame_id == 'weld_camera_optical_frame'
    assert settings.sim_class_mix is None
    assert settings.relay_slop_ns == 15_000_000


def test_config_file_lists_every_parameter_with_its_default() -> None:
    config = yaml.safe_load((PACKAGE / 'config' / 'weld_camera.yaml').read_text())
    parameters = config['weld_camera']['ros__parameters']
    assert parameters == {spec.name: spec.default for spec in PARAMETER_SPECS}


def test_every_parameter_has_a_description_and_numbers_have_ranges() -> None:
    for spec in PARAMETER_SPECS:
        assert spec.description, spec.name
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert spec.min_value is not None and spec.max_value is not None, spec.name


def test_class_mix_parsing() -> None:
    assert parse_class_mix('') is None
    assert parse_class_mix('good:0.3, porosity:0.7') == {'good': 0.3, 'porosity': 0.7}
    with pytest.raises(CameraConfigError, match="unknown class 'crack'"):
        parse_class_mix('good:1,crack:1')
    with pytest.raises(CameraConfigError, match='not class:weight'):
        parse_class_mix('good')
    with pytest.raises(CameraConfigError, match='not a number'):
        parse_class_mix('good:lots')
    with pytest.raises(CameraConfigError, match='sum to 0'):
        parse_class_mix('good:0,gap:0')
    with pytest.raises(CameraConfigError, match='twice'):
        parse_class_mix('gap:1,gap:2')


def test_replay_rate_parsing() -> None:
    assert parse_replay_rate('recorded') is None
    assert parse_replay_rate(' 12.5 ') == 12.5
    with pytest.raises(CameraConfigError, match='"recorded" or a rate in Hz'):
        parse_replay_rate('fast')
    with pytest.raises(CameraConfigError, match=r'between 0\.1 and 1000'):
        parse_replay_rate('0')


@pytest.mark.parametrize(
    ('values', 'message'),
    [
        ({'source': 'webcam'}, 'source must be one of sim, device, relay, replay'),
        ({'depth_encoding': 'mono8'}, 'depth_encoding must be one of 32FC1, 16UC1'),
        ({'rate_hz': 0.0}, 'rate_hz must be >= 0.1'),
        ({'width': 8}, 'width must be >= 32'),
        ({'rate_hz': 'fast'}, 'rate_hz must be a float'),
        ({'rgb_topic': 'weld rgb'}, "rgb_topic 'weld rgb' is not a valid ROS topic name"),
        ({'depth_topic': '/weld/rgb/image_raw'}, 'topics must differ'),
        ({'source': 'replay'}, 'source replay needs bag_path'),
        ({'source': 'replay', 'bag_path': '/nonexistent/bag'}, 'does not exist'),
        ({'source': 'relay', 'relay_rgb_topic': '/weld/rgb/image_raw'}, 'the relay would hear itself'),
        ({'frame_id': '  '}, 'frame_id is empty'),
        ({'sim_class_mix': 'good:1,crack:1'}, "unknown class 'crack'"),
        ({'rate': 5.0}, "unknown parameter 'rate'"),
    ],
)
def test_invalid_values_are_rejected_with_a_message_naming_them(values: dict, message: str) -> None:
    with pytest.raises(CameraConfigError, match='invalid camera parameters') as caught:
        settings_from_values(values)
    assert message in str(caught.value)


def test_replay_needs_a_rosbag2_directory(tmp_path: Path) -> None:
    with pytest.raises(CameraConfigError, match='not a rosbag2 directory'):
        settings_from_values({'source': 'replay', 'bag_path': str(tmp_path)})
    (tmp_path / 'metadata.yaml').write_text('rosbag2_bagfile_information: {}\n')
    settings = settings_from_values({'source': 'replay', 'bag_path': str(tmp_path), 'replay_rate': '5'})
    assert settings.bag_path == tmp_path
    assert settings.replay_rate_hz == 5.0
    # `-p replay_rate:=20` arrives as an integer: the parameter takes numbers and strings
    assert (
        settings_from_values(
            {'source': 'replay', 'bag_path': str(tmp_path), 'replay_rate': 20}
        ).replay_rate_hz
        == 20.0
    )


def test_readme_documents_every_parameter() -> None:
    readme = (PACKAGE / 'README.md').read_text()
    missing = [spec.name for spec in PARAMETER_SPECS if f'`{spec.name}`' not in readme]
    assert not missing, f'parameters missing from weld_camera/README.md: {missing}'
