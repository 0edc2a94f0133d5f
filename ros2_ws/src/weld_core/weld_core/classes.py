"""The class list: configuration with a contract default (a site may add classes)."""

from collections.abc import Sequence

from weld_core.errors import LabelError

DEFAULT_CLASSES: tuple[str, ...] = ('good', 'porosity', 'spatter', 'gap', 'undercut')
GOOD_CLASS = 'good'


def check_label(label: str, classes: Sequence[str] = DEFAULT_CLASSES) -> str:
    """Return ``label`` unchanged when it is one of ``classes``; raise LabelError otherwise."""
    if not label or not label.strip():
        raise LabelError(f'empty label: give one of {", ".join(classes)}')
    if label not in classes:
        raise LabelError(f'unknown label {label!r}: give one of {", ".join(classes)}')
    return label


def check_class_list(classes: Sequence[str]) -> tuple[str, ...]:
    """Validate a configured class list (non-empty, unique, non-blank names)."""
    names = tuple(classes)
    if not names:
        raise LabelError('the class list is empty')
    if any(not name or not name.strip() for name in names):
        raise LabelError(f'the class list has a blank name: {list(names)}')
    if len(set(names)) != len(names):
        raise LabelError(f'the class list repeats a name: {list(names)}')
    return names
