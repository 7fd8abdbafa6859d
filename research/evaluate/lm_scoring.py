"""Log-likelihood of continuations under a causal language model, as lm-evaluation-harness scores them.

For a (context, continuation) pair of strings, following EleutherAI's lm-evaluation-harness
(`lm_eval/api/model.py` `_encode_pair`, `lm_eval/models/huggingface.py` `_loglikelihood_tokens`):

- whitespace at the end of the context moves to the start of the continuation;
- the context and the context + continuation are tokenized separately, and the continuation's
  tokens are those of the whole past the context's length: the model conditions on the
  context as it tokenizes alone, and the boundary subword is cut where the joined text puts it;
- the model reads (context + continuation)[-(block + 1):][:-1]: a long context loses its left;
- the score is the sum of the continuation tokens' log-probabilities, and `greedy` is whether
  each of them is the argmax at its position (the continuation is what greedy decoding writes).

Lineage trains on documents joined by eos (research/data/lm.py), so every context starts
with eos, the start of a document; an empty context is eos alone (lm-eval's prefix token).
Rows are scored in fixed [batch, block_size] arrays, right-padded (a causal model never sees
the padding), so one program is compiled for a whole evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclass(frozen=True)
class Score:
  logprob: float  # sum over the continuation's tokens, nats
  greedy: bool  # every continuation token is the argmax of its position
  n_tokens: int


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
  """(context ids, continuation ids), lm-eval's split of the jointly tokenized text; eos first."""
  spaces = len(context) - len(context.rstrip())
  if spaces:
    context, continuation = context[:-spaces], context[-spaces:] + continuation
  context_ids = [tokenizer.eos_id] + tokenizer.encode(context)
  whole = [tokenizer.eos_id] + tokenizer.encode(context + continuation)
  continuation_ids = whole[len(context_ids):]
  if not continuation_ids:  # the joint tokenization swallowed it into the context (lm-eval asserts here)
    continuation_ids = tokenizer.encode(continuation)
  return context_ids, continuation_ids


def pack_row(context: list[int], continuation: list[int], block_size: int):
  """(inputs, targets, mask), each [block_size]: lm-eval's left-truncated input, right-padded."""
  if not 0 < len(continuation) <= block_size:
    raise ValueError(f"a continuation of {len(continuation)} tokens cannot be scored in a block of {block_size}")
  whole = (context + continuation)[-(block_size + 1):]
  inputs, targets = whole[:-1], whole[1:]
  n, pad = len(inputs), block_size - len(inputs)
  mask = np.zeros(block_size, bool)
  mask[n - len(continuation):n] = True
  return (np.array(inputs + [0] * pad, np.int32), np.array(targets + [0] * pad, np.int32), mask)


def make_scorer(model: nnx.Module):
  """A jitted (inputs, targets, mask) [B, T] -> (sum of log-probs [B], all greedy [B])."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def score(state, inputs, targets, mask):
    logits = nnx.merge(graphdef, state)(inputs)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_logp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    greedy = (logits.argmax(-1) == targets) | ~mask
    return jnp.where(mask, token_logp, 0.0).sum(-1), greedy.all(-1)

  return lambda inputs, targets, mask: score(state, inputs, targets, mask)


def score_tokens(model: nnx.Module, requests: list[tuple[list[int], list[int]]], block_size: int,
                 batch_size: int = 16) -> list[Score]:
  """Scores (context ids, continuation ids) pairs; the last batch is padded with copies of a row."""
  if not requests:
    return []
  score = make_scorer(model)
  rows = [pack_row(c, x, block_size) for c, x in requests]
  out = []
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    chunk = chunk + [chunk[0]] * (batch_size - len(chunk))  # one shape, one compiled program
    inputs, targets, mask = (np.stack(a) for a in zip(*chunk))
    logprob, greedy = jax.device_get(score(inputs, targets, mask))
    out += [Score(float(lp), bool(g), int(m.sum())) for lp, g, m in zip(logprob, greedy, mask)]
  return out[:len(rows)]


def score_texts(model: nnx.Module, tokenizer, pairs: list[tuple[str, str]], block_size: int,
                batch_size: int = 16) -> list[Score]:
  """Scores (context, continuation) strings; see the module docstring for how they are tokenized."""
  return score_tokens(model, [encode_pair(tokenizer, c, x) for c, x in pairs], block_size, batch_size)
