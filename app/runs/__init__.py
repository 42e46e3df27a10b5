"""The one run lifecycle, for every kind of run: a screening, a shard of one, an experiment stage.

    queued --claim--> running --succeed--> succeeded
      ^                 |  \\--fail (final)--> failed
      |                 |   \\--cancel------> cancelled
      +--fail (retry)---+
      +--recover--------+   (a silent worker, a lost or dead job: the reconciler)

- **claim**: one compare-and-set, queued -> running, attempts + 1; a job that does not own the run (it was
  cancelled, finished, or handed to another job) changes nothing and does not run.
- **heartbeat**: a thread of the worker's (`workers.heartbeat.Heartbeat`) beats every
  `FTGUARD_HEARTBEAT_INTERVAL_S` while the job runs, through the kind's own conditional UPDATE.
- **progress and cancel**: each progress write is the cancellation check; it fails once the run is no
  longer this job's.
- **succeed**, and **fail** with retry or give-up by one rule (`is_final`): a run past `job_retries` + 1
  attempts, or failed in a way a retry repeats, fails for good.
- **recover**: the one reconciler (`app.reconcile`) walks every kind on the same schedule and applies one
  decision (`lifecycle.judge`) to each active run: silent past `FTGUARD_STALE_AFTER_S`, its job gone or dead,
  it is sent again or, past its attempts, given up with `worker_lost`.

A kind is a `RunKind` (`app.runs.kinds`): how to list its active runs, name their jobs, send one again and
give one up. The kinds are registered in `app.runs.kinds.KINDS`; adding one is a module and a line there.
"""
