"""``monitoring-ws ctl``: the operator's client of the HTTP API (docs/cli.md).

It imports no server module (an import contract keeps it so) and nothing beyond the
standard library: it runs wherever the package is installed, a laptop included.
"""
