"""The demo: three sites with skewed MNIST shards train one model as a swarm.

`data` splits the data, `model` holds the MLP and its training steps, `train` is the script
each peer runs, `baselines` trains local-only and centralized references, `run_demo` ties it
together for `openswarm demo`.
"""
