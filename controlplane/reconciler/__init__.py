"""The reconciler: `plan` decides (pure), `loop` acts (the only impure part)."""
