"""The tracker's post-processing chosen on validation videos, never on the held-out ones.

  python -m bench.tune_tracking --workdir=runs/ablate [--seeds=0] [--variants=full,no_language]
      [--score_maps=sigmoid,softmax] [--hann_weights=0.6,0.49,0.3,0.15]

Tracks the checkpoints that `python -m cost_jax.ablate` trained (<workdir>/<variant>/seed<s>/train)
on two validation sets drawn like the demo's held-out sets but from other generator seeds (3000:
every video language-critical, 4000: drawn like the training set), for every track.score_map x
track.hann_weight, and prints AUC on the whole validation set, its language-critical videos and each
cue. `full` is tracked with its sentence, `no_language` (trained without language) without. The
figures go to <workdir>/tune_tracking.json; the README's ablation section quotes them.
"""

import itertools
import json
import os
import time

from absl import flags

from cost_jax import demo

# name -> (generator seed, video name prefix, synthetic.Options overrides, number of videos)
VALIDATION = {'val_language': (3000, 'vlang', {'twin_fraction': 1.0}, 16),
              'val_test': (4000, 'vsynth', {}, 10)}
TRAINING = {'full': {}, 'no_language': {'train.empty_sentences': True}}


def define_flags():
  flags.DEFINE_string('workdir', 'runs/ablate', 'The cost_jax.ablate workdir (checkpoints, data).')
  flags.DEFINE_list('seeds', ['0'], 'Training seeds whose checkpoints are tracked.')
  flags.DEFINE_list('variants', list(TRAINING), f'Of {list(TRAINING)}.')
  flags.DEFINE_list('score_maps', ['sigmoid', 'softmax'], 'track.score_map values.')
  flags.DEFINE_list('hann_weights', ['0.6', '0.49', '0.3', '0.15'], 'track.hann_weight values.')


def validation_sequences(workdir):
  """Writes (or reuses) the validation sets under <workdir>/data -> their sequences."""
  dirs = {}
  for name, (seed, prefix, options, videos) in VALIDATION.items():
    dirs[name] = os.path.join(workdir, 'data', name)
    demo.make_data(dirs[name], videos, seed, **{**demo.DRAWN, **options, 'name_prefix': prefix})
  return demo.held_out_sequences(dirs)


def run(workdir, seeds, variants, score_maps, hann_weights, echo=print):
  """{row '<variant>/seed<s>/<map>/<w>': {subset: AUC}}, also written to <workdir>/tune_tracking.json.

  Tracking and scoring are the demo's (demo.track_rows, demo.results_table): `full` as its
  `cost_tiny` row (with the sentence), `no_language` as its `no_language` row (without)."""
  sequences = validation_sequences(workdir)
  table = {}
  for variant, seed in itertools.product(variants, seeds):
    ckpt = os.path.join(workdir, variant, f'seed{seed}', 'train')
    demo_row = 'cost_tiny' if variant == 'full' else 'no_language'
    for score_map, weight in itertools.product(score_maps, hann_weights):
      tic = time.time()
      config = demo.demo_config(os.path.join(workdir, 'data', 'train'), None, 0.0, False, {
          **TRAINING[variant], 'seed': int(seed), 'track.score_map': score_map,
          'track.hann_weight': float(weight)})
      key = f'{variant}/seed{seed}/{score_map}/{weight}'
      results = os.path.join(workdir, 'tune_tracking', key.replace('/', '_'))
      demo.track_rows(config, ckpt, sequences, results, config.train.num_steps, progress=False,
                      echo=lambda *a: None, rows=(demo_row,))
      metrics = demo.results_table(sequences, results, (demo_row,))[demo_row]
      table[key] = {column: round(m['auc'], 3) for column, m in metrics.items()}
      aucs = ', '.join(f'{c} {a:.3f}' for c, a in table[key].items())
      echo(f'{variant} seed {seed} score_map={score_map} hann_weight={weight}: AUC {aucs}'
           f'  ({time.time() - tic:.0f} s)')
  with open(os.path.join(workdir, 'tune_tracking.json'), 'w') as f:
    json.dump(table, f, indent=1)
  return table


def main(argv):
  del argv
  f = flags.FLAGS
  from cost_jax import compilation_cache
  compilation_cache.enable()
  run(f.workdir, f.seeds, f.variants, f.score_maps, f.hann_weights)


if __name__ == '__main__':
  from cost_jax import cli
  define_flags()
  cli.run(main)
