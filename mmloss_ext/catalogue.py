"""The catalogue, read from the code: ``docs/losses.md`` and ``python -m mmloss_ext list|show``.

Every fact comes from the registered loss itself, so the catalogue cannot drift from the code:
the family, inputs and test reference from the class's attributes (``family`` is set once by each
family's base class), the parameters and defaults from the functional's signature, what each
takes from its declaration, the call from the class's ``forward``, the summary, the paper (the
parenthesised citation of the summary), the formula (the first ``.. math::`` block) and each
parameter's description (its ``Args:`` entry, or that of a functional the docstring points to with
``:func:``) from the functional's docstring. reST roles are rendered as plain text and code.
"""
from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from .core.errors import closest
from .losses.base import BASE_KEYWORDS, BASE_SPEC, BaseLoss
from .registry import MODELS

SCOPE = 'mmloss_ext.'


@dataclass(frozen=True)
class Entry:
    """One loss of the catalogue, read from the code."""
    name: str
    family: str
    summary: str
    paper: str
    params: Dict[str, object]
    reduction: str
    functional: str
    formula: str
    doc: str
    inputs: str
    reference: str
    #: how the loss is called: ``loss(pred, target, weight=None, avg_factor=None, reduction_override=None)``
    call: str
    #: ``''``, or how the call's positional order differs from most losses'
    call_note: str
    #: per constructor argument (hyper-parameters, ``reduction``, ``loss_weight``): ``(what it
    #: takes, its description or '')``
    takes: Dict[str, Tuple[str, str]]
    # (text fields keep their reST: render them with :func:`plain`)

    def config(self) -> dict:
        """A ready-to-paste config dict with every default spelled out."""
        return dict(type=f'{SCOPE}{self.name}', **self.defaults())

    def defaults(self) -> Dict[str, object]:
        """Every constructor argument and its default."""
        return dict(**self.params, reduction=self.reduction, loss_weight=1.0)


def _summary(doc: str) -> str:
    """The first paragraph of a docstring, on one line."""
    lines = []
    for line in doc.splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return ' '.join(lines)


def _split_paper(summary: str):
    """``(summary without its citation, citation)``: the citation is the last parenthesised part
    of the summary's first sentence that names a year (``(Lin et al., 2017, "Focal Loss ...")``)."""
    cited = [m for m in _PARENS.finditer(summary) if _YEAR.search(m.group(1))]
    if not cited:
        return summary, ''
    m = cited[-1]
    return (summary[:m.start()] + summary[m.end():]).strip(), m.group(1).strip()


#: a parenthesised part (one level of nested parentheses allowed) and the leading space
_PARENS = re.compile(r'\s*\(((?:[^()]|\([^()]*\))*)\)')
_YEAR = re.compile(r'\b(?:19|20)\d\d\b')


def _formula(doc: str) -> str:
    """The first ``.. math::`` block of a docstring (both one-line and indented forms)."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'\s*\.\. math::\s*(.*)$', line)
        if not m:
            continue
        indent = len(line) - len(line.lstrip())
        body = [m.group(1)]  # the one-line form may go on over more indented lines
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt.strip())
        return ' '.join(b for b in body if b)
    return ''


#: reST roles: ``:func:`~a.b.name```, ``:math:`T^2```, and inline literals ````code````
_ROLE = re.compile(r':(?:func|class|meth|attr|data|mod|obj|exc):`(~?)([^`]+)`')
_MATH = re.compile(r':math:`([^`]+)`')
_LITERAL = re.compile(r'``(.+?)``')


def plain(text: str, markdown: bool = False) -> str:
    """``text`` with its reST roles rendered: a cross-reference and an inline literal as code
    (```name```; ``~`` keeps the last dotted part), inline math as plain text (``$...$`` in
    ``markdown``)."""
    text = _ROLE.sub(lambda m: f'`{m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2)}`', text)
    text = _MATH.sub(lambda m: f'${m.group(1)}$' if markdown else m.group(1), text)
    return _LITERAL.sub(r'`\1`', text)


def _arg_docs(doc: str) -> Dict[str, str]:
    """The ``Args:`` entries of a Google-style docstring, by name (``pred, target: ...`` gives both)."""
    out: Dict[str, str] = {}
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if not re.match(r'Args\b[^:]*:$', line.strip()):
            continue
        indent = len(line) - len(line.lstrip())
        names: List[str] = []
        for nxt in lines[i + 1:]:
            depth = len(nxt) - len(nxt.lstrip())
            if nxt.strip() and depth <= indent:
                break
            m = re.match(r'\s*([\w*, ]+):\s*(.*)$', nxt)
            if m and depth == indent + 4:
                names = [n.strip().lstrip('*') for n in m.group(1).split(',')]
                for n in names:
                    out[n] = m.group(2).strip()
            elif nxt.strip():
                for n in names:
                    out[n] += ' ' + nxt.strip()
        break
    return out


def _referenced(fn: Callable, doc: str) -> List[Callable]:
    """The functions a docstring points to with ``:func:`` (resolved in ``fn``'s module, or by a
    dotted path)."""
    found = []
    namespace = inspect.unwrap(fn).__globals__
    for _, target in _ROLE.findall(doc):
        module, _, attr = target.rpartition('.')
        try:
            obj = getattr(importlib.import_module(module), attr) if module else namespace.get(attr)
        except (ImportError, AttributeError):
            obj = None
        if callable(obj) and obj not in found:
            found.append(obj)
    return found


def _call(cls) -> str:
    """How a loss is called, from its ``forward``: ``loss(pred, target, weight=None, ...)`` (the
    target of a loss that takes one shown without its ``None`` default; ``**kwargs``, per-call
    hyper-parameters, left out)."""
    parts: List[str] = []
    for i, p in enumerate(cls.call_signature().parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.KEYWORD_ONLY and '*' not in parts:
            parts.append('*')
        required = p.default is p.empty or (i == 1 and cls.takes_target and p.kind is not p.KEYWORD_ONLY)
        parts.append(p.name if required else f'{p.name}={p.default!r}')
    return f'loss({", ".join(parts)})'


def entry(name: str) -> Entry:
    """The catalogue entry of a registered loss (``KeyError`` for an unknown name)."""
    cls = MODELS.module_dict[name]
    fn = cls.loss_fn
    doc = inspect.getdoc(fn) or ''
    summary, paper = _split_paper(_summary(doc))
    spec = cls.spec()
    described: Dict[str, str] = {}
    for source in (fn, *_referenced(fn, doc)):
        for key, text in _arg_docs(inspect.getdoc(source) or '').items():
            described.setdefault(key, text)
    takes = {key: (spec.allowed(key), described.get(key, '')) for key in spec.defaults}
    base = _arg_docs(inspect.getdoc(BaseLoss) or '')
    takes.update({key: (BASE_SPEC.allowed(key), base.get(key, '')) for key in BASE_KEYWORDS})
    return Entry(name=name, family=cls.family, summary=summary, paper=paper, params=dict(spec.defaults),
                 reduction=spec.reduction, functional=f'{fn.__module__}.{fn.__name__}', formula=_formula(doc),
                 doc=doc, inputs=cls.inputs, reference=cls.reference, call=_call(cls),
                 call_note=cls.call_order_note(), takes=takes)


def lookup(name: str) -> str:
    """The registered name a user means by ``name``: any case, with or without the ``mmloss_ext.``
    prefix; a ``LookupError`` naming the three closest otherwise."""
    import mmloss_ext.losses  # noqa: F401
    short = name[len(SCOPE):] if name.lower().startswith(SCOPE) else name
    known = list(MODELS.module_dict)
    match = {n.lower(): n for n in known}.get(short.lower())
    if match is not None:
        return match
    hint = closest(short, known)
    raise LookupError(f'no loss named {name!r}' + (f'; did you mean {", ".join(hint)}?' if hint else '')
                      + f' (`python -m mmloss_ext list` shows all {len(known)})')


def entries(family: Optional[str] = None) -> List[Entry]:
    """Every registered loss, grouped by family (families in the order they were registered)."""
    import mmloss_ext.losses  # noqa: F401  (registers everything)
    out = [entry(n) for n in MODELS.module_dict]
    order = families()
    out.sort(key=lambda e: order.index(e.family))  # stable: registration order within a family
    return [e for e in out if family is None or e.family == family]


def families() -> List[str]:
    """The families of the registered losses, in registration order."""
    import mmloss_ext.losses  # noqa: F401
    seen: List[str] = []
    for cls in MODELS.module_dict.values():
        if cls.family not in seen:
            seen.append(cls.family)
    return seen


def _fmt_params(params: Dict[str, object]) -> str:
    return ', '.join(f'{k}={v!r}' for k, v in params.items()) or '—'


#: a description that opens with the choices (``'a'`` | ``'b'``), which ``allowed`` says already
_CHOICES = re.compile(r"^``'[^`]*'``(?:\s*\|\s*``'[^`]*'``)+[\s:;,.]*")


def describe(e: Entry, key: str, markdown: bool = False) -> str:
    """What constructor argument ``key`` of a loss takes, and its description."""
    allowed, text = e.takes[key]
    text = _CHOICES.sub('', text)
    if not text:
        return allowed
    return plain(f'{allowed} {text}' if text.startswith('(') else f'{allowed}: {text}', markdown)


def _md(text: str) -> str:
    """Docstring text for a Markdown table cell or line."""
    return plain(text, markdown=True).replace('|', '\\|')


def render_markdown() -> str:
    """The text of ``docs/losses.md`` (regenerate with ``python tools/gen_docs.py``)."""
    all_entries = entries()
    other_order = [f'[{e.name}](#{e.name.lower()})' for e in all_entries if e.call_note]
    intro = (f'{len(all_entries)} losses. In a config: `dict(type=\'mmloss_ext.<Name>\', ...)`. Every loss also '
             'accepts `reduction` (`\'none\'|\'mean\'|\'sum\'`) and `loss_weight`. Most are called as '
             f'`{_call(BaseLoss)}` (some under mmdet\'s names for the arguments, e.g. `cls_score, label`), plus '
             'keyword overrides of their hyper-parameters for one call; each entry gives its own call.')
    if other_order:
        intro += (f' {", ".join(other_order)} take their arguments in another positional order (mmdet\'s): '
                  'pass `avg_factor` and `reduction_override` to them by keyword.')
    out = ['# The mmloss_ext catalogue', '',
           '<!-- generated by tools/gen_docs.py from the registry and the docstrings; do not edit -->', '', intro, '',
           '| Name | Family | Summary | Parameters (defaults) | Inputs | Tested against | Paper |',
           '|---|---|---|---|---|---|---|']
    for e in all_entries:
        out.append(f'| [{e.name}](#{e.name.lower()}) | {e.family} | {_md(e.summary)} | '
                   f'{_md(_fmt_params(e.params))} | {_md(e.inputs)} | {_md(e.reference)} | '
                   f'{_md(e.paper) or "—"} |')
    family = None
    for e in all_entries:
        if e.family != family:
            family = e.family
            out += ['', f'## {family}']
        out += ['', f'### {e.name}', '', plain(e.summary, markdown=True), '']
        if e.formula:
            out += ['$$', e.formula, '$$', '']
        out += [f'- call: `{e.call}`' + (f' ({e.call_note})' if e.call_note else ''),
                f'- functional: `{e.functional}`', '- parameters:' if e.params else '- parameters: —']
        out += [f'  - `{k}={v!r}`: {describe(e, k, markdown=True)}' for k, v in e.params.items()]
        out += [f'- default reduction: `{e.reduction!r}`', f'- inputs: {plain(e.inputs, markdown=True)}',
                f'- tested against: {plain(e.reference, markdown=True)}']
        if e.paper:
            out.append(f'- paper: {plain(e.paper, markdown=True)}')
        out += ['', '```python', f'{e.config()!r}', '```']
    return '\n'.join(out) + '\n'
