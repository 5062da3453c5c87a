"""`esper watch`: a live terminal dashboard over a run's events.jsonl.

`follower` reads new lines, `state` folds events into a RunState (pure Python),
`render` turns it into rich text; only `widgets` and `app` need textual, which
is the optional `ui` extra.
"""
