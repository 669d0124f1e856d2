"""Command line: ``python -m mmloss_ext list [--family F]``, ``python -m mmloss_ext show NAME`` and
``python -m mmloss_ext check CONFIG [--cfg-options ...] [--json]`` (see :mod:`mmloss_ext.check`)."""
from __future__ import annotations

import argparse
import pprint
import sys
from typing import List, Optional

from .catalogue import entries, entry, families
from .quiet import quiet_pkg_resources
from .registry import MODELS


def _list(family: Optional[str]) -> str:
    rows = [(e.name, e.family, e.summary) for e in entries(family)]
    width = max((len(r[0]) for r in rows), default=4)
    lines = [f'{"name":{width}}  {"family":14}  summary', f'{"-" * width}  {"-" * 14}  {"-" * 7}']
    lines += [f'{n:{width}}  {f:14}  {s}' for n, f, s in rows]
    return '\n'.join(lines)


def _show(name: str) -> str:
    import mmloss_ext.losses  # noqa: F401
    if name not in MODELS.module_dict:
        known = ', '.join(sorted(MODELS.module_dict))
        raise SystemExit(f'mmloss_ext: no loss named {name!r}; known: {known}')
    e = entry(name)
    return '\n'.join([f'{e.name} ({e.family})', '', e.doc, '',
                      f'defaults: {e.params}, reduction={e.reduction!r}, loss_weight=1.0',
                      f'tested against: {e.reference}' + (f'; paper: {e.paper}' if e.paper else ''),
                      '', 'config:', pprint.pformat(e.config(), sort_dicts=False)])


@quiet_pkg_resources()
def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['check']:
        from .check import main as check
        return check(argv[1:])
    parser = argparse.ArgumentParser(prog='python -m mmloss_ext', description='The mmloss_ext loss catalogue.')
    sub = parser.add_subparsers(dest='cmd', required=True)
    p_list = sub.add_parser('list', help='print the catalogue as a table')
    p_list.add_argument('--family', choices=families())
    p_show = sub.add_parser('show', help="print a loss's doc, defaults and a config dict")
    p_show.add_argument('name')
    sub.add_parser('check', help='check the losses of an mmdet config (see `check --help`)')
    args = parser.parse_args(argv)
    print(_list(args.family) if args.cmd == 'list' else _show(args.name))
    return 0


if __name__ == '__main__':
    sys.exit(main())
