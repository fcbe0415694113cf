"""Executors run replicas: local processes, Ray actors, SSH hosts.

`executors.base` is the one interface every plugin implements;
`executors.registry` finds plugins through entry points; `executors.replica`
is the worker program every executor starts.
"""
