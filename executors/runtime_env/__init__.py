"""runtime_env.pip and runtime_env.conda: the interpreter a replica runs on,
made on its node by one builder program (`executors.runtime_env.build`, which
needs only the standard library) that the local and SSH executors both run;
`executors.runtime_env.environment` is the executors' side of it.
`executors.runtime_env.unpack` unpacks an uploaded working_dir package on
its node, once per package, for the same two executors."""
