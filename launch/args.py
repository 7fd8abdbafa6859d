"""Argument types for the commands' flags: a value out of range is refused by argparse itself.

    p.add_argument("--beam", type=positive_int, default=1)

A bad value ends the command before anything is loaded, as argparse's own errors do: the
usage, then one line naming the flag and the valid range, exit status 2:

    lineage bleu: error: argument --beam: must be an integer >= 1, got '0'
"""

from __future__ import annotations

import argparse
import math


def _checked(kind, what: str, ok):
  """An argparse type: `kind(text)` if that parses and passes `ok`, else an error saying `what`."""
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      value = None
    if value is None or not ok(value):  # NaN fails every comparison, so it is refused too
      raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value
  return parse


positive_int = _checked(int, "an integer >= 1", lambda v: v >= 1)
nonnegative_int = _checked(int, "an integer >= 0", lambda v: v >= 0)
nonnegative_float = _checked(float, "a finite number >= 0", lambda v: 0 <= v < math.inf)
probability = _checked(float, "a number in (0, 1]", lambda v: 0 < v <= 1)  # top-p 0 would keep no token
