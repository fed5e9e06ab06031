"""Rating: evaluators, matchups, trials and votes."""
