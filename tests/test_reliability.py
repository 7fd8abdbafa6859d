"""Nothing lost, nothing silently wrong (issue 13): faults injected into real runs of the tiny GPT.

Damaged checkpoints, a second process on a live run directory, SIGKILL mid-run, a line cut
short in metrics.jsonl, a full disk; then every command's bad input (run directories that
cannot serve it, flags out of range, prompts, words, metrics). Every fault and bad input is
recorded in TRIED as it is tried, and the last test prints the tally.
"""

import errno
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog

from launch.cli import main
from launch.compare import last_step, read_run
from research import config as config_lib
from research.config import load_experiment
from research.tokenizers import CharTokenizer
from research.train import loop
from research.train.checkpoint import CheckpointError, Checkpointer
from research.train.lock import LOCK_FILE, RunLock, RunLockedError
from research.train.metrics import MetricWriter, read_metrics
from test_train import TEXT, params_of, tiny_config
from test_word2vec import topic_corpus

ROOT = Path(__file__).resolve().parents[1]
TRIED: list[str] = []  # each fault or bad input, recorded when it is injected


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
  path.write_text(TEXT)
  return path


@pytest.fixture(scope="module")
def experiment(corpus):
  """An experiment directory for the CLI holding the tests' tiny GPT config."""
  directory = corpus.parent / "tiny"
  directory.mkdir(exist_ok=True)
  (directory / "config.py").write_text(
      "import sys\nfrom pathlib import Path\n"
      f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
      "from test_train import tiny_config\n\n\n"
      f"def get_config():\n  return tiny_config(Path({str(corpus)!r}), Path({str(corpus.parent)!r}))\n")
  return directory


def config(corpus):
  """The experiment's config: a resumed run must match the one it resumes, paths included."""
  return tiny_config(corpus, corpus.parent)


def quiet(*_):
  pass


def data_files(step_dir: Path) -> list[Path]:
  """The array chunks of a checkpoint (OCDBT data files), not its metadata."""
  return [f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"]


def damage(step_dir: Path, how: str) -> None:
  TRIED.append(f"checkpoint {step_dir.name}: {how} its data files")
  for f in data_files(step_dir):
    if how == "overwrite":  # as a crash mid-copy or a bad disk leaves them
      f.write_bytes(os.urandom(f.stat().st_size))
    elif how == "truncate":
      f.write_bytes(f.read_bytes()[:16])
    elif how == "delete":
      f.unlink()


def train_rows(run: Path) -> list[int]:
  return [row["step"] for row in read_metrics(run) if "train/loss" in row]


def cli_env() -> dict:
  return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "HF_DATASETS_OFFLINE": "1",
          "HF_HUB_OFFLINE": "1"}


# ------------------------------------------------------------------ damaged checkpoints

def test_damaged_newest_checkpoint_falls_back_and_ends_bitwise_equal(corpus, experiment, tmp_path, capsys):
  run = tmp_path / "run"
  straight = loop.train(config(corpus), run_dir=run, log=quiet)
  checkpoints = run / "checkpoints"
  assert Checkpointer(checkpoints, keep=3, every=4).manager.all_steps() == [4, 8, 12]

  damage(checkpoints / "12", "overwrite")
  said = []
  resumed = loop.train(config(corpus), run_dir=run, log=said.append)
  assert any("step 12" in s and str(checkpoints) in s and "cannot be read" in s for s in said)
  assert "resumed from the checkpoint at step 8" in said
  for a, b in zip(jax.tree.leaves(params_of(straight)), jax.tree.leaves(params_of(resumed))):
    assert np.array_equal(a, b)
  # The damaged checkpoint is kept, under a name orbax does not take for a step.
  aside = [d.name for d in checkpoints.iterdir() if ".corrupt-" in d.name]
  assert len(aside) == 1 and aside[0].startswith("12.corrupt-")
  assert Checkpointer(checkpoints, keep=3, every=4).manager.all_steps() == [4, 8, 12]
  assert train_rows(run) == [2, 4, 6, 8, 10, 12]  # the rows after step 8 were logged once more, not twice

  # Every checkpoint damaged, each differently: one line naming the directory, exit 1, nothing moved.
  damage(checkpoints / "4", "truncate")
  damage(checkpoints / "8", "delete")
  damage(checkpoints / "12", "overwrite")
  capsys.readouterr()
  assert main(["train", str(experiment), "--run-dir", str(run)]) == 1
  err = capsys.readouterr().err
  error = err.strip().splitlines()[-1]
  assert "Traceback" not in err
  assert error.startswith("lineage train: error: no checkpoint in") and str(checkpoints) in error
  assert Checkpointer(checkpoints, keep=3, every=4).manager.all_steps() == [4, 8, 12]
  assert len([d for d in checkpoints.iterdir() if ".corrupt-" in d.name]) == 1


# ------------------------------------------------------------------ one process per run directory

def test_lock_refuses_a_second_holder_and_is_released_however_the_holder_ends(tmp_path):
  run = tmp_path / "run"
  with RunLock(run, log=quiet):
    TRIED.append("a second lock on a held run directory (same process)")
    with pytest.raises(RunLockedError, match=rf"in use by pid {os.getpid()} on {socket.gethostname()}"):
      RunLock(run, log=quiet).acquire()
  assert not (run / LOCK_FILE).exists()

  TRIED.append("an exception while holding the lock")
  with pytest.raises(ZeroDivisionError):
    with RunLock(run, log=quiet):
      1 / 0
  said = []
  with RunLock(run, log=said.append):
    pass
  assert said == []  # released cleanly: nothing stale to take over

  TRIED.append("a lock file left by a process that is gone")
  run.mkdir(exist_ok=True)
  (run / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": 2 ** 22 + 1, "started": "then"}))
  with RunLock(run, log=said.append):
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
  assert len(said) == 1 and "taking over the stale lock" in said[0] and str(2 ** 22 + 1) in said[0]

  assert not RunLock(run, primary=False).acquire()  # other hosts of a multi-host run take no lock
  assert not (run / LOCK_FILE).exists()


HOLDER = """
import sys, time
from pathlib import Path
from research.config import load_experiment
from research.train import loop

run = Path(sys.argv[2])

def hold(step, state):
  if step == 14:  # rows 2..14 are logged; wait for the checkpoint at 12, then stay alive holding the lock
    while not (run / "checkpoints" / "12").exists():
      time.sleep(0.05)
    print("holding", flush=True)
    time.sleep(600)

loop.train(load_experiment(sys.argv[1], ["train.steps=20"]), run_dir=run, on_step=hold, log=lambda *_: None)
"""


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_second_train_is_refused_then_resumes_after_sigkill_with_one_row_per_step(experiment, tmp_path):
  run = tmp_path / "run"
  train = [sys.executable, "-m", "launch.cli", "train", str(experiment), "train.steps=20", "--run-dir", str(run)]
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(experiment), str(run)], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "holder.err", "w"), text=True)
  try:
    assert holder.stdout.readline().strip() == "holding", (tmp_path / "holder.err").read_text()[-2000:]
    before = (run / "metrics.jsonl").read_text()

    TRIED.append("a second `lineage train` on a live run directory")
    second = subprocess.run(train, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert second.stderr.strip().startswith(f"lineage train: error: {run} is in use by pid {holder.pid} "
                                            f"on {socket.gethostname()} (started ")
    assert len(second.stderr.strip().splitlines()) == 1
    assert (run / "metrics.jsonl").read_text() == before  # the refused process wrote nothing

    TRIED.append("SIGKILL mid-run, after rows were logged past the last checkpoint")
    holder.kill()
    holder.wait(timeout=60)
  finally:
    holder.kill()
  assert train_rows(run)[-1] == 14 and json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid

  TRIED.append("a metrics.jsonl line cut short (a crash mid-write)")
  with open(run / "metrics.jsonl", "a") as f:
    f.write('{"step": 16, "train/lo')
  with pytest.warns(UserWarning, match=r"metrics.jsonl:\d+: skipped a line"):
    assert last_step(read_run(run)) == 14  # `lineage compare` reads a crashed run

  third = subprocess.run(train, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
  assert third.returncode == 0, third.stderr[-2000:]
  assert f"taking over the stale lock {run / LOCK_FILE} of pid {holder.pid}" in third.stdout
  assert "resumed from the checkpoint at step 12" in third.stdout
  assert "dropped 1 rows logged after step 12" in third.stderr and "unreadable line(s)" in third.stderr
  assert train_rows(run) == list(range(2, 21, 2))  # one train row per logged step
  assert [r["step"] for r in read_metrics(run) if "eval/loss" in r] == [6, 12, 18, 20]
  assert last_step(read_run(run)) == 20 and "train/loss" in read_run(run).series
  assert not (run / LOCK_FILE).exists()

  # TensorBoard: the resumed run's event file starts with a purge marker at step 13, so
  # TensorBoard hides the killed run's events from step 13 on (its step 14).
  newest = max((run / "tb").iterdir(), key=lambda f: f.stat().st_mtime)
  assert any(e.session_log.status == SessionLog.START and e.step == 13 for e in tb_events(newest))


def tb_events(path: Path):
  """Events of a TensorBoard file: TFRecords of (length, crc, Event, crc)."""
  data, at = path.read_bytes(), 0
  while at < len(data):
    (n,) = struct.unpack("<Q", data[at:at + 8])
    yield Event.FromString(data[at + 12:at + 12 + n])
    at += 12 + n + 4


# ------------------------------------------------------------------ metrics.jsonl on its own

def test_metric_writer_drops_rows_after_the_restored_step_and_repairs_a_cut_line(tmp_path):
  rows = [{"step": s, "train/loss": 1.0 / s} for s in (2, 4, 6)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "tr')
  TRIED.append("a metrics.jsonl whose last line is cut short, read back")
  with pytest.warns(UserWarning, match=r"metrics.jsonl:4: skipped"):
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4, 6]

  writer = MetricWriter(tmp_path, total_steps=8, start_step=4, progress=False)
  writer.write(6, {"train/loss": 0.5})
  writer.close()
  assert [(r["step"], r["train/loss"]) for r in read_metrics(tmp_path)] == [(2, 0.5), (4, 0.25), (6, 0.5)]
  assert not (tmp_path / "metrics.jsonl.tmp").exists()


# ------------------------------------------------------------------ a full disk

def test_disk_full_while_saving_stops_the_run_and_keeps_the_previous_checkpoint(corpus, tmp_path, monkeypatch):
  save = ocp.CheckpointManager.save

  def full_at_8(self, step, *args, **kwargs):
    if step == 8:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.directory))
    return save(self, step, *args, **kwargs)

  TRIED.append("no space left on device while saving (orbax's save raises ENOSPC)")
  monkeypatch.setattr(ocp.CheckpointManager, "save", full_at_8)
  run = tmp_path / "run"
  with pytest.raises(CheckpointError, match=rf"cannot write a checkpoint in {run / 'checkpoints'}: "
                                            r"No space left on device; the checkpoint at step 4 is intact") as e:
    loop.train(config(corpus), run_dir=run, log=quiet)
  assert "\n" not in str(e.value)
  assert Checkpointer(run / "checkpoints", keep=3, every=4).manager.all_steps() == [4]
  assert not (run / LOCK_FILE).exists()  # the lock is released when the run fails (the resume: next test)


@pytest.fixture
def small_disk(tmp_path):
  """A 900 KB tmpfs: room for the run's files and one checkpoint (~520 KB), not two. Root only."""
  mount = tmp_path / "disk"
  mount.mkdir()
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=900k", "tmpfs", str(mount)],
                                         capture_output=True).returncode:
    pytest.skip("needs root and tmpfs to fill a real disk")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_a_really_full_disk_stops_the_run_and_the_same_command_resumes(corpus, tmp_path, small_disk):
  TRIED.append("a really full disk (900 KB tmpfs) under asynchronous saves")
  run = small_disk / "run"
  with pytest.raises(CheckpointError, match=rf"in {run / 'checkpoints'}: No space left on device; "
                                            r"the checkpoint at step 4 is intact"):
    loop.train(config(corpus), run_dir=run, log=quiet)
  subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
  said = []
  assert loop.train(config(corpus), run_dir=run, log=said.append).status == "done"
  assert "resumed from the checkpoint at step 4" in said
  assert train_rows(run) == [2, 4, 6, 8, 10, 12]


# ------------------------------------------------------------------ every command's bad input
#
# Each refusal is exit 2 and one line naming the flag, word or path, argparse's included
# (launch/cli.py prints no usage block). The commands run in this process, so a traceback
# would fail the test; one test runs the real CLI as well.

def error_line(err: str, command: str) -> str:
  """The one line of a refusal: nothing else may be printed."""
  lines = err.rstrip("\n").splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"lineage {command}: error: "), err
  return lines[0]


def refused(capsys, command: str, *args) -> str:
  """Runs `lineage COMMAND ARGS...`; asserts exit 2 and a one-line error, and returns the line."""
  TRIED.append(f"bad input: lineage {command} " + " ".join(a.name if isinstance(a, Path) else repr(a) for a in args))
  try:
    code = main([command, *map(str, args)])
  except SystemExit as e:  # argparse refuses by exiting
    code = e.code
  err = capsys.readouterr().err
  assert code == 2, err
  return error_line(err, command)


@pytest.fixture(scope="module")
def lm_run(corpus):
  """A finished tiny GPT run (char tokenizer, block_size 16): one step, one checkpoint."""
  run = corpus.parent / "lm_run"
  cfg = tiny_config(corpus, corpus.parent, steps=1, log_every=1, eval_every=1, eval_batches=1, checkpoint_every=1)
  loop.train(cfg, run_dir=run, log=quiet)
  return run


@pytest.fixture(scope="module")
def w2v_run(corpus):
  """A finished tiny CBOW run over test_word2vec's two topics (cat, dog, ... car, road, ...)."""
  run = corpus.parent / "w2v_run"
  topic_corpus(corpus.parent / "topics.txt", n_lines=40)
  cfg = load_experiment(ROOT / "experiments" / "cbow_wiki", [
      f"data.path={corpus.parent / 'topics.txt'}", f"data.cache_dir={corpus.parent / 'w2v_cache'}",
      "objective.min_count=1", "model.vector_size=8", "objective.batch_words=32", "objective.sub_steps=8",
      "objective.epochs=1", "objective.sample=0", "train.progress=false"])
  loop.train(cfg, run_dir=run, log=quiet)
  return run


EXPERIMENT_OF = {"lm": "gpt_wiki", "word2vec": "cbow_wiki", "translation": "seq2seq_attention"}
OBJECTIVE_OF = {"sample": "lm", "neighbors": "word2vec", "attention": "translation", "bleu": "translation"}
ARGS_OF = {"neighbors": ["cat"], "attention": ["--src", "three"]}  # what each command needs besides RUN_DIR


def unfinished_run(path: Path, objective: str) -> Path:
  """What `lineage train` has written before its first checkpoint: config.json, no checkpoints/."""
  path.mkdir()
  config_lib.save(load_experiment(ROOT / "experiments" / EXPERIMENT_OF[objective]), path / "config.json")
  return path


@pytest.mark.parametrize("command", ["sample", "neighbors", "attention", "bleu"])
@pytest.mark.parametrize("kind", ["missing", "not a run", "foreign config.json", "unfinished", "wrong objective"])
def test_a_run_directory_that_cannot_serve_the_command(command, kind, tmp_path, lm_run, w2v_run, capsys):
  objective = OBJECTIVE_OF[command]
  if kind == "missing":
    run = tmp_path / "missing"
    says = f"{run} does not exist"
  elif kind == "not a run":
    run = tmp_path / "empty"
    run.mkdir()
    says = f"{run} is not a run directory (no config.json)"
  elif kind == "foreign config.json":
    run = tmp_path / "hf_model"  # as a Hugging Face model directory holds
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "n_layer": 12}))
    says = f"{run} is not a lineage run directory: its config.json does not load"
  elif kind == "unfinished":
    run = unfinished_run(tmp_path / "unfinished", objective)
    says = f"{run} has no checkpoint yet"
  else:
    run = w2v_run if objective == "lm" else lm_run
    other = "word2vec" if objective == "lm" else "lm"
    says = f"{run} is a {other!r} run; lineage {command} needs a {objective} run"
  assert says in refused(capsys, command, run, *ARGS_OF.get(command, []))


BAD_FLAGS = [  # (command, flags, what the error line says); argparse refuses them before RUN_DIR is looked at
    ("sample", ["--max-new-tokens", "0"], "argument --max-new-tokens: must be an integer >= 1, got '0'"),
    ("sample", ["--max-new-tokens", "-5"], "argument --max-new-tokens: must be an integer >= 1, got '-5'"),
    ("sample", ["--temperature", "-0.5"], "argument --temperature: must be a finite number >= 0, got '-0.5'"),
    ("sample", ["--temperature", "nan"], "argument --temperature: must be a finite number >= 0, got 'nan'"),
    ("sample", ["--top-p", "0"], "argument --top-p: must be a number in (0, 1], got '0'"),
    ("sample", ["--top-p", "1.5"], "argument --top-p: must be a number in (0, 1], got '1.5'"),
    ("sample", ["--top-k", "-1"], "argument --top-k: must be an integer >= 0, got '-1'"),
    ("sample", ["--num-samples", "0"], "argument --num-samples: must be an integer >= 1, got '0'"),
    ("bleu", ["--beam", "0"], "argument --beam: must be an integer >= 1, got '0'"),
    ("bleu", ["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got '0'"),
    ("bleu", ["--split", "dev"], "argument --split: invalid choice: 'dev' (choose from 'train', 'valid', 'test')"),
    ("attention", ["--beam", "0"], "argument --beam: must be an integer >= 1, got '0'"),
    ("neighbors", ["-k", "0"], "argument -k: must be an integer >= 1, got '0'"),
]


@pytest.mark.parametrize("command, flags, says", BAD_FLAGS, ids=[" ".join([c, *f]) for c, f, _ in BAD_FLAGS])
def test_a_flag_out_of_range(command, flags, says, tmp_path, capsys):
  assert says in refused(capsys, command, tmp_path / "any_run", *ARGS_OF.get(command, []), *flags)


def test_prompts_sample_cannot_continue(lm_run, capsys, monkeypatch):
  line = refused(capsys, "sample", lm_run, "--prompt", "the cat sat on the mat")  # 22 characters
  assert "--prompt is 22 tokens, too long for the model's context of 16 (model.block_size): give at most 14" in line
  assert "--prompt is 15 tokens" in refused(capsys, "sample", lm_run, "--prompt", "x" * 15)  # no room for a token

  # The char tokenizer encodes whitespace (a space is a character); a tokenizer may encode it to nothing.
  encode = CharTokenizer.encode
  monkeypatch.setattr(CharTokenizer, "encode", lambda self, text: [] if text.isspace() else encode(self, text))
  assert "--prompt '   ' encodes to no token" in refused(capsys, "sample", lm_run, "--prompt", "   ")
  monkeypatch.undo()

  # An explicit empty prompt is the default: a document sampled from scratch. The ends of the ranges are valid.
  assert main(["sample", str(lm_run), "--prompt", "", "--max-new-tokens", "1", "--top-p", "1", "--top-k", "0",
               "--temperature", "0", "--num-samples", "2"]) == 0
  assert capsys.readouterr().out.count("---") == 2


def test_neighbors_words_and_attention_sources_it_cannot_use(w2v_run, lm_run, capsys):
  assert "not in the vocabulary: unicorn" in refused(capsys, "neighbors", w2v_run, "unicorn")
  assert "not in the vocabulary: unicorn" in refused(capsys, "neighbors", w2v_run, "cat", "-", "unicorn")
  assert "the query names no word" in refused(capsys, "neighbors", w2v_run, "+")
  assert "give a WORD or an analogy" in refused(capsys, "neighbors", w2v_run)
  # Blank sources are refused before the run is opened (so any run directory will do).
  assert "--src '  ' is blank" in refused(capsys, "attention", lm_run, "--src", "  ")


def test_compare_metrics_no_run_logged_and_runs_it_can_still_read(lm_run, tmp_path, capsys):
  missing = tmp_path / "missing"
  assert f"not run directories (no config.json): {missing}" in refused(capsys, "compare", lm_run, missing)
  line = refused(capsys, "compare", lm_run, "--plot", "eval/bleu")
  assert "--plot: no run logged 'eval/bleu'; they logged " in line and "eval/loss" in line
  assert "--metrics: no run logged 'eval/blue'" in refused(capsys, "compare", lm_run, "--metrics", "step,eval/blue")

  # A run whose last metrics line was cut short by a crash, and one that has not logged yet.
  TRIED.append("bad input: lineage compare on a run whose metrics.jsonl ends in a line cut short")
  crashed = tmp_path / "crashed"
  crashed.mkdir()
  for name in ("config.json", "metrics.jsonl"):
    (crashed / name).write_bytes((lm_run / name).read_bytes())
  with open(crashed / "metrics.jsonl", "a") as f:
    f.write('{"step": 2, "train/lo')
  starting = unfinished_run(tmp_path / "starting", "lm")
  with pytest.warns(UserWarning, match=r"metrics.jsonl:\d+: skipped a line"):
    assert main(["compare", str(lm_run), str(crashed), str(starting), "--metrics", "step,train/loss"]) == 0
  lines = capsys.readouterr().out.splitlines()
  at = lines[0].index(" train/loss") + 1  # columns are aligned: read each row's cell there
  rows = {line.split()[0]: line[at:].split()[0] for line in lines[1:4]}
  assert rows[f"{crashed.parent.name}/crashed"] == rows[f"{lm_run.parent.name}/lm_run"] != "-"
  assert rows[f"{starting.parent.name}/starting"] == "-"


def test_the_real_cli_refuses_in_one_line(tmp_path):
  """As a user sees it: the process's whole stderr, and its exit status."""
  TRIED.append("bad input: lineage sample on a missing directory, in a process of its own")
  missing = subprocess.run([sys.executable, "-m", "launch.cli", "sample", str(tmp_path / "nope")], cwd=ROOT,
                           env=cli_env(), capture_output=True, text=True, timeout=120)
  assert missing.returncode == 2 and missing.stderr == f"lineage sample: error: {tmp_path / 'nope'} does not exist\n"
  TRIED.append("bad input: lineage bleu --beam 0, in a process of its own")
  beam = subprocess.run([sys.executable, "-m", "launch.cli", "bleu", str(tmp_path), "--beam", "0"], cwd=ROOT,
                        env=cli_env(), capture_output=True, text=True, timeout=120)
  assert beam.returncode == 2 and "Traceback" not in beam.stderr
  assert beam.stderr == "lineage bleu: error: argument --beam: must be an integer >= 1, got '0' (see lineage bleu --help)\n"


def test_report_what_was_tried(capsys):
  """Last in the file: the tally of faults injected and bad inputs tried by the tests above that ran."""
  with capsys.disabled():
    bad = sum(t.startswith("bad input: ") for t in TRIED)
    print(f"\ntest_reliability: {len(TRIED) - bad} faults injected, {bad} bad inputs tried:\n  " + "\n  ".join(TRIED))
