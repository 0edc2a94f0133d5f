"""The shared preprocessing and the ONNX model loader (runtime side, no torch needed by the code)."""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from weld_core.model_file import REQUIRED_METADATA_KEYS, ModelError, read_model_info
from weld_core.preprocess import PreprocessError, Preprocessor, expand_channels, fit_plate_plane


def _tilted_plate_with_bump(bump_mm: float) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:120, 0:160].astype(np.float32)
    depth = 0.1 + 4e-5 * xs + 2e-5 * ys  # a plate tilted by several mm across the image
    depth[50:60, 70:90] -= bump_mm * 1e-3
    depth[0:5, 0:5] = 0.0  # no data
    rgb = np.zeros((120, 160, 3), np.uint8)
    return rgb, depth.astype(np.float32)


def test_height_is_measured_from_the_fitted_plate_whatever_its_tilt() -> None:
    rgb, depth = _tilted_plate_with_bump(2.0)
    pre = Preprocessor(
        input_size=(120, 160),
        channels=expand_channels('rgb,depth'),
        normalization={
            'r': (0, 1),
            'g': (0, 1),
            'b': (0, 1),
            'height': (0, 1),
            'relief': (0, 1),
            'valid': (0, 1),
        },
    )
    out = pre(rgb, depth)
    height = out[pre.channels.index('height')]
    valid = out[pre.channels.index('valid')]
    assert out.shape == (6, 120, 160) and out.dtype == np.float32
    assert height[52:58, 75:85].mean() == pytest.approx(2.0, abs=0.02)
    assert np.abs(height[100:, 100:]).max() < 0.01
    assert valid[0:5, 0:5].max() == 0 and height[0:5, 0:5].max() == 0
    plane = fit_plate_plane(depth, depth > 0)
    assert plane is not None and plane[0] == pytest.approx(4e-5, rel=1e-3)


def _bead_with_neck(bead_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A flat plate 0.1 m away with a bead 30 px wide along row 60, thinned to 55 % over columns 70-100."""
    ys, xs = np.mgrid[0:120, 0:160].astype(np.float32)
    profile = np.clip(1.0 - ((ys - 60.0) / 15.0) ** 2, 0.0, None)
    scale = np.where((xs >= 70) & (xs < 100), 0.55, 1.0)
    depth = 0.1 - bead_mm * 1e-3 * profile * scale
    return np.zeros((120, 160, 3), np.uint8), depth.astype(np.float32)


def test_height_rel_reads_a_thinned_bead_low_whatever_the_beads_height() -> None:
    pre = Preprocessor(input_size=(120, 160), channels=('height', 'height_rel'))
    crowns = []
    for bead_mm in (1.0, 3.0):
        height, rel = pre(*_bead_with_neck(bead_mm))
        rel *= pre.normalization['height_rel'][1]
        # the full bead's crown reads about 1 (its smooth surface peaks a little below the crown)
        assert 1.0 <= rel[60, 20] < 1.15
        assert rel[60, 85] == pytest.approx(0.55 * rel[60, 20], abs=0.03)  # the neck
        assert abs(rel[5, 20]) < 0.01  # the plate
        crowns.append((float(height[60, 20]), float(rel[60, 85])))
    # in mm the thick bead's neck stands higher than the thin bead's crown; over the crown they agree
    assert crowns[1][0] * 0.55 > crowns[0][0]
    assert crowns[0][1] == pytest.approx(crowns[1][1], abs=0.01)
    # no bead in view: the crown's floor keeps the plate's noise near 0, not blown up
    flat = np.full((120, 160), 0.1, np.float32)
    assert np.abs(pre(np.zeros((120, 160, 3), np.uint8), flat)[1]).max() < 1e-3


def test_downscaled_input_keeps_small_pores_and_droplets_in_the_relief() -> None:
    ys, xs = np.mgrid[0:240, 0:320].astype(np.float32)
    depth = (0.1 + 4e-5 * xs + 2e-5 * ys).astype(np.float32)
    depth[101:104, 101:104] += 1e-3  # a pore of 3x3 pixels (about 1 mm), 1 mm deep
    depth[200:203, 40:43] -= 1e-3  # a spatter droplet, 1 mm high
    rgb = np.zeros((240, 320, 3), np.uint8)
    pre = Preprocessor(input_size=(120, 160), channels=('relief',), normalization={'relief': (0.0, 1.0)})
    (relief,) = pre(rgb, depth)
    assert relief[51, 51] < -0.1  # area averaging keeps it; a nearest-neighbour resize could skip it
    assert relief[100, 20] > 0.1
    assert np.abs(relief[10:40, 120:150]).max() < 0.01  # flat plate


def test_metadata_round_trip_and_bad_metadata() -> None:
    pre = Preprocessor(
        input_size=(96, 128),
        channels=expand_channels('rgb,height'),
        normalization={'r': (0.5, 0.25), 'g': (0.5, 0.25), 'b': (0.5, 0.25), 'height': (0, 2)},
    )
    again = Preprocessor.from_metadata(pre.to_metadata())
    assert again == pre
    assert again.channels == ('r', 'g', 'b', 'height')
    broken = pre.to_metadata()
    del broken['input_size']
    with pytest.raises(PreprocessError, match='input_size'):
        Preprocessor.from_metadata(broken)
    with pytest.raises(PreprocessError, match='unknown input channel'):
        Preprocessor.from_metadata({**pre.to_metadata(), 'input_channels': 'rgb,infrared'})
    with pytest.raises(PreprocessError, match='preprocess_version'):
        Preprocessor.from_metadata({**pre.to_metadata(), 'preprocess_version': '99'})
    with pytest.raises(PreprocessError, match='not registered'):
        pre(np.zeros((10, 20, 3), np.uint8), np.zeros((20, 10), np.float32))


# what weld_core wrote for preprocess_version 2 (rgb,depth at 24x32): still read, tophat_px ignored
VERSION_2_METADATA = {
    'input_channels': 'r,g,b,height,relief,valid',
    'input_size': '24x32',
    'normalization': json.dumps(
        {
            'r': [0.5, 0.25],
            'g': [0.5, 0.25],
            'b': [0.5, 0.25],
            'height': [0.0, 1.0],
            'relief': [0.0, 0.1],
            'valid': [0.0, 1.0],
        }
    ),
    'depth_units': 'm',
    'depth_range_m': '0.03,2',
    'height_clip_mm': '8',
    'relief_sigma_px': '4',
    'relief_denoise_px': '1.5',
    'tophat_px': '9',
    'plane_fit': 'robust_plane',
    'preprocess_version': '2',
}


def test_metadata_is_version_3_without_tophat_px() -> None:
    metadata = Preprocessor(input_size=(24, 32), channels=expand_channels('rgb,depth')).to_metadata()
    assert metadata['preprocess_version'] == '3' and 'tophat_px' not in metadata
    assert metadata == {key: value for key, value in VERSION_2_METADATA.items() if key != 'tophat_px'} | {
        'preprocess_version': '3'
    }


def test_version_2_metadata_without_removed_channels_gives_the_same_inputs() -> None:
    old = Preprocessor.from_metadata(VERSION_2_METADATA)
    new = Preprocessor(input_size=(24, 32), channels=expand_channels('rgb,depth'))
    assert old == new
    for size in ((24, 32), (48, 64)):  # the input size and a larger camera frame (area path)
        rgb, depth = _tilted_plate_with_bump(1.0)
        rgb = cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA)
        depth = cv2.resize(depth, size[::-1], interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(old(rgb, depth), new(rgb, depth))


@pytest.mark.parametrize('removed', ['relief_min', 'relief_max', 'pits', 'bumps'])
def test_version_2_metadata_with_a_removed_channel_is_refused(removed: str) -> None:
    metadata = {**VERSION_2_METADATA, 'input_channels': f'r,g,b,height,relief,{removed},valid'}
    norm = json.loads(metadata['normalization']) | {removed: [0.0, 0.2]}
    metadata['normalization'] = json.dumps(norm)
    expected = (
        f"input channel '{removed}' was removed in preprocess_version 3: retrain or use an older weld_core"
    )
    with pytest.raises(PreprocessError, match=re.escape(expected)):
        Preprocessor.from_metadata(metadata)


def _write_model(
    path: Path, metadata: dict[str, str], channels: int, size: tuple[int, int], classes: int
) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node_pool = helper.make_node('GlobalAveragePool', ['input'], ['pooled'])
    node_flat = helper.make_node('Flatten', ['pooled'], ['flat'])
    weight = helper.make_tensor(
        'w', TensorProto.FLOAT, [channels, classes], np.ones(channels * classes).tolist()
    )
    node_mm = helper.make_node('MatMul', ['flat', 'w'], ['logits'])
    node_sm = helper.make_node('Softmax', ['logits'], ['probabilities'], axis=1)
    graph = helper.make_graph(
        [node_pool, node_flat, node_mm, node_sm],
        'g',
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', channels, *size])],
        [helper.make_tensor_value_info('probabilities', TensorProto.FLOAT, ['batch', classes])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _metadata(pre: Preprocessor, classes: list[str]) -> dict[str, str]:
    return {
        'class_names': json.dumps(classes),
        'model_name': 'tiny',
        'model_version': '1',
        'created_at': '2026-01-01T00:00:00+00:00',
        'training_data': 'abc',
        'validation_metrics': '{}',
        'output': 'probabilities',
        **pre.to_metadata(),
    }


def test_loader_accepts_a_complete_model_and_refuses_missing_or_inconsistent_metadata(tmp_path: Path) -> None:
    pre = Preprocessor(input_size=(24, 32), channels=expand_channels('rgb,depth'))
    classes = ['good', 'porosity', 'spatter', 'gap', 'undercut']
    good = _write_model(tmp_path / 'ok.onnx', _metadata(pre, classes), 6, (24, 32), 5)
    info = read_model_info(good)
    assert info.class_names == tuple(classes) and info.preprocessor == pre and info.input_name == 'input'
    assert info.model_id.startswith('tiny-1-') and len(info.sha256) == 64

    incomplete = _metadata(pre, classes)
    del incomplete['class_names'], incomplete['training_data']
    path = _write_model(tmp_path / 'bare.onnx', incomplete, 6, (24, 32), 5)
    with pytest.raises(ModelError, match='lacks class_names, training_data') as caught:
        read_model_info(path)
    assert str(path) in str(caught.value) and 're-export' in str(caught.value)

    wrong_classes = _write_model(tmp_path / 'k.onnx', _metadata(pre, classes[:3]), 6, (24, 32), 5)
    with pytest.raises(ModelError, match='lists 3 classes'):
        read_model_info(wrong_classes)
    wrong_size = _write_model(tmp_path / 's.onnx', _metadata(pre, classes), 6, (48, 64), 5)
    with pytest.raises(ModelError, match=r'input .* has shape'):
        read_model_info(wrong_size)
    (tmp_path / 'junk.onnx').write_bytes(b'not a model')
    with pytest.raises(ModelError, match='cannot load'):
        read_model_info(tmp_path / 'junk.onnx')
    with pytest.raises(ModelError, match='no such model file'):
        read_model_info(tmp_path / 'missing.onnx')
    assert 'class_names' in REQUIRED_METADATA_KEYS and 'input_size' in REQUIRED_METADATA_KEYS


def test_vga_depth_gives_the_features_of_the_320x240_frame() -> None:
    """A VGA camera shows the model what it was trained on at 320x240 (features at the input size)."""
    rng = np.random.default_rng(3)
    depth = (0.1 + rng.normal(0, 1e-4, (240, 320))).astype(np.float32)
    depth[100:110, :] -= 0.002  # a bead
    depth[rng.random((240, 320)) < 0.02] = 0.0  # dropout
    rgb = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    names = ('r', 'g', 'b', 'height', 'relief', 'valid')
    pre = Preprocessor(input_size=(240, 320), channels=names, normalization=dict.fromkeys(names, (0.0, 1.0)))
    vga_rgb = cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_NEAREST)
    vga_depth = cv2.resize(depth, (640, 480), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_allclose(pre(vga_rgb, vga_depth), pre(rgb, depth), atol=1e-4)


def test_luma_detail_marks_small_dots_in_noise_units_whatever_the_exposure() -> None:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:120, 0:160].astype(np.float32)
    grey = 40.0 + xs + 0.3 * ys + rng.normal(0.0, 2.0, xs.shape)  # a lighting ramp and sensor noise
    grey[60:62, 80:82] += 40.0  # a 2x2 highlight, as on a spatter droplet
    depth = np.full((120, 160), 0.1, np.float32)
    pre = Preprocessor(
        input_size=(120, 160), channels=('luma_detail',), normalization={'luma_detail': (0.0, 1.0)}
    )
    peaks = []
    for gain in (1.0, 0.4):  # a darker exposure: the same dot, the same noise units
        rgb = np.repeat(np.clip(grey * gain, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
        (detail,) = pre(rgb, depth)
        peaks.append(float(detail[59:63, 79:83].max()))
        away = np.abs(detail[10:50, 10:60])
        assert np.percentile(away, 99) < 4.0  # the ramp is gone, the noise is about one unit
    assert peaks[0] > 8.0 and peaks[1] == pytest.approx(peaks[0], rel=0.25)
    flat = np.full((120, 160, 3), 128, np.uint8)
    assert np.all(pre(flat, depth) == 0.0)  # no detail, no noise: finite zeros, not a division by 0


def test_the_colour_branch_takes_luma_detail() -> None:
    from training.models import CompactFusionNet

    net = CompactFusionNet(expand_channels('r,g,b,luma_detail,height,relief,valid'), 5)
    assert net.branch_0.tolist() == [0, 1, 2, 3] and net.branch_1.tolist() == [4, 5, 6]


def test_no_data_is_the_same_whatever_its_form_and_size() -> None:
    """NaN, inf, negative, 0 and out-of-range depth are all 'no data', at VGA (area path) and 320x240."""
    rng = np.random.default_rng(5)
    names = ('height', 'relief', 'valid')
    pre = Preprocessor(input_size=(120, 160), channels=names, normalization=dict.fromkeys(names, (0.0, 1.0)))
    for size in ((240, 320), (120, 160)):
        depth = (0.1 + rng.normal(0, 1e-4, size)).astype(np.float32)
        rgb = np.zeros((*size, 3), np.uint8)
        holes = rng.random(size) < 0.05
        clean = np.where(holes, 0.0, depth).astype(np.float32)
        forms = [np.nan, np.inf, -np.inf, -0.5, 2.5, 0.03]
        dirty = depth.copy()
        dirty[holes] = rng.choice(forms, int(holes.sum()))
        out = pre(rgb, dirty)
        np.testing.assert_array_equal(out, pre(rgb, clean))
        assert np.isfinite(out).all()
        valid = out[names.index('valid')]
        if size == (120, 160):
            assert np.array_equal(valid > 0, ~holes)
            assert (out[names.index('height')][holes] == 0).all() and (
                out[names.index('relief')][holes] == 0
            ).all()
