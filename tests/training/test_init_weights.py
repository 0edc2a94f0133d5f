"""A fit can start from local weights of the same network (``--model.init_weights``)."""

from pathlib import Path

import pytest
import torch

from training.module import InitWeightsError, WeldClassifier

SMALL = {'stem_width': 4, 'stage_widths': [8, 8], 'patch': 2}


def _module(**kwargs: object) -> WeldClassifier:
    return WeldClassifier(
        input_channels=('r', 'g', 'b', 'height', 'relief', 'valid'), input_size=(32, 40), **kwargs
    )


def test_starts_from_the_weights_of_a_checkpoint_or_state_dict(tmp_path: Path) -> None:
    source = _module(model_kwargs=SMALL)
    with torch.no_grad():
        for parameter in source.net.parameters():
            parameter.uniform_(-1, 1)
    lightning_style = tmp_path / 'pre.ckpt'
    torch.save({'state_dict': source.state_dict(), 'epoch': 3}, lightning_style)
    plain = tmp_path / 'net.pt'
    torch.save(source.net.state_dict(), plain)
    for path in (lightning_style, plain):
        started = _module(model_kwargs=SMALL, init_weights=str(path))
        for (name, a), b in zip(
            source.net.state_dict().items(), started.net.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name
    fresh = _module(model_kwargs=SMALL)
    assert not torch.equal(fresh.net.head[1].weight, source.net.head[1].weight)


def test_missing_corrupt_or_foreign_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InitWeightsError, match='not found'):
        _module(model_kwargs=SMALL, init_weights=str(tmp_path / 'none.ckpt'))
    corrupt = tmp_path / 'corrupt.ckpt'
    corrupt.write_bytes(b'not a checkpoint')
    with pytest.raises(InitWeightsError, match='not a readable'):
        _module(model_kwargs=SMALL, init_weights=str(corrupt))
    wider = tmp_path / 'wider.ckpt'
    torch.save({'state_dict': _module(model_kwargs={**SMALL, 'stem_width': 6}).state_dict()}, wider)
    with pytest.raises(InitWeightsError, match='do not fit this network'):
        _module(model_kwargs=SMALL, init_weights=str(wider))
