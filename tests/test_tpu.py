"""`lineage tpu`: the gcloud commands it builds (--dry-run), and its restart loop against a fake gcloud."""

import shlex
import subprocess

from launch.cli import main

SLICE = ["--name", "lm", "--zone", "us-central2-b", "--accelerator-type", "v4-32", "--spot"]
CODE = ["--repo", "https://github.com/someone/lineage", "--ref", "abc123", "--runs-dir", "gs://bkt/runs"]
TRAIN = ["experiments/gpt_wiki", "model.n_layer=12", "--run-name", "big"]


def dry_run(capsys, *argv) -> str:
  assert main(["tpu", *argv, "--dry-run"]) == 0
  return capsys.readouterr().out


def test_create_logs_and_delete_commands(capsys):
  assert dry_run(capsys, "create", *SLICE).split("\n")[0] == (
      "gcloud compute tpus tpu-vm create lm --zone=us-central2-b --accelerator-type=v4-32 "
      "--version=tpu-ubuntu2204-base --spot")
  assert shlex.split(dry_run(capsys, "logs", *SLICE, "big", "--follow")) == [
      "gcloud", "compute", "tpus", "tpu-vm", "ssh", "lm", "--zone=us-central2-b", "--worker=0",
      "--command=tail -n100 -f lineage-logs/big.log"]
  assert dry_run(capsys, "delete", "--name", "lm", "--project", "p1").strip() == (
      "gcloud compute tpus tpu-vm delete lm --zone=us-central2-b --project=p1 --quiet")


def test_setup_runs_on_every_worker_and_mounts_the_bucket(capsys):
  command = shlex.split(dry_run(capsys, "setup", *SLICE, *CODE))
  assert command[4:8] == ["ssh", "lm", "--zone=us-central2-b", "--worker=all"]
  script = command[-1].removeprefix("--command=")
  assert 'git clone -q https://github.com/someone/lineage "$HOME/lineage"' in script
  assert 'checkout -q abc123' in script and '-e "$HOME/lineage[tpu]"' in script
  assert "gcsfuse --implicit-dirs --rename-dir-limit=200000 bkt /mnt/gcs/bkt" in script
  subprocess.run(["bash", "-n", "-c", script], check=True)  # valid bash


def test_run_is_a_restart_loop_training_on_all_workers(capsys):
  script = dry_run(capsys, "run", *SLICE, *CODE, *TRAIN)
  subprocess.run(["bash", "-n", "-c", script], check=True)
  assert "for attempt in $(seq 1 10); do" in script
  train = next(l for l in script.splitlines() if "lineage train" in l)
  assert (".venv/bin/lineage train experiments/gpt_wiki model.n_layer=12 train.runs_dir=/mnt/gcs/bkt/runs "
          "train.run_name=big train.progress=false --distributed") in train
  assert 'tee -a "$HOME/lineage-logs/big.log"' in train
  assert script.count("--worker=all") == 2  # setup and train, both on every worker


FAKE_GCLOUD = """#!/usr/bin/env bash
# A fake gcloud: one slice whose state lives in a file; the first training attempt is preempted.
verb=$4; echo "$verb" >> "$FAKE/calls"
case $verb in
  describe) [ -f "$FAKE/state" ] && cat "$FAKE/state" || exit 1 ;;
  create) echo READY > "$FAKE/state" ;;
  delete) rm -f "$FAKE/state" ;;
  ssh) case "$*" in
         *"lineage train"*) n=$(( $(cat "$FAKE/trains" 2>/dev/null || echo 0) + 1 )); echo $n > "$FAKE/trains"
                            if [ $n = 1 ]; then echo PREEMPTED > "$FAKE/state"; exit 255; fi ;;
       esac ;;
esac
"""


def test_run_recreates_a_preempted_slice_and_resumes(tmp_path, monkeypatch, capfd):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name, text in {"gcloud": FAKE_GCLOUD, "sleep": "#!/bin/sh\n"}.items():  # no waiting between attempts
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
  monkeypatch.setenv("FAKE", str(tmp_path))
  assert main(["tpu", "run", *SLICE, *CODE, *TRAIN]) == 0
  assert (tmp_path / "calls").read_text().split() == [
      "describe", "create", "ssh", "ssh",  # no slice yet: create, set up, train (preempted)
      "describe", "delete", "create", "ssh", "ssh"]  # PREEMPTED: recreate, set up, train (done)
  assert "run big done" in capfd.readouterr().err


def test_setup_without_a_repository_says_what_to_give(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)  # not a git checkout: no origin to default to
  assert main(["tpu", "setup", "--dry-run"]) == 2
  assert "give --repo URL" in capsys.readouterr().err
