from . import checkpoint_loading, criterions, models, tasks  # noqa: F401  (registers everything with fairseq)
