"""Weight averaging (``ema_decay``): validation and checkpoints see the average, training the raw
weights, and a resumed fit gets both back."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.module import WeldClassifier

CHANNELS = ('r', 'g', 'b', 'height', 'relief', 'valid')
CLASSES = ('good', 'porosity', 'spatter', 'gap', 'undercut')


def _model(decay: float) -> WeldClassifier:
    return WeldClassifier(
        input_channels=CHANNELS,
        class_names=CLASSES,
        input_size=(24, 32),
        model_kwargs={'stem_width': 4, 'stage_widths': [8, 8]},
        ema_decay=decay,
    )


def _loader(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, len(CHANNELS), 24, 32, generator=generator)
    y = torch.arange(16) % len(CLASSES)
    return DataLoader(TensorDataset(x, y), batch_size=8)


def _net_state(model: WeldClassifier) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.net.state_dict().items()}


class _SeesWeights(pl.Callback):
    """Records the weights the validation ran with and the ones ModelCheckpoint saved."""

    def __init__(self) -> None:
        self.validated: list[dict[str, torch.Tensor]] = []
        self.started: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None] | None = None

    def on_train_start(self, trainer: pl.Trainer, module: WeldClassifier) -> None:
        average = None if module._average is None else {k: v.clone() for k, v in module._average.items()}
        self.started = (_net_state(module), average)

    def on_validation_end(self, trainer: pl.Trainer, module: WeldClassifier) -> None:
        self.validated.append(_net_state(module))


def test_average_follows_the_weights_slowly() -> None:
    model = _model(0.9)
    before = _net_state(model)
    model.on_train_batch_end()
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.add_(1.0)
    for _ in range(30):
        model.on_train_batch_end()
    key = 'stems.0.0.weight'
    assert model._average is not None
    moved = model._average[key] - before[key]
    # 30 updates of a decay that warms up to 0.9: most of the way to the new weights, not all of it
    assert torch.all(moved > 0.5) and torch.all(moved < 1.0)
    # the net itself keeps the raw weights
    assert torch.equal(model.net.state_dict()[key], before[key] + 1.0)


def test_validation_and_checkpoints_use_the_average_and_training_the_raw_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _model(0.8)
    seen = _SeesWeights()
    trainer = pl.Trainer(
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=[seen, pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)],
    )
    trainer.fit(model, _loader(0), _loader(1))
    assert model._average is not None and len(seen.validated) == 2
    checkpoint = torch.load(tmp_path / 'last.ckpt', weights_only=False)
    saved = {key[4:]: value for key, value in checkpoint['state_dict'].items() if key.startswith('net.')}
    raw = checkpoint['weldvision_raw_weights']
    assert any(not torch.equal(saved[key], raw[key]) for key in saved if saved[key].is_floating_point())
    # the last validation ran on the average, and that average is what the checkpoint holds
    for key, value in saved.items():
        assert torch.equal(seen.validated[-1][key], value)
    # a model loaded for use (export, evaluation) gets the average
    loaded = WeldClassifier.load_from_checkpoint(tmp_path / 'last.ckpt', map_location='cpu')
    for key, value in loaded.net.state_dict().items():
        assert torch.equal(value, saved[key])
    # a resumed fit trains on from the raw weights and keeps averaging from the saved average
    resumed, start = _model(0.8), _SeesWeights()
    trainer = pl.Trainer(
        max_epochs=3, default_root_dir=tmp_path, logger=False, enable_progress_bar=False, callbacks=[start]
    )
    trainer.fit(resumed, _loader(0), _loader(1), ckpt_path=tmp_path / 'last.ckpt')
    assert start.started is not None
    weights, average = start.started
    assert average is not None
    for key, value in saved.items():
        assert torch.equal(weights[key], raw[key])
        assert torch.equal(average[key], value)


def test_decay_must_be_below_one() -> None:
    with pytest.raises(ValueError, match='ema_decay'):
        _model(1.0)
