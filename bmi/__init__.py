"""bmi-rpc internals: name checks, the command runner, and the storage and target backends."""
