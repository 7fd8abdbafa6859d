"""`lineage eval`: zero- and few-shot scores of a language-model run, by log-likelihood.

    lineage eval runs/gpt_wiki/<run> --task lastword
    lineage eval runs/gpt_wiki/<run> --task polarity,analogy --shots 4
    lineage eval runs/gpt_wiki/<run> --task jsonl:questions.jsonl --limit 100

Continuations are scored as lm-evaluation-harness scores them (research/evaluate/lm_scoring.py);
the tasks, their prompts and metrics are in research/evaluate/tasks.py. Each task's result
goes to <run>/eval/<key>.json (with the first prompt, to see what the model read) and to the
run's metrics.jsonl as eval/<key>/<metric> at the checkpoint's step, where `lineage compare`
finds it; <key> is the task's name, with _<K>shot after it for K > 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

COLUMNS = ("acc", "acc_stderr", "acc_norm", "perplexity")


def _eval(args) -> int:
  from launch.compare import table
  from research.evaluate.tasks import evaluate, load_task
  from research.run import load_run
  from research.tokenizers import load_tokenizer
  from research.train.metrics import append_metrics

  run = load_run(args.run_dir, ("lm",), "lineage eval")
  tokenizer = load_tokenizer(run.artifacts / "tokenizer")
  tasks = [load_task(spec.strip(), run.cfg, args.shots) for spec in args.task.split(",") if spec.strip()]
  rows = []
  for task in tasks:
    if args.limit:
      task.docs = task.docs[:args.limit]
    key = task.name + (f"_{args.shots}shot" if args.shots else "")
    t = time.perf_counter()
    metrics = evaluate(task, run.model, tokenizer, run.cfg.model.block_size, shots=args.shots, seed=args.seed,
                       batch_size=args.batch_size)
    result = {"task": task.name, "shots": args.shots, "seed": args.seed, "limit": args.limit, "step": run.step,
              "seconds": round(time.perf_counter() - t, 2), "metrics": metrics,
              "first_prompt": task.prompt(0, args.shots, args.seed)}
    out = run.dir / "eval" / f"{key}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    append_metrics(run.dir, run.step, {f"eval/{key}/{k}": v for k, v in metrics.items()})
    rows.append([key, args.shots, metrics["n"]] + [metrics.get(c) for c in COLUMNS] + [str(out)])
  print(f"# {run.dir} at step {run.step}")
  print(table(rows, ["task", "shots", "n", *COLUMNS, "written to"]))
  print(f"appended eval/<task>/<metric> rows at step {run.step} to {Path(run.dir) / 'metrics.jsonl'}")
  return 0


def register(commands) -> None:
  p = commands.add_parser("eval", help="zero/few-shot log-likelihood scores of a language-model run")
  p.add_argument("run_dir", help="a language-model run directory made by `lineage train`")
  p.add_argument("--task", required=True,
                 help="lastword, polarity, analogy or jsonl:PATH ({context, choices, gold} per line); a comma list runs several")
  p.add_argument("--shots", type=int, default=0, help="solved examples before each prompt (from a held-out pool)")
  p.add_argument("--limit", type=int, default=0, help="score only the first N documents of each task (0 = all)")
  p.add_argument("--seed", type=int, default=0, help="which few-shot examples each document gets")
  p.add_argument("--batch-size", type=int, default=16, help="rows scored per call (one compiled shape)")
  p.set_defaults(run=_eval)
