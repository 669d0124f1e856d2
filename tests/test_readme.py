"""What the README tells a user to run says what it does."""
import re
from pathlib import Path

import pytest

from mmloss_ext.check import main as check_main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text(encoding='utf-8')

#: every ``python -m mmloss_ext check CONFIG   # comment`` line of the README
CHECK_LINES = re.findall(r'-m mmloss_ext check (\S+\.py)[ \t]*#[ \t]*(.*)', README)


def test_the_readme_has_check_examples():
    assert CHECK_LINES, 'the README shows no `python -m mmloss_ext check CONFIG  # ...` line'


@pytest.mark.parametrize('config, comment', CHECK_LINES)
def test_a_check_example_reports_what_its_comment_says(config, comment, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status = check_main([config])
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    errors = int(re.search(r'(\d+) error\(s\)', summary).group(1))
    said = re.search(r'(\d+) error\(s\)', comment)
    assert said, f'the comment of `check {config}` does not say how many errors it reports: {comment!r}'
    assert errors == int(said.group(1)) and status == (1 if errors else 0), summary
