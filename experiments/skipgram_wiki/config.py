"""Skip-gram Word2Vec with gensim's defaults on the bundled Wikipedia excerpt.

    lineage train experiments/skipgram_wiki
    lineage neighbors runs/skipgram_wiki/<run> king - man + woman

~420k words (the gensim wheel's enwiki excerpt), 5 epochs in well under a minute on a
2-core CPU. The corpus is small, so analogy accuracy stays low (gensim scores alike on
it); give a bigger corpus with data.path=... for useful vectors.
Quick look: `lineage train experiments/skipgram_wiki data.max_docs=20 objective.epochs=1`.
"""

from pathlib import Path

from research.config import Config, load_experiment

HERE = Path(__file__).parent


def get_config() -> Config:
  # cbow_wiki's run with the skip-gram architecture: the two differ in this one setting.
  cfg = load_experiment(HERE.parent / "cbow_wiki")
  cfg.experiment = HERE.name
  cfg.objective.architecture = "skipgram"
  return cfg
