"""The configs: every option is listed in default.yaml, the code's defaults equal it, names resolve."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from training.config import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    ConfigError,
    config_arguments,
    recipe_of,
    recipe_parser,
)


def flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key in ('trainer', 'model', 'data'):
            out |= flatten(value, f'{prefix}{key}.')
        else:
            out[f'{prefix}{key}'] = value
    return out


def normalised(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def code_defaults() -> dict[str, Any]:
    """Every option of a recipe with the default the code gives it (no config file read)."""
    parser = recipe_parser('test', 'test', defaults_from_file=False)
    defaults = parser.get_defaults().as_dict()
    defaults.pop('config', None)
    return {key: normalised(value) for key, value in flatten(defaults).items()}


def test_default_config_lists_every_option_with_the_codes_default() -> None:
    listed = flatten(yaml.safe_load(DEFAULT_CONFIG.read_text()))
    code = code_defaults()
    assert sorted(listed) == sorted(code), 'an option is missing from default.yaml or from the code'
    for key, value in listed.items():
        assert normalised(value) == code[key], f'{key}: default.yaml says {value!r}, the code {code[key]!r}'


@pytest.mark.parametrize('config', sorted(CONFIG_DIR.glob('*.yaml')), ids=lambda p: p.stem)
def test_every_shipped_config_sets_known_options_and_parses(config: Path) -> None:
    unknown = set(flatten(yaml.safe_load(config.read_text()))) - set(code_defaults())
    assert not unknown, f'{config.name} sets options the code does not have: {sorted(unknown)}'
    parser = recipe_parser('test', 'test')
    recipe = recipe_of(parser.parse_args(config_arguments(['--config', config.stem])))
    assert recipe.epochs > 0


def test_configs_resolve_by_name_or_path_and_the_command_line_wins(tmp_path: Path) -> None:
    parser = recipe_parser('test', 'test')
    recipe = recipe_of(parser.parse_args(config_arguments(['--config', 'rgb_only', '--model.lr', '0.01'])))
    assert recipe.data['channels'] == 'rgb' and list(recipe.data['input_size']) == [120, 160]
    assert recipe.model['lr'] == 0.01 and recipe.model['train_crop'] is None
    mine = tmp_path / 'mine.yaml'
    mine.write_text('model:\n  dropout: 0.3\n')
    recipe = recipe_of(parser.parse_args(config_arguments([f'--config={mine}'])))
    assert recipe.model['dropout'] == 0.3 and recipe.data['channels'].startswith('r,g,b')
    with pytest.raises(ConfigError, match='no config of that name'):
        config_arguments(['--config', 'resnet999'])


@pytest.mark.parametrize(
    ('trainer', 'bf16_cpu', 'cuda', 'expected'),
    [
        ({'precision': 'auto', 'accelerator': 'auto'}, True, False, 'bf16-mixed'),
        ({'precision': 'auto', 'accelerator': 'cpu'}, True, True, 'bf16-mixed'),
        ({'precision': 'auto', 'accelerator': 'auto'}, False, False, '32-true'),
        ({'precision': 'auto', 'accelerator': 'auto'}, True, True, '32-true'),  # a GPU: as measured
        ({'precision': 'auto', 'accelerator': 'gpu'}, True, True, '32-true'),
        ({'precision': '32-true', 'accelerator': 'auto'}, True, False, '32-true'),
        ({'precision': '16-mixed', 'accelerator': 'gpu'}, False, True, '16-mixed'),
    ],
)
def test_auto_precision_is_bfloat16_only_on_a_cpu_that_has_it(
    monkeypatch: pytest.MonkeyPatch, trainer: dict[str, str], bf16_cpu: bool, cuda: bool, expected: str
) -> None:
    import torch

    from training.procedure import resolve_precision

    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: bf16_cpu)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    assert resolve_precision(trainer) == expected
