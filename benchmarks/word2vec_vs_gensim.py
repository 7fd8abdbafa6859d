"""Word2Vec, lineage vs gensim: effective words/s and vector quality, same corpus, same settings.

    flock -x /tmp/lineage.cpu .venv/bin/python benchmarks/word2vec_vs_gensim.py
    flock -x /tmp/lineage.cpu .venv/bin/python benchmarks/word2vec_vs_gensim.py --max-lines 20000 --rounds 1  # quick

Corpus: the English text of ../shared/data (GCIDE definitions, the WEB Bible's English
column, Tiny Shakespeare) and the bundled Wikipedia excerpt, ~5.4M tokens, tokenised once by lineage's rule
(research/data/words.py) and given to every side as the same sentences: gensim from a
Python iterable and from a `corpus_file` (its fastest mode), lineage through its trainer's
jitted step (research/objectives/word2vec.py, data built on the host each step).
Settings: gensim's defaults for both (vector_size 100, window 5, min_count 5, sample 1e-3,
negative 5, alpha 0.025 -> 0.0001, 5 epochs, cbow_mean=1), gensim with workers=2.

Speed is "effective words/s": words trained on after subsampling, over the training time
(vocabulary building and tokenisation excluded on every side; lineage's one-off compile is
reported on its own). Sides run in alternation (gensim iterable, gensim corpus_file,
lineage, rotating the order each round); the CPU time other processes used during each
run is measured and reported, and a disturbed run is repeated once. The process takes
`lineage train`'s malloc settings (research/train/host_memory.py; `--default-malloc` to
leave them): without them lineage's step faults in fresh pages for XLA's scratch memory
and its words/s drifts down run after run in one process (1.00M -> 0.88M over six runs here).
Quality: analogy accuracy (questions-words.txt, gensim's restrict_vocab=300,000 rule),
Spearman on WordSim-353 and SimLex-999, all through research/evaluate/word_vectors.py
(gensim's own evaluate_word_analogies is printed for its vectors as a cross-check).
Round r trains every side with seed --seed + r and every figure is a median over rounds:
one run is not enough (CBOW analogy over seeds 1-3: gensim iterable 11.66 / 12.14 / 11.76,
lineage 11.56 / 10.98 / 11.67).

The two gensim modes do not train the same schedule. In corpus_file mode each of the
`workers` threads decays alpha by its own words against the whole corpus's count
(word2vec_corpusfile.pyx, `get_next_alpha(..., total_words, expected_words, ...)`), so with
2 workers an epoch ends halfway to the next epoch's alpha: a sawtooth from 0.025 that ends
at 0.0025, not 0.0001, with a mean alpha 10% higher. It scores higher (CBOW analogy 12.99 /
13.53 / 13.38 over seeds 1-3 against iterable's 11.85 mean); lineage given that sawtooth
gained +0.7 (11.27 -> 12.0 over seeds 1-2). So the deltas are reported against each mode
as well as against their mean; iterable mode follows the settings as written.
The last line is JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research.train.host_memory import reuse_freed_memory  # noqa: E402

# As `lineage train` does, before any thread starts (research/train/host_memory.py); one process, so every side shares it.
MALLOC_REUSE = "--default-malloc" not in sys.argv and reuse_freed_memory()

from benchmarks.harness import cpu_snapshot, other_cpu_seconds, thread_settings, wait_for_quiet  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETTINGS = dict(vector_size=100, window=5, min_count=5, sample=1e-3, negative=5, alpha=0.025,
                min_alpha=0.0001, epochs=5)


def english_lines(data: Path, max_lines: int) -> list[str]:
  """GCIDE, the WEB Bible's English, Tiny Shakespeare (4.99M tokens by lineage's rule) and the
  bundled Wikipedia excerpt (0.42M more), so the corpus passes 5M tokens."""
  from research.config import DataConfig
  from research.data.text import load_documents

  # errors="replace": gcide_definitions.txt holds a few bytes that are not UTF-8 (e.g. 0x92).
  lines = (data / "gcide_definitions.txt").read_text(encoding="utf-8", errors="replace").splitlines()
  bible = (data / "bible_en_es.tsv").read_text(encoding="utf-8", errors="replace").splitlines()[1:]
  lines += [row.split("\t")[1] for row in bible]
  lines += (data / "tinyshakespeare.txt").read_text(encoding="utf-8", errors="replace").splitlines()
  lines += [line for doc in load_documents(DataConfig()) for line in doc.split("\n")]
  return lines[:max_lines] if max_lines else lines


# ------------------------------------------------------------------------------ sides


def run_gensim(sents, corpus_file, arch: str, mode: str, seed: int) -> dict:
  from gensim.models import Word2Vec

  model = Word2Vec(sg=int(arch == "skipgram"), hs=0, cbow_mean=1, workers=2, seed=seed, **SETTINGS)
  if mode == "iterable":
    model.build_vocab(sents)
    start = cpu_snapshot()
    effective, raw = model.train(sents, total_examples=model.corpus_count, epochs=model.epochs)
  else:
    model.build_vocab(corpus_file=corpus_file)
    start = cpu_snapshot()
    effective, raw = model.train(corpus_file=corpus_file, total_words=model.corpus_total_words,
                                 epochs=model.epochs)
  end = cpu_snapshot()
  return {"seconds": end[0] - start[0], "other_cpu_s": other_cpu_seconds(start, end),
          "effective_words": int(effective), "vocab": len(model.wv), "model": model,
          "vectors": model.wv.vectors, "words": list(model.wv.index_to_key)}


def make_lineage(corpus_file: str, arch: str, seed: int):
  """The trainer's task and jitted step for `arch`; built once, trained from scratch per run."""
  import jax

  from research.config import Config, DataConfig, TrainConfig
  from research.models import word2vec
  from research.objectives import word2vec as negative_sampling
  from research.train.loop import prepare
  from research.train.sharding import make_mesh

  settings = dict(SETTINGS)
  model = word2vec.Config(vector_size=settings.pop("vector_size"))
  cfg = Config(experiment=f"bench_{arch}", objective=negative_sampling.Config(architecture=arch, **settings),
               model=model, data=DataConfig(path=corpus_file, txt_unit="document"),
               train=TrainConfig(steps=0, seed=seed))
  task = negative_sampling.Task(cfg, log=lambda *a: None)
  mesh = make_mesh(cfg.mesh, jax.devices()[:1])
  p = prepare(cfg, task, mesh)
  t = time.perf_counter()
  from research.train.sharding import put_batch
  compiled = p.step.lower(p.init(), put_batch(task.train_batch(0), p.data_sharding)).compile()
  return task, p, compiled, time.perf_counter() - t


def run_lineage(built) -> dict:
  """The trainer's loop, reduced to its data + step: the batch of step k+1 is built on the
  host while step k runs (dispatch is asynchronous), metrics fetched one step late."""
  import jax

  from research.train.sharding import put_batch

  task, p, compiled, _ = built
  state = p.init()
  jax.block_until_ready(state)
  start = cpu_snapshot()
  pending = None
  for step in range(task.batches.steps):
    state, metrics = compiled(state, put_batch(task.train_batch(step), p.data_sharding))
    if pending is not None:
      assert np.isfinite(float(pending["loss"]))
    pending = metrics
  final_loss = float(pending["loss"])
  jax.block_until_ready(state)
  end = cpu_snapshot()
  vectors = np.asarray(jax.device_get(state["params"]["syn0"].get_value()))
  return {"seconds": end[0] - start[0], "other_cpu_s": other_cpu_seconds(start, end),
          "effective_words": task.batches.total_words, "vocab": len(task.vocab.words),
          "vectors": vectors, "words": task.vocab.words, "final_loss": final_loss}


# ---------------------------------------------------------------------------- harness


def quality(result: dict) -> dict:
  from research.evaluate.word_vectors import evaluate_vectors

  r = evaluate_vectors(result["vectors"], result["words"])
  return {"analogy": 100 * r["analogy_accuracy"], "analogy_answered": int(r["analogy_answered"]),
          "wordsim353": 100 * r["wordsim353_spearman"], "simlex999": 100 * r["simlex999_spearman"]}


def gensim_own_analogy(model) -> float:
  from gensim.test.utils import datapath
  score, _ = model.wv.evaluate_word_analogies(datapath("questions-words.txt"))
  return 100 * score


def timed(fn, max_other_frac: float, log) -> dict:
  """Runs fn once after waiting for a quiet machine; once more if others used the CPU meanwhile."""
  for attempt in range(2):
    wait_for_quiet(0.05, timeout_s=30.0)
    result = fn()
    frac = result["other_cpu_s"] / result["seconds"]
    result["other_cpu_frac"] = frac
    if frac <= max_other_frac or attempt == 1:
      return result
    log(f"  disturbed (others used {frac:.0%} of a core); repeating")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", default=str(DATA), help="directory holding the shared English corpora")
  parser.add_argument("--max-lines", type=int, default=0, help="use only the first N lines (0 = all)")
  parser.add_argument("--rounds", type=int, default=3,
                      help="runs of each side per architecture, round r with seed --seed + r (speed and quality are medians)")
  parser.add_argument("--archs", default="cbow,skipgram")
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--max-other-frac", type=float, default=0.10)
  parser.add_argument("--default-malloc", action="store_true",
                      help="leave glibc's malloc settings alone (lineage train changes them; see host_memory.py)")
  args = parser.parse_args(argv)
  log = lambda *a: print(*a, flush=True)

  import jax
  from research.data.words import sentences

  sents = sentences(english_lines(Path(args.data), args.max_lines))
  n_words = sum(map(len, sents))
  work = Path(tempfile.mkdtemp(prefix="w2v_bench_"))
  corpus_file = str(work / "corpus.txt")
  with open(corpus_file, "w", encoding="utf-8") as f:
    f.writelines(" ".join(s) + "\n" for s in sents)
  log(f"corpus: {len(sents):,} sentences, {n_words:,} words ({args.data}); settings {SETTINGS}")
  log(f"threads: os.cpu_count()={os.cpu_count()} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
      f"jax {jax.__version__} devices {jax.devices()}; gensim workers=2")

  report = {**thread_settings(), "malloc_reuse": MALLOC_REUSE, "corpus_words": n_words,
            "corpus_sentences": len(sents), "settings": SETTINGS, "seeds": [args.seed + r for r in range(args.rounds)]}
  metrics = ("analogy", "wordsim353", "simlex999")
  for arch in args.archs.split(","):
    built = {}  # seed -> lineage's task and compiled step (the data stream and init depend on the seed)

    def lineage(seed):
      if seed not in built:
        built[seed] = make_lineage(corpus_file, arch, seed)
      return run_lineage(built[seed])

    sides = {
        "gensim_iterable": lambda seed: run_gensim(sents, corpus_file, arch, "iterable", seed),
        "gensim_corpus_file": lambda seed: run_gensim(sents, corpus_file, arch, "corpus_file", seed),
        "lineage": lineage,
    }
    log(f"\n== {arch}")
    runs = {name: [] for name in sides}
    order = list(sides)
    for r in range(args.rounds):
      seed = args.seed + r  # every side trains with this round's seed: quality is a median over seeds
      for name in order[r % 3:] + order[:r % 3]:
        result = timed(lambda: sides[name](seed), args.max_other_frac, log)
        result["words_per_second"] = result["effective_words"] / result["seconds"]
        result["quality"] = quality(result)
        if name.startswith("gensim"):
          result["quality"]["analogy_by_gensim"] = gensim_own_analogy(result["model"])
        runs[name].append(result)
        log(f"  round {r} seed {seed} {name:18s} {result['words_per_second'] / 1e6:.3f}M effective words/s "
            f"({result['effective_words']:,} words in {result['seconds']:.1f}s; others used "
            f"{result['other_cpu_frac']:.0%} of a core); " + ", ".join(
                f"{k} {v:.2f}" for k, v in result["quality"].items() if k != "analogy_answered"))
    first = built[args.seed]
    log(f"   lineage step compiled in {first[3]:.2f}s ({first[0].batches.steps} steps of {first[0].tokens_per_step} words)")
    summary = {}
    for name, rs in runs.items():
      summary[name] = {
          "words_per_second": statistics.median(x["words_per_second"] for x in rs),
          "words_per_second_runs": [round(x["words_per_second"]) for x in rs],
          "effective_words": rs[0]["effective_words"], "vocab": rs[0]["vocab"],
          "max_other_cpu_frac": max(x["other_cpu_frac"] for x in rs),
          "analogy_answered": rs[0]["quality"]["analogy_answered"],
          **{k: statistics.median(x["quality"][k] for x in rs) for k in metrics},
          **{f"{k}_runs": [round(x["quality"][k], 2) for x in rs] for k in metrics}}
      if name.startswith("gensim"):
        summary[name]["analogy_by_gensim"] = statistics.median(x["quality"]["analogy_by_gensim"] for x in rs)
    best = max(("gensim_iterable", "gensim_corpus_file"), key=lambda n: summary[n]["words_per_second"])
    ours = summary["lineage"]
    ref = summary[best]
    # Quality deltas against the mean of gensim's two modes (their schedules differ: see the docstring).
    gensim_mean = lambda key: (summary["gensim_iterable"][key] + summary["gensim_corpus_file"][key]) / 2
    report[arch] = {
        **summary, "lineage_compile_seconds": first[3], "lineage_final_loss": runs["lineage"][0]["final_loss"],
        "gensim_best_mode": best,
        "ratio_vs_gensim_best": ours["words_per_second"] / ref["words_per_second"],
        "ratio_vs_gensim_iterable": ours["words_per_second"] / summary["gensim_iterable"]["words_per_second"],
        "analogy_delta": ours["analogy"] - gensim_mean("analogy"),
        "simlex_delta": ours["simlex999"] - gensim_mean("simlex999"),
        "wordsim_delta": ours["wordsim353"] - gensim_mean("wordsim353"),
        # Against each mode alone: corpus_file decays alpha differently (see the docstring).
        **{f"analogy_delta_vs_{mode}": ours["analogy"] - summary[f"gensim_{mode}"]["analogy"]
           for mode in ("iterable", "corpus_file")},
    }
    log(f"-- {arch}: effective words/s (median of {args.rounds}): " + ", ".join(
        f"{n} {summary[n]['words_per_second'] / 1e6:.3f}M" for n in summary))
    vocab = ", ".join(f"{n} {summary[n]['vocab']:,}" for n in summary)
    effective = ", ".join(f"{n} {summary[n]['effective_words']:,}" for n in summary)
    log(f"   vocab {vocab}; effective words {effective}")
    for n in summary:
      s = summary[n]
      log(f"   {n:18s} analogy {s['analogy']:.2f}% (median of {s['analogy_runs']}; {s['analogy_answered']:,} answered)"
          f"{' [gensim own: %.2f%%]' % s['analogy_by_gensim'] if 'analogy_by_gensim' in s else ''}, "
          f"WordSim-353 {s['wordsim353']:.2f}, SimLex-999 {s['simlex999']:.2f} (Spearman x100)")
    a = report[arch]
    log(f"   ratio vs gensim's faster mode ({best}): {a['ratio_vs_gensim_best']:.2f}x; against the mean of gensim's "
        f"modes analogy {a['analogy_delta']:+.2f}, SimLex {a['simlex_delta']:+.2f}, WordSim {a['wordsim_delta']:+.2f} "
        f"points; analogy {a['analogy_delta_vs_iterable']:+.2f} vs iterable, {a['analogy_delta_vs_corpus_file']:+.2f} vs corpus_file")
  print(json.dumps(report, default=lambda x: round(float(x), 5)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
