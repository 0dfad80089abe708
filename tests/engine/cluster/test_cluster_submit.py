"""Job scripts, the training command a job runs, and status/stop without SLURM
(no cluster needed; tests/engine/cluster/test_slurm.py runs them against a real one)."""

from __future__ import annotations

import json
import shlex

import pytest

from gaussianem.cli.main import build_parser, main
from gaussianem.cluster import template
from gaussianem.cluster.slurm import ClusterError
from gaussianem.cluster.status import format_summary, stop, summary
from gaussianem.cluster.submit import job_command, training_argv
from gaussianem.io.rundir import RunDir
from gaussianem.train.config import from_arguments


def test_render_fills_placeholders_and_drops_empty_sbatch_lines():
    text = ("#!/bin/bash\n#SBATCH --partition={partition}\n#SBATCH --gres=gpu:{gpus}\n#SBATCH -J {job_name}\n"
            "echo ${HOME} {outdir}\n{command}\n")
    out = template.render(text, {"partition": None, "gpus": "", "job_name": "j", "outdir": "/r", "command": "run"})
    assert out == "#!/bin/bash\n#SBATCH -J j\necho ${HOME} /r\nrun\n"
    with pytest.raises(ClusterError, match=r"unknown placeholder\(s\) \{memory\}"):
        template.render("#SBATCH --mem={memory}\n{command}\n", {})
    with pytest.raises(ClusterError, match="no {command}"):
        template.render("#!/bin/bash\n", {})
    assert template.placeholders(template.DEFAULT_SLURM) <= set(template.PLACEHOLDERS)


def test_the_default_job_survives_requeues_and_time_limits(tmp_path, capsys):
    """The built-in script asks for an early warning, requeueing, an appended output and
    memory; it passes SIGUSR1 on and requeues, and cancels itself only after
    'gaussianem stop' (its stop file); the training runs with --resume auto."""
    rc = main([*_inputs(tmp_path), "--submit", "slurm", "--dry-run", "--time", "2:00:00", "--gpus", "2"])
    assert rc == 0
    script = (tmp_path / "run" / "slurm_job.sh").read_text()
    for line in ("#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 "#SBATCH --mem=32G", "--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 -m gaussianem",
                 'scontrol requeue "$SLURM_JOB_ID"', f'rm -f "{tmp_path / "run"}/slurm-$SLURM_JOB_ID.stop"'):
        assert line in script, line
    assert script.count('scancel "$SLURM_JOB_ID"') == 1
    stop_file = f'[ -e "{tmp_path / "run"}/slurm-$SLURM_JOB_ID.stop" ]'
    assert script.index(stop_file) < script.index('scancel "$SLURM_JOB_ID"')
    line = [x for x in script.splitlines() if "--nproc_per_node" in x][0]
    assert line.endswith(" &")                      # in the background: this shell can pass SIGUSR1 on
    cmd = shlex.split(line[:-2])
    assert cmd[-4:] == ["--resume", "auto", "--progress", "json"]
    from gaussianem.cluster.submit import time_limit_seconds, warning_seconds
    assert [time_limit_seconds(t) for t in ("30", "5:00", "1:00:00", "2-00", "1-2:03", "1-00:00:05", "x", None)] == \
        [1800, 300, 3600, 172800, 93780, 86405, None, None]
    assert (warning_seconds("2:00:00"), warning_seconds(None), warning_seconds("5"), warning_seconds("1")) == \
        (120, 120, 60, 12)


def _args(*argv):
    return build_parser().parse_args(["train", *argv])


def test_the_job_trains_with_the_same_options(tmp_path):
    args = _args("p.star", "--consensus", "c.mrc", "-o", "out", "--epochs", "3", "--no-gaussian-features",
                 "--beta", "0.5", "--zdim", "4", "--submit", "slurm", "--gpus", "2", "--partition", "gpu",
                 "--time", "1:00:00", "--progress", "bar")
    argv = training_argv(args)
    assert argv[0] == "train" and argv[-2:] == ["--progress", "json"]
    for opt in ("--submit", "--gpus", "--partition", "--time"):
        assert opt not in argv
    again = build_parser().parse_args(argv)
    assert again.submit is None
    a, b = from_arguments(args), from_arguments(again)
    assert b.particles.startswith("/") and b.outdir.startswith("/")          # absolute in the job
    a.particles, a.consensus, a.outdir = b.particles, b.consensus, b.outdir
    assert a == b
    cmd = job_command(argv, gpus=2, python="/x/bin/python")
    assert cmd[-len(argv) - 2:] == ["-m", "gaussianem.cli.main", *argv]
    assert "--nproc_per_node" in cmd and cmd[cmd.index("--nproc_per_node") + 1] == "2"
    assert job_command(argv, gpus=1, python="/x/bin/python")[:3] == ["/x/bin/python", "-m", "gaussianem.cli.main"]


def _inputs(tmp_path):
    for name in ("p.star", "c.mrc"):
        (tmp_path / name).write_text("")
    return ["train", str(tmp_path / "p.star"), "--consensus", str(tmp_path / "c.mrc"), "-o", str(tmp_path / "run")]


def test_dry_run_writes_the_script_from_a_user_template(tmp_path, capsys):
    tpl = tmp_path / "t.sh"
    tpl.write_text("#!/bin/bash\n#SBATCH -p {partition}\n#SBATCH -A {account}\n#SBATCH --gres=gpu:{gpus}\n"
                   "cd {workdir}\n{command}\n")
    rc = main([*_inputs(tmp_path), "--epochs", "2", "--submit", "slurm", "--dry-run", "--template", str(tpl),
               "--partition", "short", "--gpus", "4"])
    assert rc == 0
    script = (tmp_path / "run" / "slurm_job.sh").read_text()
    assert "#SBATCH -p short\n" in script and "-A" not in script and "#SBATCH --gres=gpu:4\n" in script
    cmd = shlex.split(script.splitlines()[-1])
    assert "--standalone" in cmd and cmd[cmd.index("--nproc_per_node") + 1] == "4"
    assert cmd[cmd.index("--epochs") + 1] == "2"
    assert "not submitted (--dry-run)" in capsys.readouterr().out
    assert not (tmp_path / "run" / "slurm.json").exists()


def test_no_sbatch_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))           # a machine without SLURM
    assert main([*_inputs(tmp_path), "--submit", "slurm"]) == 1
    assert "no SLURM here: sbatch not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()                          # nothing written


def test_settings_are_checked_before_submitting(tmp_path, capsys):
    assert main([*_inputs(tmp_path), "--zdim-conf", "2", "--submit", "slurm"]) == 1
    assert "--zdim-conf and --zdim-comp go together" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.star"), "--consensus", "c.mrc", "-o", str(tmp_path / "r"),
                 "--submit", "slurm"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_status_and_stop_of_a_local_run(tmp_path, capsys):
    run = RunDir(tmp_path / "local")
    (tmp_path / "local").mkdir()
    run.write_config({"train": {"epochs": 5}})
    for rec in ({"kind": "step", "epoch": 1, "step": 8, "loss": 0.5, "time": 1.0},
                {"kind": "epoch", "epoch": 1, "total": 0.4, "health": {"explained": 0.97}, "time": 2.0},
                {"kind": "step", "epoch": 2, "step": 4, "loss": 0.3, "time": 3.0}):
        run.append_log(rec)
    s = summary(run.path)
    assert s["slurm"] is None and s["training"]["epochs_done"] == 1 and s["training"]["step"] == 4
    text = format_summary(s)
    assert "not submitted to SLURM" in text and "epoch 2 of 5, step 4" in text and "97%" in text
    assert main(["status", run.path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["training"]["loss"] == 0.3
    with pytest.raises(ClusterError, match="Ctrl-C"):
        stop(run.path)
    assert main(["stop", run.path]) == 1
    assert "has no slurm.json" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_broken_job_record_is_reported(tmp_path):
    (tmp_path / "slurm.json").write_text("{not json")
    with pytest.raises(ClusterError, match="not valid JSON"):
        summary(tmp_path)


def test_submission_options_need_submit(tmp_path, capsys):
    assert main([*_inputs(tmp_path), "--gpus", "2", "--time", "1:00:00"]) == 1
    assert "--gpus, --time: only with --submit slurm" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_status_lists_each_attempt(tmp_path):
    """RUN/attempts.jsonl: a run stopped by a signal, resumed, killed without a stop (a
    dead node), restarted by torchrun and still running."""
    run = RunDir(tmp_path / "run")
    (tmp_path / "run").mkdir()
    run.write_config({"train": {"epochs": 5}})
    for rec in ({"kind": "start", "resumed": False, "epoch": 1, "step": 0, "host": "n1", "job": "7", "time": 1.0},
                {"kind": "stopped", "signal": "SIGUSR1", "epoch": 2, "step": 3, "time": 2.0},
                {"kind": "start", "resumed": True, "epoch": 2, "step": 3, "host": "n2", "job": "7",
                 "slurm_restart": 1, "processes": 2, "time": 3.0},
                {"kind": "start", "resumed": True, "epoch": 3, "step": 0, "host": "n2", "job": "7",
                 "slurm_restart": 1, "torchrun_restart": 1, "time": 4.0}):
        run.append_attempt(rec)
    lines = [x for x in format_summary(summary(run.path)).splitlines() if x[10:12] in ("1.", "2.", "3.")]
    assert lines[0].startswith("attempts  1. ")
    assert lines[0].endswith("job 7 on n1: new run; stopped by SIGUSR1 at epoch 2, step 3")
    assert lines[1].endswith("job 7 (requeue 1) on n2 (2 processes): from epoch 2, step 3; ended without stopping "
                             "(killed, a node lost, or an error: see the output)")
    assert lines[2].endswith("job 7 (requeue 1, torchrun restart 1) on n2: from epoch 3, step 0; running")
