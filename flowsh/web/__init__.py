"""`flowsh serve`: the web UI and REST API over runs (docs/ui.md). Needs the `ui` extra."""
