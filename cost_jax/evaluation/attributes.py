"""Per-attribute tables: the metrics over the sequences that carry each attribute.

Attributes come from the Sequence records (VL-SOT's attributes.txt, LaSOT's from a user file, read by
the readers). A 0/1 attribute gives one group (its sequences with 1); one with more values (VL-SOT's
object type, brightness and length levels: the toolkit's Natural/Artificial_Object, Brightness_low..high,
Length_short..long in vltot230.py att_dict) gives one group per value, 'name=value'. Continuous or
non-numeric attributes (VL-SOT270's relative_speed) give no groups.
"""

MAX_LEVELS = 10  # an integer attribute with more distinct values is not a category

from cost_jax.evaluation.benchmark import tracker_metrics


def _level(v):
  """An attribute value as an int level (np.loadtxt gives 1.0), or None when it is not a whole number."""
  try:
    f = float(v)
  except (TypeError, ValueError):
    return None
  return int(f) if f.is_integer() else None


def attribute_groups(sequences):
  """{group name: [sequence names]}, groups in attribute order of first appearance."""
  keys = []
  for seq in sequences:
    keys += [k for k in seq.attributes if k not in keys]
  groups = {}
  for key in keys:
    levels = {seq.name: _level(seq.attributes[key]) for seq in sequences if key in seq.attributes}
    distinct = set(levels.values())
    if None in distinct or len(distinct) > MAX_LEVELS:
      continue
    if distinct <= {0, 1}:
      groups[key] = [n for n, v in levels.items() if v == 1]
    else:
      for v in sorted(distinct):
        groups[f'{key}={v}'] = [n for n, x in levels.items() if x == v]
  return {g: names for g, names in groups.items() if names}


def attribute_table(results, groups, protocol):
  """{group: {tracker: metrics over that group's sequences}} from {tracker: TrackerResult}."""
  return {g: {t: tracker_metrics(r, protocol, names) for t, r in results.items()}
          for g, names in groups.items()}
