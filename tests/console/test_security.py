"""Who may use the console: loopback test, the token file, bearer check, Host and Origin checks."""

import stat
from pathlib import Path

import pytest

from weld_console.errors import ConfigError, ConsoleError
from weld_console.security import (
    check_safe_id,
    host_allowed,
    is_loopback,
    load_or_create_token,
    same_origin,
    token_matches,
)


@pytest.mark.parametrize(
    ('host', 'loopback'),
    [
        ('127.0.0.1', True),
        ('127.3.2.1', True),
        ('::1', True),
        ('[::1]', True),
        ('localhost', True),
        ('0.0.0.0', False),
        ('::', False),
        ('192.168.1.20', False),
        ('board.local', False),
        ('', False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_is_created_once_with_mode_0600_and_then_read_back(tmp_path: Path) -> None:
    path = tmp_path / 'console' / 'token'
    token, created = load_or_create_token(path)
    assert created and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again, created_again = load_or_create_token(path)
    assert (again, created_again) == (token, False)
    assert load_or_create_token(tmp_path / 'other')[0] != token


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / 'token'
    load_or_create_token(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match='chmod 600'):
        load_or_create_token(path)
    path.chmod(0o600)
    path.write_text('short\n')
    with pytest.raises(ConfigError, match='holds no token'):
        load_or_create_token(path)


def test_bearer_token_must_match_exactly() -> None:
    assert token_matches('s3cret-token-value', 'Bearer s3cret-token-value')
    assert token_matches('s3cret-token-value', 'bearer  s3cret-token-value ')
    for header in (None, '', 's3cret-token-value', 'Basic s3cret-token-value', 'Bearer s3cret', 'Bearer x'):
        assert not token_matches('s3cret-token-value', header)
    assert not token_matches('', 'Bearer ')


def test_loopback_console_refuses_a_rebound_host_name() -> None:
    assert host_allowed('127.0.0.1:8080', '127.0.0.1')
    assert host_allowed('localhost:8080', '127.0.0.1')
    assert host_allowed('[::1]:8080', '::1')
    assert not host_allowed('evil.example:8080', '127.0.0.1')
    assert not host_allowed(None, '127.0.0.1')
    # beyond loopback the token protects the console; any name of the board is fine
    assert host_allowed('board.local:8080', '0.0.0.0')


def test_origin_must_be_the_console_itself() -> None:
    assert same_origin(None, '127.0.0.1:8080')  # curl, scripts: no Origin
    assert same_origin('http://127.0.0.1:8080', '127.0.0.1:8080')
    assert not same_origin('http://evil.example', '127.0.0.1:8080')
    assert not same_origin('http://127.0.0.1:9999', '127.0.0.1:8080')
    assert not same_origin('null', '127.0.0.1:8080')


def test_names_from_requests_cannot_leave_their_folder() -> None:
    assert check_safe_id('20261207-101500_plate7', 'session') == '20261207-101500_plate7'
    for bad in ('../etc', '.hidden', 'a/b', '', 'a..b', 'x' * 200, 'a b'):
        with pytest.raises(ConsoleError):
            check_safe_id(bad, 'session')
