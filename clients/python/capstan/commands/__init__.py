"""The CLI's day-two commands, one module per group; `cli` registers them."""
