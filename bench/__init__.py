"""Load benchmark of the rendered service against a bare passthrough and a naive shared agent.

Run `uv run --group bench python -m bench`; docs/benchmarks.md explains the set-up.
"""
