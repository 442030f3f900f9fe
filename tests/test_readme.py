"""Docs that drift from code: every `python -m` command in README.md and launch/README.md names a module
that exists and flags/config fields that it defines."""

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


ALL = [(doc, cmd) for doc in ('README.md', 'launch/README.md') for cmd in commands(doc)]


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
