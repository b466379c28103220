"""Tasks and hooks that lute-async finds through entry points (used by lute-async's tests)."""
