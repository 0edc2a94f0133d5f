"""Small files written whole or not at all: a temporary file beside the target, fsynced, renamed."""

import os
import tempfile
from pathlib import Path


def write_atomically(path: str | Path, data: bytes, exclusive: bool = False) -> None:
    """``data`` at ``path`` via a uniquely named hidden file in the same folder and a rename, so a
    reader sees the old file or the new one, never half of one; a failure (a full disk, say) leaves
    no temporary file behind. ``exclusive``: never replace an existing ``path`` (FileExistsError:
    another writer got there first)."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.part')
    try:
        with os.fdopen(handle, 'wb') as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if exclusive:
            os.link(temp, path)  # fails if the name exists
            os.unlink(temp)
        else:
            os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
