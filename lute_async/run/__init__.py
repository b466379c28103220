"""The run engine: one run's lifecycle, enforcement, dispatch and supervision."""
