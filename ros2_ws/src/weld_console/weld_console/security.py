"""Who may use the console: loopback by default, a bearer token beyond it, same-origin requests only.

- Listening on a loopback address (127.0.0.0/8, ::1, localhost) only programs on the board reach
  the console; no token is asked unless ``require_token`` is set (e.g. behind an SSH tunnel).
- Listening on any other address needs the token: it is generated at the first start, stored with
  mode 0600 in ``token_file`` and printed once. Every API request and the live WebSocket must carry
  it; a wrong or missing token is answered 401 before anything is read or changed.
- Whatever the address, a browser page from another site cannot drive the console: state-changing
  requests must be JSON or an upload (so a cross-site form cannot send them and a cross-site
  script needs a CORS preflight the console never grants), their ``Origin`` must be the console's
  own, and on loopback the ``Host`` header must name the loopback address (DNS rebinding).
"""

import hmac
import ipaddress
import os
import re
import secrets
import stat
from pathlib import Path

from weld_console.errors import ConfigError, ConsoleError

TOKEN_BYTES = 32
_LOOPBACK_NAMES = frozenset({'localhost', 'ip6-localhost'})
_SAFE_ID = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,127}')


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for any other name or address (0.0.0.0 too)."""
    name = host.strip().strip('[]').lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """(token, created): read ``path`` or create it (mode 0600, folder 0700) with a fresh token.

    A token file other users may read is refused: anyone who can read it can drive the console.
    """
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ConfigError(f'cannot read the console token file {path}: {exc}') from exc
    if info is not None:
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(
                f'the console token file {path} can be read by other users '
                f'(mode {stat.S_IMODE(info.st_mode):o}): chmod 600 {path}, or delete it to get a new token'
            )
        token = path.read_text(encoding='ascii', errors='replace').strip()
        if len(token) < 16:
            raise ConfigError(f'the console token file {path} holds no token: delete it to get a new one')
        return token, False
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, 'w', encoding='ascii') as handle:
            handle.write(token + '\n')
    except OSError as exc:
        raise ConfigError(f'cannot create the console token file {path}: {exc}') from exc
    return token, True


def token_matches(expected: str, authorization: str | None) -> bool:
    """True when ``authorization`` is ``Bearer <expected>`` (constant-time comparison)."""
    if not expected or not authorization:
        return False
    scheme, _, given = authorization.strip().partition(' ')
    if scheme.lower() != 'bearer':
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def host_allowed(host_header: str | None, bind_host: str) -> bool:
    """On a loopback bind the Host header must name a loopback address (a rebound DNS name is refused)."""
    if not is_loopback(bind_host):
        return True
    if not host_header:
        return False
    name = host_header.strip()
    if name.startswith('['):
        name = name[1 : name.find(']')] if ']' in name else name
    else:
        name = name.rsplit(':', 1)[0] if name.count(':') == 1 else name
    return is_loopback(name)


def same_origin(origin: str | None, host_header: str | None, scheme: str = 'http') -> bool:
    """A request's ``Origin`` (absent from non-browser clients) must be the console's own."""
    if origin is None:
        return True
    if not host_header:
        return False
    return origin.rstrip('/').lower() == f'{scheme}://{host_header}'.lower()


def check_safe_id(value: str, what: str) -> str:
    """A session id, archive or review item name: letters, digits, '_', '.', '-', no leading dot."""
    if not _SAFE_ID.fullmatch(value or '') or '..' in value:
        raise ConsoleError(f'{what} {value!r} is not a valid name (letters, digits, "_", ".", "-")')
    return value
