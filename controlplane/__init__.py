"""The control plane: stores deployment specs in SQLite and drives executors
until the running replicas match them. Never on a request's path."""
