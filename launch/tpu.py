"""`lineage tpu create|setup|run|logs|delete`: a training run on a Cloud TPU VM slice, via gcloud.

    lineage tpu create --name lm --zone us-central2-b --accelerator-type v4-32 --spot
    lineage tpu setup  --name lm --zone us-central2-b --repo https://github.com/<you>/lineage
    lineage tpu run    --name lm --zone us-central2-b --runs-dir gs://<bucket>/runs \\
                       experiments/gpt_wiki model.n_layer=12 --run-name big
    lineage tpu logs   --name lm --zone us-central2-b big --follow
    lineage tpu delete --name lm --zone us-central2-b

Every command only builds gcloud commands and runs them; `--dry-run` prints them instead.
Commands on the VMs go to every worker of the slice (`--worker=all`): each host runs the same
`lineage train --distributed`, jax.distributed connects them, each feeds its own rows.

Restart on preemption: `run` is a loop, printed in full by `--dry-run`. Each attempt checks the
slice; one that is not READY (a spot slice is PREEMPTED) is deleted, created and set up again.
Then it runs the same `lineage train` command on all workers. A rerun with the same run name
resumes from the latest checkpoint (the loop saves one on SIGTERM), so attempts repeat until one
ends with the run done, at most --max-attempts times.

Storage: every host must see the same checkpoint directory, so on a multi-host slice give
`--runs-dir gs://bucket/path`. `setup` mounts the bucket on every worker with gcsfuse at
/mnt/gcs/<bucket> and the run writes there (the trainer reads and writes local paths). Each
worker also keeps its own log, ~/lineage-logs/<run>.log, which `logs` shows.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REMOTE_REPO = "$HOME/lineage"  # on each worker; double-quoted in the scripts so $HOME expands there
MOUNT_ROOT = "/mnt/gcs"


@dataclass
class Slice:
  name: str
  zone: str
  accelerator_type: str
  version: str
  project: str | None = None
  spot: bool = False


def gcloud(s: Slice, verb: str, *flags: str) -> list[str]:
  project = [f"--project={s.project}"] if s.project else []
  return ["gcloud", "compute", "tpus", "tpu-vm", verb, s.name, f"--zone={s.zone}", *project, *flags]


def create_command(s: Slice) -> list[str]:
  return gcloud(s, "create", f"--accelerator-type={s.accelerator_type}", f"--version={s.version}",
                *(["--spot"] if s.spot else []))


def delete_command(s: Slice) -> list[str]:
  return gcloud(s, "delete", "--quiet")


def ssh_command(s: Slice, script: str, worker: str = "all") -> list[str]:
  return gcloud(s, "ssh", f"--worker={worker}", f"--command={script}")


def worker_runs_dir(runs_dir: str) -> str:
  """Where the workers see `runs_dir`: a gs:// bucket is mounted at /mnt/gcs/<bucket>."""
  if not runs_dir.startswith("gs://"):
    return runs_dir
  bucket, _, prefix = runs_dir[len("gs://"):].partition("/")
  return f"{MOUNT_ROOT}/{bucket}" + (f"/{prefix.rstrip('/')}" if prefix.strip("/") else "")


def _mount_lines(runs_dir: str) -> list[str]:
  """Mounts the bucket if it is not mounted (a worker that rebooted after maintenance lost it)."""
  if not runs_dir.startswith("gs://"):
    return []
  bucket = runs_dir[len("gs://"):].split("/")[0]
  point = f"{MOUNT_ROOT}/{bucket}"
  # --rename-dir-limit: orbax finishes a checkpoint by renaming its temporary directory.
  return [f'sudo mkdir -p {point} && sudo chown "$USER" {point}',
          f"mountpoint -q {point} || gcsfuse --implicit-dirs --rename-dir-limit=200000 {bucket} {point}"]


def setup_script(repo: str, ref: str, runs_dir: str) -> str:
  """Clone (or update) the repository at `ref`, a Python 3.11 venv with lineage[tpu], the mount."""
  lines = [
      "set -euo pipefail",
      f'if [ -d "{REMOTE_REPO}/.git" ]; then git -C "{REMOTE_REPO}" fetch -q origin; '
      f'else git clone -q {shlex.quote(repo)} "{REMOTE_REPO}"; fi',
      f'git -C "{REMOTE_REPO}" checkout -q {shlex.quote(ref)}',
      # TPU VM images ship an older Python than lineage needs: uv fetches 3.11.
      '[ -x "$HOME/.local/bin/uv" ] || curl -LsSf https://astral.sh/uv/install.sh | sh',
      f'"$HOME/.local/bin/uv" venv -q --allow-existing --python 3.11 "{REMOTE_REPO}/.venv"',
      f'"$HOME/.local/bin/uv" pip install -q --python "{REMOTE_REPO}/.venv/bin/python" -e "{REMOTE_REPO}[tpu]"',
  ]
  if runs_dir.startswith("gs://"):
    lines += [
        "if ! command -v gcsfuse >/dev/null; then",
        '  echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt '
        'gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null',
        "  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null",
        "  sudo apt-get update -q && sudo apt-get install -y -q gcsfuse",
        "fi",
        *_mount_lines(runs_dir),
    ]
  return "\n".join(lines)


def train_script(experiment: str, overrides: list[str], runs_dir: str, run_name: str) -> str:
  """The same command on every worker; its exit status is `lineage train`'s (0 = done)."""
  train = ["lineage", "train", experiment, *overrides, f"train.runs_dir={worker_runs_dir(runs_dir)}",
           f"train.run_name={run_name}", "train.progress=false", "--distributed"]
  log = f'"$HOME/lineage-logs/{run_name}.log"'
  return "\n".join([
      "set -uo pipefail",
      *_mount_lines(runs_dir),
      'mkdir -p "$HOME/lineage-logs"',
      f'cd "{REMOTE_REPO}" && .venv/bin/{shlex.join(train)} 2>&1 | tee -a {log}',
  ])


def run_script(s: Slice, setup: str, train: str, run_name: str, max_attempts: int) -> str:
  """The restart-on-preemption loop (see the module docstring), as the bash that `run` executes."""
  q = shlex.join
  describe = q(gcloud(s, "describe", "--format=value(state)"))
  return "\n".join([
      "set -u",
      f"for attempt in $(seq 1 {max_attempts}); do",
      f'  state=$({describe} 2>/dev/null || true)',
      '  if [ "$state" != READY ]; then',
      f'    echo "lineage tpu: {s.name} is ${{state:-missing}}: creating it" >&2',
      f'    if [ -n "$state" ]; then {q(delete_command(s))}; fi',
      f"    {q(create_command(s))} || {{ sleep 60; continue; }}",
      f"    {q(ssh_command(s, setup))} || {{ sleep 60; continue; }}",
      "  fi",
      f"  if {q(ssh_command(s, train))}; then",
      f'    echo "lineage tpu: run {run_name} done" >&2; exit 0',
      "  fi",
      f'  echo "lineage tpu: attempt $attempt of {max_attempts} stopped (preempted or failed); '
      'the next resumes from the latest checkpoint" >&2',
      "  sleep 30",
      "done",
      f'echo "lineage tpu: gave up after {max_attempts} attempts; see lineage tpu logs {run_name}" >&2',
      "exit 1",
  ])


def logs_command(s: Slice, run_name: str, worker: str, lines: int, follow: bool) -> list[str]:
  tail = ["tail", f"-n{lines}", *(["-f"] if follow else []), f"lineage-logs/{run_name}.log"]
  return ssh_command(s, shlex.join(tail), worker=worker)


def _git(*args: str) -> str | None:
  try:
    out = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
  except (OSError, subprocess.CalledProcessError):
    return None
  return out.stdout.strip() or None


def _commands(args) -> list[list[str]] | str:
  """The gcloud commands of a subcommand, in order; `run` gives its bash loop instead."""
  s = Slice(args.name, args.zone, args.accelerator_type, args.version, args.project, args.spot)
  if args.action == "create":
    return [create_command(s)]
  if args.action == "delete":
    return [delete_command(s)]
  if args.action == "logs":
    return [logs_command(s, args.run_name, args.worker, args.lines, args.follow)]
  setup = setup_script(args.repo, args.ref, args.runs_dir)
  if args.action == "setup":
    return [ssh_command(s, setup)]
  train = train_script(args.experiment, args.overrides, args.runs_dir, args.run_name)
  return run_script(s, setup, train, args.run_name, args.max_attempts)


def _run(args) -> int:
  if args.action in ("setup", "run"):
    args.repo = args.repo or _git("remote", "get-url", "origin")
    if not args.repo:
      print("lineage tpu: error: no --repo and this checkout has no origin remote: give --repo URL "
            "(the workers clone it)", file=sys.stderr)
      return 2
    args.ref = args.ref or _git("rev-parse", "HEAD") or "main"
  if args.action == "run":
    args.run_name = args.run_name or f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}"
  commands = _commands(args)
  if args.dry_run:
    print(commands if isinstance(commands, str) else "\n".join(shlex.join(c) for c in commands))
    return 0
  if shutil.which("gcloud") is None:
    print("lineage tpu: error: gcloud not found: install the Google Cloud CLI "
          "(https://cloud.google.com/sdk/docs/install), or add --dry-run to print the commands", file=sys.stderr)
    return 1
  if isinstance(commands, str):
    print(f"lineage tpu: run {args.run_name} on {args.name}; its runs directory is {args.runs_dir}", file=sys.stderr)
    return subprocess.run(["bash", "-c", commands]).returncode
  for command in commands:
    print(f"lineage tpu: {shlex.join(command)}", file=sys.stderr)
    code = subprocess.run(command).returncode
    if code:
      return code
  return 0


def register(commands) -> None:
  slice_options = argparse.ArgumentParser(add_help=False)
  slice_options.add_argument("--name", default="lineage", help="the TPU VM's name (default lineage)")
  slice_options.add_argument("--zone", default="us-central2-b", help="a zone that has the accelerator (default us-central2-b)")
  slice_options.add_argument("--accelerator-type", default="v4-8", help="e.g. v4-8 (one host), v4-32 (4 hosts), v5litepod-16")
  slice_options.add_argument("--version", default="tpu-ubuntu2204-base",
                             help="the TPU VM software version (default tpu-ubuntu2204-base; v5p/v6e: see the TPU docs)")
  slice_options.add_argument("--project", help="the Google Cloud project (default: gcloud's)")
  slice_options.add_argument("--spot", action="store_true", help="a spot slice: cheaper, preemptible")
  slice_options.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
  code_options = argparse.ArgumentParser(add_help=False)
  code_options.add_argument("--repo", help="git URL the workers clone (default: this checkout's origin)")
  code_options.add_argument("--ref", help="commit, branch or tag to check out (default: this checkout's HEAD)")
  code_options.add_argument("--runs-dir", default="runs",
                            help="gs://bucket/path (needed on multi-host slices: one shared checkpoint directory), "
                                 "or a path on each worker (default runs, under the repository)")

  p = commands.add_parser("tpu", help="create, set up, run on, read logs of, delete a TPU VM slice (gcloud)",
                          description="A training run on a Cloud TPU VM slice.", epilog=__doc__.split("\n\n", 1)[1],
                          formatter_class=argparse.RawDescriptionHelpFormatter)
  actions = p.add_subparsers(dest="action", required=True)
  actions.add_parser("create", parents=[slice_options], help="create the slice")
  actions.add_parser("setup", parents=[slice_options, code_options],
                     help="on every worker: clone the repository, install lineage[tpu], mount the bucket")
  r = actions.add_parser("run", parents=[slice_options, code_options],
                         help="train on every worker; recreate the slice and resume after a preemption")
  r.add_argument("experiment", help="an experiment directory, e.g. experiments/gpt_wiki")
  r.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
  r.add_argument("--run-name", help="train.run_name, the same for every attempt (default <name>-<time>)")
  r.add_argument("--max-attempts", type=int, default=10, help="attempts before giving up (default 10)")
  logs = actions.add_parser("logs", parents=[slice_options], help="the end of a run's log on one worker")
  logs.add_argument("run_name", help="the run's name (--run-name of `run`)")
  logs.add_argument("--worker", default="0", help="which worker (default 0; all = every worker)")
  logs.add_argument("--lines", type=int, default=100)
  logs.add_argument("--follow", action="store_true", help="keep printing new lines (tail -f)")
  actions.add_parser("delete", parents=[slice_options], help="delete the slice")
  p.set_defaults(run=_run)
