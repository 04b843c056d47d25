"""Bodies of the `bytessm` subcommands that are more than a few lines (`generate`)."""
