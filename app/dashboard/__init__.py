"""Live dashboards: vote tallies kept current from SQL, the summary they feed, the SSE stream."""
