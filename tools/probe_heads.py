"""Find what the ``loss_bbox`` of each of mmdet's heads receives, by running it, and write the table
``python -m mmloss_ext check`` reads (``mmloss_ext/head_inputs.py``).

    python tools/probe_heads.py [--out mmloss_ext/head_inputs.py] [--print] [HEAD ...]

Every registered mmdet dense head and RoI box head whose constructor takes a ``loss_bbox`` is built
in one of mmdet's shipped configs (its own, else one of a subclass it stands in for) with
``reg_decoded_bbox`` absent, False and True; the detector's training loss runs once on a synthetic
image and a recording loss classifies what ``loss_bbox`` received (:mod:`mmloss_ext.probe`).
Takes a few minutes on 2 CPU cores (some 150 detector builds). ``tests/test_probe.py`` runs the
probe again and compares it with the committed table.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

from mmloss_ext.probe import SETTINGS, HeadTable, probe_heads
from mmloss_ext.quiet import quiet_pkg_resources

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
OUT = osp.join(ROOT, 'mmloss_ext', 'head_inputs.py')


def render(found: HeadTable, mmdet_version: str) -> str:
    """The source of ``mmloss_ext/head_inputs.py`` for ``found``."""
    def literal(table: dict) -> str:
        return '{\n' + ''.join(f'    {key!r}: {table[key]!r},\n' for key in sorted(table)) + '}' if table else '{}'

    return '\n'.join([
        '"""What the ``loss_bbox`` of each of mmdet\'s heads receives, found by running it (written by',
        '``python tools/probe_heads.py``: do not edit; ``tests/test_probe.py`` probes again and compares).',
        '',
        f'Probed with mmdet {mmdet_version}. ``HEAD_INPUTS[head]`` holds the kind of input with',
        '``reg_decoded_bbox`` ' + ', '.join(map(str, SETTINGS)) + ' (:data:`mmloss_ext.probe.SETTINGS`):',
        "``'boxes'`` decoded (x1, y1, x2, y2), ``'encoded'`` regression deltas (or other offsets),",
        "``'cxcywh'`` normalised (cx, cy, w, h), ``'unused'`` never called; None where the head cannot be",
        'built with that setting (it takes no such switch, or refuses the value). ``PROBED_IN[head]``: the',
        "mmdet config (below ``mmdet/.mim/configs``) it was run in; ``NOT_PROBED[head]``: why none could.",
        '"""',
        '',
        f'HEAD_INPUTS = {literal(found.inputs)}',
        '',
        f'PROBED_IN = {literal(found.hosts)}',
        '',
        f'NOT_PROBED = {literal(found.not_probed)}',
        '',
    ])


@quiet_pkg_resources()
def main(argv: Optional[Sequence[str]] = None) -> int:
    import mmdet
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=OUT, help='the module to write (default: mmloss_ext/head_inputs.py)')
    parser.add_argument('--print', action='store_true', help='print each probe as it runs')
    parser.add_argument('heads', nargs='*', help='probe only these (default: every registered one)')
    args = parser.parse_args(argv)
    found = probe_heads(args.heads or None, log=print if args.print else None)
    with open(args.out, 'w') as f:
        f.write(render(found, mmdet.__version__))
    print(f'{args.out}: {len(found.inputs)} heads probed, {len(found.not_probed)} not: '
          + ', '.join(sorted(found.not_probed)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
