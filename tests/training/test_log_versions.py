"""Two fits started at once in the same runs/ folder get separate log folders."""

from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from training.fit import claim_log_versions


def _pair(runs: Path) -> list:
    return [CSVLogger(runs, name='default'), TensorBoardLogger(runs, name='default')]


def test_each_fit_claims_its_own_version_folder_shared_by_its_loggers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _pair(tmp_path), _pair(tmp_path)
    claim_log_versions(first)
    claim_log_versions(second)
    assert [lg.version for lg in first] == [0, 0]
    assert [lg.version for lg in second] == [1, 1]
    assert first[0].log_dir == str(tmp_path / 'default' / 'version_0')
    assert first[1].log_dir == first[0].log_dir

    # a fit that listed the folder before the other made its version (the race): the next free one
    late = _pair(tmp_path)
    for logger in late:
        monkeypatch.setattr(logger, '_get_next_version', lambda: 1)
    claim_log_versions(late)
    assert [lg.version for lg in late] == [2, 2]
    assert sorted(p.name for p in (tmp_path / 'default').iterdir()) == ['version_0', 'version_1', 'version_2']


def test_a_logger_with_its_own_version_is_left_alone(tmp_path: Path) -> None:
    fixed = CSVLogger(tmp_path, name='', version='')
    claim_log_versions([fixed])
    assert fixed.version == ''
    assert list(tmp_path.iterdir()) == []
