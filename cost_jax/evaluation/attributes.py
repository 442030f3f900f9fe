"""Per-attribute tables: the metrics over the sequences that carry each attribute.

Attributes come from the Sequence records (VL-SOT's attributes.txt, LaSOT's from a user file, read by
the readers). A 0/1 attribute gives one group (its sequences with 1); one with more values (VL-SOT's
object type, brightness and length levels: the toolkit's Natural/Artificial_Object, Brightness_low..high,
Length_short..long in vltot230.py att_dict) gives one group per value, 'name=value'.
"""

from cost_jax.evaluation.benchmark import tracker_metrics


def _value(v):
  """Attribute values as plain numbers where they are numbers (np.loadtxt gives 1.0)."""
  try:
    f = float(v)
  except (TypeError, ValueError):
    return str(v)
  return int(f) if f.is_integer() else f


def attribute_groups(sequences):
  """{group name: [sequence names]}, groups in attribute order of first appearance."""
  keys = []
  for seq in sequences:
    keys += [k for k in seq.attributes if k not in keys]
  groups = {}
  for key in keys:
    values = {seq.name: _value(seq.attributes[key]) for seq in sequences if key in seq.attributes}
    distinct = set(values.values())
    if distinct <= {0, 1}:
      groups[key] = [n for n, v in values.items() if v == 1]
    else:
      for v in sorted(distinct, key=str):
        groups[f'{key}={v}'] = [n for n, x in values.items() if x == v]
  return {g: names for g, names in groups.items() if names}


def attribute_table(results, groups, protocol):
  """{group: {tracker: metrics over that group's sequences}} from {tracker: TrackerResult}."""
  return {g: {t: tracker_metrics(r, protocol, names) for t, r in results.items()}
          for g, names in groups.items()}
