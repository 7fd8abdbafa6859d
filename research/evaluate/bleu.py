"""BLEU (Papineni et al. 2002) of a translation model, computed by sacrebleu on detokenized text.

sacrebleu's standard settings (13a tokenization, exact case, one reference) make the score
comparable across papers and runs; the model's own subword tokenization plays no part.
"""

from __future__ import annotations

import numpy as np


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
  import sacrebleu

  return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def translate_texts(model, sources: list[str], src_tok, tgt_tok, *, batch_size: int = 32, beam_size: int = 1,
                    alpha: float = 0.6) -> list[str]:
  """Source sentences -> translations, in batches of a fixed shape (one compiled decoder).

  `model` is any `research.decode.EncoderDecoder`. A source longer than its `max_src_len` is
  cut to it: evaluation never drops a sentence. A model with a `max_len_offset` (the
  Transformer: 50, Vaswani et al. 2017 sec 6.1) translates each sentence to at most its
  source length + that many tokens; others to their `max_tgt_len`.
  """
  from research.data.translation import pad_rows
  from research.decode import translate
  from research.tokenizers import PAD_ID

  offset = getattr(model, "max_len_offset", 0)
  ids = src_tok.encode_batch(sources)
  out = []
  for start in range(0, len(ids), batch_size):
    rows = ids[start:start + batch_size]
    src = pad_rows(rows + [[src_tok.eos_id]] * (batch_size - len(rows)), model.max_src_len)
    limits = dict(max_len=model.max_src_len + offset, row_limit=(src != PAD_ID).sum(1) + offset) if offset else {}
    tokens = np.asarray(translate(model, src, beam_size=beam_size, alpha=alpha, **limits))[:len(rows)]
    out += [tgt_tok.decode(until_eos(row, tgt_tok.eos_id)) for row in tokens.tolist()]
  return out


def until_eos(row: list[int], eos_id: int) -> list[int]:
  """The tokens before the first eos (all of them if there is none)."""
  return row[:row.index(eos_id)] if eos_id in row else row


def bleu(model, pairs: list[tuple[str, str]], src_tok, tgt_tok, **kwargs) -> float:
  hypotheses = translate_texts(model, [s for s, _ in pairs], src_tok, tgt_tok, **kwargs)
  return corpus_bleu(hypotheses, [t for _, t in pairs])
