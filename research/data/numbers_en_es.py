"""The bundled translation task: English number words -> Spanish number words, generated offline.

For integers below a million, e.g. "three hundred twenty-one thousand five" -> "trescientos
veintiún mil cinco". The mapping is free of reordering but not trivial (apocope "veintiún",
"ciento"/"cien", irregular hundreds "quinientos"), and the splits hold disjoint numbers.
`data.bundled="numbers_en_es"` (research/data/bundled.py) names it.
"""

from __future__ import annotations

import numpy as np

Pair = tuple[str, str]

_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ES_ONES = ("cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince "
            "dieciséis diecisiete dieciocho diecinueve veinte veintiuno veintidós veintitrés veinticuatro "
            "veinticinco veintiséis veintisiete veintiocho veintinueve").split()
_ES_TENS = "_ _ _ treinta cuarenta cincuenta sesenta setenta ochenta noventa".split()
_ES_HUNDREDS = ("_ ciento doscientos trescientos cuatrocientos quinientos seiscientos setecientos "
                "ochocientos novecientos").split()


def _en_below_1000(n: int) -> list[str]:
  words = []
  if n >= 100:
    words += [_EN_ONES[n // 100], "hundred"]
    n %= 100
  if n >= 20:
    words.append(_EN_TENS[n // 10] + (f"-{_EN_ONES[n % 10]}" if n % 10 else ""))
  elif n or not words:
    words.append(_EN_ONES[n])
  return words


def english_number(n: int) -> str:
  """American English words, no "and": 321005 -> "three hundred twenty-one thousand five"."""
  thousands, rest = divmod(n, 1000)
  words = (_en_below_1000(thousands) + ["thousand"]) if thousands else []
  if rest or not words:
    words += _en_below_1000(rest)
  return " ".join(words)


def _es_below_1000(n: int, before_noun: bool = False) -> list[str]:
  words = []
  if n == 100:
    return ["cien"]
  if n >= 100:
    words.append(_ES_HUNDREDS[n // 100])
    n %= 100
  if n < 30 and (n or not words):
    word = _ES_ONES[n]
    if before_noun and n in (1, 21):  # apocope before "mil": "un mil" -> "un", "veintiún mil"
      word = {1: "un", 21: "veintiún"}[n]
    words.append(word)
  elif n >= 30:
    words.append(_ES_TENS[n // 10])
    if n % 10:
      words += ["y", "un" if before_noun and n % 10 == 1 else _ES_ONES[n % 10]]
  return words


def spanish_number(n: int) -> str:
  """Spanish words: 1000 -> "mil", 21000 -> "veintiún mil", 321005 -> "trescientos veintiún mil cinco"."""
  thousands, rest = divmod(n, 1000)
  words = []
  if thousands:
    words += (["mil"] if thousands == 1 else _es_below_1000(thousands, before_noun=True) + ["mil"])
  if rest or not words:
    words += _es_below_1000(rest)
  return " ".join(words)


def numbers_en_es(n_train: int = 20_000, n_eval: int = 1_000, seed: int = 1234) -> dict[str, list[Pair]]:
  """The bundled task: distinct random integers below 10^6, disjoint between the splits."""
  rng = np.random.default_rng(seed)
  numbers = rng.choice(1_000_000, size=n_train + 2 * n_eval, replace=False)
  pairs = [(english_number(int(n)), spanish_number(int(n))) for n in numbers]
  return {"train": pairs[:n_train], "valid": pairs[n_train:n_train + n_eval], "test": pairs[n_train + n_eval:]}
