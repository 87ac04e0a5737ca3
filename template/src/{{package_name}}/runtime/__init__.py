"""The service runtime, owned by the template.

`copier update` keeps this package in step with the template, so fixes arrive
without merge work. Change the service through `settings.py`, `agent.py` and
`tools.py` next to this package instead of editing modules here.
"""
