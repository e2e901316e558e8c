"""`nas search`: Ray-distributed Optuna search of the hybrid-backbone space under MAC, params and
latency constraints, and `nas status` on the run directories it writes.

Modules, one job each:

* ``settings``  - CLI parsing into the validated settings (the schema itself and the run directory
  format live in ``results.settings`` and ``results.run_dir``)
* ``searcher``  - the Optuna searcher behind Ray Tune (constraints at sampling time, infeasible and
  duplicate candidates answered without training, ASHA-stopped trials told as PRUNED)
* ``objective`` - the Ray Tune trainable (proxy training with per-epoch reports)
* ``runner``    - Ray and Tuner set-up, resume, progress display
* ``pareto``    - the final Pareto front, latency re-measurement, exported configs and cards
* ``status``    - counts and best trials of a run directory (`nas status`, read via ``results.run``)
"""
