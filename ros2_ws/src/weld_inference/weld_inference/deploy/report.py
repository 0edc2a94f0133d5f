"""What a deploy reports per target, and what /weld/defects confirmed (ROS-free)."""

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Confirmation:
    """What /weld/defects said after a change: ``status`` confirmed, unreachable or timeout."""

    status: str
    after_s: float
    last_model_id: str = ''
    last_source: str = ''
    last_reason: str = ''

    def describe(self, expected: str) -> str:
        what = f'model {expected!r}' if expected else 'the rules'
        if self.status == 'confirmed':
            return f'/weld/defects answers with {what} ({self.after_s:.1f} s after the change)'
        if self.status == 'unreachable':
            return 'no /weld/defects publisher reachable from here: placed, not confirmed'
        if not self.last_source:
            return f'no result on /weld/defects within {self.after_s:.0f} s (are frames flowing?)'
        last = f'model {self.last_model_id!r}' if self.last_source == 'model' else 'the rules'
        reason = f': {self.last_reason}' if self.last_reason else ''
        return f'/weld/defects still answers with {last}{reason} after {self.after_s:.0f} s, not with {what}'


@dataclass
class Report:
    """The outcome for one target, printed as one line (or one JSON line with --json)."""

    target: str
    ok: bool
    action: str  # deploy or rollback
    message: str
    change: dict[str, Any] | None = None
    confirmation: dict[str, Any] | None = field(default=None)

    def line(self) -> str:
        return f'{self.target}: {"OK" if self.ok else "FAILED"} {self.action}: {self.message}'

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
