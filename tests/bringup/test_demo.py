"""The README's main command in its quick form: ``scripts/demo --quick`` runs the whole loop through
real processes - camera sim, labeler, inference on loopback DDS, bags recorded and exported by the
labeler, a real ``weld-train release`` (convert, held-out run, final run, ONNX export) - and the live
inference node answers with the new model, or, when the release's safety net refuses a model whose
final run missed a class (likely with the quick plan's 60 pairs), the demo says so and the rules
keep answering."""

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from weld_bringup.demo import QUICK
from weld_core.classes import DEFAULT_CLASSES


@pytest.mark.slow
@pytest.mark.ros
def test_scripts_demo_quick_runs_the_loop_and_deploys_what_the_release_writes(
    repo_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / 'run'
    env = {k: v for k, v in os.environ.items() if k != 'ROS_DOMAIN_ID'}
    done = subprocess.run(
        [str(repo_root / 'scripts' / 'demo'), '--quick', '--run-dir', str(run_dir)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    for stage in range(1, 6):
        assert f'({stage}/5)' in output, f'no progress line for stage {stage}'
    summary = json.loads((run_dir / 'summary.json').read_text())

    # the sessions: real bags recorded and exported by the labeler, labels equal to the ground truth
    pairs = QUICK.sessions * QUICK.pairs_per_class * len(DEFAULT_CLASSES)
    assert summary['labels_vs_ground_truth'] == {
        'labels': pairs,
        'agree': pairs,
        'disagree': 0,
        'no_ground_truth': 0,
    }
    assert len(summary['sessions']) == QUICK.sessions
    for session in summary['sessions']:
        with tarfile.open(session['archive']) as archive:
            assert any(name.endswith('metadata.yaml') for name in archive.getnames())
    manifest = json.loads((run_dir / 'train' / 'release' / 'dataset' / 'manifest.json').read_text())
    assert manifest['digest']

    # the release's held-out figures: the model and the rules on the same held-out sessions
    held_out = summary['held_out']
    assert held_out['model']['frames'] == held_out['rules']['frames'] > 0
    assert all(0.0 <= held_out[who]['macro_recall'] <= 1.0 for who in ('model', 'rules'))
    assert held_out['sessions'] and f'held-out sessions {", ".join(held_out["sessions"])}' in output
    assert summary['rules_window']['source'] == 'rules'
    assert summary['rules_window']['results_scored'] >= QUICK.rules_results
    deployed = run_dir / 'models' / 'weld_demo.onnx'
    if 'release_refused' in summary:
        # the release's safety net: a class not learnt on its own frames, no file; the rules answer
        assert 'did not learn' in summary['release_refused']
        assert f'no model to deploy: {summary["release_refused"]}' in output
        assert not deployed.exists() and not (run_dir / 'model' / 'weld_demo.onnx').exists()
        assert 'model' not in summary and summary['model_window'] == []
    else:
        # the model the release wrote is the one the live node answers with
        sha256 = hashlib.sha256(deployed.read_bytes()).hexdigest()
        assert (run_dir / 'models' / 'weld_demo.onnx.sha256').read_text().split()[0] == sha256
        model_id = summary['model']['model_id']
        assert model_id.endswith(sha256[:8])
        live = {row['source']: row for row in summary['model_window']}
        assert live['model']['model_id'] == model_id
        assert live['model']['results_scored'] >= QUICK.model_results
        assert 0.0 <= live['model']['accuracy'] <= 1.0
    assert summary['node_exit_codes'] == {'camera': 0, 'labeler': 0, 'inference': 0, 'console': 0}
    # the console ran in the demo and its address was printed
    assert summary['console_url'].startswith('http://127.0.0.1:')
    assert f'operator console: {summary["console_url"]}' in output
