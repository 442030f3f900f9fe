"""Export the tracker as `jax.export` artifacts that run without the model code
(docs/design.md §4).

  python -m cost_jax.export --config=configs/cost_tiny.py --workdir=runs/tiny --out=exported/

DIR gets:
  initialize.jax   (variables, frames uint8 [B, H, W, 3], image_wh f32 [B, 2], boxes f32 [B, 4] x,y,w,h px,
                    text_ids int32 [B, L], text_mask int32 [B, L]) -> state (template and text caches, box)
  track.jax        (variables, state, frames uint8 [B, H, W, 3], image_wh f32 [B, 2])
                    -> (state, boxes f32 [B, 4] x,y,w,h px, scores f32 [B])
  variables/       the parameters as an orbax checkpoint (arguments of both functions, never constants)
  vocab.txt, tokenizer.json   the BERT vocabulary and {max_len, lower_case}
  export.json      shapes, platforms, the tracking settings baked into track.jax, the config

B (slots), H and W are symbolic: any batch and frame size runs without re-exporting. Frames may be
zero-padded beyond image_wh (the valid size of each), as cost_jax.tracker.BatchedEvaluator does. Both
functions are the tracker's own (cost_jax.tracker.SlotFunctions, vmapped over slots), so the exported
tracker and the live one are the same computation. cost_jax.export_runtime loads DIR and tracks.
--config defaults to the config.json that training recorded in --workdir; a given --config must match
its model fields (else one line names each difference, exit 2).
"""

import json
import os
import shutil

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import orbax.checkpoint as ocp

from cost_jax import cli
from cost_jax.export_runtime import INIT_FILE, TRACK_FILE, VARIABLES_DIR
from cost_jax import track
from cost_jax import tracker
from input_pipeline import tokenize

PLATFORMS = ('cpu', 'cuda', 'tpu')

def batched_functions(config, model):
  """(init, track): SlotFunctions vmapped over a leading slot axis (variables shared)."""
  fns = tracker.SlotFunctions(config, model)
  init = jax.vmap(fns.init_slot, in_axes=(None, 0, 0, 0, 0, 0))
  track = jax.vmap(fns.step_slot, in_axes=(None, 0, 0, 0))
  return init, track


def argument_specs(config, variables):
  """Symbolic-shape ShapeDtypeStructs: (variables, frames, image_wh, boxes, text_ids, text_mask)."""
  b, h, w = jax.export.symbolic_shape('b, h, w')
  length = config.model.text.max_len
  spec = jax.ShapeDtypeStruct
  return (jax.tree.map(lambda a: spec(jnp.shape(a), jnp.result_type(a)), variables),
          spec((b, h, w, 3), jnp.uint8), spec((b, 2), jnp.float32), spec((b, 4), jnp.float32),
          spec((b, length), jnp.int32), spec((b, length), jnp.int32))


def export_functions(config, model, variables, platforms=PLATFORMS):
  """-> (exported initialize, exported track), jax.export.Exported with symbolic B, H, W."""
  init, track = batched_functions(config, model)
  var_spec, frames, image_wh, boxes, ids, mask = argument_specs(config, variables)
  exported_init = jax.export.export(jax.jit(init), platforms=platforms)(
      var_spec, frames, image_wh, boxes, ids, mask)
  state_spec = jax.eval_shape(init, var_spec, frames, image_wh, boxes, ids, mask)
  exported_track = jax.export.export(jax.jit(track), platforms=platforms)(
      var_spec, state_spec, frames, image_wh)
  return exported_init, exported_track


def save_variables(path, variables):
  """Parameters as an orbax checkpoint at `path` (a new folder)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), variables)
  checkpointer.wait_until_finished()
  checkpointer.close()


def export_tracker(config, variables, out, model=None, platforms=PLATFORMS):
  """Write the exported tracker into folder `out` (see the module docstring); returns `out`."""
  if model is None:
    from cost_jax.models import cost
    model = cost.COST(config.model)
  exported_init, exported_track = export_functions(config, model, variables, platforms)
  os.makedirs(out, exist_ok=True)
  for name, exported in ((INIT_FILE, exported_init), (TRACK_FILE, exported_track)):
    with open(os.path.join(out, name), 'wb') as f:
      f.write(exported.serialize())
  variables_path = os.path.join(out, VARIABLES_DIR)
  if os.path.exists(variables_path):
    shutil.rmtree(variables_path)
  save_variables(variables_path, jax.device_get(variables))
  shutil.copyfile(tokenize.vocab_path_for(config.model), os.path.join(out, 'vocab.txt'))
  with open(os.path.join(out, 'tokenizer.json'), 'w') as f:
    json.dump({'max_len': config.model.text.max_len, 'lower_case': True}, f, indent=1)
  with open(os.path.join(out, 'export.json'), 'w') as f:
    json.dump({
        'platforms': list(platforms),
        'symbolic': {'b': 'slots', 'h': 'frame height px', 'w': 'frame width px'},
        'pad_multiple': config.track.pad_multiple,
        'track': config.track.to_dict(),
        'crop': config.crop.to_dict(),
        'template_size': config.model.template_size,
        'search_size': config.model.search_size,
        'config': json.loads(config.to_json_best_effort()),
    }, f, indent=1)
  return out


def define_flags():
  """Command-line flags, defined only when run as a program (so modules with flags import side by side)."""
  config_flags.DEFINE_config_file('config', None, "Model config file; default: the workdir's "
                                  'config.json (which a given one must match in its model fields).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Training workdir holding the checkpoint.')
  flags.DEFINE_string('out', None, 'Output folder.')
  flags.DEFINE_list('platforms', list(PLATFORMS), 'Platforms to lower for.')
  flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  del argv
  f = flags.FLAGS
  config = track.resolved_config(f.config, f.workdir)
  unknown = [p for p in f.platforms if p not in PLATFORMS]
  if unknown or not f.platforms:
    raise cli.UsageError(f'--platforms={",".join(f.platforms)}: each must be one of '
                         f'{", ".join(PLATFORMS)}')
  if os.path.exists(f.out) and not os.path.isdir(f.out):
    raise cli.UsageError(f'--out={f.out} is a file, not a folder')
  variables = track.restore_variables(f.workdir, config)
  out = export_tracker(config, variables, f.out, platforms=tuple(f.platforms))
  print(f'exported initialize and track for {", ".join(f.platforms)} to {out}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
