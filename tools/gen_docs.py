"""Regenerate docs/losses.md from the registry and the docstrings: `python tools/gen_docs.py`."""
from pathlib import Path

from mmloss_ext.catalogue import render_markdown

if __name__ == '__main__':
    path = Path(__file__).resolve().parents[1] / 'docs' / 'losses.md'
    path.write_text(render_markdown())
    print(f'wrote {path}')
