"""Docs that drift from code: every `python -m` command in README.md, launch/README.md and
docs/design.md names a module that exists and flags/config fields that it defines, and every
`docs/design.md §N` reference in the repository names a section that exists."""

import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commands(path):
  """`python -m module args...` commands of a markdown file, continuation lines joined."""
  with open(os.path.join(ROOT, path)) as f:
    text = f.read().replace('\\\n', ' ')
  return [[m.group(1)] + m.group(2).split() for m in re.finditer(r'python -m ([\w.]+)(.*)', text)]


def module_source(module):
  spec = importlib.util.find_spec(module)
  assert spec is not None and spec.origin, f'README names {module}, which does not exist'
  origin = spec.origin
  if origin.endswith('__init__.py') and os.path.exists(origin.replace('__init__.py', '__main__.py')):
    origin = origin.replace('__init__.py', '__main__.py')
  with open(origin) as f:
    return f.read()


def config_has(field):
  from configs import cost_r50, cost_tiny
  for config in (cost_tiny.get_config(), cost_r50.get_config()):
    node = config
    for part in field.split('.'):
      if part not in node:
        return False
      node = node[part]
  return True


ALL = [(doc, cmd) for doc in ('README.md', 'launch/README.md', 'docs/design.md') for cmd in commands(doc)]


def test_readmes_have_commands():
  assert len(commands('README.md')) >= 12


@pytest.mark.parametrize('doc,cmd', ALL, ids=[f'{d}:{c[0]}:{i}' for i, (d, c) in enumerate(ALL)])
def test_command_matches_code(doc, cmd):
  module, args = cmd[0], cmd[1:]
  source = module_source(module)
  for arg in args:
    if not arg.startswith('--'):
      continue
    name = arg[2:].split('=')[0]
    if name.startswith('config.'):
      assert config_has(name[len('config.'):]), f'{doc}: {module} {arg}: no such config field'
      continue
    bare = name[2:] if name.startswith('no') and f"'{name[2:]}'" in source else name
    assert re.search(rf"DEFINE_\w+\(\s*'{re.escape(bare)}'", source), (
        f'{doc}: {module} has no flag --{name}')


def design_sections():
  """{N: heading} of docs/design.md's numbered sections ('## N. Title')."""
  with open(os.path.join(ROOT, 'docs', 'design.md')) as f:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r'^## (\d+)\. (.+)$', f.read(), re.M)}


def design_references():
  """(path, line number, N) of every `docs/design.md §N` in the repository's code and docs."""
  found = []
  for top in ('cost_jax', 'configs', 'input_pipeline', 'tests', 'bench', 'launch', '.'):
    folder = os.path.join(ROOT, top)
    for dirpath, dirnames, files in os.walk(folder):
      if top == '.':
        dirnames[:] = []  # top-level files only
      for name in files:
        if not name.endswith(('.py', '.md', '.sh', '.sbatch')):
          continue
        path = os.path.join(dirpath, name)
        with open(path, encoding='utf-8') as f:
          for i, line in enumerate(f, 1):
            found += [(os.path.relpath(path, ROOT), i, int(n))
                      for n in re.findall(r'docs/design\.md §(\d+)', line)]
  return found


def test_design_references_name_existing_sections():
  sections = design_sections()
  assert sorted(sections) == list(range(1, len(sections) + 1)), sections  # numbered 1..n, no gaps
  references = design_references()
  assert len(references) >= 30  # the code cites the design throughout
  missing = [(p, i, n) for p, i, n in references if n not in sections]
  assert not missing, f'references to sections docs/design.md does not have: {missing}'


def test_no_reference_to_a_design_outside_the_repository():
  old = ('DESIGN' + ' §', 'shared/' + 'DESIGN')  # the design that lived outside the repository
  for top in ('cost_jax', 'configs', 'input_pipeline', 'tests', 'bench'):
    for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
      for name in files:
        if name.endswith('.py'):
          with open(os.path.join(dirpath, name), encoding='utf-8') as f:
            text = f.read()
          assert not any(o in text for o in old), os.path.join(dirpath, name)
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  assert '](docs/design.md)' in readme and not any(o in readme for o in old)
