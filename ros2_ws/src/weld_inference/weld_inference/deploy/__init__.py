"""weld-deploy: put a checked model into one or more models folders, locally or on boards over ssh."""

from weld_inference.deploy.report import Confirmation, Report
from weld_inference.deploy.store import Change, DeployError, ModelRef, place, receive, rollback, running_model
from weld_inference.deploy.targets import is_ssh_target, run_local, run_ssh

__all__ = [
    'Change',
    'Confirmation',
    'DeployError',
    'ModelRef',
    'Report',
    'is_ssh_target',
    'place',
    'receive',
    'rollback',
    'run_local',
    'run_ssh',
    'running_model',
]
