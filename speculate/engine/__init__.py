"""The async engine: one request's run (edge and cloud in one task group), event logs,
cloud health, the refinement worker and detached jobs. Receives its dependencies."""
