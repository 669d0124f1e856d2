"""Command line (also installed as ``mmloss-ext``): ``python -m mmloss_ext list [--family F]``,
``python -m mmloss_ext show NAME``, ``python -m mmloss_ext info`` (see :mod:`mmloss_ext.info`) and
``python -m mmloss_ext check CONFIG [--cfg-options ...] [--json]`` (see :mod:`mmloss_ext.check`).

``show`` takes a name in any case, with or without the ``mmloss_ext.`` prefix. Output piped into
a reader that stops early (``| head``) ends quietly."""
from __future__ import annotations

import argparse
import os
import pprint
import sys
from typing import List, Optional

from .catalogue import describe, entries, entry, families, lookup, plain
from .quiet import quiet_pkg_resources


def _list(family: Optional[str]) -> str:
    rows = [(e.name, e.family, plain(e.summary)) for e in entries(family)]
    width = max((len(r[0]) for r in rows), default=4)
    lines = [f'{"name":{width}}  {"family":14}  summary', f'{"-" * width}  {"-" * 14}  {"-" * 7}']
    lines += [f'{n:{width}}  {f:14}  {s}' for n, f, s in rows]
    return '\n'.join(lines)


def _show(name: str) -> str:
    try:
        e = entry(lookup(name))
    except LookupError as err:
        raise SystemExit(f'mmloss_ext: {err.args[0]}') from None
    defaults = e.defaults()
    width = max(len(f'{k}={v!r}') for k, v in defaults.items())
    params = [f'  {f"{k}={v!r}":{width}}  {describe(e, k)}' for k, v in defaults.items()]
    call = [f'call: {e.call}'] + ([f'      ({e.call_note})'] if e.call_note else [])
    return '\n'.join([f'{e.name} ({e.family})', '', plain(e.doc), '', *call, '', 'parameters:', *params, '',
                      f'tested against: {plain(e.reference)}' + (f'; paper: {plain(e.paper)}' if e.paper else ''),
                      '', 'config:', pprint.pformat(e.config(), sort_dicts=False)])


def _main(argv: List[str]) -> int:
    if argv[:1] == ['check']:
        from .check import main as check
        return check(argv[1:])
    if argv[:1] == ['info']:
        from .info import report
        print(report())
        return 0
    parser = argparse.ArgumentParser(prog='python -m mmloss_ext', description='The mmloss_ext loss catalogue.')
    sub = parser.add_subparsers(dest='cmd', required=True)
    p_list = sub.add_parser('list', help='print the catalogue as a table')
    p_list.add_argument('--family', choices=families())
    p_show = sub.add_parser('show', help="print a loss's doc, call, parameters and a config dict")
    p_show.add_argument('name', help='a loss name (any case; the mmloss_ext. prefix is accepted)')
    sub.add_parser('check', help='check the losses of an mmdet config (see `check --help`)')
    sub.add_parser('info', help='torch, Triton, the OpenMMLab packages and the path each fused kernel takes')
    args = parser.parse_args(argv)
    print(_list(args.family) if args.cmd == 'list' else _show(args.name))
    return 0


@quiet_pkg_resources()
def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        status = _main(argv)
        sys.stdout.flush()  # inside the try: a closed pipe fails here, not at exit
    except BrokenPipeError:
        # the reader stopped early (`| head`): what was written is all it wanted; silence the
        # interpreter's own flush at exit, then stop with 1 as Python does on a broken pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status


if __name__ == '__main__':
    sys.exit(main())
