"""Two CPU processes of Lightning DDP (gloo) over the on-disk cache: what each rank read and ended with.

python tests/training/ddp_fit.py DATASET OUT      (Lightning starts the second process itself)
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from training.config import parse, recipe_of, recipe_parser
from training.procedure import build_model, datamodule


def main(dataset: str, out: str) -> None:
    recipe = recipe_of(
        parse(recipe_parser('ddp', 'ddp'), ['--data.input_size=[24, 32]', '--data.batch_size=4'])
    )
    torch.set_num_threads(1)
    pl.seed_everything(0, workers=True, verbose=False)
    data = datamodule(recipe, dataset, val_sessions=[], test_sessions=[])
    model = build_model(recipe, data)
    trainer = pl.Trainer(
        accelerator='cpu',
        devices=2,
        strategy='ddp',
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=data)
    sampler = trainer.train_dataloader.sampler
    record = {
        'rank': trainer.global_rank,
        'world_size': trainer.world_size,
        'steps': trainer.global_step,
        'train_frames': len(data.splits['train']),
        'batches': [[int(i) for i in batch] for batch in sampler],
        'weights': [float(p.double().sum()) for p in model.parameters()],
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f'rank{trainer.global_rank}.json').write_text(json.dumps(record))


if __name__ == '__main__':
    main(*sys.argv[1:3])
