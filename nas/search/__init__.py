"""`nas search`: Ray-distributed Optuna search of the hybrid-backbone space under MAC, params and
latency constraints, and `nas status` on the run directories it writes.

Modules, one job each:

* ``settings``  - the validated, immutable search settings (CLI -> dataclass -> run.json; readers
  load them as ``RunSettings``)
* ``run_dir``   - the run directory format (layout, study name, trial statuses and counts, run.json,
  the lock, per-trial files): the one definition the search and every reader use
* ``searcher``  - the Optuna searcher behind Ray Tune (constraints at sampling time, infeasible and
  duplicate candidates answered without training, ASHA-stopped trials told as PRUNED)
* ``objective`` - the Ray Tune trainable (proxy training with per-epoch reports)
* ``runner``    - Ray and Tuner set-up, resume, progress display
* ``latency_warmup`` - times every block the space can produce before the trials (latency searches)
* ``pareto``    - the final Pareto front, latency re-measurement, exported configs and cards
* ``status``    - counts and best trials of a run directory (`nas status`, read via ``results.run``)
"""
