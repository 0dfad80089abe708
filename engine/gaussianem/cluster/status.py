"""What a run is doing, and stopping it: ``gaussianem status RUN`` and ``gaussianem stop RUN``.

:func:`summary` joins what SLURM says of the run's job (``RUN/slurm.json``; squeue, then
sacct, then the state last seen, which :func:`summary` keeps in the record once the job
has ended) with the run's own files: the training log (epoch, step, loss, recoveries),
the checkpoint, ``latents.npz`` (finished), ``health.json``, and the job's output (its
last JSON progress event: ``stopped``, ``error``, ``done``). Runs trained without
SLURM have only the second half.

:func:`stop` writes ``RUN/slurm-JOBID.stop``, then sends a running job SIGTERM on every
process (``scancel --signal=TERM --full``): training saves a checkpoint at its next step
and stops, and the job script, finding that file, cancels the job (SLURM records it
CANCELLED; without the file, a SIGTERM from SLURM is a requeue or a preemption and the job
goes on). A pending job is simply cancelled.

Each start of the training (a new run, a resume, a requeued job, a torchrun restart) is
an *attempt*: ``RUN/attempts.jsonl`` says where each began, where it stopped and why
(:func:`attempts`).
"""

from __future__ import annotations

import json
import os
import shlex
import time

from gaussianem.cluster import slurm
from gaussianem.cluster.submit import RECORD, STOP_FILE, read_record
from gaussianem.io.atomic import write_json
from gaussianem.io.rundir import RunDir
from gaussianem.train import health

TAIL_BYTES = 256 * 1024


def _job_output(path: str | None) -> dict:
    """The last progress event of the job's output file and its last non-JSON lines."""
    out = {"last_event": None, "error": None, "stopped": None, "tail": []}
    if not path or not os.path.exists(path):
        return out
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
        lines = f.read().decode("utf-8", "replace").splitlines()
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            if line.strip():
                out["tail"].append(line.rstrip())
            continue
        if isinstance(ev, dict) and "event" in ev:
            out["last_event"] = ev
            if ev["event"] in ("start", "resumed"):        # a new attempt: what the last one said is history
                out["error"] = out["stopped"] = None
            if ev["event"] == "error":
                out["error"] = ev.get("message")
            if ev["event"] == "stopped":
                out["stopped"] = ev
    out["tail"] = out["tail"][-8:]
    return out


def attempts(run: RunDir) -> list[dict]:
    """Each start of the training, in order (both stages of coarse to fine): when and where
    it started, from which epoch and step, and how it ended (``stopped`` by a signal at an
    epoch and step; ``ended`` when the next attempt began without a stop: killed, a lost
    node, an error; None for the last one)."""
    recs = sorted(run.coarse.read_attempts() + run.read_attempts(), key=lambda r: r.get("time", 0))
    out = []
    for r in recs:
        if r["kind"] == "start":
            if out and out[-1]["end"] is None:
                out[-1]["end"] = "ended without stopping (killed, a node lost, or an error: see the output)"
            out.append({**{k: r.get(k) for k in ("time", "resumed", "epoch", "step", "host", "job", "processes",
                                                   "slurm_restart", "torchrun_restart")}, "end": None})
        elif out and out[-1]["end"] is None:
            out[-1]["end"] = f"stopped by {r.get('signal')} at epoch {r.get('epoch')}, step {r.get('step')}"
    return out


def _training(run: RunDir) -> dict:
    log, stage = run.read_log(), None
    rounds = run.last_round()
    if not log and rounds and not os.path.exists(run.config):     # --consensus-rounds: a round trains
        run, stage = run.round(rounds), f"consensus round {rounds}"
        log = run.read_log()
    if not log and os.path.exists(run.plan) and run.coarse.read_log():
        log, stage = run.coarse.read_log(), "coarse"
    elif os.path.exists(run.plan):
        stage = "fine"
    steps = [r for r in log if r.get("kind") == "step"]
    epochs = [r for r in log if r.get("kind") == "epoch"]
    t = {"epochs": run.epochs_asked(), "epochs_done": max([int(r.get("epoch", 0)) for r in epochs] or [0]),
         "stage": stage, "epoch": None, "step": None, "loss": None, "epoch_loss": None, "explained": None,
         "recoveries": sum(r.get("kind") == "recovery" for r in log), "checkpoint": run.has_checkpoint(),
         "finished": run.finished(), "last_log": max([r.get("time", 0) for r in log] or [0]) or None,
         "attempts": attempts(run)}
    if steps:
        t.update(epoch=steps[-1].get("epoch"), step=steps[-1].get("step"), loss=steps[-1].get("loss"))
    if epochs:
        t.update(epoch_loss=epochs[-1].get("total"), explained=(epochs[-1].get("health") or {}).get("explained"))
    return t


def _job(run: RunDir, rec: dict) -> dict:
    """The job's state from SLURM; once it has ended, kept in the record (``final``), which
    answers when SLURM has forgotten the job (squeue after MinJobAge, no accounting)."""
    job = slurm.job_state(rec["job_id"], rec.get("cluster"))
    final = rec.get("final")
    if job["state"] == slurm.UNKNOWN and final:
        job.update({k: v for k, v in final.items() if k != "seen"}, source=f"{RECORD}, as last seen ({job['source']})")
    elif job["state"] in slurm.ENDED and (not final or final.get("state") != job["state"]):
        rec["final"] = {**{k: job[k] for k in ("state", "reason", "elapsed", "exit_code", "node")}, "seen": time.time()}
        write_json(run.file(RECORD), rec)
    return job


def summary(path) -> dict:
    """Everything :func:`format_summary` prints, as a dict (``gaussianem status --json``)."""
    run = RunDir(path)
    if not os.path.isdir(run.path):
        raise slurm.ClusterError(f"{run.path} does not exist")
    rec = read_record(run)
    out = {"run": run.path, "slurm": None, "training": _training(run), "health": None}
    report = health.read(run)
    if report:
        out["health"] = {"status": report.get("status"), "summary": report.get("summary")}
    if rec is None:
        return out
    job = _job(run, rec)
    out["slurm"] = {**job, "job_id": rec["job_id"], "cluster": rec.get("cluster"), "submitted": rec.get("submitted"),
                    "script": rec.get("script"), "output": rec.get("output"), "command": rec.get("command"),
                    "options": rec.get("options"), "template": rec.get("template"),
                    **_job_output(rec.get("output"))}
    return out


def resume_command(rec: dict) -> str | None:
    """``gaussianem train ... --resume --submit slurm ...`` for a job record: its training
    options and its submission options."""
    command = rec.get("command")
    if not command or "train" not in command:
        return None
    argv = command[command.index("train"):]
    if "--progress" in argv:
        i = argv.index("--progress")
        argv = argv[:i] + argv[i + 2:]
    if "--resume" in argv:                      # a job runs --resume auto; the user asks --resume
        i = argv.index("--resume")
        argv = argv[:i] + argv[i + (2 if argv[i + 1:i + 2] == ["auto"] else 1):]
    argv.append("--resume")
    argv += ["--submit", "slurm"]
    for key, value in (rec.get("options") or {}).items():
        if value and key != "job_name":
            argv += [f"--{key}", str(value)]
    if rec.get("template") not in (None, "default"):
        argv += ["--template", rec["template"]]
    return shlex.join(["gaussianem", *argv])


def format_summary(s: dict) -> str:
    t, lines = s["training"], [f"run       {s['run']}"]
    job = s["slurm"]
    if job is None:
        lines.append(f"slurm     not submitted to SLURM (no {RECORD}): a local run")
    else:
        where = f" on {job['node']}" if job.get("node") and job["state"] != "PENDING" else ""
        text = f"job {job['job_id']}: {job['state']}{where}"
        if job.get("reason"):
            text += f" ({job['reason']})"
        if job.get("elapsed"):
            text += f", elapsed {job['elapsed']}"
        if job.get("exit_code"):
            text += f", exit code {job['exit_code']}"
        lines.append(f"slurm     {text}")
        lines.append(f"          submitted {job.get('submitted')}; output {job.get('output')}")
        if job["state"] == slurm.UNKNOWN:
            lines.append(f"          SLURM no longer knows the job ({job['source']})")
    if t["finished"]:
        prog = f"finished: {t['epochs_done']} epoch(s), latents written"
    elif t["epoch"] is None and not t["epochs_done"]:
        prog = "no training step logged yet" + (" (checkpoint present)" if t["checkpoint"] else "")
    else:
        prog = f"epoch {t['epoch'] or t['epochs_done']} of {t['epochs'] or '?'}"
        if t["step"] is not None:
            prog += f", step {t['step']}"
        prog += f"; {t['epochs_done']} epoch(s) done"
        prog += "; checkpoint saved" if t["checkpoint"] else "; no checkpoint yet"
    if t["stage"]:
        prog += f" [{t['stage']}]" if t["stage"].startswith("consensus") else f" [{t['stage']} stage of coarse to fine]"
    lines.append(f"training  {prog}")
    if t["loss"] is not None or t["epoch_loss"] is not None:
        loss = [f"step loss {t['loss']:.4g}" if t["loss"] is not None else None,
                f"last epoch's loss {t['epoch_loss']:.4g}" if t["epoch_loss"] is not None else None,
                f"recoveries {t['recoveries']}" if t["recoveries"] else None]
        lines.append("          " + ", ".join(x for x in loss if x))
    lines += _attempt_lines(t, job)
    if s["health"]:
        h = s["health"]
        lines.append(f"health    {h['status']}" + (f": {h['summary']}" if h.get("summary") not in (None, h["status"])
                                                  else ""))
    elif t["explained"] is not None:
        lines.append(f"health    explains {t['explained']:.0%} of the signal the consensus explains (last epoch)")
    if job is not None:
        if job.get("stopped"):
            st = job["stopped"]
            lines.append(f"stopped   at epoch {st.get('epoch')}, step {st.get('step')}: checkpoint {st.get('checkpoint')}")
        if job.get("error"):
            lines.append(f"error     {job['error']}")
        elif job["state"] in slurm.ENDED and job["state"] != "COMPLETED" and job.get("tail") and not job.get("stopped"):
            lines += ["output    " + job["tail"][0], *["          " + x for x in job["tail"][1:]]]
        if job["state"] in slurm.ENDED and not t["finished"] and t["checkpoint"]:
            cmd = resume_command(job)
            if cmd:
                lines.append(f"resume    {cmd}")
    return "\n".join(lines)


def _attempt_lines(t: dict, job: dict | None) -> list[str]:
    out = []
    for i, a in enumerate(t.get("attempts") or [], 1):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["time"])) if a.get("time") else "?"
        again = ", ".join(x for x in (f"requeue {a['slurm_restart']}" if a.get("slurm_restart") else None,
                                      f"torchrun restart {a['torchrun_restart']}" if a.get("torchrun_restart")
                                      else None) if x)
        who = " ".join(x for x in (f"job {a['job']}" if a.get("job") else None, f"({again})" if again else None,
                                   f"on {a['host']}" if a.get("host") else None,
                                   f"({a['processes']} processes)" if (a.get("processes") or 1) > 1 else None) if x)
        start = f"from epoch {a['epoch']}, step {a['step']}" if a.get("resumed") else "new run"
        end = a["end"] or ("finished" if t["finished"] else
                           "ended" if job is not None and job["state"] in slurm.ENDED else "running")
        out.append(f"{'attempts' if i == 1 else '':10}{i}. {when} {who}: {start}; {end}")
    return out


def stop(path) -> str:
    """Stop a run's SLURM job (see the module's docstring); returns what was done."""
    run = RunDir(path)
    if not os.path.isdir(run.path):
        raise slurm.ClusterError(f"{run.path} does not exist")
    rec = read_record(run)
    if rec is None:
        if run.finished():
            raise slurm.ClusterError(f"{run.path} has no {RECORD} (it was not submitted to SLURM) and has finished: "
                                     f"nothing to stop")
        raise slurm.ClusterError(
            f"{run.path} has no {RECORD}: it was not submitted with 'gaussianem train --submit slurm'. A local "
            f"training stops with Ctrl-C in its terminal, or 'kill -TERM PID' of its process (of every process "
            f"under torchrun); it saves a checkpoint first. Continue it with 'gaussianem train ... -o {run.path} "
            f"--resume'")
    job_id, cluster = rec["job_id"], rec.get("cluster")
    state = _job(run, rec)["state"]
    if state in slurm.ENDED:
        return f"SLURM job {job_id} has already ended ({state}): nothing to stop"
    if state == "PENDING":
        cmd = slurm.scancel(job_id, cluster=cluster)
        return f"SLURM job {job_id} was waiting in the queue: cancelled ({cmd})"
    with open(run.file(STOP_FILE.format(job_id=job_id)), "w") as f:      # the job cancels itself, no requeue
        f.write(f"gaussianem stop {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    cmd = slurm.scancel(job_id, signal="TERM", full=True, cluster=cluster)
    note = "" if run.has_checkpoint() or run.coarse.has_checkpoint() else (
        " (no checkpoint yet: a job stopped while it is still setting up saves nothing and starts over)")
    return (f"sent SIGTERM to SLURM job {job_id} ({cmd}): training saves a checkpoint at its next step and stops"
            f"{note}; 'gaussianem status {run.path}' shows when the job has ended")
