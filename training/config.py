"""Configs: the YAML files in training/configs/ and command-line options, parsed into a Recipe.

The default config (``configs/default.yaml``) is always read first; ``--config NAME_OR_PATH`` adds a
file over it (a name is looked up in ``training/configs/``, e.g. ``--config rgb_only``); options on
the command line win over both (``--model.lr 0.002``). Every option a config may set is listed in
default.yaml with its value, and the code's own defaults equal those values (tests/training check
both), so the file is the reference of the options and ``weld-train <command> --help`` describes each.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from training.data import WeldDataModule
from training.errors import TrainingError
from training.module import WeldClassifier
from training.procedure import LINKED_MODEL_ARGS, Recipe

CONFIG_DIR = Path(__file__).resolve().parent / 'configs'
DEFAULT_CONFIG = CONFIG_DIR / 'default.yaml'
# the data settings a command decides (the dataset it is given, the sessions it holds out)
COMMAND_DATA_ARGS = ('dataset_dir', 'val_sessions', 'test_sessions')


class ConfigError(TrainingError, ValueError):
    """A config file or option that cannot be used."""


def recipe_parser(prog: str, description: str, defaults_from_file: bool = True) -> ArgumentParser:
    """The options of a recipe (model, data, trainer, seed, threshold); commands add their own."""
    parser = ArgumentParser(
        prog=prog,
        description=description,
        default_config_files=[str(DEFAULT_CONFIG)] if defaults_from_file else None,
    )
    parser.add_argument(
        '--config',
        action=ActionConfigFile,
        help='a YAML config over the default one, by path or by name in training/configs/ (e.g. rgb_only)',
    )
    parser.add_argument('--seed', type=int, default=0, help='seed of the run (initial weights, batches)')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: every core)')
    parser.add_argument(
        '--retries',
        type=int,
        default=1,
        help='train a run again with the next seed, up to this many times, while a class is not learnt '
        '(recall under 0.4 on its own training frames); the best attempt is kept',
    )
    parser.add_argument(
        '--final_epochs',
        type=int,
        default=10,
        help="epochs of the release's final run, which continues the held-out run's network on every "
        'session at a quarter of the peak learning rate',
    )
    parser.add_argument(
        '--max_good_fpr',
        type=float,
        default=0.05,
        help='the good-class threshold keeps the share of good welds called defective within this',
    )
    parser.add_argument(
        '--good_fpr_confidence',
        type=float,
        default=0.8,
        help='how sure the held-out frames must make max_good_fpr (upper confidence bound; 0: as seen)',
    )
    parser.add_argument('--trainer.max_epochs', type=int, default=80, help='epochs of a run from scratch')
    parser.add_argument(
        '--trainer.accelerator', type=str, default='auto', help='cpu, gpu or auto (Lightning accelerator)'
    )
    parser.add_argument(
        '--trainer.devices', type=int | str, default=1, help='devices per run (Lightning; >1: DDP)'
    )
    parser.add_argument(
        '--trainer.precision',
        type=str,
        default='auto',
        help='Lightning precision (32-true, bf16-mixed, 16-mixed on a GPU, ...); auto: bf16-mixed on a '
        'CPU with bfloat16 instructions (AVX512-BF16, AMX), 32-true elsewhere',
    )
    parser.add_class_arguments(WeldClassifier, 'model', skip=set(LINKED_MODEL_ARGS))
    parser.add_class_arguments(WeldDataModule, 'data', skip=set(COMMAND_DATA_ARGS))
    return parser


def config_arguments(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--config NAME`` (no such file) turned into that config of training/configs/."""
    out = list(argv)
    for index, token in enumerate(out):
        name, value = None, None
        if token == '--config' and index + 1 < len(out):
            name, value = index + 1, out[index + 1]
        elif token.startswith('--config='):
            name, value = index, token.split('=', 1)[1]
        if name is None or value is None or Path(value).exists():
            continue
        shipped = CONFIG_DIR / (value if value.endswith('.yaml') else f'{value}.yaml')
        if not shipped.is_file():
            names = ', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml')))
            raise ConfigError(f'--config {value}: no such file, and no config of that name ({names})')
        out[name] = str(shipped) if name != index else f'--config={shipped}'
    return out


def parse(parser: ArgumentParser, argv: Sequence[str]) -> Namespace:
    return parser.parse_args(config_arguments(argv))


def recipe_of(config: Namespace) -> Recipe:
    """The Recipe of parsed options."""

    def section(name: str) -> dict[str, Any]:
        value = config[name]
        return value.as_dict() if isinstance(value, Namespace) else dict(value)

    return Recipe(
        model=section('model'),
        data=section('data'),
        trainer=section('trainer'),
        seed=int(config.seed),
        threads=int(config.threads),
        retries=int(config.retries),
        final_epochs=int(config.final_epochs),
        max_good_fpr=float(config.max_good_fpr),
        good_fpr_confidence=float(config.good_fpr_confidence),
    )
