"""The environment that keeps DDS on loopback."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from weld_core.ros_env import find_loopback_profile, loopback_env

NS = {'dds': 'http://www.eprosima.com'}


def test_loopback_env_sets_profile_range_and_domain() -> None:
    env = loopback_env(123, base={'ROS_LOCALHOST_ONLY': '1', 'PATH': '/bin'})
    assert env['ROS_DOMAIN_ID'] == '123'
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'SYSTEM_DEFAULT'
    assert env['RMW_IMPLEMENTATION'] == 'rmw_fastrtps_cpp'
    assert Path(env['FASTDDS_DEFAULT_PROFILES_FILE']).is_file()
    assert 'ROS_LOCALHOST_ONLY' not in env
    assert env['PATH'] == '/bin'


@pytest.mark.parametrize('domain_id', [-1, 233])
def test_out_of_range_domain_is_refused(domain_id: int) -> None:
    with pytest.raises(ValueError, match='ROS_DOMAIN_ID'):
        loopback_env(domain_id)


def test_profile_allows_only_loopback_and_a_large_shm_segment() -> None:
    root = ET.parse(find_loopback_profile()).getroot()
    participant = root.find('.//dds:participant[@is_default_profile="true"]', NS)
    assert participant is not None
    assert participant.findtext('.//dds:useBuiltinTransports', namespaces=NS) == 'false'
    transports = {
        t.findtext('dds:transport_id', namespaces=NS): t
        for t in root.findall('.//dds:transport_descriptor', NS)
    }
    assert {t.findtext('dds:type', namespaces=NS) for t in transports.values()} == {'SHM', 'UDPv4'}
    for descriptor in transports.values():
        if descriptor.findtext('dds:type', namespaces=NS) == 'SHM':
            assert int(descriptor.findtext('dds:segment_size', namespaces=NS)) >= 16 * 1024 * 1024
        else:
            allowed = [a.text for a in descriptor.findall('.//dds:interfaceWhiteList/dds:address', NS)]
            assert allowed == ['127.0.0.1']
    used = [t.text for t in participant.findall('.//dds:userTransports/dds:transport_id', NS)]
    assert sorted(used) == sorted(transports)
    locators = participant.findall('.//dds:builtin//dds:address', NS)
    assert locators and {a.text for a in locators} == {'127.0.0.1'}
