"""Generated from protos/capstan/v1 by scripts/gen_protos.py."""
