"""Nothing lost, nothing silently wrong (issue 13): faults injected into real runs of the tiny GPT.

Damaged checkpoints, a second process on a live run directory, SIGKILL mid-run, a line cut
short in metrics.jsonl, a full disk. Every fault is recorded in TRIED as it is injected, and
the last test prints the tally.
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
from launch.compare import summarize
from research.train import loop
from research.train.checkpoint import CheckpointError, Checkpointer
from research.train.lock import LOCK_FILE, RunLock, RunLockedError
from research.train.metrics import MetricWriter, read_metrics
from test_train import TEXT, params_of, tiny_config

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
    assert summarize(run)["step"] == 14  # `lineage compare` reads a crashed run

  third = subprocess.run(train, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
  assert third.returncode == 0, third.stderr[-2000:]
  assert f"taking over the stale lock {run / LOCK_FILE} of pid {holder.pid}" in third.stdout
  assert "resumed from the checkpoint at step 12" in third.stdout
  assert "dropped 1 rows logged after step 12" in third.stderr and "unreadable line(s)" in third.stderr
  assert train_rows(run) == list(range(2, 21, 2))  # one train row per logged step
  assert [r["step"] for r in read_metrics(run) if "eval/loss" in r] == [6, 12, 18, 20]
  assert summarize(run)["step"] == 20 and "train/loss" in summarize(run)
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


def test_report_what_was_tried(capsys):
  """Last in the file: the tally of faults injected by the tests above that ran."""
  with capsys.disabled():
    print(f"\ntest_reliability: {len(TRIED)} faults injected:\n  " + "\n  ".join(TRIED))
