"""The engines the service can run its agents on: one package each, and a rendered service
has exactly one, named by `project.ENGINE` and loaded by `engine.load_engine`. Only an
engine's package imports its framework; everything above `engine.Engine` is shared."""
