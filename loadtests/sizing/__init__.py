"""The worker-sizing run: `python -m loadtests.sizing --help`."""
