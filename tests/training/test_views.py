"""Averaging the logits over mirror images of the frame: network, LightningModule, ONNX export."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import pytorch_lightning as pl
import torch

from tests.training.test_fit_export import CLASSES, tiny_dataset  # noqa: F401 (fixture)
from training.data import FrameStore
from training.export import export, preprocessor_of
from training.models import build_model, view_average
from training.module import WeldClassifier
from weld_core.model_file import open_session, read_model_info

CHANNELS = ('r', 'g', 'b', 'height', 'relief', 'valid')
SMALL = {'stem_width': 4, 'stage_widths': [8, 8, 8, 8], 'patch': 2}


def _scramble(net: torch.nn.Module) -> torch.nn.Module:
    """Random weights and batch-norm statistics: a fresh net answers every frame alike."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.5)
        net.train()
        for _ in range(3):
            net(torch.randn(4, len(CHANNELS), 24, 32))
    return net.eval()


def _net() -> torch.nn.Module:
    return _scramble(build_model('compact', CHANNELS, len(CLASSES), **SMALL))


def _mirrors(x: torch.Tensor) -> list[torch.Tensor]:
    flips = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
    return flips + [f.transpose(2, 3) for f in flips]


@pytest.mark.parametrize('views', [2, 4, 8])
def test_views_are_the_mean_logits_of_each_frame_over_its_mirror_images(views: int) -> None:
    net = _net()
    x = torch.randn(3, len(CHANNELS), 24, 32)
    with torch.no_grad():
        averaged = view_average(net, x, views)
        # frame by frame, one mirror image at a time: no frame's views mixed with another's
        expected = torch.stack(
            [torch.stack([net(m) for m in _mirrors(x[i : i + 1])[:views]]).mean(0)[0] for i in range(3)]
        )
    assert averaged.shape == (3, len(CLASSES))
    assert torch.allclose(averaged, expected, atol=1e-5)
    assert not torch.allclose(averaged, net(x), atol=1e-3)  # the views do change the answer


def test_one_view_is_the_network_and_other_counts_are_refused() -> None:
    net = _net()
    x = torch.randn(2, len(CHANNELS), 24, 32)
    with torch.no_grad():
        assert torch.equal(view_average(net, x, 1), net(x))
    with pytest.raises(ValueError, match='views must be one of'):
        view_average(net, x, 3)
    with pytest.raises(ValueError, match='eval_views must be one of'):
        WeldClassifier(input_channels=CHANNELS, input_size=(24, 32), model_kwargs=SMALL, eval_views=6)


def test_module_trains_on_one_view_and_evaluates_on_all_and_counts_their_cost() -> None:
    one = WeldClassifier(input_channels=CHANNELS, input_size=(24, 32), model_kwargs=SMALL)
    _scramble(one.net)
    four = WeldClassifier(input_channels=CHANNELS, input_size=(24, 32), model_kwargs=SMALL, eval_views=4)
    four.net.load_state_dict(one.net.state_dict())
    x = torch.randn(2, len(CHANNELS), 24, 32)
    with torch.no_grad():
        four.eval()
        assert torch.allclose(four(x), view_average(one.net, x, 4))
        four.train()  # batch statistics and dropout: the same random draws for both calls
        torch.manual_seed(1)
        trained_on = four(x)
        torch.manual_seed(1)
        assert torch.equal(trained_on, four.net(x))
    assert four.complexity()['gflop'] == pytest.approx(4 * one.complexity()['gflop'])
    assert four.complexity()['params_m'] == one.complexity()['params_m']
    # the good-class offset folded into the last layer shifts every view's logit, so the mean too
    four.load_state_dict(one.state_dict())
    four.eval()
    with torch.no_grad():
        before = four(x)
        four.net.head[1].bias[0] += 0.7
        assert torch.allclose(four(x)[:, 0] - before[:, 0], torch.full((2,), 0.7), atol=1e-5)
        assert torch.allclose(four(x)[:, 1:], before[:, 1:], atol=1e-6)


def _checkpoint(path: Path, views: int) -> Path:
    model = WeldClassifier(
        input_channels=CHANNELS, input_size=(24, 32), model_kwargs=SMALL, eval_views=views, augment=False
    )
    _scramble(model.net)
    torch.save(
        {
            'state_dict': model.state_dict(),
            'hyper_parameters': dict(model.hparams),
            'pytorch-lightning_version': pl.__version__,
        },
        path,
    )
    return path


@pytest.mark.slow
def test_exported_views_run_in_the_onnx_graph(tiny_dataset: Path, tmp_path: Path) -> None:  # noqa: F811
    one = export(_checkpoint(tmp_path / 'one.ckpt', 1), tmp_path / 'one.onnx', tiny_dataset, parity_frames=4)
    eight = export(
        _checkpoint(tmp_path / 'eight.ckpt', 8),
        tmp_path / 'eight.onnx',
        tiny_dataset,
        parity_frames=4,
        int8=True,
        calibration_frames=8,
    )
    assert eight.parity_max_abs_diff <= 1e-4
    assert (one.metadata['eval_views'], eight.metadata['eval_views']) == ('1', '8')
    single_gflop = WeldClassifier.load_from_checkpoint(tmp_path / 'one.ckpt').complexity()['gflop']
    assert eight.metadata['gflop'] == f'{8 * single_gflop:.4f}' != one.metadata['gflop']
    # one ONNX Runtime run of the 8-view file = the 1-view network run on each mirror image (the
    # 1-view file has a fixed frame shape: transposed images go through the checkpoint), logits averaged
    info = read_model_info(eight.path)
    store = FrameStore(tiny_dataset)
    single = WeldClassifier.load_from_checkpoint(tmp_path / 'one.ckpt').eval()
    frame = preprocessor_of(single)(*store.pair(store.frames[0]))
    with torch.no_grad():
        logits = torch.stack([single(m) for m in _mirrors(torch.from_numpy(frame[None]))]).mean(0)
    onnx_probs = open_session(eight.path).run(None, {info.input_name: frame[None]})[0]
    assert np.allclose(onnx_probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    one_probs = open_session(one.path).run(None, {info.input_name: frame[None]})[0]
    assert not np.allclose(onnx_probs, one_probs, atol=1e-3)
    # the INT8 file keeps every first layer of every view in float
    assert len(eight.int8_report['float_layers']) == 4  # colour and depth stems, plain and transposed
    onnx.checker.check_model(onnx.load(str(eight.int8_path)))
