"""Developer tools that live outside the installed packages (run them from the repository
root: ``python -m tools.<name>``)."""
