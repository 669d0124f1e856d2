"""tools/gpu_check.py (``make gpu-check``) on the CPU under Triton's interpreter at tiny sizes: the
code path a GPU run takes (the Triton kernels, the CUDA meter), so the command cannot rot."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('triton', reason='triton is not installed (a test dependency: make install)')
pytestmark = pytest.mark.triton_interpreter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_runs_every_part_under_the_interpreter(tmp_path):
    out = str(tmp_path / 'check')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gpu_check.py'), '--interpret', '--no-compile',
                           '--repeat', '1', '--out', out], capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.load(open(out + '.json'))
    cases = {p['case'] for p in report['parity']}
    assert {'focal', 'giou', 'siou', 'smooth_l1', 'gaussian_focal', 'ghmc'} <= cases
    assert {p['dtype'] for p in report['parity']} == {'float32', 'float16', 'bfloat16'}
    # every case matched eager, and ran its Triton kernel: all but cross-entropy and Dice, whose kernels are
    # C++ only, and which run eagerly on a GPU (and under the interpreter standing in for one)
    assert all(p['ok'] for p in report['parity'])
    assert {p['case'] for p in report['parity'] if not p['ran_fused']} == {'ce', 'dice'}
    assert {f['case'] for f in report['first_call']} == cases
    for res in report['benchmark']:
        labels = [r['label'] for r in res['rows']]
        fused = 'fused (triton) [ran eager]' if res['case'] in ('ce', 'dice') else 'fused (triton)'
        assert 'eager' in labels and fused in labels, labels
    text = open(out + '.md').read()
    assert '## Fused against eager' in text and '| focal | bfloat16 | yes |' in text
    assert 'parity: 54 of 54 ok' in proc.stdout


def test_without_a_gpu_it_says_so():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gpu_check.py'), '--out', '/nonexistent/x'],
                          capture_output=True, text=True, timeout=300, env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})
    assert proc.returncode == 2 and 'no CUDA device' in proc.stderr
