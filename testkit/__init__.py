"""What tests, benchmarks and fault runs share to drive the stack from outside.

One module a job, imported by name (`from testkit.ports import free_port`):

- `stack`: the running stack as `python3 -m stack` reports it (endpoints, pids,
  health), and `StackPaused`: its worker stopped and its connector paused;
- `connector`: a Debezium connector through Connect's REST API (state, pause, resume);
- `rows`: merchants made with the API's own `NewMerchant`, a blocked payment;
- `workers`: one `paystream worker` subprocess;
- `cdc_feed`: a change feed of one's own beside the stack's;
- `topics`: deleting topics by prefix;
- `own_database`, `own_books`: a database (and a Stripe) of a run's own;
- `change_events`: reading Debezium's change events off the payments topic;
- `webhooks`: a server that records merchant webhooks;
- `ports`, `waiting`, `stats`: a free port, polling with a deadline, one percentile.

It is not installed: it runs from the checkout (pytest's `pythonpath`, or
`python -m bench.<name>` from the checkout's folder).
"""
