"""Studies: a study, its arms (pipeline configurations) and its prompts."""
