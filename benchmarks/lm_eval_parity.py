"""`lineage eval` vs lm-evaluation-harness on one JSONL task: the same accuracy (acceptance 3 of issue 10).

    python benchmarks/lm_eval_parity.py runs/gpt_wiki/<run> [--task polarity] [--shots 3]

Offline and slow, so not among the tests. Writes one of the run's tasks as a JSONL of
{context, choices, gold} (`polarity`; `lastword` and `analogy` become 4-way multiple choice,
the answer among three other documents' answers), scores it with
`lineage eval`'s code (`jsonl:PATH`), exports the run with `lineage export --to hf`, and has
lm_eval 0.4 score the exported directory (HFLM, CPU) on a local custom task over the same file:
`output_type: multiple_choice`, doc_to_text/doc_to_choice/doc_to_target = the three columns,
metrics acc and acc_norm. lm_eval reads the model through `from_pretrained`; its tokenizer is
lineage's, wrapped as a transformers tokenizer that puts eos before a text as lineage does
(transformers has no loader for lineage's tokenizers). Prints both accuracies, the largest
difference of a log-likelihood, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

import numpy as np  # noqa: E402
from benchmarks.harness import cpu_info  # noqa: E402


def wrapped_tokenizer(tokenizer):
  """Lineage's tokenizer behind transformers' tokenizer interface, as far as lm_eval calls it."""
  import transformers

  class LineageTokenizer(transformers.PreTrainedTokenizer):
    def __init__(self):
      self.lineage = tokenizer
      pieces = {tokenizer.id_to_piece(i): i for i in range(tokenizer.vocab_size)}
      self._vocab = pieces
      super().__init__(bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")

    @property
    def vocab_size(self):
      return self.lineage.vocab_size

    def get_vocab(self):
      return dict(self._vocab)

    def _convert_token_to_id(self, token):
      return self._vocab.get(token, self.lineage.unk_id)

    def _convert_id_to_token(self, index):
      return self.lineage.id_to_piece(index)

    def _tokenize(self, text, **kwargs):
      return [self.lineage.id_to_piece(i) for i in self.lineage.encode(text)]

    def encode(self, text, add_special_tokens=True, **kwargs):
      # With special tokens, eos first: a document's start, as research/evaluate/lm_scoring.py
      # puts it before every context (lm_eval then treats it as the BOS it prepends).
      return ([self.lineage.eos_id] if add_special_tokens else []) + self.lineage.encode(text)

    def decode(self, ids, skip_special_tokens=False, **kwargs):
      ids = [ids] if isinstance(ids, int) else list(ids)
      return "</s>" if ids == [self.lineage.eos_id] else self.lineage.decode(ids)

  return LineageTokenizer()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("run_dir")
  parser.add_argument("--task", default="polarity",
                      help="a lineage task to write as JSONL (lastword, analogy: the answer among 4 choices)")
  parser.add_argument("--limit", type=int, default=0, help="the first N documents (0 = all)")
  parser.add_argument("--shots", type=int, default=0, help="write the task's K-shot prompts as the contexts")
  parser.add_argument("--batch-size", type=int, default=16)
  args = parser.parse_args()

  from flax import nnx

  from research.evaluate import tasks
  from research.evaluate.lm_scoring import score_texts
  from research.interop import hf_gpt2
  from research.run import load_run
  from research.tokenizers import load_tokenizer

  run = load_run(args.run_dir, ("lm",), "lm_eval_parity")
  tokenizer = load_tokenizer(run.artifacts / "tokenizer")
  source = tasks.load_task(args.task, run.cfg, args.shots)
  work = Path(tempfile.mkdtemp(prefix="lm_eval_parity_"))
  data = work / "task.jsonl"
  # With --shots K the K-shot prompts are written as the contexts: longer, and cut at the left.
  # lastword's contexts end in the space before the answer: the JSONL's delimiter is that space.
  rows = [{"context": source.prompt(i, args.shots).rstrip(), "choices": list(d.choices), "gold": d.gold}
          for i, d in enumerate(source.docs[:args.limit or None])]
  if source.kind == "completion":  # lastword, analogy: the answer among 3 others' answers, seeded
    rng = np.random.default_rng(0)
    answers = sorted({d.choices[0] for d in source.docs})
    for row in rows:
      others = [a for a in rng.choice(answers, 4, replace=False) if a != row["choices"][0]][:3]
      row["gold"] = int(rng.integers(4))
      row["choices"] = others[:row["gold"]] + row["choices"] + others[row["gold"]:]
  data.write_text("".join(json.dumps(row) + "\n" for row in rows))

  # ------------------------------------------------------------------ lineage eval on jsonl:PATH
  task = tasks.load_task(f"jsonl:{data}", run.cfg)
  requests = task.requests(0)
  ours_scores = score_texts(run.model, tokenizer, requests, run.cfg.model.block_size, args.batch_size)
  ours = task.metrics([s.logprob for s in ours_scores], [s.greedy for s in ours_scores])

  # ------------------------------------------------------------------ lm_eval on the exported model
  hf_dir = work / "hf"
  hf_gpt2.export(run.cfg.model, nnx.state(run.model, nnx.Param), hf_dir, run.artifacts / "tokenizer")
  (work / "tasks").mkdir()
  (work / "tasks" / "lineage_jsonl.yaml").write_text(
      "task: lineage_jsonl\n"
      "dataset_path: json\n"
      f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
      "test_split: test\n"
      "output_type: multiple_choice\n"
      "doc_to_text: context\ndoc_to_choice: choices\ndoc_to_target: gold\n"
      "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
  import lm_eval
  from lm_eval.models.huggingface import HFLM
  from lm_eval.tasks import TaskManager

  lm = HFLM(pretrained=str(hf_dir), tokenizer=wrapped_tokenizer(tokenizer), batch_size=args.batch_size,
            device="cpu", dtype="float32")
  out = lm_eval.simple_evaluate(model=lm, tasks=["lineage_jsonl"], task_manager=TaskManager(include_path=str(work / "tasks")),
                                num_fewshot=0, log_samples=True)
  theirs = out["results"]["lineage_jsonl"]
  samples = sorted(out["samples"]["lineage_jsonl"], key=lambda s: s["doc_id"])
  their_lls = [float(resp[0][0]) for sample in samples for resp in sample["resps"]]  # doc by doc, choice by choice
  diff = float(np.max(np.abs(np.array(their_lls) - np.array([s.logprob for s in ours_scores]))))

  result = {**cpu_info(), "benchmark": "lm_eval_parity", "run": str(run.dir), "step": run.step, "task": args.task, "shots": args.shots,
            "documents": len(task.docs), "lm_eval_version": lm_eval.__version__,
            "lineage": {"acc": ours["acc"], "acc_norm": ours["acc_norm"]},
            "lm_eval": {"acc": theirs["acc,none"], "acc_norm": theirs["acc_norm,none"]},
            "same_acc": ours["acc"] == theirs["acc,none"] and ours["acc_norm"] == theirs["acc_norm,none"],
            "max_loglikelihood_diff": diff, "work_dir": str(work)}
  print(f"lineage eval: acc {ours['acc']:.4f}, acc_norm {ours['acc_norm']:.4f}; lm_eval: acc {theirs['acc,none']:.4f}, "
        f"acc_norm {theirs['acc_norm,none']:.4f}; max |log-likelihood diff| {diff:.2e} over {len(their_lls)} requests")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
