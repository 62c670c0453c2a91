"""Search spaces, one module per space: ``spaces/NAME.py`` is found by ``--space NAME``.

A space module defines:

- ``space(trial) -> RunConfig``: the only place ``trial.suggest_*`` is called;
- ``to_params(config) -> dict``: the parameters that make ``space`` return ``config``
  (used to enqueue known models; every seed preset of the space's kind must round-trip);
- ``WARM_START``: named ``RunConfig``s enqueued as a new study's first trials;
- optionally ``START_PRIOR``: categorical parameter -> {choice: weight}; the TPE samplers take
  their start-up draws (the first 10 trials, before TPE has a model) of those parameters from
  these weights instead of uniformly (other samplers ignore it; after the start-up TPE decides);
- optionally ``KEEP_PRIOR``: a tuple of START_PRIOR's parameters whose every draw, not only the
  start-up's, follows its weights (in blocks of 10 draws, each block in the weights' shares);
  TPE then models the other parameters given them;
- optionally ``REPORT_EPOCHS_FACTOR`` (default 1): ``report`` re-trains a study's finalists for
  this many times each trial's own epoch budget unless ``--epochs`` is given, or as many as are
  estimated to fit ``--longer-within`` minutes (longer final training pays where the search's
  budget stops short of convergence; measure it with ``benchmarks/final_epochs.py``).
"""
