"""CBOW Word2Vec with gensim's defaults on the bundled Wikipedia excerpt.

    lineage train experiments/cbow_wiki
    lineage neighbors runs/cbow_wiki/<run> king - man + woman

~420k words (the gensim wheel's enwiki excerpt), 5 epochs in well under a minute on a
2-core CPU. The corpus is small, so analogy accuracy stays low (gensim scores alike on
it); give a bigger corpus with data.path=... for useful vectors.
Quick look: `lineage train experiments/cbow_wiki data.max_docs=20 objective.epochs=1`.
"""

from research.config import Config, DataConfig, TrainConfig
from research.models import word2vec
from research.objectives import word2vec as negative_sampling


def get_config() -> Config:
  return Config(
      # gensim's defaults (vector_size 100, window 5, min_count 5, sample 1e-3, negative 5,
      # alpha 0.025 -> 0.0001, 5 epochs); 64 sub-steps of 256 centre words per jitted step.
      objective=negative_sampling.Config(architecture="cbow"),
      model=word2vec.Config(vector_size=100),
      data=DataConfig(txt_unit="paragraph"),
      # train.steps=0: derived from objective.epochs and the corpus (~100 steps here).
      train=TrainConfig(steps=0, log_every=10, eval_every=1_000_000, checkpoint_every=1_000_000, keep_checkpoints=1),
  )
