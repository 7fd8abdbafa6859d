"""`lineage neighbors`: nearest words and analogies from a trained Word2Vec run, and export.

    lineage neighbors runs/cbow_wiki/<run> king
    lineage neighbors runs/cbow_wiki/<run> king - man + woman -k 5
    lineage neighbors runs/cbow_wiki/<run> --export vectors.bin --binary

Reads the run's vocabulary (artifacts/vocab.txt) and the input vectors of its latest
checkpoint. Query words follow the training tokenisation (lower-cased); an analogy is
gensim's `most_similar(positive=[...], negative=[...])` (3CosAdd), query words excluded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.args import positive_int


def load_vectors(run_dir: Path):
  """(vectors [V, D] as numpy, words most frequent first, checkpoint step) of a Word2Vec run."""
  import numpy as np

  from research.data.words import Vocab
  from research.run import load_run

  run = load_run(run_dir, ("word2vec",), "lineage neighbors")
  vocab = Vocab.load(run.artifacts / "vocab.txt")
  return np.asarray(run.model.syn0[...]), vocab.words, run.step


def parse_query(tokens: list[str]) -> tuple[list[str], list[str]]:
  """["king", "-", "man", "+", "woman"] -> (["king", "woman"], ["man"]); "-man" works too."""
  from research.data.words import tokenize

  positive, negative, sign = [], [], +1
  for token in " ".join(tokens).replace("+", " + ").replace("-", " - ").split():
    if token in "+-":
      sign = +1 if token == "+" else -1
      continue
    words = tokenize(token)
    (positive if sign > 0 else negative).extend(words)
    sign = +1
  if not positive and not negative:
    raise ValueError("the query names no word")
  return positive, negative


def _neighbors(args) -> int:
  from research.evaluate.word_vectors import nearest, save_word2vec_format

  run_dir = Path(args.run_dir)
  vectors, words, step = load_vectors(run_dir)
  if args.export:
    save_word2vec_format(args.export, vectors, words, binary=args.binary)
    print(f"wrote {len(words):,} vectors of {vectors.shape[1]} dimensions (step {step}) to {args.export} "
          f"({'binary' if args.binary else 'text'} word2vec format)")
    if not args.query:
      return 0
  if not args.query:
    print("lineage neighbors: error: give a WORD or an analogy such as `king - man + woman`", file=sys.stderr)
    return 2
  try:
    positive, negative = parse_query(args.query)
    results = nearest(vectors, words, positive, negative, k=args.k)
  except (KeyError, ValueError) as e:
    print(f"lineage neighbors: error: {e.args[0]}", file=sys.stderr)
    return 2
  query = " ".join([*positive] + [f"- {w}" for w in negative])
  print(f"# {run_dir} at step {step}: nearest to {query} by cosine", file=sys.stderr)
  for word, score in results:
    print(f"{word}\t{score:.4f}")
  return 0


def register(commands) -> None:
  p = commands.add_parser("neighbors", help="nearest words or analogies (king - man + woman) from a Word2Vec run",
                          description=__doc__.split("\n\n")[0])
  p.add_argument("run_dir", help="a run directory of a word2vec experiment")
  p.add_argument("query", nargs="*", help="a word, or words joined by + and -, e.g. king - man + woman")
  p.add_argument("-k", type=positive_int, default=10, help="how many neighbours to print (default 10)")
  p.add_argument("--export", metavar="FILE", help="also write all vectors in word2vec format to FILE")
  p.add_argument("--binary", action="store_true", help="with --export: the binary word2vec format")
  p.set_defaults(run=_neighbors)
