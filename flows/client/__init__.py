"""The client: the Python workflow API, templates and the ``remote-network workflow`` CLI.

It talks to a node over its HTTP API only. ``define`` and ``resolve`` build and check a workflow
definition, ``templates`` and ``files`` read one from a file, ``node_client`` and ``submit``
register and run it on a node, and ``cli_workflow`` is the command line on top of them. For the
node of this machine, ``node_client`` mints a token from the data dir's key and JWT secret
(``orchestrator.keys``, ``orchestrator.auth``); nothing here imports the node's server side
(the node, the workflow engine, Prefect), as ``tests/flows/client/test_client_imports.py`` checks.
"""
