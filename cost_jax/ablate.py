"""The language ablations of docs/design.md §6 over training seeds -> one table (markdown and JSON).

  python -m cost_jax.ablate [--workdir=runs/ablate] [--seeds=0,1,2] [--variants=full,coa_off,...]

At the demo's scale (cost_jax.demo: the same synthetic training set and held-out sets, configs/cost_tiny.py,
the demo's number of steps), each variant is trained once per seed (config.seed: initialisation, pair
order, dropout and template dropout; the data stay the same) and tracked on the held-out videos:

  full                   the demo's recipe, tracked with the sentence
  test-time empty        the same checkpoints, tracked with an empty sentence
  CoA off                trained with train.w_coa = 0
  trained without language  trained with empty sentences (train.empty_sentences), tracked without,
                         with the config's score map and with the sigmoid one
  [OBJ] head             model.head.type = 'obj': one box from the [OBJ] token instead of the dense head

The table gives AUC (VL-SOT toolkit protocol) as mean ± std over the seeds (sample std, ddof=1) on the
whole held-out set, its language-critical videos and each cue, and the P@20 of the whole set; the JSON
(<workdir>/ablation.json) keeps every seed's figures and the time each run took. Every stage is reused
on a rerun (data, checkpoints, result files), so an interrupted ablation continues where it stopped.
"""

import json
import os
import time

from absl import flags
import numpy as np

from cost_jax import demo

# variant -> (config overrides, rows it is tracked as: (table row, result row of demo.track_rows,
# tracking overrides)). The model trained without language is also tracked with the sigmoid score map,
# the post-processing its validation run preferred (README), so its row is not handicapped by the
# map chosen for the full model.
VARIANTS = {
    'full': ({}, (('full', 'cost_tiny', {}), ('test-time empty', 'no_language', {}))),
    'coa_off': ({'train.w_coa': 0.0}, (('CoA off', 'cost_tiny', {}),)),
    'no_language': ({'train.empty_sentences': True},
                    (('trained without language', 'no_language', {}),
                     ('trained without language, sigmoid map', 'no_language',
                      {'track.score_map': 'sigmoid'}))),
    'obj_head': ({'model.head.type': 'obj'}, (('[OBJ] head', 'cost_tiny', {}),)),
}


def define_flags():
  flags.DEFINE_string('workdir', 'runs/ablate', 'Data, checkpoints, results and the table go here.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds (config.seed).')
  flags.DEFINE_list('variants', list(VARIANTS), f'Variants, of {list(VARIANTS)}.')
  flags.DEFINE_integer('steps', 600, 'Training steps of every run (the demo default).')
  flags.DEFINE_integer('train_videos', demo.TRAIN_VIDEOS,
                       'Synthetic training videos (the demo default).')
  flags.DEFINE_integer('test_videos', 20, 'Held-out videos drawn like the training set.')
  flags.DEFINE_integer('language_videos', 16, 'Held-out language-critical videos.')
  flags.DEFINE_integer('slots', None, 'Sequences tracked at once (default config.track.batch_slots).')
  flags.DEFINE_bool('progress', False, 'Progress bars.')


def run_one(workdir, variant, seed, train_dir, sequences, steps, slots=None, progress=False,
            echo=print):
  """Trains and tracks one (variant, seed) -> {table row: {subset: metrics}, 'seconds': s}."""
  overrides, rows = VARIANTS[variant]
  config = demo.demo_config(train_dir, steps, 0.0, progress, {**overrides, 'seed': seed})
  run_dir = os.path.join(workdir, variant, f'seed{seed}')
  tic = time.time()
  echo(f'ablate: {variant}, seed {seed}: training {steps} steps in {run_dir}')
  trained = demo.train_model(config, os.path.join(run_dir, 'train'), echo)
  out = {'seconds': None}
  for table_row, result_row, track_overrides in rows:
    # Rows with their own tracking settings get their own results folder.
    results_dir = os.path.join(run_dir, 'results' + ''.join(
        f'_{k.split(".")[-1]}={v}' for k, v in sorted(track_overrides.items())))
    row_config = demo.demo_config(train_dir, steps, 0.0, progress,
                                  {**overrides, **track_overrides, 'seed': seed})
    demo.track_rows(row_config, os.path.join(run_dir, 'train'), sequences, results_dir, trained,
                    slots, progress, echo=lambda *a: None, rows=(result_row,))
    out[table_row] = demo.results_table(sequences, results_dir, (result_row,))[result_row]
  out['seconds'] = round(time.time() - tic, 1)
  return out


def summarise(per_seed):
  """{table row: {subset: {'auc': (mean, std, n), 'precision': ...}}} from {seed: run_one output}."""
  rows = [r for runs in per_seed.values() for run in runs.values() for r in run if r != 'seconds']
  summary = {}
  for row in dict.fromkeys(rows):
    runs = [run[row] for runs in per_seed.values() for run in runs.values() if row in run]
    summary[row] = {}
    for column in runs[0]:
      summary[row][column] = {}
      for metric in ('auc', 'precision'):
        values = np.array([r[column][metric] for r in runs], np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else float('nan')
        summary[row][column][metric] = (float(values.mean()), std, len(values))
  return summary


def markdown_table(summary):
  """The summary as a markdown table: AUC mean ± std per subset, P@20 on the whole set."""
  columns = list(next(iter(summary.values())))
  head = '| row | ' + ' | '.join(f'AUC {c}' for c in columns) + ' | P@20 all |'
  lines = [head, '|' + '---|' * (len(columns) + 2)]
  fmt = lambda m: f'{m[0]:.3f} ± {m[1]:.3f}' if m[2] > 1 else f'{m[0]:.3f}'
  for row, by_column in summary.items():
    cells = [fmt(by_column[c]['auc']) for c in columns] + [fmt(by_column['all']['precision'])]
    lines.append(f'| {row} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def run(workdir, seeds=(0, 1, 2), variants=tuple(VARIANTS), steps=600,
        train_videos=demo.TRAIN_VIDEOS, test_videos=20, language_videos=16, slots=None, progress=False, echo=print, data_options=None):
  """Every variant x seed, then the table; returns (summary, per-seed results)."""
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise ValueError(f'unknown variants {unknown}; choose from {list(VARIANTS)}')
  start = time.time()
  train_dir, dirs = demo.make_sets(workdir, train_videos,
                                   {'test': test_videos, 'language': language_videos}, 0, echo,
                                   data_options)
  sequences = demo.held_out_sequences(dirs)
  per_seed = {}
  for variant in variants:
    per_seed[variant] = {}
    for seed in seeds:
      per_seed[variant][seed] = run_one(workdir, variant, int(seed), train_dir, sequences, steps,
                                        slots, progress, echo)
      echo(f"ablate: {variant}, seed {seed} done in {per_seed[variant][seed]['seconds'] / 60:.1f} min")
  summary = summarise(per_seed)
  table = markdown_table(summary)
  minutes = (time.time() - start) / 60
  with open(os.path.join(workdir, 'ablation.json'), 'w') as f:
    json.dump({'seeds': [int(s) for s in seeds], 'steps': steps, 'protocol': demo.PROTOCOL,
               'held_out_videos': len(sequences), 'minutes': round(minutes, 1),
               'summary': summary, 'runs': per_seed}, f, indent=1)
  with open(os.path.join(workdir, 'ablation.md'), 'w') as f:
    f.write(table + '\n')
  echo(f'\nLanguage ablations, {len(seeds)} seeds, {steps} steps, {len(sequences)} held-out videos '
       f'(mean ± std over seeds), {minutes:.1f} min:\n{table}')
  return summary, per_seed


def main(argv):
  del argv
  f = flags.FLAGS
  from cost_jax import compilation_cache
  compilation_cache.enable()
  run(f.workdir, [int(s) for s in f.seeds], f.variants, f.steps, f.train_videos, f.test_videos,
      f.language_videos, f.slots, f.progress)


if __name__ == '__main__':
  from cost_jax import cli
  define_flags()
  cli.run(main)
