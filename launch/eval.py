"""`lineage eval`: zero- and few-shot scores of a language-model run, by log-likelihood; exact
match and F1 of an extractive-QA run.

    lineage eval runs/gpt_wiki/<run> --task lastword
    lineage eval runs/gpt_wiki/<run> --task polarity,analogy --shots 4
    lineage eval runs/gpt_wiki/<run> --task jsonl:questions.jsonl --limit 100
    lineage eval runs/bert_qa/<run>                       # its held-out questions
    lineage eval runs/bert_qa/<run> --task squad:dev-v1.1.json

Continuations are scored as lm-evaluation-harness scores them (research/evaluate/lm_scoring.py);
the tasks, their prompts and metrics are in research/evaluate/tasks.py. Each task's result
goes to <run>/eval/<key>.json (with the first prompt, to see what the model read) and to the
run's metrics.jsonl as eval/<key>/<metric> at the checkpoint's step, where `lineage compare`
finds it; <key> is the task's name, with _<K>shot after it for K > 0.

An extractive_qa run answers the questions of `--task heldout` (the default: the run's own
evaluation questions) or `--task squad:PATH` (any SQuAD v1.1 file) with its latest checkpoint,
as its training evaluations do (research/objectives/extractive_qa.py); the scores go to
<run>/eval/<key>.json, the answers to <run>/eval/<key>_predictions.json ({id: answer}) and
eval/<key>/exact_match, eval/<key>/f1 to metrics.jsonl; <key> is "heldout" or squad_<file stem>.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

COLUMNS = ("acc", "acc_stderr", "acc_norm", "perplexity")
QA_COLUMNS = ("exact_match", "f1", "loss")


def _refuse(message: str) -> int:
  print(f"lineage eval: error: {message}", file=sys.stderr)
  return 2


def _eval_qa(args) -> int:
  """Exact match and F1 of an extractive_qa run's latest checkpoint on held-out or SQuAD-file questions."""
  from launch.compare import table
  from research.data import qa
  from research.objectives.extractive_qa import evaluate_questions, write_predictions
  from research.run import load_run
  from research.tokenizers import load_tokenizer
  from research.train.metrics import append_metrics

  spec = args.task or "heldout"
  if args.shots:
    return _refuse("--shots is for language-model runs; an extractive_qa run answers each question alone")
  if spec != "heldout" and not spec.startswith("squad:"):
    return _refuse(f"--task {spec!r}: an extractive_qa run takes --task heldout or --task squad:PATH")
  run = load_run(args.run_dir, ("extractive_qa",), "lineage eval")
  o = run.cfg.objective
  if spec == "heldout":
    questions, key = qa.load_questions(run.cfg.data, o.eval_split)[1], "heldout"
  else:
    path = Path(spec.removeprefix("squad:"))
    questions, key = qa.read_squad_file(path), f"squad_{path.stem}"
  questions = questions[:args.limit or None]
  t = time.perf_counter()
  windows, _ = qa.encode(questions, load_tokenizer(run.artifacts / "tokenizer"), o.seq_len, o.doc_stride,
                         o.max_query_len)
  metrics, predictions = evaluate_questions(run.model, questions, windows, o, args.batch_size)
  answers = run.dir / "eval" / f"{key}_predictions.json"
  write_predictions(answers, predictions)
  result = {"task": spec, "limit": args.limit, "step": run.step, "questions": len(questions), "windows": len(windows),
            "seconds": round(time.perf_counter() - t, 2), "metrics": metrics, "predictions": str(answers)}
  out = run.dir / "eval" / f"{key}.json"
  out.write_text(json.dumps(result, indent=2) + "\n")
  append_metrics(run.dir, run.step, {f"eval/{key}/{k}": v for k, v in metrics.items()})
  print(f"# {run.dir} at step {run.step}")
  print(table([[key, len(questions)] + [metrics[c] for c in QA_COLUMNS] + [str(out)]],
              ["task", "questions", *QA_COLUMNS, "written to"]))
  print(f"answers: {answers}; appended eval/{key}/<metric> rows at step {run.step} to {run.dir / 'metrics.jsonl'}")
  return 0


def _eval(args) -> int:
  from launch.compare import table
  from research.evaluate.tasks import evaluate, load_task
  from research.run import load_config, load_run
  from research.tokenizers import load_tokenizer
  from research.train.metrics import append_metrics

  if load_config(args.run_dir, ("lm", "extractive_qa"), "lineage eval").objective.name == "extractive_qa":
    return _eval_qa(args)
  if not args.task:
    return _refuse("--task is required for a language-model run: lastword, polarity, analogy or jsonl:PATH")
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
  p = commands.add_parser("eval", help="zero/few-shot log-likelihood scores of a language-model run; "
                                       "exact match and F1 of an extractive-QA run")
  p.add_argument("run_dir", help="a language-model or extractive_qa run directory made by `lineage train`")
  p.add_argument("--task", default="",
                 help="LM runs (required): lastword, polarity, analogy or jsonl:PATH ({context, choices, gold} per line), "
                      "a comma list runs several; QA runs: heldout (the default) or squad:PATH")
  p.add_argument("--shots", type=int, default=0, help="solved examples before each prompt (from a held-out pool)")
  p.add_argument("--limit", type=int, default=0, help="score only the first N documents (questions) of each task (0 = all)")
  p.add_argument("--seed", type=int, default=0, help="which few-shot examples each document gets")
  p.add_argument("--batch-size", type=int, default=16, help="rows scored per call (one compiled shape)")
  p.set_defaults(run=_eval)
